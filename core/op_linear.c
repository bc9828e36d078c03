/* op_linear.c: nn.Linear and the (C, E) projection matmul, over cblas_sgemm. */
#include "config.h"

#include "ops.h"

#include <cblas.h>
#include <string.h>

void
ct_linear_forward(float *out, const float *in, const float *w, const float *b,
                  int N, int C, int OC)
{
  float beta = 0.0f;
  if (b) {
    for (int n = 0; n < N; n++)
      memcpy(out + (size_t) n * OC, b, sizeof(float) * OC);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, in, C, w, C, beta,
              out, OC);
}

void
ct_linear_backward(float *din, float *dw, float *db, const float *dout,
                   const float *in, const float *w, int N, int C, int OC)
{
  if (din)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, w, C,
                1.0f, din, C);
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, in, C,
                1.0f, dw, C);
  if (db) {
    for (int n = 0; n < N; n++) {
      const float *row = dout + (size_t) n * OC;
      for (int o = 0; o < OC; o++)
        db[o] += row[o];
    }
  }
}

void
ct_matmul_forward(float *out, const float *in, const float *w, int N, int C, int E)
{
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, E, C, 1.0f, in, C, w, E, 0.0f,
              out, E);
}

void
ct_matmul_backward(float *din, float *dw, const float *dout, const float *in,
                   const float *w, int N, int C, int E)
{
  if (din)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, C, E, 1.0f, dout, E, w, E, 1.0f,
                din, C);
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, E, N, 1.0f, in, C, dout, E, 1.0f,
                dw, E);
}

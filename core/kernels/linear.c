/* linear.c: nn.Linear and the (C, E) projection matmul, over cblas_sgemm. */
#include "config.h"

#include "base/gemm.h"
#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <string.h>

/* db (OC) += the column sums of dout (N, OC): each thread takes a range of
 * columns and sums them over the rows in order, so the bits do not depend
 * on the thread count. */
typedef float V4 __attribute__((vector_size(16)));

typedef struct {
  float *db;
  const float *dout;
  int N, OC;
} BiasJob;

static void
bias_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const BiasJob *j = ctx;
  float *restrict db = j->db + begin;
  size_t w = end - begin;
  for (int n = 0; n < j->N; n++) {
    const float *restrict row = j->dout + (size_t) n * j->OC + begin;
    size_t o = 0;
    for (; o + 4 <= w; o += 4) { /* four lanes at a time (SSE, any x86-64) */
      V4 a, b;
      memcpy(&a, db + o, sizeof a);
      memcpy(&b, row + o, sizeof b);
      a += b;
      memcpy(db + o, &a, sizeof a);
    }
    for (; o < w; o++)
      db[o] += row[o];
  }
}

void
ct_linear_forward(float *out, const float *in, const float *w, const float *b,
                  int N, int C, int OC)
{
  CT_PROF_BEGIN(CT_PROF_GEMM);
  /* out's rows start as the bias (copied inside each thread's block of
   * rows), and the product adds to them */
  CtGemm g = { FALSE, TRUE, N, OC, C, 1.0f, in, C, w, C, b ? 1.0f : 0.0f, out, OC, b };
  ct_sgemm_many(&g, 1);
  CT_PROF_END();
}

void
ct_linear_backward(float *din, float *dw, float *db, const float *dout,
                   const float *in, const float *w, int N, int C, int OC)
{
  CT_PROF_BEGIN(CT_PROF_GEMM);
  /* din = dout @ w and dw = dout^T @ in side by side */
  CtGemm g[2];
  int n = 0;
  if (din)
    g[n++] = (CtGemm) { FALSE, FALSE, N, C, OC, 1.0f, dout, OC, w, C, 1.0f, din, C, NULL };
  if (dw)
    g[n++] = (CtGemm) { TRUE, FALSE, OC, C, N, 1.0f, dout, OC, in, C, 1.0f, dw, C, NULL };
  if (n)
    ct_sgemm_many(g, n);
  if (db) {
    BiasJob j = { db, dout, N, OC };
    /* a thread's share: at least 64 columns, 64 KiB of rows */
    ct_parallel_for((size_t) OC, MAX(64, 16384 / MAX(N, 1)), bias_range, &j);
  }
  CT_PROF_END();
}

void
ct_matmul_forward(float *out, const float *in, const float *w, int N, int C, int E)
{
  CT_PROF_BEGIN(CT_PROF_GEMM);
  ct_sgemm(FALSE, FALSE, N, E, C, 1.0f, in, C, w, E, 0.0f, out, E);
  CT_PROF_END();
}

void
ct_matmul_backward(float *din, float *dw, const float *dout, const float *in,
                   const float *w, int N, int C, int E)
{
  CT_PROF_BEGIN(CT_PROF_GEMM);
  CtGemm g[2];
  int n = 0;
  if (din)
    g[n++] = (CtGemm) { FALSE, TRUE, N, C, E, 1.0f, dout, E, w, E, 1.0f, din, C, NULL };
  if (dw)
    g[n++] = (CtGemm) { TRUE, FALSE, C, E, N, 1.0f, in, C, dout, E, 1.0f, dw, E, NULL };
  if (n)
    ct_sgemm_many(g, n);
  CT_PROF_END();
}

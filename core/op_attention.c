/* op_attention.c: scaled dot-product attention over packed q|k|v, per head,
 * with an optional causal mask.  Products go through cblas_sgemm with
 * strided views into the packed buffer, so nothing is copied. */
#include "config.h"

#include "ops.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

void
ct_attention_forward(float *out, float *att, const float *qkv,
                     int B, int T, int C, int H, int causal, CtPrecision prec)
{
  int D = C / H;
  int ld = 3 * C;
  float scale = 1.0f / sqrtf((float) D);
  for (int b = 0; b < B; b++) {
    const float *base = qkv + (size_t) b * T * ld;
    for (int h = 0; h < H; h++) {
      const float *q = base + h * D;
      const float *k = base + C + h * D;
      const float *v = base + 2 * C + h * D;
      float *p = att + ((size_t) b * H + h) * T * T; /* (T, T) */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, q, ld, k, ld,
                  0.0f, p, T);
      ct_round(prec, p, (size_t) T * T);
      for (int i = 0; i < T; i++) {
        float *row = p + (size_t) i * T;
        int n = causal ? i + 1 : T;
        float mx = row[0];
        for (int j = 1; j < n; j++)
          mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (int j = 0; j < n; j++) {
          row[j] = expf(row[j] - mx);
          sum += row[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n; j++)
          row[j] *= inv;
        for (int j = n; j < T; j++)
          row[j] = 0.0f;
      }
      ct_round(prec, p, (size_t) T * T);
      float *o = out + (size_t) b * T * C + h * D; /* (T, D) view, ld C */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f, p, T, v, ld,
                  0.0f, o, C);
    }
  }
  ct_round(prec, out, (size_t) B * T * C);
}

void
ct_attention_backward(float *dqkv, float *scratch, const float *dout,
                      const float *qkv, const float *att, int B, int T, int C, int H,
                      CtPrecision prec)
{
  int D = C / H;
  int ld = 3 * C;
  float scale = 1.0f / sqrtf((float) D);
  for (int b = 0; b < B; b++) {
    const float *base = qkv + (size_t) b * T * ld;
    float *dbase = dqkv + (size_t) b * T * ld;
    for (int h = 0; h < H; h++) {
      const float *q = base + h * D;
      const float *k = base + C + h * D;
      const float *v = base + 2 * C + h * D;
      float *dq = dbase + h * D;
      float *dk = dbase + C + h * D;
      float *dv = dbase + 2 * C + h * D;
      const float *p = att + ((size_t) b * H + h) * T * T; /* (T, T) */
      const float *dO = dout + (size_t) b * T * C + h * D; /* (T, D), ld C */
      float *dp = scratch;                                 /* (T, T) */
      /* dV += P^T dO;  dP = dO V^T */
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, 1.0f, p, T, dO, C, 1.0f,
                  dv, ld);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, 1.0f, dO, C, v, ld, 0.0f,
                  dp, T);
      ct_round(prec, dp, (size_t) T * T);
      /* softmax backward: dS = P * (dP - rowsum(dP * P)); masked P are 0 */
      for (int i = 0; i < T; i++) {
        const float *prow = p + (size_t) i * T;
        float *drow = dp + (size_t) i * T;
        float dot = 0.0f;
        for (int j = 0; j < T; j++)
          dot += prow[j] * drow[j];
        for (int j = 0; j < T; j++)
          drow[j] = prow[j] * (drow[j] - dot);
      }
      ct_round(prec, dp, (size_t) T * T);
      /* dQ += scale dS K;  dK += scale dS^T Q */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, scale, dp, T, k, ld,
                  1.0f, dq, ld);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, D, T, scale, dp, T, q, ld,
                  1.0f, dk, ld);
    }
  }
}

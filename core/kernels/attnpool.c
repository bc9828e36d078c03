/* attnpool.c: the attention of CLIP's AttentionPool2d: one query per
 * image (token 0's) against all T tokens, per head, scores scaled by
 * 1/sqrt(D).  Products through cblas_sgemm on strided views; one (b, h)
 * pair an item on the pool, so results do not depend on the thread
 * count.  At bf16/fp16 the scores, probabilities and output are rounded,
 * as ct_attention_forward does. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <math.h>

typedef struct {
  float *out, *att, *dq, *dk, *dv;
  const float *q, *k, *v, *dout;
  int T, C, H;
  CtPrecision prec;
} PoolAttJob;

static void
fwd_range(void *ctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const PoolAttJob *j = ctx;
  int T = j->T, C = j->C, D = C / j->H;
  float scale = 1.0f / sqrtf((float) D);
  for (size_t i = i0; i < i1; i++) {
    int b = (int) (i / j->H), h = (int) (i % j->H);
    const float *q = j->q + (size_t) b * C + h * D;              /* (1, D) */
    const float *k = j->k + (size_t) b * T * C + h * D;          /* (T, D), ld C */
    const float *v = j->v + (size_t) b * T * C + h * D;
    float *p = j->att + i * T;                                   /* (1, T) */
    ct_sgemm(FALSE, TRUE, 1, T, D, scale, q, D, k, C, 0.0f, p, T);
    ct_round(j->prec, p, T);
    ct_softmax_row(p, T, T);
    ct_round(j->prec, p, T);
    float *o = j->out + (size_t) b * C + h * D;
    ct_sgemm(FALSE, FALSE, 1, D, T, 1.0f, p, T, v, C, 0.0f, o, D);
    ct_round(j->prec, o, D);
  }
}

void
ct_poolattn_forward(float *out, float *att, const float *q, const float *k, const float *v,
                    int B, int T, int C, int H, CtPrecision prec)
{
  CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
  PoolAttJob j = { .out = out, .att = att, .q = q, .k = k, .v = v, .T = T, .C = C, .H = H,
                   .prec = prec };
  ct_parallel_for((size_t) B * H, 1, fwd_range, &j);
  CT_PROF_END();
}

static void
bwd_range(void *ctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const PoolAttJob *j = ctx;
  int T = j->T, C = j->C, D = C / j->H;
  float scale = 1.0f / sqrtf((float) D);
  float dp[1024]; /* scores' gradient, T <= 1024 (checked by the caller) */
  for (size_t i = i0; i < i1; i++) {
    int b = (int) (i / j->H), h = (int) (i % j->H);
    size_t qo = (size_t) b * C + h * D, ko = (size_t) b * T * C + h * D;
    const float *p = j->att + i * T;
    const float *g = j->dout + qo;
    /* dv (T, D) += p^T g;  dp (T) = g . v */
    ct_sgemm(TRUE, FALSE, T, D, 1, 1.0f, p, T, g, D, 1.0f,
                j->dv + ko, C);
    ct_sgemm(FALSE, TRUE, 1, T, D, 1.0f, g, D, j->v + ko, C,
                0.0f, dp, T);
    ct_softmax_row_backward(dp, p, T);
    ct_round(j->prec, dp, T);
    /* dq (D) += scale dp k;  dk (T, D) += scale dp^T q */
    ct_sgemm(FALSE, FALSE, 1, D, T, scale, dp, T, j->k + ko, C,
                1.0f, j->dq + qo, D);
    ct_sgemm(TRUE, FALSE, T, D, 1, scale, dp, T, j->q + qo, D,
                1.0f, j->dk + ko, C);
  }
}

void
ct_poolattn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                     const float *k, const float *v, const float *att, int B, int T, int C,
                     int H, CtPrecision prec)
{
  CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
  PoolAttJob j = { .dq = dq, .dk = dk, .dv = dv, .dout = dout, .q = q, .k = k, .v = v,
                   .att = (float *) att, .T = T, .C = C, .H = H, .prec = prec };
  ct_parallel_for((size_t) B * H, 1, bwd_range, &j);
  CT_PROF_END();
}

/* ---- tokens: [mean of x ; x] + positional embedding ---- */

void
ct_poolattn_tokens_forward(float *X, const float *x, const float *pos, int B, int HW, int C)
{
  CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
  int T = HW + 1;
  for (int b = 0; b < B; b++) {
    float *X0 = X + (size_t) b * T * C;
    const float *xb = x + (size_t) b * HW * C;
    for (int c = 0; c < C; c++)
      X0[c] = 0.0f;
    for (int i = 0; i < HW; i++)
      for (int c = 0; c < C; c++)
        X0[c] += xb[(size_t) i * C + c];
    for (int c = 0; c < C; c++)
      X0[c] = X0[c] / (float) HW + pos[c];
    for (int i = 0; i < HW; i++)
      for (int c = 0; c < C; c++)
        X0[(size_t) (1 + i) * C + c] = xb[(size_t) i * C + c] + pos[(size_t) (1 + i) * C + c];
  }
  CT_PROF_END();
}

void
ct_poolattn_tokens_backward(float *dx, float *dpos, const float *dX, int B, int HW, int C)
{
  CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
  int T = HW + 1;
  for (int b = 0; b < B; b++) {
    const float *d = dX + (size_t) b * T * C;
    float *dxb = dx + (size_t) b * HW * C;
    for (int i = 0; i < HW; i++)
      for (int c = 0; c < C; c++)
        dxb[(size_t) i * C + c] += d[(size_t) (1 + i) * C + c] + d[c] / (float) HW;
    for (size_t e = 0; e < (size_t) T * C; e++)
      dpos[e] += d[e];
  }
  CT_PROF_END();
}

/* op_attention.c: scaled dot-product attention over packed q|k|v, per head,
 * with an optional causal mask.  Products go through cblas_sgemm with
 * strided views into the packed buffer, so nothing is copied. */
#include "config.h"

#include "ops.h"
#include "parallel.h"

#include <math.h>
#include <string.h>

typedef struct {
  float *out, *att, *dqkv, *scratch;
  const float *qkv, *dout, *catt;
  int T, C, H, causal;
  CtPrecision prec;
} AttJob;

/* Sequence b, head h: scores, softmax, p·v. */
static void
forward_one(const AttJob *j, int b, int h)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C;
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  const float *q = base + h * D;
  const float *k = base + C + h * D;
  const float *v = base + 2 * C + h * D;
  float *p = j->att + ((size_t) b * j->H + h) * T * T; /* (T, T) */
  ct_sgemm(FALSE, TRUE, T, T, D, scale, q, ld, k, ld, 0.0f, p, T);
  ct_round(j->prec, p, (size_t) T * T);
  for (int i = 0; i < T; i++)
    ct_softmax_row(p + (size_t) i * T, j->causal ? i + 1 : T, T);
  ct_round(j->prec, p, (size_t) T * T);
  float *o = j->out + (size_t) b * T * C + h * D; /* (T, D) view, ld C */
  ct_sgemm(FALSE, FALSE, T, D, T, 1.0f, p, T, v, ld, 0.0f, o, C);
  for (int i = 0; i < T; i++)
    ct_round(j->prec, o + (size_t) i * C, D);
}

static void
forward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const AttJob *j = ctx;
  for (size_t bh = begin; bh < end; bh++)
    forward_one(j, (int) (bh / j->H), (int) (bh % j->H));
}

void
ct_attention_forward(float *out, float *att, const float *qkv,
                     int B, int T, int C, int H, int causal, CtPrecision prec)
{
  AttJob j = { .out = out, .att = att, .qkv = qkv, .T = T, .C = C, .H = H, .causal = causal,
               .prec = prec };
  ct_parallel_for((size_t) B * H, 1, forward_range, &j);
}

/* Sequence b, head h, with dp: (T, T) scratch of this thread. */
static void
backward_one(const AttJob *j, int b, int h, float *dp)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C;
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  float *dbase = j->dqkv + (size_t) b * T * ld;
  const float *q = base + h * D;
  const float *k = base + C + h * D;
  const float *v = base + 2 * C + h * D;
  float *dq = dbase + h * D;
  float *dk = dbase + C + h * D;
  float *dv = dbase + 2 * C + h * D;
  const float *p = j->catt + ((size_t) b * j->H + h) * T * T; /* (T, T) */
  const float *dO = j->dout + (size_t) b * T * C + h * D;      /* (T, D), ld C */
  /* dV += P^T dO;  dP = dO V^T */
  ct_sgemm(TRUE, FALSE, T, D, T, 1.0f, p, T, dO, C, 1.0f, dv, ld);
  ct_sgemm(FALSE, TRUE, T, T, D, 1.0f, dO, C, v, ld, 0.0f, dp, T);
  ct_round(j->prec, dp, (size_t) T * T);
  /* softmax backward: dS = P * (dP - rowsum(dP * P)); masked P are 0 */
  for (int i = 0; i < T; i++)
    ct_softmax_row_backward(dp + (size_t) i * T, p + (size_t) i * T, T);
  ct_round(j->prec, dp, (size_t) T * T);
  /* dQ += scale dS K;  dK += scale dS^T Q */
  ct_sgemm(FALSE, FALSE, T, D, T, scale, dp, T, k, ld, 1.0f, dq,
              ld);
  ct_sgemm(TRUE, FALSE, T, D, T, scale, dp, T, q, ld, 1.0f, dk,
              ld);
}

static void
backward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const AttJob *j = ctx;
  float *dp = j->scratch + (size_t) thread * j->T * j->T;
  for (size_t bh = begin; bh < end; bh++)
    backward_one(j, (int) (bh / j->H), (int) (bh % j->H), dp);
}

void
ct_attention_backward(float *dqkv, float *scratch, const float *dout,
                      const float *qkv, const float *att, int B, int T, int C, int H,
                      CtPrecision prec)
{
  AttJob j = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .qkv = qkv, .catt = att, .T = T,
               .C = C, .H = H, .prec = prec };
  ct_parallel_for((size_t) B * H, 1, backward_range, &j);
}

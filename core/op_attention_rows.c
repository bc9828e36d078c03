/* op_attention_rows.c: the attention of one query row per sequence, over
 * packed q|k|v as ct_attention_forward takes them.  A tower reads one row
 * of its last block's output per sequence (the class token, the
 * end-of-text token), so that block needs only that row's query; keys
 * and values still come from every row.  Each (sequence, head) pair
 * repeats ct_attention_forward's operations for that one row: scores
 * over all T keys, the causal mask as a shorter softmax, the weighted sum
 * over all T values (the masked probabilities being 0), the same rounding
 * at bf16/fp16. */
#include "config.h"

#include "ops.h"
#include "parallel.h"

#include <math.h>

typedef struct {
  float *out, *att, *dqkv, *scratch;
  const float *qkv, *dout, *catt;
  const int *sel;
  int T, C, H, causal;
  CtPrecision prec;
} RowJob;

/* Sequence b, head h: its query row i = sel[b]. */
static void
forward_one(const RowJob *j, int b, int h)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C, i = j->sel[b];
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  const float *q = base + (size_t) i * ld + h * D; /* (1, D) */
  const float *k = base + C + h * D;               /* (T, D), ld 3C */
  const float *v = base + 2 * C + h * D;
  float *p = j->att + ((size_t) b * j->H + h) * T; /* (1, T) */
  ct_sgemm(FALSE, TRUE, 1, T, D, scale, q, ld, k, ld, 0.0f, p, T);
  ct_round(j->prec, p, T);
  ct_softmax_row(p, j->causal ? i + 1 : T, T);
  ct_round(j->prec, p, T);
  float *o = j->out + (size_t) b * C + h * D; /* (1, D) */
  ct_sgemm(FALSE, FALSE, 1, D, T, 1.0f, p, T, v, ld, 0.0f, o, C);
  ct_round(j->prec, o, D);
}

static void
forward_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const RowJob *j = ctx;
  for (size_t bh = begin; bh < end; bh++)
    forward_one(j, (int) (bh / j->H), (int) (bh % j->H));
}

void
ct_attention_rows_forward(float *out, float *att, const float *qkv, const int *sel, int B,
                          int T, int C, int H, int causal, CtPrecision prec)
{
  RowJob j = { .out = out, .att = att, .qkv = qkv, .sel = sel, .T = T, .C = C, .H = H,
               .causal = causal, .prec = prec };
  ct_parallel_for((size_t) B * H, 1, forward_range, &j);
}

/* Sequence b, head h, with dp: (T) scratch of this thread. */
static void
backward_one(const RowJob *j, int b, int h, float *dp)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C, i = j->sel[b];
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  float *dbase = j->dqkv + (size_t) b * T * ld;
  const float *q = base + (size_t) i * ld + h * D;
  const float *k = base + C + h * D;
  const float *v = base + 2 * C + h * D;
  float *dq = dbase + (size_t) i * ld + h * D;
  float *dk = dbase + C + h * D;
  float *dv = dbase + 2 * C + h * D;
  const float *p = j->catt + ((size_t) b * j->H + h) * T; /* (1, T) */
  const float *dO = j->dout + (size_t) b * C + h * D;      /* (1, D) */
  /* dV += p^T dO;  dp = dO V^T */
  ct_sgemm(TRUE, FALSE, T, D, 1, 1.0f, p, T, dO, C, 1.0f, dv, ld);
  ct_sgemm(FALSE, TRUE, 1, T, D, 1.0f, dO, C, v, ld, 0.0f, dp, T);
  ct_round(j->prec, dp, T);
  ct_softmax_row_backward(dp, p, T);
  ct_round(j->prec, dp, T);
  /* dq += scale dS K;  dK += scale dS^T q */
  ct_sgemm(FALSE, FALSE, 1, D, T, scale, dp, T, k, ld, 1.0f, dq, ld);
  ct_sgemm(TRUE, FALSE, T, D, 1, scale, dp, T, q, ld, 1.0f, dk, ld);
}

static void
backward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const RowJob *j = ctx;
  float *dp = j->scratch + (size_t) thread * j->T;
  for (size_t bh = begin; bh < end; bh++)
    backward_one(j, (int) (bh / j->H), (int) (bh % j->H), dp);
}

void
ct_attention_rows_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                           const float *att, const int *sel, int B, int T, int C, int H,
                           CtPrecision prec)
{
  RowJob j = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .qkv = qkv, .catt = att,
               .sel = sel, .T = T, .C = C, .H = H, .prec = prec };
  ct_parallel_for((size_t) B * H, 1, backward_range, &j);
}

/* attention.c: scaled dot-product attention over packed q|k|v, per head,
 * with an optional causal mask.  Products go through cblas_sgemm with
 * strided views into the packed buffer, so nothing is copied.
 *
 * The _rows variants take one query row per sequence (readout pruning:
 * a tower reads one row of its last block's output).  Both run the same
 * per-head code over R query rows starting at row i0: every row for the
 * whole attention, the selected one for the rows variants, so a selected
 * row gets exactly the whole attention's operations. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <math.h>
#include <string.h>

typedef struct {
  float *out, *att, *dqkv, *scratch;
  const float *qkv, *dout, *catt;
  const int *sel; /* (B) one query row a sequence, or NULL for all T */
  int T, C, H, causal;
  CtPrecision prec;
} AttJob;

/* Sequence b's query rows: R of them from row *i0; returns R. */
static int
query_rows(const AttJob *j, int b, int *i0)
{
  *i0 = j->sel ? j->sel[b] : 0;
  return j->sel ? 1 : j->T;
}

/* Offset of sequence b, head h in out / dout: (B, T, C), or (B, C) with sel. */
static size_t
out_offset(const AttJob *j, int b, int h)
{
  return (size_t) b * (j->sel ? 1 : j->T) * j->C + h * (j->C / j->H);
}

/* Sequence b, head h: scores, softmax, p·v. */
static void
forward_one(const AttJob *j, int b, int h)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C, i0;
  int R = query_rows(j, b, &i0);
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  const float *q = base + (size_t) i0 * ld + h * D; /* (R, D), ld 3C */
  const float *k = base + C + h * D;                /* (T, D), ld 3C */
  const float *v = base + 2 * C + h * D;
  float *p = j->att + ((size_t) b * j->H + h) * R * T; /* (R, T) */
  ct_sgemm(FALSE, TRUE, R, T, D, scale, q, ld, k, ld, 0.0f, p, T);
  ct_round(j->prec, p, (size_t) R * T);
  for (int r = 0; r < R; r++)
    ct_softmax_row(p + (size_t) r * T, j->causal ? i0 + r + 1 : T, T);
  ct_round(j->prec, p, (size_t) R * T);
  float *o = j->out + out_offset(j, b, h); /* (R, D) view, ld C */
  ct_sgemm(FALSE, FALSE, R, D, T, 1.0f, p, T, v, ld, 0.0f, o, C);
  for (int r = 0; r < R; r++)
    ct_round(j->prec, o + (size_t) r * C, D);
}

static void
forward_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const AttJob *j = ctx;
  for (size_t bh = begin; bh < end; bh++)
    forward_one(j, (int) (bh / j->H), (int) (bh % j->H));
}

static void
forward(AttJob *j, int B)
{
  CT_PROF_BEGIN(CT_PROF_ATTENTION);
  ct_parallel_for((size_t) B * j->H, 1, forward_range, j);
  CT_PROF_END();
}

void
ct_attention_forward(float *out, float *att, const float *qkv,
                     int B, int T, int C, int H, int causal, CtPrecision prec)
{
  AttJob j = { .out = out, .att = att, .qkv = qkv, .T = T, .C = C, .H = H, .causal = causal,
               .prec = prec };
  forward(&j, B);
}

void
ct_attention_rows_forward(float *out, float *att, const float *qkv, const int *sel, int B,
                          int T, int C, int H, int causal, CtPrecision prec)
{
  AttJob j = { .out = out, .att = att, .qkv = qkv, .sel = sel, .T = T, .C = C, .H = H,
               .causal = causal, .prec = prec };
  forward(&j, B);
}

/* Sequence b, head h, with dp: (R, T) scratch of this thread. */
static void
backward_one(const AttJob *j, int b, int h, float *dp)
{
  int T = j->T, C = j->C, D = C / j->H, ld = 3 * C, i0;
  int R = query_rows(j, b, &i0);
  float scale = 1.0f / sqrtf((float) D);
  const float *base = j->qkv + (size_t) b * T * ld;
  float *dbase = j->dqkv + (size_t) b * T * ld;
  const float *q = base + (size_t) i0 * ld + h * D;
  const float *k = base + C + h * D;
  const float *v = base + 2 * C + h * D;
  float *dq = dbase + (size_t) i0 * ld + h * D;
  float *dk = dbase + C + h * D;
  float *dv = dbase + 2 * C + h * D;
  const float *p = j->catt + ((size_t) b * j->H + h) * R * T; /* (R, T) */
  const float *dO = j->dout + out_offset(j, b, h);             /* (R, D), ld C */
  /* dV += P^T dO;  dP = dO V^T */
  ct_sgemm(TRUE, FALSE, T, D, R, 1.0f, p, T, dO, C, 1.0f, dv, ld);
  ct_sgemm(FALSE, TRUE, R, T, D, 1.0f, dO, C, v, ld, 0.0f, dp, T);
  ct_round(j->prec, dp, (size_t) R * T);
  /* softmax backward: dS = P * (dP - rowsum(dP * P)); masked P are 0 */
  for (int r = 0; r < R; r++)
    ct_softmax_row_backward(dp + (size_t) r * T, p + (size_t) r * T, T);
  ct_round(j->prec, dp, (size_t) R * T);
  /* dQ += scale dS K;  dK += scale dS^T Q */
  ct_sgemm(FALSE, FALSE, R, D, T, scale, dp, T, k, ld, 1.0f, dq, ld);
  ct_sgemm(TRUE, FALSE, T, D, R, scale, dp, T, q, ld, 1.0f, dk, ld);
}

static void
backward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const AttJob *j = ctx;
  float *dp = j->scratch + (size_t) thread * (j->sel ? 1 : j->T) * j->T;
  for (size_t bh = begin; bh < end; bh++)
    backward_one(j, (int) (bh / j->H), (int) (bh % j->H), dp);
}

static void
backward(AttJob *j, int B)
{
  CT_PROF_BEGIN(CT_PROF_ATTENTION);
  ct_parallel_for((size_t) B * j->H, 1, backward_range, j);
  CT_PROF_END();
}

void
ct_attention_backward(float *dqkv, float *scratch, const float *dout,
                      const float *qkv, const float *att, int B, int T, int C, int H,
                      CtPrecision prec)
{
  AttJob j = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .qkv = qkv, .catt = att, .T = T,
               .C = C, .H = H, .prec = prec };
  backward(&j, B);
}

void
ct_attention_rows_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                           const float *att, const int *sel, int B, int T, int C, int H,
                           CtPrecision prec)
{
  AttJob j = { .dqkv = dqkv, .scratch = scratch, .dout = dout, .qkv = qkv, .catt = att,
               .sel = sel, .T = T, .C = C, .H = H, .prec = prec };
  backward(&j, B);
}

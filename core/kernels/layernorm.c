/* layernorm.c: layer norm over the last dimension (eps 1e-5).
 *
 * Rows are independent, so they are shared out between the pool's
 * threads; each row's sums run in 16 float lanes (vec.h: element c in
 * lane c % 16, the lanes summed in a fixed tree), so the result is the
 * same on every CPU and at every thread count.  The gain and bias
 * gradients sum over rows: they are shared out by columns instead, each
 * column summed in row order. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/vec.h"
#include "base/profile-private.h"

#include <math.h>

#define CT_LN_EPS 1e-5f

typedef struct {
  float *out, *mean, *rstd, *din, *dw, *db;
  const float *in, *w, *b, *dout, *cmean, *crstd;
  int N, C;
} LnJob;

/* One row X: (C) normalised into Y: (C); its mean and 1/std. */
CT_CLONES static void
forward_row(float *y, float *mean, float *rstd, const float *x, const float *w,
            const float *b, int C)
{
  int full = C / 16 * 16, tail = C - full;
  float m = v16_row_sum(x, C) / (float) C;
  V16 vm = v16_set1(m), q = v16_set1(0.0f);
  for (int c = 0; c < full; c += 16) {
    V16 d = v16_load(x + c) - vm;
    q += d * d;
  }
  if (tail) {
    V16 d = v16_load_part(x + full, tail, m) - vm; /* zero beyond the row */
    q += d * d;
  }
  float r = 1.0f / sqrtf(v16_sum(q) / (float) C + CT_LN_EPS);
  V16 vr = v16_set1(r);
  for (int c = 0; c < full; c += 16)
    v16_store(y + c, (v16_load(x + c) - vm) * vr * v16_load(w + c) + v16_load(b + c));
  for (int c = full; c < C; c++)
    y[c] = (x[c] - m) * r * w[c] + b[c];
  *mean = m;
  *rstd = r;
}

static void
forward_rows(void *ctx, size_t begin, size_t end, int thread)
{
  const LnJob *j = ctx;
  for (size_t n = begin; n < end; n++)
    forward_row(j->out + n * j->C, j->mean + n, j->rstd + n, j->in + n * j->C, j->w, j->b,
                j->C);
}

void
ct_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                     const float *w, const float *b, int N, int C)
{
  CT_PROF_BEGIN(CT_PROF_LAYERNORM);
  LnJob j = { .out = out, .mean = mean, .rstd = rstd, .in = in, .w = w, .b = b, .C = C };
  ct_parallel_for((size_t) N, 16, forward_rows, &j);
  CT_PROF_END();
}

/* d input of one row, added into DX: (C). */
CT_CLONES static void
backward_row(float *dx, const float *dy, const float *x, float m, float r, const float *w,
             int C)
{
  int full = C / 16 * 16, tail = C - full;
  V16 vm = v16_set1(m), vr = v16_set1(r);
  /* the means of dxhat and of dxhat * xhat over the row */
  V16 s1 = v16_set1(0.0f), s2 = v16_set1(0.0f);
  for (int c = 0; c < full; c += 16) {
    V16 xhat = (v16_load(x + c) - vm) * vr;
    V16 dxhat = v16_load(dy + c) * v16_load(w + c);
    s1 += dxhat;
    s2 += dxhat * xhat;
  }
  if (tail) { /* dy is zero beyond the row, and so is dxhat */
    V16 xhat = (v16_load_part(x + full, tail, m) - vm) * vr;
    V16 dxhat = v16_load_part(dy + full, tail, 0.0f) * v16_load_part(w + full, tail, 0.0f);
    s1 += dxhat;
    s2 += dxhat * xhat;
  }
  float m1 = v16_sum(s1) / (float) C, m2 = v16_sum(s2) / (float) C;
  V16 vm1 = v16_set1(m1), vm2 = v16_set1(m2);
  for (int c = 0; c < full; c += 16) {
    V16 xhat = (v16_load(x + c) - vm) * vr;
    V16 d = vr * (v16_load(dy + c) * v16_load(w + c) - vm1 - xhat * vm2);
    v16_store(dx + c, v16_load(dx + c) + d);
  }
  for (int c = full; c < C; c++) {
    float xhat = (x[c] - m) * r;
    dx[c] += r * (dy[c] * w[c] - m1 - xhat * m2);
  }
}

static void
backward_rows(void *ctx, size_t begin, size_t end, int thread)
{
  const LnJob *j = ctx;
  for (size_t n = begin; n < end; n++)
    backward_row(j->din + n * j->C, j->dout + n * j->C, j->in + n * j->C, j->cmean[n],
                 j->crstd[n], j->w, j->C);
}

/* The gain and bias gradients of columns [C0, C0 + 16) (fewer at the end
 * of a row), summed over all rows in row order. */
CT_CLONES static void
param_grad_cols(const LnJob *j, int c0)
{
  int C = j->C, n = MIN(16, C - c0);
  V16 dw = j->dw ? v16_load_part(j->dw + c0, n, 0.0f) : v16_set1(0.0f);
  V16 db = j->db ? v16_load_part(j->db + c0, n, 0.0f) : v16_set1(0.0f);
  for (int r = 0; r < j->N; r++) {
    const float *x = j->in + (size_t) r * C + c0, *dy = j->dout + (size_t) r * C + c0;
    V16 vx = n == 16 ? v16_load(x) : v16_load_part(x, n, 0.0f);
    V16 vdy = n == 16 ? v16_load(dy) : v16_load_part(dy, n, 0.0f);
    dw += vdy * ((vx - v16_set1(j->cmean[r])) * v16_set1(j->crstd[r]));
    db += vdy;
  }
  if (j->dw)
    v16_store_part(j->dw + c0, dw, n);
  if (j->db)
    v16_store_part(j->db + c0, db, n);
}

static void
param_grad_range(void *ctx, size_t begin, size_t end, int thread)
{
  for (size_t k = begin; k < end; k++)
    param_grad_cols(ctx, (int) k * 16);
}

void
ct_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                      const float *in, const float *mean, const float *rstd,
                      const float *w, int N, int C)
{
  CT_PROF_BEGIN(CT_PROF_LAYERNORM);
  LnJob j = { .din = din, .dw = dw, .db = db, .dout = dout, .in = in, .cmean = mean,
              .crstd = rstd, .w = w, .N = N, .C = C };
  if (din)
    ct_parallel_for((size_t) N, 16, backward_rows, &j);
  if (dw || db)
    ct_parallel_for((size_t) (C + 15) / 16, 4, param_grad_range, &j);
  CT_PROF_END();
}

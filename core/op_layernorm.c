/* op_layernorm.c: layer norm over the last dimension (eps 1e-5). */
#include "config.h"

#include "ops.h"
#include "parallel.h"

#include <math.h>

#define CT_LN_EPS 1e-5

typedef struct {
  float *out, *mean, *rstd, *din, *dw, *db;
  const float *in, *w, *b, *dout, *cmean, *crstd;
  int C;
} LnJob;

static void
forward_rows(void *ctx, size_t begin, size_t end, int thread)
{
  const LnJob *j = ctx;
  int C = j->C;
  for (size_t n = begin; n < end; n++) {
    const float *x = j->in + n * C;
    float *y = j->out + n * C;
    double s = 0.0;
    for (int c = 0; c < C; c++)
      s += x[c];
    double m = s / C;
    double v = 0.0;
    for (int c = 0; c < C; c++) {
      double d = x[c] - m;
      v += d * d;
    }
    double r = 1.0 / sqrt(v / C + CT_LN_EPS);
    float mf = (float) m, rf = (float) r;
    for (int c = 0; c < C; c++)
      y[c] = (x[c] - mf) * rf * j->w[c] + j->b[c];
    j->mean[n] = mf;
    j->rstd[n] = rf;
  }
}

void
ct_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                     const float *w, const float *b, int N, int C)
{
  LnJob j = { .out = out, .mean = mean, .rstd = rstd, .in = in, .w = w, .b = b, .C = C };
  ct_parallel_for((size_t) N, 64, forward_rows, &j);
}

/* d input, row by row: rows are independent */
static void
backward_rows(void *ctx, size_t begin, size_t end, int thread)
{
  const LnJob *j = ctx;
  int C = j->C;
  for (size_t n = begin; n < end; n++) {
    const float *x = j->in + n * C;
    const float *dy = j->dout + n * C;
    float m = j->cmean[n], r = j->crstd[n];
    /* mean of dxhat and of dxhat * xhat over the row */
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < C; c++) {
      float xhat = (x[c] - m) * r;
      float dxhat = dy[c] * j->w[c];
      s1 += dxhat;
      s2 += dxhat * xhat;
    }
    float m1 = (float) (s1 / C), m2 = (float) (s2 / C);
    float *dx = j->din + n * C;
    for (int c = 0; c < C; c++) {
      float xhat = (x[c] - m) * r;
      dx[c] += r * (dy[c] * j->w[c] - m1 - xhat * m2);
    }
  }
}

void
ct_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                      const float *in, const float *mean, const float *rstd,
                      const float *w, int N, int C)
{
  if (din) {
    LnJob j = { .din = din, .dout = dout, .in = in, .cmean = mean, .crstd = rstd, .w = w,
                .C = C };
    ct_parallel_for((size_t) N, 64, backward_rows, &j);
  }
  /* the gain and bias gradients sum over rows: in row order, on one
   * thread, so that they do not depend on the thread count */
  if (!dw && !db)
    return;
  for (int n = 0; n < N; n++) {
    const float *x = in + (size_t) n * C;
    const float *dy = dout + (size_t) n * C;
    float m = mean[n], r = rstd[n];
    for (int c = 0; c < C; c++) {
      if (dw)
        dw[c] += dy[c] * ((x[c] - m) * r);
      if (db)
        db[c] += dy[c];
    }
  }
}

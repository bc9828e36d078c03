/* op_layernorm.c: layer norm over the last dimension (eps 1e-5). */
#include "config.h"

#include "ops.h"

#include <math.h>

#define CT_LN_EPS 1e-5

void
ct_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                     const float *w, const float *b, int N, int C)
{
  for (int n = 0; n < N; n++) {
    const float *x = in + (size_t) n * C;
    float *y = out + (size_t) n * C;
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
      y[c] = (x[c] - mf) * rf * w[c] + b[c];
    mean[n] = mf;
    rstd[n] = rf;
  }
}

void
ct_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                      const float *in, const float *mean, const float *rstd,
                      const float *w, int N, int C)
{
  for (int n = 0; n < N; n++) {
    const float *x = in + (size_t) n * C;
    const float *dy = dout + (size_t) n * C;
    float m = mean[n], r = rstd[n];
    /* mean of dxhat and of dxhat * xhat over the row */
    double s1 = 0.0, s2 = 0.0;
    for (int c = 0; c < C; c++) {
      float xhat = (x[c] - m) * r;
      float dxhat = dy[c] * w[c];
      s1 += dxhat;
      s2 += dxhat * xhat;
      if (dw)
        dw[c] += dy[c] * xhat;
      if (db)
        db[c] += dy[c];
    }
    if (!din)
      continue;
    float m1 = (float) (s1 / C), m2 = (float) (s2 / C);
    float *dx = din + (size_t) n * C;
    for (int c = 0; c < C; c++) {
      float xhat = (x[c] - m) * r;
      dx[c] += r * (dy[c] * w[c] - m1 - xhat * m2);
    }
  }
}

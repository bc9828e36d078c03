/* batchnorm.c: nn.BatchNorm2d (eps 1e-5, momentum 0.1) on rows (N, C),
 * N = B*H*W, one column a channel.
 *
 * Training mode normalises with the batch statistics (biased variance)
 * and, when the running buffers are given, updates them as PyTorch does:
 * r = (1 - momentum) r + momentum s, with the UNBIASED variance.  Eval
 * mode normalises with the running statistics.  Per-channel sums run in
 * double over the rows in order, each channel on one thread, so results
 * do not depend on the thread count. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <math.h>

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define CB 64 /* channels a sweep over the rows */

typedef struct {
  float *out, *mean, *rstd, *run_mean, *run_var, *din, *dw, *db;
  const float *in, *w, *b, *dout;
  int N, C, training;
} BnCtx;

static void
bn_forward_range(void *vctx, size_t c0, size_t c1, int thread)
{
  (void) thread;
  const BnCtx *x = vctx;
  size_t C = x->C, N = x->N;
  for (size_t cb = c0; cb < c1; cb += CB) {
    size_t ce = MIN(cb + CB, c1), nc = ce - cb;
    if (x->training) {
      double s[CB] = { 0 }, q[CB] = { 0 };
      for (size_t n = 0; n < N; n++) {
        const float *r = x->in + n * C + cb;
        for (size_t j = 0; j < nc; j++)
          s[j] += r[j];
      }
      for (size_t j = 0; j < nc; j++)
        s[j] /= (double) N;
      for (size_t n = 0; n < N; n++) {
        const float *r = x->in + n * C + cb;
        for (size_t j = 0; j < nc; j++) {
          double d = r[j] - s[j];
          q[j] += d * d;
        }
      }
      for (size_t j = 0; j < nc; j++) {
        size_t c = cb + j;
        double var = q[j] / (double) N;
        x->mean[c] = (float) s[j];
        x->rstd[c] = (float) (1.0 / sqrt(var + BN_EPS));
        if (x->run_mean) {
          double unbiased = N > 1 ? q[j] / (double) (N - 1) : var;
          x->run_mean[c] = (float) ((1 - BN_MOMENTUM) * x->run_mean[c] + BN_MOMENTUM * s[j]);
          x->run_var[c] = (float) ((1 - BN_MOMENTUM) * x->run_var[c] + BN_MOMENTUM * unbiased);
        }
      }
    } else {
      for (size_t c = cb; c < ce; c++) {
        x->mean[c] = x->run_mean[c];
        x->rstd[c] = (float) (1.0 / sqrt((double) x->run_var[c] + BN_EPS));
      }
    }
    float a[CB], k[CB];
    for (size_t j = 0; j < nc; j++) {
      size_t c = cb + j;
      a[j] = x->rstd[c] * x->w[c];            /* scale */
      k[j] = x->b[c] - x->mean[c] * a[j];     /* shift */
    }
    for (size_t n = 0; n < N; n++) {
      const float *r = x->in + n * C + cb;
      float *o = x->out + n * C + cb;
      for (size_t j = 0; j < nc; j++)
        o[j] = r[j] * a[j] + k[j];
    }
  }
}

void
ct_batchnorm_forward(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                     const float *in, const float *w, const float *b, int N, int C,
                     int training)
{
  CT_PROF_BEGIN(CT_PROF_BATCHNORM);
  BnCtx x = { .out = out, .mean = mean, .rstd = rstd, .run_mean = run_mean,
              .run_var = run_var, .in = in, .w = w, .b = b, .N = N, .C = C,
              .training = training };
  ct_parallel_for((size_t) C, MAX(1, 4096 / MAX(N, 1)), bn_forward_range, &x);
  CT_PROF_END();
}

static void
bn_backward_range(void *vctx, size_t c0, size_t c1, int thread)
{
  (void) thread;
  const BnCtx *x = vctx;
  size_t C = x->C, N = x->N;
  for (size_t cb = c0; cb < c1; cb += CB) {
    size_t nc = MIN(cb + CB, c1) - cb;
    double sd[CB] = { 0 }, sdx[CB] = { 0 };
    for (size_t n = 0; n < N; n++) {
      const float *r = x->in + n * C + cb, *g = x->dout + n * C + cb;
      for (size_t j = 0; j < nc; j++) {
        double xh = ((double) r[j] - x->mean[cb + j]) * x->rstd[cb + j];
        sd[j] += g[j];
        sdx[j] += g[j] * xh;
      }
    }
    for (size_t j = 0; j < nc; j++) {
      if (x->dw)
        x->dw[cb + j] += (float) sdx[j];
      if (x->db)
        x->db[cb + j] += (float) sd[j];
    }
    if (!x->din)
      continue;
    float a[CB], mu[CB], rs[CB], kd[CB], kx[CB];
    for (size_t j = 0; j < nc; j++) {
      size_t c = cb + j;
      a[j] = x->w[c] * x->rstd[c];
      mu[j] = x->mean[c];
      rs[j] = x->rstd[c];
      /* training: din = a (dy - mean dy - xhat mean(dy xhat)) */
      kd[j] = x->training ? (float) (sd[j] / (double) N) : 0.0f;
      kx[j] = x->training ? (float) (sdx[j] / (double) N) : 0.0f;
    }
    for (size_t n = 0; n < N; n++) {
      const float *r = x->in + n * C + cb, *g = x->dout + n * C + cb;
      float *d = x->din + n * C + cb;
      for (size_t j = 0; j < nc; j++) {
        float xh = (r[j] - mu[j]) * rs[j];
        d[j] += a[j] * (g[j] - kd[j] - xh * kx[j]);
      }
    }
  }
}

void
ct_batchnorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                      const float *mean, const float *rstd, const float *w, int N, int C,
                      int training)
{
  CT_PROF_BEGIN(CT_PROF_BATCHNORM);
  BnCtx x = { .din = din, .dw = dw, .db = db, .dout = dout, .in = in, .mean = (float *) mean,
              .rstd = (float *) rstd, .w = w, .N = N, .C = C, .training = training };
  ct_parallel_for((size_t) C, MAX(1, 4096 / MAX(N, 1)), bn_backward_range, &x);
  CT_PROF_END();
}

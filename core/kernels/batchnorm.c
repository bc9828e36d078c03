/* batchnorm.c: nn.BatchNorm2d (eps 1e-5, momentum 0.1) on rows (N, C),
 * N = B*H*W, one column a channel, with the ReLU that follows it (and the
 * residual added before that ReLU) fused into the same pass.
 *
 * Training mode normalises with the batch statistics (biased variance)
 * and, when the running buffers are given, updates them as PyTorch does:
 * r = (1 - momentum) r + momentum s, with the UNBIASED variance.  Eval
 * mode normalises with the running statistics.  The statistics take one
 * pass: per channel, the sums of x - x0 and of its square in double (x0
 * the channel's first value, so that a large mean cancels before it is
 * squared), over the rows in order, each channel on one thread, so
 * results do not depend on the thread count.  The lanes are GCC's generic
 * vectors, the same IEEE operations lane by lane on any target (vec.h),
 * built once per target (CT_CLONES).
 *
 * The fused ReLU's backward needs no saved output: the kernel recomputes
 * bn(x) = x a + k with the forward's very operations and masks the
 * gradient where it is not positive. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"
#include "base/vec.h"

#include <math.h>

#define BN_EPS 1e-5
#define BN_MOMENTUM 0.1
#define CB 64 /* channels a sweep over the rows */
#define L 8   /* lanes of a vector */

typedef float F8 __attribute__((vector_size(32)));
typedef double D8 __attribute__((vector_size(64)));
typedef int I8 __attribute__((vector_size(32)));

/* A where MASK (a comparison's all-ones lanes), else +0. */
CT_INLINE F8
f8_where(I8 mask, F8 a)
{
  return (F8) ((I8) a & mask);
}

CT_INLINE F8
f8_load(const float *x)
{
  F8 r;
  memcpy(&r, x, sizeof r);
  return r;
}

CT_INLINE void
f8_store(float *x, F8 a)
{
  memcpy(x, &a, sizeof a);
}

CT_INLINE D8
d8_of(F8 a)
{
  return __builtin_convertvector(a, D8);
}

typedef struct {
  float *out, *mean, *rstd, *run_mean, *run_var, *din, *dw, *db;
  const float *in, *w, *b, *dout, *res;
  int N, C, training, relu, apply; /* apply: mean and rstd given */
} BnCtx;

/* The scale a and shift k of channels [cb, cb + nc): out = x a + k.  The
 * forward and the fused ReLU's backward compute them alike. */
static inline void
scale_shift(const BnCtx *x, size_t cb, size_t nc, float *a, float *k)
{
  for (size_t j = 0; j < nc; j++) {
    size_t c = cb + j;
    a[j] = x->rstd[c] * x->w[c];
    k[j] = x->b[c] - x->mean[c] * a[j];
  }
}

/* mean and rstd (and the running statistics) of channels [cb, cb + nc). */
CT_CLONES static void
bn_stats(const BnCtx *x, size_t cb, size_t nc)
{
  size_t C = x->C, N = x->N, nv = nc / L * L;
  D8 s[CB / L], q[CB / L], z[CB / L], dz = { 0 };
  double st[L], qt[L], zt[L];
  for (size_t j = 0; j < nv; j += L) {
    z[j / L] = d8_of(f8_load(x->in + cb + j));
    s[j / L] = q[j / L] = dz;
  }
  for (size_t j = nv; j < nc; j++) {
    zt[j - nv] = x->in[cb + j];
    st[j - nv] = qt[j - nv] = 0;
  }
  for (size_t n = 0; n < N; n++) {
    const float *r = x->in + n * C + cb;
    for (size_t j = 0; j < nv; j += L) {
      D8 d = d8_of(f8_load(r + j)) - z[j / L];
      s[j / L] += d;
      q[j / L] += d * d;
    }
    for (size_t j = nv; j < nc; j++) {
      double d = (double) r[j] - zt[j - nv];
      st[j - nv] += d;
      qt[j - nv] += d * d;
    }
  }
  for (size_t j = 0; j < nc; j++) {
    size_t c = cb + j;
    double sj = j < nv ? s[j / L][j % L] : st[j - nv];
    double qj = j < nv ? q[j / L][j % L] : qt[j - nv];
    double zj = j < nv ? z[j / L][j % L] : zt[j - nv];
    double m = sj / (double) N;                      /* mean of x - x0 */
    double ss = MAX(qj - sj * m, 0.0);               /* sum of squared deviations */
    double var = ss / (double) N;
    x->mean[c] = (float) (zj + m);
    x->rstd[c] = (float) (1.0 / sqrt(var + BN_EPS));
    if (x->run_mean) {
      double unbiased = N > 1 ? ss / (double) (N - 1) : var;
      x->run_mean[c] = (float) ((1 - BN_MOMENTUM) * x->run_mean[c] + BN_MOMENTUM * (zj + m));
      x->run_var[c] = (float) ((1 - BN_MOMENTUM) * x->run_var[c] + BN_MOMENTUM * unbiased);
    }
  }
}

/* out = [relu](x a + k [+ res]) over channels [cb, cb + nc). */
CT_CLONES static void
bn_apply(const BnCtx *x, size_t cb, size_t nc, const float *a, const float *k)
{
  size_t C = x->C, N = x->N, nv = nc / L * L;
  F8 av[CB / L], kv[CB / L];
  for (size_t j = 0; j < nv; j += L) {
    av[j / L] = f8_load(a + j);
    kv[j / L] = f8_load(k + j);
  }
  F8 zero = { 0 };
  for (size_t n = 0; n < N; n++) {
    const float *r = x->in + n * C + cb, *e = x->res ? x->res + n * C + cb : NULL;
    float *o = x->out + n * C + cb;
    for (size_t j = 0; j < nv; j += L) {
      F8 v = f8_load(r + j) * av[j / L] + kv[j / L];
      if (e)
        v += f8_load(e + j);
      if (x->relu)
        v = f8_where(v > zero, v);
      f8_store(o + j, v);
    }
    for (size_t j = nv; j < nc; j++) {
      float v = r[j] * a[j] + k[j];
      if (e)
        v += e[j];
      if (x->relu)
        v = v > 0.0f ? v : 0.0f;
      o[j] = v;
    }
  }
}

static void
bn_forward_range(void *vctx, size_t c0, size_t c1, int thread)
{
  (void) thread;
  const BnCtx *x = vctx;
  for (size_t cb = c0; cb < c1; cb += CB) {
    size_t ce = MIN(cb + CB, c1), nc = ce - cb;
    if (x->apply) {
      /* the statistics are given */
    } else if (x->training) {
      bn_stats(x, cb, nc);
    } else {
      for (size_t c = cb; c < ce; c++) {
        x->mean[c] = x->run_mean[c];
        x->rstd[c] = (float) (1.0 / sqrt((double) x->run_var[c] + BN_EPS));
      }
    }
    float a[CB], k[CB];
    scale_shift(x, cb, nc, a, k);
    bn_apply(x, cb, nc, a, k);
  }
}

void
ct_batchnorm_relu_forward(float *out, float *mean, float *rstd, float *run_mean,
                          float *run_var, const float *in, const float *w, const float *b,
                          const float *res, int relu, int N, int C, int training)
{
  CT_PROF_BEGIN(CT_PROF_BATCHNORM);
  BnCtx x = { .out = out, .mean = mean, .rstd = rstd, .run_mean = run_mean,
              .run_var = run_var, .in = in, .w = w, .b = b, .res = res, .N = N, .C = C,
              .training = training, .relu = relu };
  ct_parallel_for((size_t) C, MAX(1, 4096 / MAX(N, 1)), bn_forward_range, &x);
  CT_PROF_END();
}

void
ct_batchnorm_relu_apply(float *out, const float *mean, const float *rstd, const float *in,
                        const float *w, const float *b, const float *res, int relu, int N,
                        int C)
{
  CT_PROF_BEGIN(CT_PROF_BATCHNORM);
  BnCtx x = { .out = out, .mean = (float *) mean, .rstd = (float *) rstd, .in = in, .w = w,
              .b = b, .res = res, .N = N, .C = C, .relu = relu, .apply = 1 };
  ct_parallel_for((size_t) C, MAX(1, 4096 / MAX(N, 1)), bn_forward_range, &x);
  CT_PROF_END();
}

void
ct_batchnorm_forward(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                     const float *in, const float *w, const float *b, int N, int C,
                     int training)
{
  ct_batchnorm_relu_forward(out, mean, rstd, run_mean, run_var, in, w, b, NULL, 0, N, C,
                            training);
}

/* The gradient's sums over the rows, in double: sd of g, sdx of g xhat,
 * g masked by the fused ReLU when x->relu. */
CT_CLONES static void
bn_grad_sums(const BnCtx *x, size_t cb, size_t nc, const float *a, const float *k, double *sd,
             double *sdx)
{
  size_t C = x->C, N = x->N, nv = nc / L * L;
  D8 s[CB / L], q[CB / L], mu[CB / L], rs[CB / L], dz = { 0 };
  F8 av[CB / L], kv[CB / L], zero = { 0 };
  for (size_t j = 0; j < nv; j += L) {
    mu[j / L] = d8_of(f8_load(x->mean + cb + j));
    rs[j / L] = d8_of(f8_load(x->rstd + cb + j));
    av[j / L] = f8_load(a + j);
    kv[j / L] = f8_load(k + j);
    s[j / L] = q[j / L] = dz;
  }
  for (size_t j = nv; j < nc; j++)
    sd[j] = sdx[j] = 0;
  for (size_t n = 0; n < N; n++) {
    const float *r = x->in + n * C + cb, *g = x->dout + n * C + cb;
    for (size_t j = 0; j < nv; j += L) {
      F8 rv = f8_load(r + j), gv = f8_load(g + j);
      if (x->relu)
        gv = f8_where(rv * av[j / L] + kv[j / L] > zero, gv);
      D8 gd = d8_of(gv);
      s[j / L] += gd;
      q[j / L] += gd * ((d8_of(rv) - mu[j / L]) * rs[j / L]);
    }
    for (size_t j = nv; j < nc; j++) {
      float gj = g[j];
      if (x->relu && !(r[j] * a[j] + k[j] > 0.0f))
        gj = 0.0f;
      double xh = ((double) r[j] - x->mean[cb + j]) * x->rstd[cb + j];
      sd[j] += gj;
      sdx[j] += gj * xh;
    }
  }
  for (size_t j = 0; j < nv; j++) {
    sd[j] = s[j / L][j % L];
    sdx[j] = q[j / L][j % L];
  }
}

/* din += a (g - kd - xhat kx) over channels [cb, cb + nc). */
CT_CLONES static void
bn_grad_apply(const BnCtx *x, size_t cb, size_t nc, const float *a, const float *k,
              const float *kd, const float *kx)
{
  size_t C = x->C, N = x->N, nv = nc / L * L;
  F8 av[CB / L], kv[CB / L], mu[CB / L], rs[CB / L], sc[CB / L], kdv[CB / L], kxv[CB / L];
  F8 zero = { 0 };
  for (size_t j = 0; j < nv; j += L) {
    av[j / L] = f8_load(a + j);
    kv[j / L] = f8_load(k + j);
    mu[j / L] = f8_load(x->mean + cb + j);
    rs[j / L] = f8_load(x->rstd + cb + j);
    kdv[j / L] = f8_load(kd + j);
    kxv[j / L] = f8_load(kx + j);
    for (int l = 0; l < L; l++)
      sc[j / L][l] = x->w[cb + j + l] * x->rstd[cb + j + l];
  }
  for (size_t n = 0; n < N; n++) {
    const float *r = x->in + n * C + cb, *g = x->dout + n * C + cb;
    float *d = x->din + n * C + cb;
    for (size_t j = 0; j < nv; j += L) {
      F8 rv = f8_load(r + j), gv = f8_load(g + j);
      if (x->relu)
        gv = f8_where(rv * av[j / L] + kv[j / L] > zero, gv);
      F8 xh = (rv - mu[j / L]) * rs[j / L];
      f8_store(d + j, f8_load(d + j) + sc[j / L] * (gv - kdv[j / L] - xh * kxv[j / L]));
    }
    for (size_t j = nv; j < nc; j++) {
      float gj = g[j];
      if (x->relu && !(r[j] * a[j] + k[j] > 0.0f))
        gj = 0.0f;
      float xh = (r[j] - x->mean[cb + j]) * x->rstd[cb + j];
      d[j] += x->w[cb + j] * x->rstd[cb + j] * (gj - kd[j] - xh * kx[j]);
    }
  }
}

static void
bn_backward_range(void *vctx, size_t c0, size_t c1, int thread)
{
  (void) thread;
  const BnCtx *x = vctx;
  for (size_t cb = c0; cb < c1; cb += CB) {
    size_t nc = MIN(cb + CB, c1) - cb;
    float a[CB] = { 0 }, k[CB] = { 0 }; /* read by the fused ReLU only */
    if (x->relu)
      scale_shift(x, cb, nc, a, k);
    double sd[CB], sdx[CB];
    bn_grad_sums(x, cb, nc, a, k, sd, sdx);
    for (size_t j = 0; j < nc; j++) {
      if (x->dw)
        x->dw[cb + j] += (float) sdx[j];
      if (x->db)
        x->db[cb + j] += (float) sd[j];
    }
    if (!x->din)
      continue;
    /* training: din = w rstd (dy - mean dy - xhat mean(dy xhat)) */
    float kd[CB], kx[CB];
    for (size_t j = 0; j < nc; j++) {
      kd[j] = x->training ? (float) (sd[j] / (double) x->N) : 0.0f;
      kx[j] = x->training ? (float) (sdx[j] / (double) x->N) : 0.0f;
    }
    bn_grad_apply(x, cb, nc, a, k, kd, kx);
  }
}

void
ct_batchnorm_relu_backward(float *din, float *dw, float *db, const float *dout,
                           const float *in, const float *mean, const float *rstd,
                           const float *w, const float *b, int relu, int N, int C, int training)
{
  CT_PROF_BEGIN(CT_PROF_BATCHNORM);
  BnCtx x = { .din = din, .dw = dw, .db = db, .dout = dout, .in = in, .mean = (float *) mean,
              .rstd = (float *) rstd, .w = w, .b = b, .N = N, .C = C, .training = training,
              .relu = relu };
  ct_parallel_for((size_t) C, MAX(1, 4096 / MAX(N, 1)), bn_backward_range, &x);
  CT_PROF_END();
}

void
ct_batchnorm_backward(float *din, float *dw, float *db, const float *dout, const float *in,
                      const float *mean, const float *rstd, const float *w, int N, int C,
                      int training)
{
  ct_batchnorm_relu_backward(din, dw, db, dout, in, mean, rstd, w, NULL, 0, N, C, training);
}

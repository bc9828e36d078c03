/* pool.c: average pooling with kernel = stride = s (nn.AvgPool2d(s)),
 * on rows (B, H, W, C); the output is (B, H/s, W/s, C), the remainder rows
 * and columns dropped as PyTorch drops them.  Both directions gather, one
 * output (forward) or input (backward) image row per item, so they run on
 * the pool with results independent of the thread count. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <string.h>

typedef struct {
  float *out;
  const float *in;
  int H, W, C, s;
} PoolCtx;

static void
pool_rows(void *vctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const PoolCtx *x = vctx;
  int Ho = x->H / x->s, Wo = x->W / x->s, C = x->C, s = x->s;
  float inv = 1.0f / (float) (s * s);
  for (size_t i = i0; i < i1; i++) {
    int b = (int) (i / Ho), oy = (int) (i % Ho);
    for (int ox = 0; ox < Wo; ox++) {
      float *o = x->out + (((size_t) b * Ho + oy) * Wo + ox) * C;
      for (int c = 0; c < C; c++)
        o[c] = 0.0f;
      for (int ky = 0; ky < s; ky++)
        for (int kx = 0; kx < s; kx++) {
          const float *p = x->in + (((size_t) b * x->H + oy * s + ky) * x->W + ox * s + kx) * C;
          for (int c = 0; c < C; c++)
            o[c] += p[c];
        }
      for (int c = 0; c < C; c++)
        o[c] *= inv;
    }
  }
}

void
ct_avgpool_forward(float *out, const float *in, int B, int H, int W, int C, int s)
{
  CT_PROF_BEGIN(CT_PROF_POOL);
  PoolCtx x = { out, in, H, W, C, s };
  ct_parallel_for((size_t) B * (H / s), 2, pool_rows, &x);
  CT_PROF_END();
}

typedef struct {
  float *din;
  const float *dout;
  int H, W, C, s;
} UnpoolCtx;

static void
unpool_rows(void *vctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const UnpoolCtx *x = vctx;
  int Ho = x->H / x->s, Wo = x->W / x->s, C = x->C, s = x->s;
  float inv = 1.0f / (float) (s * s);
  for (size_t i = i0; i < i1; i++) {
    int b = (int) (i / x->H), y = (int) (i % x->H);
    if (y / s >= Ho)
      continue;
    for (int xx = 0; xx < Wo * s; xx++) {
      float *d = x->din + (((size_t) b * x->H + y) * x->W + xx) * C;
      const float *g = x->dout + (((size_t) b * Ho + y / s) * Wo + xx / s) * C;
      for (int c = 0; c < C; c++)
        d[c] += g[c] * inv;
    }
  }
}

void
ct_avgpool_backward(float *din, const float *dout, int B, int H, int W, int C, int s)
{
  CT_PROF_BEGIN(CT_PROF_POOL);
  UnpoolCtx x = { din, dout, H, W, C, s };
  ct_parallel_for((size_t) B * H, 2, unpool_rows, &x);
  CT_PROF_END();
}

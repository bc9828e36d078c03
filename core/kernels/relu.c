/* relu.c: ReLU on the pool; element-wise, so any split gives the same
 * bits. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

typedef struct {
  float *d;
  const float *a;
} ReluCtx;

static void
relu_range(void *vctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const ReluCtx *x = vctx;
  for (size_t i = i0; i < i1; i++)
    x->d[i] = x->a[i] > 0.0f ? x->a[i] : 0.0f;
}

void
ct_relu_forward(float *out, const float *in, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_RELU);
  ReluCtx x = { out, in };
  ct_parallel_for(n, 1 << 14, relu_range, &x);
  CT_PROF_END();
}

static void
relu_mask_range(void *vctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const ReluCtx *x = vctx;
  for (size_t i = i0; i < i1; i++)
    x->d[i] = x->a[i] > 0.0f ? x->d[i] : 0.0f;
}

void
ct_relu_backward(float *d, const float *out, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_RELU);
  ReluCtx x = { d, out };
  ct_parallel_for(n, 1 << 14, relu_mask_range, &x);
  CT_PROF_END();
}

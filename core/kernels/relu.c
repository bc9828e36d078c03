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

/* ---------------------------------------------------------------- mask bits */

typedef struct {
  float *d;
  const float *y;
  uint8_t *bits;
  size_t n;
} BitsCtx;

/* Bytes [b0, b1) of the mask: elements [8 b0, 8 b1). */
static void
bits_set_range(void *vctx, size_t b0, size_t b1, int thread)
{
  (void) thread;
  const BitsCtx *x = vctx;
  for (size_t b = b0; b < b1; b++) {
    size_t e = 8 * b + 8 < x->n ? 8 * b + 8 : x->n;
    unsigned v = 0;
    for (size_t i = 8 * b; i < e; i++)
      v |= (unsigned) (x->y[i] > 0.0f) << (i - 8 * b);
    x->bits[b] = (uint8_t) v;
  }
}

void
ct_relu_mask_bits(uint8_t *bits, const float *y, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_RELU);
  BitsCtx x = { NULL, y, bits, n };
  ct_parallel_for((n + 7) / 8, 1 << 11, bits_set_range, &x);
  CT_PROF_END();
}

static void
bits_mask_range(void *vctx, size_t b0, size_t b1, int thread)
{
  (void) thread;
  const BitsCtx *x = vctx;
  for (size_t b = b0; b < b1; b++) {
    size_t e = 8 * b + 8 < x->n ? 8 * b + 8 : x->n;
    unsigned v = x->bits[b];
    for (size_t i = 8 * b; i < e; i++)
      if (!((v >> (i - 8 * b)) & 1u))
        x->d[i] = 0.0f;
  }
}

void
ct_relu_backward_bits(float *d, const uint8_t *bits, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_RELU);
  BitsCtx x = { d, NULL, (uint8_t *) bits, n };
  ct_parallel_for((n + 7) / 8, 1 << 11, bits_mask_range, &x);
  CT_PROF_END();
}

/* elementwise.c: the residual add, products by a slope, and buffers
 * cleared, on the pool; copies and scaling. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <string.h>

typedef struct {
  float *acc;
  const float *x;
} AddJob;

static void
add_range(void *ctx, size_t begin, size_t end, int thread)
{
  const AddJob *j = ctx;
  for (size_t i = begin; i < end; i++)
    j->acc[i] += j->x[i];
}

void
ct_add_inplace(float *acc, const float *x, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  AddJob j = { .acc = acc, .x = x };
  ct_parallel_for(n, 65536, add_range, &j);
  CT_PROF_END();
}

static void
mul_range(void *ctx, size_t begin, size_t end, int thread)
{
  const AddJob *j = ctx;
  for (size_t i = begin; i < end; i++)
    j->acc[i] *= j->x[i];
}

void
ct_mul_inplace(float *acc, const float *x, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  AddJob j = { .acc = acc, .x = x };
  ct_parallel_for(n, 65536, mul_range, &j);
  CT_PROF_END();
}

/* Floats a task of ct_zero clears at once (64 KiB). */
#define CT_ZERO_CHUNK 16384

static void
zero_range(void *ctx, size_t begin, size_t end, int thread)
{
  float *x = ctx;
  memset(x + begin * CT_ZERO_CHUNK, 0, sizeof(float) * (end - begin) * CT_ZERO_CHUNK);
}

void
ct_zero(float *x, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  size_t chunks = n / CT_ZERO_CHUNK;
  ct_parallel_for(chunks, 4, zero_range, x);
  memset(x + chunks * CT_ZERO_CHUNK, 0, sizeof(float) * (n % CT_ZERO_CHUNK));
  CT_PROF_END();
}

void
ct_copy(float *dst, const float *src, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  memcpy(dst, src, sizeof(float) * n);
  CT_PROF_END();
}

void
ct_scale(float *x, float s, size_t n)
{
  if (s == 1.0f)
    return;
  CT_PROF_BEGIN(CT_PROF_ELEMENTWISE);
  for (size_t i = 0; i < n; i++)
    x[i] *= s;
  CT_PROF_END();
}

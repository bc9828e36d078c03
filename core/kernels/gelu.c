/* gelu.c: QuickGELU, x * sigmoid(1.702 x), and the vectorised exp
 * behind it and softmax. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/vmath.h"
#include "base/profile-private.h"

#include <math.h>

#define CT_QGELU_K 1.702f

typedef struct {
  float *out;
  const float *in, *dout;
} EwJob;

/* One algorithm, three widths: each element's value is the same on every
 * path (vmath.h's exp, then the same operations in the same order). */
static inline float
gelu1(float x)
{
  float e = ct_exp_scalar(-CT_QGELU_K * x);
  return x / (1.0f + e);
}

static inline float
dgelu1(float dy, float x)
{
  float s = 1.0f / (1.0f + ct_exp_scalar(-CT_QGELU_K * x));
  return dy * (s + CT_QGELU_K * x * s * (1.0f - s));
}

__attribute__((target("avx512f"))) static size_t
gelu_avx512(float *out, const float *in, size_t n)
{
  size_t i = 0;
  const __m512 k = _mm512_set1_ps(-CT_QGELU_K), one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(in + i);
    __m512 e = ct_exp_avx512(_mm512_mul_ps(k, x));
    _mm512_storeu_ps(out + i, _mm512_div_ps(x, _mm512_add_ps(one, e)));
  }
  return i;
}

__attribute__((target("avx2,fma"))) static size_t
gelu_avx2(float *out, const float *in, size_t n)
{
  size_t i = 0;
  const __m256 k = _mm256_set1_ps(-CT_QGELU_K), one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    __m256 e = ct_exp_avx2(_mm256_mul_ps(k, x));
    _mm256_storeu_ps(out + i, _mm256_div_ps(x, _mm256_add_ps(one, e)));
  }
  return i;
}

/* QuickGELU and its derivative at once: the bits of gelu1, and of dgelu1
 * as dy * slope. */
static inline void
gelu_slope1(float *y, float *slope, float x)
{
  float e = ct_exp_scalar(-CT_QGELU_K * x);
  float s = 1.0f / (1.0f + e);
  *y = x / (1.0f + e);
  *slope = s + CT_QGELU_K * x * s * (1.0f - s);
}

__attribute__((target("avx512f"))) static size_t
gelu_slope_avx512(float *out, float *slope, const float *in, size_t n)
{
  size_t i = 0;
  const __m512 k = _mm512_set1_ps(CT_QGELU_K), nk = _mm512_set1_ps(-CT_QGELU_K);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(in + i);
    __m512 d = _mm512_add_ps(one, ct_exp_avx512(_mm512_mul_ps(nk, x)));
    __m512 s = _mm512_div_ps(one, d);
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(k, x), s), _mm512_sub_ps(one, s));
    _mm512_storeu_ps(out + i, _mm512_div_ps(x, d));
    _mm512_storeu_ps(slope + i, _mm512_add_ps(s, t));
  }
  return i;
}

__attribute__((target("avx2,fma"))) static size_t
gelu_slope_avx2(float *out, float *slope, const float *in, size_t n)
{
  size_t i = 0;
  const __m256 k = _mm256_set1_ps(CT_QGELU_K), nk = _mm256_set1_ps(-CT_QGELU_K);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    __m256 d = _mm256_add_ps(one, ct_exp_avx2(_mm256_mul_ps(nk, x)));
    __m256 s = _mm256_div_ps(one, d);
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(k, x), s), _mm256_sub_ps(one, s));
    _mm256_storeu_ps(out + i, _mm256_div_ps(x, d));
    _mm256_storeu_ps(slope + i, _mm256_add_ps(s, t));
  }
  return i;
}

__attribute__((target("avx512f"))) static size_t
dgelu_avx512(float *din, const float *dout, const float *in, size_t n)
{
  size_t i = 0;
  const __m512 k = _mm512_set1_ps(CT_QGELU_K), nk = _mm512_set1_ps(-CT_QGELU_K);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    __m512 x = _mm512_loadu_ps(in + i);
    __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, ct_exp_avx512(_mm512_mul_ps(nk, x))));
    __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(k, x), s), _mm512_sub_ps(one, s));
    _mm512_storeu_ps(din + i, _mm512_mul_ps(_mm512_loadu_ps(dout + i), _mm512_add_ps(s, t)));
  }
  return i;
}

__attribute__((target("avx2,fma"))) static size_t
dgelu_avx2(float *din, const float *dout, const float *in, size_t n)
{
  size_t i = 0;
  const __m256 k = _mm256_set1_ps(CT_QGELU_K), nk = _mm256_set1_ps(-CT_QGELU_K);
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, ct_exp_avx2(_mm256_mul_ps(nk, x))));
    __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(k, x), s), _mm256_sub_ps(one, s));
    _mm256_storeu_ps(din + i, _mm256_mul_ps(_mm256_loadu_ps(dout + i), _mm256_add_ps(s, t)));
  }
  return i;
}

static void
gelu_forward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const EwJob *j = ctx;
  size_t n = end - begin, i = 0;
  int level = ct_vmath_level();
  if (level == 2)
    i = gelu_avx512(j->out + begin, j->in + begin, n);
  else if (level == 1)
    i = gelu_avx2(j->out + begin, j->in + begin, n);
  for (; i < n; i++)
    j->out[begin + i] = gelu1(j->in[begin + i]);
}

void
ct_quickgelu_forward(float *out, const float *in, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_GELU);
  EwJob j = { .out = out, .in = in };
  ct_parallel_for(n, 16384, gelu_forward_range, &j);
  CT_PROF_END();
}

static void
gelu_backward_range(void *ctx, size_t begin, size_t end, int thread)
{
  const EwJob *j = ctx;
  size_t n = end - begin, i = 0;
  int level = ct_vmath_level();
  if (level == 2)
    i = dgelu_avx512(j->out + begin, j->dout + begin, j->in + begin, n);
  else if (level == 1)
    i = dgelu_avx2(j->out + begin, j->dout + begin, j->in + begin, n);
  for (; i < n; i++)
    j->out[begin + i] = dgelu1(j->dout[begin + i], j->in[begin + i]);
}

void
ct_quickgelu_backward(float *din, const float *dout, const float *in, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_GELU);
  EwJob j = { .out = din, .in = in, .dout = dout };
  ct_parallel_for(n, 16384, gelu_backward_range, &j);
  CT_PROF_END();
}

typedef struct {
  float *out, *slope;
  const float *in;
} SlopeJob;

static void
gelu_slope_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const SlopeJob *j = ctx;
  size_t n = end - begin, i = 0;
  int level = ct_vmath_level();
  if (level == 2)
    i = gelu_slope_avx512(j->out + begin, j->slope + begin, j->in + begin, n);
  else if (level == 1)
    i = gelu_slope_avx2(j->out + begin, j->slope + begin, j->in + begin, n);
  for (; i < n; i++)
    gelu_slope1(&j->out[begin + i], &j->slope[begin + i], j->in[begin + i]);
}

void
ct_quickgelu_forward_slope(float *out, float *slope, const float *in, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_GELU);
  SlopeJob j = { .out = out, .slope = slope, .in = in };
  ct_parallel_for(n, 16384, gelu_slope_range, &j);
  CT_PROF_END();
}

void
ct_quickgelu_backward_slope(float *d, const float *slope, size_t n)
{
  CT_PROF_BEGIN(CT_PROF_GELU);
  ct_mul_inplace(d, slope, n);
  CT_PROF_END();
}

/* ---------------------------------------------------------------- exp */

__attribute__((target("avx512f"))) static size_t
exp_avx512(float *x, float shift, size_t n)
{
  size_t i = 0;
  const __m512 s = _mm512_set1_ps(shift);
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, ct_exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)));
  return i;
}

__attribute__((target("avx2,fma"))) static size_t
exp_avx2(float *x, float shift, size_t n)
{
  size_t i = 0;
  const __m256 s = _mm256_set1_ps(shift);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, ct_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
  return i;
}

void
ct_exp_shifted(float *x, float shift, size_t n)
{
  int level = ct_vmath_level();
  size_t i = level == 2 ? exp_avx512(x, shift, n) : level == 1 ? exp_avx2(x, shift, n) : 0;
  for (; i < n; i++)
    x[i] = ct_exp_scalar(x[i] - shift);
}

/* ---------------------------------------------------------------- dispatch */

static int vmath_forced = -1;

int
ct_vmath_level(void)
{
  static int level = -1;
  if (vmath_forced >= 0)
    return vmath_forced;
  if (level < 0) {
    __builtin_cpu_init();
    level = __builtin_cpu_supports("avx512f")                                   ? 2
            : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                              : 0;
  }
  return level;
}

void
ct_vmath_force(int level)
{
  vmath_forced = level;
}

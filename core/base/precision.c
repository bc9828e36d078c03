/* precision.c: float32 <-> bf16 / IEEE fp16 rounding and packing, with an
 * F16C path for fp16. */
#include "config.h"

#include "base/precision.h"
#include "base/parallel.h"

#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <string.h>

static int force_scalar;

/* ---------------------------------------------------------------- scalar */

uint16_t
ct_fp16_from_float(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) /* NaN: quiet, top mantissa bits kept, as F16C */
    return (uint16_t) (sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) /* 65520 and up round to infinity */
    return (uint16_t) (sign | 0x7c00u);
  if (a >= 0x38800000u) { /* a normal half: round the 13 dropped bits to even */
    a += 0xfffu + ((a >> 13) & 1u);
    return (uint16_t) (sign | ((a - 0x38000000u) >> 13));
  }
  /* subnormal half (or zero): units of 2^-24, the product is exact */
  float s;
  memcpy(&s, &a, sizeof s);
  return (uint16_t) (sign | (uint32_t) nearbyintf(s * 16777216.0f));
}

float
ct_fp16_to_float(uint16_t h)
{
  uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
  if (e == 0) {
    float v = (float) mant * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (e == 31)
    u = sign | 0x7f800000u | (mant << 13);
  else
    u = sign | ((e + 112) << 23) | (mant << 13);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t
ct_bf16_from_float(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t) ((u >> 16) | 0x40u); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t) (u >> 16);
}

float
ct_bf16_to_float(uint16_t h)
{
  uint32_t u = (uint32_t) h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* ---------------------------------------------------------------- F16C */

__attribute__((target("avx,f16c"))) static void
fp16_round_f16c(float *dst, const float *src, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; i++)
    dst[i] = ct_fp16_to_float(ct_fp16_from_float(src[i]));
}

__attribute__((target("avx,f16c"))) static void
fp16_pack_f16c(uint16_t *dst, const float *src, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *) (dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++)
    dst[i] = ct_fp16_from_float(src[i]);
}

__attribute__((target("avx,f16c"))) static void
fp16_unpack_f16c(float *dst, const uint16_t *src, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *) (src + i))));
  for (; i < n; i++)
    dst[i] = ct_fp16_to_float(src[i]);
}

int
ct_precision_have_f16c(void)
{
  static int have = -1;
  if (have < 0) {
    /* F16C from CPUID leaf 1 (clang's __builtin_cpu_supports has no
     * "f16c"); "avx" also checks that the OS saves the AVX state */
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    __builtin_cpu_init();
    have = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) &&
           __builtin_cpu_supports("avx");
  }
  return have && !force_scalar;
}

void
ct_precision_force_scalar(int on)
{
  force_scalar = on;
}

/* ---------------------------------------------------------------- arrays */

static void
bf16_round(float *dst, const float *src, size_t n)
{
  const uint32_t *s = (const uint32_t *) (const void *) src;
  uint32_t *d = (uint32_t *) (void *) dst;
  for (size_t i = 0; i < n; i++) {
    uint32_t u = s[i];
    if ((u & 0x7fffffffu) > 0x7f800000u)
      d[i] = u | 0x00400000u;
    else
      d[i] = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
  }
}

static void round_copy1(CtPrecision prec, float *dst, const float *src, size_t n);
static void pack1(CtPrecision prec, uint16_t *dst, const float *src, size_t n);
static void unpack1(CtPrecision prec, float *dst, const uint16_t *src, size_t n);

/* Large arrays go to the thread pool: element-wise, so the same bits. */
typedef struct {
  int op; /* 0 round, 1 pack, 2 unpack */
  CtPrecision prec;
  float *f;
  const float *cf;
  uint16_t *h;
  const uint16_t *ch;
} ConvJob;

static void
conv_range(void *ctx, size_t b, size_t e, int thread)
{
  const ConvJob *j = ctx;
  if (j->op == 0)
    round_copy1(j->prec, j->f + b, j->cf + b, e - b);
  else if (j->op == 1)
    pack1(j->prec, j->h + b, j->cf + b, e - b);
  else
    unpack1(j->prec, j->f + b, j->ch + b, e - b);
}

void
ct_round_copy(CtPrecision prec, float *dst, const float *src, size_t n)
{
  ConvJob j = { .op = 0, .prec = prec, .f = dst, .cf = src };
  ct_parallel_for(n, 65536, conv_range, &j);
}

void
ct_pack16(CtPrecision prec, uint16_t *dst, const float *src, size_t n)
{
  ConvJob j = { .op = 1, .prec = prec, .h = dst, .cf = src };
  ct_parallel_for(n, 65536, conv_range, &j);
}

void
ct_unpack16(CtPrecision prec, float *dst, const uint16_t *src, size_t n)
{
  ConvJob j = { .op = 2, .prec = prec, .f = dst, .ch = src };
  ct_parallel_for(n, 65536, conv_range, &j);
}

static void
round_copy1(CtPrecision prec, float *dst, const float *src, size_t n)
{
  switch (prec) {
  case CT_PRECISION_FP32:
    if (dst != src)
      memcpy(dst, src, sizeof(float) * n);
    break;
  case CT_PRECISION_BF16:
    bf16_round(dst, src, n);
    break;
  case CT_PRECISION_FP16:
    if (ct_precision_have_f16c())
      fp16_round_f16c(dst, src, n);
    else
      for (size_t i = 0; i < n; i++)
        dst[i] = ct_fp16_to_float(ct_fp16_from_float(src[i]));
    break;
  }
}

void
ct_round(CtPrecision prec, float *x, size_t n)
{
  if (prec != CT_PRECISION_FP32)
    ct_round_copy(prec, x, x, n);
}

static void
pack1(CtPrecision prec, uint16_t *dst, const float *src, size_t n)
{
  if (prec == CT_PRECISION_FP16 && ct_precision_have_f16c()) {
    fp16_pack_f16c(dst, src, n);
    return;
  }
  for (size_t i = 0; i < n; i++)
    dst[i] = prec == CT_PRECISION_FP16 ? ct_fp16_from_float(src[i]) : ct_bf16_from_float(src[i]);
}

static void
unpack1(CtPrecision prec, float *dst, const uint16_t *src, size_t n)
{
  if (prec == CT_PRECISION_FP16) {
    if (ct_precision_have_f16c())
      fp16_unpack_f16c(dst, src, n);
    else
      for (size_t i = 0; i < n; i++)
        dst[i] = ct_fp16_to_float(src[i]);
    return;
  }
  uint32_t *d = (uint32_t *) (void *) dst;
  for (size_t i = 0; i < n; i++)
    d[i] = (uint32_t) src[i] << 16;
}

/* vmath.h: exp for float32 with one algorithm in scalar, AVX2 and
 * AVX-512 code, so that every path gives the same bits.  Not installed.
 *
 * exp(x) = 2^n * p(r), n = round(x / ln 2), r = x - n ln 2 (in two parts),
 * p a degree-6 polynomial (Taylor, Horner with fused multiply-adds).
 * Relative error about 2e-7 over [-87, 88]; below that it returns 0,
 * above it +inf; NaN stays NaN. */
#ifndef CT_VMATH_H
#define CT_VMATH_H

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define CT_EXP_LO (-87.33654f)
#define CT_EXP_HI 88.72283f
#define CT_LOG2E 1.44269504f
#define CT_LN2_HI 0.693359375f
#define CT_LN2_LO (-2.12194440e-4f)
#define CT_EXP_C6 1.3888889e-3f /* 1/720 */
#define CT_EXP_C5 8.3333333e-3f /* 1/120 */
#define CT_EXP_C4 4.1666667e-2f
#define CT_EXP_C3 1.6666667e-1f
#define CT_EXP_C2 0.5f

static inline float
ct_exp_scalar(float x)
{
  if (x != x)
    return x;
  if (x < CT_EXP_LO)
    return 0.0f;
  if (x > CT_EXP_HI)
    return INFINITY;
  float n = nearbyintf(x * CT_LOG2E);
  float r = fmaf(-n, CT_LN2_HI, x);
  r = fmaf(-n, CT_LN2_LO, r);
  float p = fmaf(CT_EXP_C6, r, CT_EXP_C5);
  p = fmaf(p, r, CT_EXP_C4);
  p = fmaf(p, r, CT_EXP_C3);
  p = fmaf(p, r, CT_EXP_C2);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  /* times 2^n, n in [-126, 128]: in two halves so that neither overflows */
  int32_t ni = (int32_t) n;
  int32_t a = ni / 2, b = ni - a;
  uint32_t ua = (uint32_t) (a + 127) << 23, ub = (uint32_t) (b + 127) << 23;
  float fa, fb;
  memcpy(&fa, &ua, sizeof fa);
  memcpy(&fb, &ub, sizeof fb);
  return p * fa * fb;
}

__attribute__((target("avx2,fma"))) static inline __m256
ct_exp_avx2(__m256 x)
{
  __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  __m256 lo = _mm256_cmp_ps(x, _mm256_set1_ps(CT_EXP_LO), _CMP_LT_OQ);
  __m256 hi = _mm256_cmp_ps(x, _mm256_set1_ps(CT_EXP_HI), _CMP_GT_OQ);
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(CT_EXP_LO)),
                            _mm256_set1_ps(CT_EXP_HI));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(CT_LOG2E)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(CT_LN2_HI), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(CT_LN2_LO), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(CT_EXP_C6), r, _mm256_set1_ps(CT_EXP_C5));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CT_EXP_C4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CT_EXP_C3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(CT_EXP_C2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i a = _mm256_srai_epi32(_mm256_add_epi32(ni, _mm256_srli_epi32(ni, 31)), 1); /* ni / 2 toward 0 */
  __m256i b = _mm256_sub_epi32(ni, a);
  __m256i bias = _mm256_set1_epi32(127);
  __m256 fa = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(a, bias), 23));
  __m256 fb = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(b, bias), 23));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(p, fa), fb);
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), lo);
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), hi);
  return _mm256_blendv_ps(y, x, nan);
}

__attribute__((target("avx512f"))) static inline __m512
ct_exp_avx512(__m512 x)
{
  __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  __mmask16 lo = _mm512_cmp_ps_mask(x, _mm512_set1_ps(CT_EXP_LO), _CMP_LT_OQ);
  __mmask16 hi = _mm512_cmp_ps_mask(x, _mm512_set1_ps(CT_EXP_HI), _CMP_GT_OQ);
  __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(CT_EXP_LO)),
                            _mm512_set1_ps(CT_EXP_HI));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(CT_LOG2E)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CT_LN2_HI), xc);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CT_LN2_LO), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(CT_EXP_C6), r, _mm512_set1_ps(CT_EXP_C5));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CT_EXP_C4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CT_EXP_C3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(CT_EXP_C2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  __m512i ni = _mm512_cvtps_epi32(n);
  __m512i a = _mm512_srai_epi32(_mm512_add_epi32(ni, _mm512_srli_epi32(ni, 31)), 1);
  __m512i b = _mm512_sub_epi32(ni, a);
  __m512i bias = _mm512_set1_epi32(127);
  __m512 fa = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(a, bias), 23));
  __m512 fb = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(b, bias), 23));
  __m512 y = _mm512_mul_ps(_mm512_mul_ps(p, fa), fb);
  y = _mm512_mask_mov_ps(y, lo, _mm512_setzero_ps());
  y = _mm512_mask_mov_ps(y, hi, _mm512_set1_ps(INFINITY));
  return _mm512_mask_mov_ps(y, nan, x);
}

/* x: (n) = exp(x - shift), in place, on the widest path. */
void ct_exp_shifted(float *x, float shift, size_t n);

/* Which vector path this CPU takes: 2 AVX-512, 1 AVX2+FMA, 0 scalar;
 * ct_vmath_force() pins one (tests compare them). */
int ct_vmath_level(void);
void ct_vmath_force(int level);

#endif

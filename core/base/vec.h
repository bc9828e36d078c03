/* vec.h: sixteen-lane float vectors for kernels whose bits must not depend
 * on the CPU.  Not installed.
 *
 * GCC's generic vectors do the same IEEE operations lane by lane on every
 * target: one AVX-512 instruction, two AVX2 ones, four SSE ones or sixteen
 * scalar ones.  The build is ISO C11, so nothing is contracted into fused
 * multiply-adds, and a kernel built as CT_CLONES (one copy per target,
 * picked at load time) gives the same bits on every CPU.
 *
 * The helpers are always inlined, so each target clone gets its own copy
 * and no 64-byte vector is ever passed in a call: passed to an out-of-line
 * copy built for the baseline, it would travel in registers the callee
 * does not read (an -O1 build, with sanitizers, did exactly that before
 * the helpers were forced inline).  GCC's -Wpsabi note on them is
 * silenced for that reason, in every file that includes this one. */
#ifndef CT_VEC_H
#define CT_VEC_H

#include <string.h>

#define CT_INLINE static inline __attribute__((always_inline))

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define CT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CT_CLONES
#endif

#pragma GCC diagnostic ignored "-Wpsabi"
typedef float V16 __attribute__((vector_size(64)));

CT_INLINE V16
v16_load(const float *x)
{
  V16 r;
  memcpy(&r, x, sizeof r);
  return r;
}

CT_INLINE void
v16_store(float *x, V16 a)
{
  memcpy(x, &a, sizeof a);
}

CT_INLINE V16
v16_set1(float a)
{
  return (V16) { a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a };
}

/* x[0 .. n), n < 16, in the low lanes; FILL in the others. */
CT_INLINE V16
v16_load_part(const float *x, int n, float fill)
{
  V16 r = v16_set1(fill);
  memcpy(&r, x, sizeof(float) * (size_t) n);
  return r;
}

CT_INLINE void
v16_store_part(float *x, V16 a, int n)
{
  memcpy(x, &a, sizeof(float) * (size_t) n);
}

/* The sum of the lanes, always in the same tree: lanes i and i + 8, then
 * i and i + 4, then i and i + 2, then the last two. */
CT_INLINE float
v16_sum(V16 a)
{
  float l[16];
  memcpy(l, &a, sizeof l);
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++)
      l[i] += l[i + w];
  return l[0];
}

/* x[0 .. n) summed in the lanes (element c in lane c % 16), then
 * v16_sum's tree. */
CT_INLINE float
v16_row_sum(const float *x, int n)
{
  int full = n / 16 * 16;
  V16 s = v16_set1(0.0f);
  for (int c = 0; c < full; c += 16)
    s += v16_load(x + c);
  if (n > full)
    s += v16_load_part(x + full, n - full, 0.0f);
  return v16_sum(s);
}

#endif

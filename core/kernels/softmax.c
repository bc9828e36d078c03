/* softmax.c: one row's softmax and its backward, for attention.
 *
 * The row's sums run in 16 float lanes (vec.h: element c in lane c % 16,
 * the lanes summed in a fixed tree), one copy of each kernel per target:
 * the same bits on every CPU.  The maximum is exact in any order. */
#include "config.h"

#include "kernels/ops.h"
#include "base/vec.h"
#include "base/vmath.h"

typedef int32_t I16 __attribute__((vector_size(64)));

CT_CLONES static float
row_max(const float *x, int n)
{
  int full = n / 16 * 16;
  float mx = x[0];
  if (full) {
    V16 m = v16_load(x);
    for (int c = 16; c < full; c += 16) {
      V16 v = v16_load(x + c);
      I16 gt = v > m;
      m = (V16) ((gt & (I16) v) | (~gt & (I16) m));
    }
    float l[16];
    memcpy(l, &m, sizeof l);
    for (int i = 0; i < 16; i++)
      mx = l[i] > mx ? l[i] : mx;
  }
  for (int c = full; c < n; c++)
    mx = x[c] > mx ? x[c] : mx;
  return mx;
}

CT_CLONES static void
normalise(float *row, int n, int T)
{
  int full = n / 16 * 16;
  float inv = 1.0f / v16_row_sum(row, n);
  V16 vinv = v16_set1(inv);
  for (int c = 0; c < full; c += 16)
    v16_store(row + c, v16_load(row + c) * vinv);
  for (int c = full; c < n; c++)
    row[c] *= inv;
  for (int c = n; c < T; c++)
    row[c] = 0.0f;
}

void
ct_softmax_row(float *row, int n, int T)
{
  ct_exp_shifted(row, row_max(row, n), (size_t) n);
  normalise(row, n, T);
}

CT_CLONES void
ct_softmax_row_backward(float *d, const float *p, int T)
{
  int full = T / 16 * 16, tail = T - full;
  V16 s = v16_set1(0.0f);
  for (int c = 0; c < full; c += 16)
    s += v16_load(p + c) * v16_load(d + c);
  if (tail)
    s += v16_load_part(p + full, tail, 0.0f) * v16_load_part(d + full, tail, 0.0f);
  float dot = v16_sum(s);
  V16 vdot = v16_set1(dot);
  for (int c = 0; c < full; c += 16)
    v16_store(d + c, v16_load(p + c) * (v16_load(d + c) - vdot));
  for (int c = full; c < T; c++)
    d[c] = p[c] * (d[c] - dot);
}

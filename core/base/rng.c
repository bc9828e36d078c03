/* rng.c: xoshiro256** with splitmix64 seeding, and float fills. */
#include "config.h"

#include <cliptrain/rng.h>

#include <math.h>

static uint64_t
splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

void
ct_rng_init(CtRng *rng, uint64_t seed)
{
  uint64_t x = seed;
  for (int i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&x);
}

void
ct_rng_init_stream(CtRng *rng, uint64_t seed, uint64_t stream)
{
  uint64_t x = stream;
  ct_rng_init(rng, seed ^ splitmix64(&x));
}

uint64_t
ct_rng_next(CtRng *rng)
{
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double
ct_rng_uniform(CtRng *rng)
{
  return (double) (ct_rng_next(rng) >> 11) * 0x1.0p-53;
}

uint64_t
ct_rng_below(CtRng *rng, uint64_t n)
{
  if (n <= 1)
    return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t x;
  do
    x = ct_rng_next(rng);
  while (x >= limit);
  return x % n;
}

void
ct_rng_normal_fill(CtRng *rng, float *out, size_t n, double std)
{
  for (size_t i = 0; i < n; i += 2) {
    double u1 = 1.0 - ct_rng_uniform(rng); /* (0, 1] */
    double u2 = ct_rng_uniform(rng);
    double r = sqrt(-2.0 * log(u1)) * std;
    out[i] = (float) (r * cos(2.0 * M_PI * u2));
    if (i + 1 < n)
      out[i + 1] = (float) (r * sin(2.0 * M_PI * u2));
  }
}

void
ct_rng_uniform_fill(CtRng *rng, float *out, size_t n, double lo, double hi)
{
  for (size_t i = 0; i < n; i++)
    out[i] = (float) (lo + (hi - lo) * ct_rng_uniform(rng));
}

/* rng.h: a small, seedable, serialisable random number generator.
 *
 * xoshiro256** seeded through splitmix64.  The whole state is four 64-bit
 * words, so a training state can save it and resume bit-exactly.  Streams
 * derived with ct_rng_init_stream() are independent of draw order
 * elsewhere: parameter i's initial values depend on (seed, i) only. */
#ifndef CLIPTRAIN_RNG_H
#define CLIPTRAIN_RNG_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

typedef struct {
  uint64_t s[4];
} CtRng;

CT_API void ct_rng_init(CtRng *rng, uint64_t seed);
/* Stream STREAM of SEED: same as ct_rng_init with a mixed seed. */
CT_API void ct_rng_init_stream(CtRng *rng, uint64_t seed, uint64_t stream);
CT_API uint64_t ct_rng_next(CtRng *rng);
/* Uniform double in [0, 1) with 53 random bits. */
CT_API double ct_rng_uniform(CtRng *rng);
/* Uniform integer in [0, n), unbiased. */
CT_API uint64_t ct_rng_below(CtRng *rng, uint64_t n);
/* N standard normal draws, times STD, into OUT[n] (Box-Muller). */
CT_API void ct_rng_normal_fill(CtRng *rng, float *out, size_t n, double std);
/* N uniform draws in [lo, hi) into OUT[n]. */
CT_API void ct_rng_uniform_fill(CtRng *rng, float *out, size_t n, double lo, double hi);

G_END_DECLS

#endif

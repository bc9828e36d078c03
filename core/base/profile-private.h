/* profile-private.h: the counters behind profile.h, and PROF() to time a
 * statement into one of them.  Not installed. */
#ifndef CT_PROFILE_PRIVATE_H
#define CT_PROFILE_PRIVATE_H

#include <cliptrain/profile.h>

#include <time.h>

extern int ct_prof_on;
extern double ct_prof_s[CT_PROF_N];

static inline double
ct_prof_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

/* PROF(CT_PROF_GEMM, ct_linear_forward(...)); */
#define PROF(kind, stmt)                           \
  do {                                             \
    if (ct_prof_on) {                              \
      double ct_prof_t0_ = ct_prof_now();          \
      stmt;                                        \
      ct_prof_s[kind] += ct_prof_now() - ct_prof_t0_; \
    } else {                                       \
      stmt;                                        \
    }                                              \
  } while (0)

#endif

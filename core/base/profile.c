/* profile.c: per-kind wall-time counters for `cliptrain bench --profile`. */
#include "config.h"

#include "base/profile-private.h"

#include <time.h>

int ct_prof_on;
double ct_prof_s[CT_PROF_N];
static gboolean enabled;
static double t_open; /* when the open region began */

static const char *const names[CT_PROF_N] = {
  "gemm", "attention", "layernorm", "gelu", "embed", "elementwise", "loss", "optimizer",
  "conv_fwd", "conv_bwd_data", "conv_bwd_weights", "im2col", "batchnorm", "relu", "pool",
  "attnpool",
};

static double
now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + 1e-9 * (double) ts.tv_nsec;
}

int
ct_prof_enter(CtProfKind kind)
{
  ct_prof_on = 0; /* what runs inside is this region's */
  t_open = now();
  return kind;
}

void
ct_prof_leave(int kind)
{
  ct_prof_s[kind] += now() - t_open;
  ct_prof_on = enabled;
}

void
ct_profile_enable(gboolean on)
{
  enabled = on;
  ct_prof_on = on ? 1 : 0;
}

gboolean
ct_profile_enabled(void)
{
  return enabled;
}

void
ct_profile_reset(void)
{
  for (int i = 0; i < CT_PROF_N; i++)
    ct_prof_s[i] = 0;
}

double
ct_profile_seconds(CtProfKind kind)
{
  return (unsigned) kind < CT_PROF_N ? ct_prof_s[kind] : 0;
}

const char *
ct_profile_name(CtProfKind kind)
{
  return (unsigned) kind < CT_PROF_N ? names[kind] : NULL;
}

/* profile.c: per-kind wall-time counters for `cliptrain bench --profile`. */
#include "config.h"

#include "base/profile-private.h"

int ct_prof_on;
double ct_prof_s[CT_PROF_N];

static const char *const names[CT_PROF_N] = {
  "gemm", "attention", "layernorm", "gelu", "embed", "elementwise", "loss", "optimizer",
};

void
ct_profile_enable(gboolean on)
{
  ct_prof_on = on ? 1 : 0;
}

gboolean
ct_profile_enabled(void)
{
  return ct_prof_on;
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

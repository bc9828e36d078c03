/* schedule.c: fastai's and open_clip's learning-rate schedules. */
#include "config.h"

#include <cliptrain/schedule.h>

#include <math.h>
#include <string.h>

typedef enum {
  S_CONST,
  S_ONE_CYCLE,
  S_FLAT_COS,
  S_WARMUP_COSINE,
  S_CONST_COOLDOWN,
  N_SCHEDS
} Kind;

static const char *const sched_names[] = { "const", "one_cycle", "flat_cos", "warmup_cosine",
                                           "const_cooldown", NULL };

typedef enum {
  P_LR,
  P_DIV,
  P_DIV_FINAL,
  P_PCT_START,
  P_MOM_START,
  P_MOM_MID,
  P_MOM_END,
  P_WARMUP,
  P_COOLDOWN_STEPS,
  P_COOLDOWN_POWER,
  P_LR_END,
  N_PARAMS
} Param;

static const char *const param_names[N_PARAMS] = {
  "lr",      "div",    "div_final",      "pct_start",      "mom_start", "mom_mid",
  "mom_end", "warmup", "cooldown_steps", "cooldown_power", "lr_end",
};

/* Each schedule's parameters, NULL-terminated, and their defaults. */
static const char *const params_of[N_SCHEDS][N_PARAMS + 1] = {
  [S_CONST] = { "lr", "warmup", NULL },
  [S_ONE_CYCLE] = { "lr", "div", "div_final", "pct_start", "mom_start", "mom_mid", "mom_end",
                    NULL },
  [S_FLAT_COS] = { "lr", "pct_start", "div_final", NULL },
  [S_WARMUP_COSINE] = { "lr", "warmup", NULL },
  [S_CONST_COOLDOWN] = { "lr", "warmup", "cooldown_steps", "cooldown_power", "lr_end", NULL },
};

static const double defaults[N_PARAMS] = {
  [P_LR] = 1e-3,        [P_DIV] = 25.0,       [P_DIV_FINAL] = 1e5,
  [P_PCT_START] = 0.25, [P_MOM_START] = 0.95, [P_MOM_MID] = 0.85,
  [P_MOM_END] = 0.95,   [P_WARMUP] = 0,       [P_COOLDOWN_STEPS] = 0,
  [P_COOLDOWN_POWER] = 1.0, [P_LR_END] = 0.0,
};

struct CtSchedule {
  Kind kind;
  double p[N_PARAMS];
};

const char *const *
ct_schedule_names(void)
{
  return sched_names;
}

CtSchedule *
ct_schedule_new(const char *name, GError **error)
{
  int k = -1;
  for (int i = 0; name && i < N_SCHEDS; i++)
    if (strcmp(name, sched_names[i]) == 0)
      k = i;
  if (k < 0) {
    g_autofree char *known = g_strjoinv(", ", (char **) sched_names);
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "unknown schedule '%s' (known: %s)",
                name ? name : "(null)", known);
    return NULL;
  }
  CtSchedule *s = g_new0(CtSchedule, 1);
  s->kind = (Kind) k;
  memcpy(s->p, defaults, sizeof s->p);
  if (k == S_FLAT_COS)
    s->p[P_PCT_START] = 0.75; /* fastai's fit_flat_cos default */
  return s;
}

void
ct_schedule_free(CtSchedule *sched)
{
  g_free(sched);
}

const char *
ct_schedule_name(const CtSchedule *sched)
{
  return sched_names[sched->kind];
}

const char *const *
ct_schedule_params(const CtSchedule *sched)
{
  return params_of[sched->kind];
}

/* Index of PARAM in SCHED's schedule, or -1. */
static int
param_index(const CtSchedule *sched, const char *param)
{
  if (!param)
    return -1;
  if (strcmp(param, "lr_max") == 0)
    param = "lr";
  for (const char *const *q = params_of[sched->kind]; *q; q++)
    if (strcmp(*q, param) == 0)
      for (int i = 0; i < N_PARAMS; i++)
        if (strcmp(param_names[i], param) == 0)
          return i;
  return -1;
}

gboolean
ct_schedule_set(CtSchedule *sched, const char *param, double value, GError **error)
{
  g_return_val_if_fail(sched != NULL, FALSE);
  int i = param_index(sched, param);
  if (i < 0) {
    g_autofree char *known = g_strjoinv(", ", (char **) params_of[sched->kind]);
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "schedule %s has no parameter '%s' (it has: %s)", sched_names[sched->kind],
                param ? param : "(null)", known);
    return FALSE;
  }
  gboolean ok = isfinite(value) && value >= 0;
  const char *range = "finite, >= 0";
  switch ((Param) i) {
  case P_DIV:
  case P_DIV_FINAL:
  case P_COOLDOWN_POWER:
    ok = ok && value > 0;
    range = "finite, > 0";
    break;
  case P_PCT_START:
    ok = ok && value <= 1;
    range = "[0, 1]";
    break;
  case P_MOM_START:
  case P_MOM_MID:
  case P_MOM_END:
    ok = ok && value < 1;
    range = "[0, 1)";
    break;
  case P_WARMUP:
  case P_COOLDOWN_STEPS:
    ok = ok && value == floor(value) && value <= 1e15;
    range = "a whole number of steps >= 0";
    break;
  default:
    break;
  }
  if (!ok) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "schedule %s: parameter '%s' = %g is out of range (%s)",
                sched_names[sched->kind], param, value, range);
    return FALSE;
  }
  sched->p[i] = value;
  return TRUE;
}

double
ct_schedule_get(const CtSchedule *sched, const char *param)
{
  g_return_val_if_fail(sched != NULL, NAN);
  int i = param_index(sched, param);
  return i < 0 ? NAN : sched->p[i];
}

/* fastai's SchedCos(start, end)(pos). */
static double
sched_cos(double start, double end, double pos)
{
  return start + (1 + cos(G_PI * (1 - pos))) * (end - start) / 2;
}

/* fastai's combined_cos(pct, start, middle, end)(pos): combine_scheds over
 * [pct, 1 - pct].  Phase 2 starts at pos == pct; with pct == 1 there is no
 * phase 2 (where fastai would divide by zero at pos 1). */
static double
combined_cos(double pct, double start, double middle, double end, double pos)
{
  if (pos >= pct && pct < 1)
    return sched_cos(middle, end, (pos - pct) / (1 - pct));
  return sched_cos(start, middle, pos / pct);
}

static double
eval_pct(const CtSchedule *s, double pct, double *mom)
{
  const double *p = s->p;
  double lr = p[P_LR];
  switch (s->kind) {
  case S_ONE_CYCLE:
    *mom = combined_cos(p[P_PCT_START], p[P_MOM_START], p[P_MOM_MID], p[P_MOM_END], pct);
    return combined_cos(p[P_PCT_START], lr / p[P_DIV], lr, lr / p[P_DIV_FINAL], pct);
  case S_FLAT_COS:
    return combined_cos(p[P_PCT_START], lr, lr, lr / p[P_DIV_FINAL], pct);
  default:
    return lr;
  }
}

double
ct_schedule_eval(const CtSchedule *sched, int64_t step, int64_t total_steps, double *mom)
{
  double dummy;
  if (!mom)
    mom = &dummy;
  *mom = NAN;
  g_return_val_if_fail(sched != NULL && total_steps > 0, NAN);
  const double *p = sched->p;
  double lr = p[P_LR];
  double warmup = p[P_WARMUP];
  double s = (double) step, total = (double) total_steps;
  switch (sched->kind) {
  case S_ONE_CYCLE:
  case S_FLAT_COS:
    return eval_pct(sched, s / total, mom);
  case S_CONST:
    return s < warmup ? lr * (s + 1) / warmup : lr;
  case S_WARMUP_COSINE: {
    if (s < warmup)
      return lr * (s + 1) / warmup;
    double e = s - warmup, es = total - warmup;
    double r = es > 0 ? MIN(e / es, 1.0) : 1.0; /* past the end: the final value */
    return 0.5 * (1 + cos(G_PI * r)) * lr;
  }
  case S_CONST_COOLDOWN: {
    if (s < warmup)
      return lr * (s + 1) / warmup;
    double start = total - p[P_COOLDOWN_STEPS];
    if (s < start)
      return lr;
    double e = s - start, es = total - start;
    double r = es > 0 ? MIN(e / es, 1.0) : 1.0;
    double decay = pow(1 - r, p[P_COOLDOWN_POWER]);
    return decay * (lr - p[P_LR_END]) + p[P_LR_END];
  }
  default:
    g_return_val_if_reached(NAN);
  }
}

double
ct_schedule_eval_pct(const CtSchedule *sched, double pct, double *mom)
{
  double dummy;
  if (!mom)
    mom = &dummy;
  *mom = NAN;
  g_return_val_if_fail(sched != NULL, NAN);
  switch (sched->kind) {
  case S_ONE_CYCLE:
  case S_FLAT_COS:
    return eval_pct(sched, pct, mom);
  case S_CONST:
    return sched->p[P_WARMUP] > 0 ? NAN : sched->p[P_LR];
  default:
    return NAN;
  }
}

gboolean
ct_schedule_apply(const CtSchedule *sched, CtOptimizer *opt, int64_t step, int64_t total_steps,
                  GError **error)
{
  g_return_val_if_fail(sched != NULL && opt != NULL, FALSE);
  double mom;
  double lr = ct_schedule_eval(sched, step, total_steps, &mom);
  if (!ct_optimizer_set(opt, "lr", lr, error))
    return FALSE;
  return isnan(mom) || ct_optimizer_set(opt, "mom", mom, error);
}

/* short_epoch: fastai's ShortEpochCallback.  Runs only the first PCT of
 * each epoch's training batches (and, with short_valid, of its validation
 * batches), for quick smoke tests of a recipe:
 *
 *   if iter / n_iter < pct: continue
 *   if training: cancel the rest of training
 *   elif short_valid: cancel the rest of validation
 *
 * At before_train (and before_validate with short_valid) it tells the
 * learner how many batches the phase will run, so that progress bars and
 * the fit's ETA count those. */
#include <cliptrain/plugin.h>

typedef struct {
  double pct;
  gboolean short_valid;
} ShortEpoch;

/* The batches a phase of N runs: those before the first iter with
 * iter / N >= pct, and that one, as on_event decides. */
static int
planned(const ShortEpoch *s, int n)
{
  int i = 0;
  while (i < n && (double) i / n < s->pct)
    i++;
  return MIN(i + 1, n);
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  ShortEpoch *s = state;
  int n = ct_learner_n_iter(L);
  if (event == CT_EVENT_BEFORE_TRAIN || event == CT_EVENT_BEFORE_VALIDATE) {
    if (n > 0 && (event == CT_EVENT_BEFORE_TRAIN || s->short_valid))
      ct_learner_set_planned_iter(L, planned(s, n));
    return CT_STATUS_OK;
  }
  if (n <= 0 || (double) ct_learner_iter(L) / n < s->pct)
    return CT_STATUS_OK;
  if (ct_learner_training(L))
    return CT_STATUS_CANCEL_TRAIN;
  return s->short_valid ? CT_STATUS_CANCEL_VALID : CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  ShortEpoch *s = g_new0(ShortEpoch, 1);
  s->pct = ct_params_get_double(params, "pct");
  s->short_valid = ct_params_get_bool(params, "short_valid");
  return s;
}

static const CtParamSpec schema[] = {
  /* pct is in (0, 1]; the schema's range is closed, so its floor is tiny */
  CT_PARAM("pct", CT_PARAM_DOUBLE, "0.01", "fraction of each epoch to run, in (0, 1]", 1e-6, 1,
           NULL),
  CT_PARAM("short_valid", CT_PARAM_BOOL, "true", "shorten validation too", 0, 0, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "short_epoch", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Runs only the first pct of each epoch's batches (fastai ShortEpochCallback)",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_TRAIN) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_VALIDATE) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_BATCH),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = schema, .create = create,
                 .destroy = g_free, .on_event = on_event)

/* unmasked_tuning: FLIP's unmasked tuning (Li et al. 2023), inside one
 * fit.  A recipe trains with patch dropout (model.patch_dropout) and this
 * callback turns it off for the last PCT of the training steps, so that
 * the image tower ends its training on whole images, as it sees them in
 * validation, embed and zeroshot:
 *
 *   before each training batch:
 *     if pct_train >= 1 - pct: patch dropout 0 from here on
 *
 * The switch depends on the step alone (ct_learner_pct_train), so a
 * resumed run switches at the same step as an unstopped one. */
#include <cliptrain/plugin.h>

typedef struct {
  double pct;
} Unmasked;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Unmasked *u = state;
  CtModel *m = ct_learner_model(L);
  if (event == CT_EVENT_BEFORE_FIT) {
    if (ct_model_patch_dropout(m) <= 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "the model trains without patch dropout, so there is "
                  "nothing to turn off: set model.patch_dropout (say 0.5) or drop the callback");
      return CT_STATUS_ERROR;
    }
    return CT_STATUS_OK;
  }
  /* before_batch, training only */
  if (ct_model_patch_dropout(m) > 0 && ct_learner_pct_train(L) >= 1.0 - u->pct) {
    if (!ct_model_set_patch_dropout(m, 0.0, 0, error))
      return CT_STATUS_ERROR;
    ct_learner_log(L, "unmasked_tuning: patch dropout off from training step %" G_GINT64_FORMAT,
                   ct_learner_train_iter(L));
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  Unmasked *u = g_new0(Unmasked, 1);
  u->pct = ct_params_get_double(params, "pct");
  return u;
}

static const CtParamSpec schema[] = {
  CT_PARAM("pct", CT_PARAM_DOUBLE, "0.1",
           "fraction of the training steps, at the end, run without patch dropout, in [0, 1]", 0,
           1, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "unmasked_tuning", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Turns patch dropout off for the last pct of the training steps (FLIP's unmasked tuning)",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_BEFORE_BATCH),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = g_free,
                 .on_event = on_event)

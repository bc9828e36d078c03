/* inject_inf: a test plugin.  After backward of training batch STEP (of
 * the fit, 0-based) it writes VALUE (inf or nan) into one gradient, as an
 * fp16 overflow would; each epoch it logs opt_steps, the optimizer steps
 * taken so far. */
#include <cliptrain/plugin.h>

#include <math.h>

typedef struct {
  int64_t step;
  float value;
} Inject;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Inject *s = state;
  if (event == CT_EVENT_AFTER_BACKWARD && ct_learner_train_iter(L) == s->step) {
    CtModel *m = ct_learner_model(L);
    ct_model_grads(m)[ct_model_n_params(m) / 2] = s->value;
  } else if (event == CT_EVENT_AFTER_EPOCH) {
    ct_recorder_log(ct_learner_recorder(L), "opt_steps", (double) ct_learner_step_count(L));
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  Inject *s = g_new0(Inject, 1);
  s->step = ct_params_get_int(params, "step");
  s->value = g_str_equal(ct_params_get_string(params, "value"), "nan") ? NAN : INFINITY;
  return s;
}

static const CtParamSpec schema[] = {
  CT_PARAM("step", CT_PARAM_INT, "0", "training batch to corrupt", 0, 1e9, NULL),
  CT_PARAM("value", CT_PARAM_STRING, "inf", "what to write", 0, 0, "inf|nan"),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "inject_inf", .version = "1.0",
                 .doc = "Test plugin: corrupts one gradient after one backward pass",
                 .order = 12,
                 .events = CT_EVENT_BIT(CT_EVENT_AFTER_BACKWARD) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = g_free,
                 .on_event = on_event)

/* lr_logger: an example plugin built outside the cliptrain tree.
 *
 * Every EVERY training batches, prints the learning rate and the smoothed
 * loss to stderr; once per epoch, records the last learning rate as
 * "last_lr", so it lands in metrics.jsonl and history.csv.
 *
 * Two things worth copying:
 * - order 60 runs after the built-in recorder (order 50), so the smoothed
 *   loss read in after_batch already includes the current batch;
 * - the recorder writes an epoch's row in its own after_epoch, so a value
 *   for that row must be logged before then: here in after_train (which
 *   runs even when training was cancelled early), not in after_epoch. */
#include <cliptrain/plugin.h>

#include <stdio.h>

typedef struct {
  int64_t every;
} LrLogger;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  LrLogger *s = state;
  double lr = 0;
  if (event == CT_EVENT_BEFORE_FIT) { /* what it logs, so that a monitor may name it */
    ct_recorder_declare(ct_learner_recorder(L), "last_lr");
    return CT_STATUS_OK;
  }
  ct_learner_get_hparam(L, "lr", &lr);
  if (event == CT_EVENT_AFTER_TRAIN) {
    ct_recorder_log(ct_learner_recorder(L), "last_lr", lr);
    return CT_STATUS_OK;
  }
  /* after_batch, training only (see .run below) */
  int64_t step = ct_learner_train_iter(L) + 1;
  if (step % s->every == 0)
    fprintf(stderr, "lr_logger: epoch %d batch %d/%d lr %g smooth_loss %.4f\n",
            ct_learner_epoch(L), ct_learner_iter(L) + 1, ct_learner_n_iter(L), lr,
            ct_recorder_smooth_loss(ct_learner_recorder(L)));
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  LrLogger *s = g_new0(LrLogger, 1);
  s->every = ct_params_get_int(params, "every");
  return s;
}

static const CtParamSpec schema[] = {
  CT_PARAM("every", CT_PARAM_INT, "10", "print every this many training batches", 1, 1e9, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "lr_logger", .version = "0.1",
                 .doc = "Prints the learning rate and smoothed loss every few batches (example)",
                 .order = 60,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_BATCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_TRAIN),
                 .run = CT_RUN_TRAIN, .grads = CT_GRADS_UNUSED, .params = schema,
                 .create = create, .destroy = g_free, .on_event = on_event)

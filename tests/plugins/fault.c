/* fault: a plugin that only the tests load, to make things go wrong on
 * purpose.  Parameters:
 *   nan_step N     at training step N (1-based), make the loss NaN:
 *   nan_what       "loss" sets it after the loss callback (after_pred),
 *                  "images" puts a NaN pixel into the batch (before_batch),
 *                  so that the features and then the loss become NaN
 *   handled        declare non-finite losses handled (as a loss scaler
 *                  would) and skip such batches instead
 *   fail_create    create() refuses, with a message
 *   fail_event     on_event returns an error at this event ("after_epoch")
 *   slow_ms        sleep this long after each training batch (for signals)
 *   fail_once      a file: fail at fail_event only while it does not exist,
 *                  creating it (so that a resumed run gets past the fault)
 *   crash          at after_batch of training step crash_step (1-based):
 *                  "segv" dereferences a NULL pointer, "abort" calls
 *                  abort(), "exit0" calls exit(0)
 *   crash_step     the step of crash
 * Runs after clip_trainer (order 1). */
#include <cliptrain/plugin.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  int64_t nan_step;
  gboolean nan_images, handled;
  int fail_event; /* -1: never */
  int64_t slow_ms;
  int64_t skipped;
  char *fail_once; /* "" or a marker file */
  char crash;      /* 0, 's'egv, 'a'bort, 'e'xit0 */
  int64_t crash_step;
} Fault;

/* A crash, as asked, at after_batch of training step crash_step. */
static void
crash_now(const Fault *s, CtLearner *L)
{
  if (!s->crash || !ct_learner_training(L) || ct_learner_train_iter(L) + 1 != s->crash_step)
    return;
  if (s->crash == 'e')
    exit(0);
  if (s->crash == 'a')
    abort();
  /* an unmapped, aligned, non-null address: a real SIGSEGV, which
   * UndefinedBehaviorSanitizer's null check does not report first */
  volatile int *volatile nowhere = (volatile int *) (uintptr_t) 16;
  *nowhere = 1;
}

static gboolean
nan_now(const Fault *s, CtLearner *L)
{
  return s->nan_step > 0 && ct_learner_training(L) &&
         ct_learner_train_iter(L) + 1 == s->nan_step;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Fault *s = state;
  if ((int) event == s->fail_event && *s->fail_once) {
    if (g_file_test(s->fail_once, G_FILE_TEST_EXISTS))
      return CT_STATUS_OK;
    g_file_set_contents(s->fail_once, "", 0, NULL);
  }
  if ((int) event == s->fail_event) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "fault: failing in %s as asked",
                ct_event_name(event));
    return CT_STATUS_ERROR;
  }
  switch (event) {
  case CT_EVENT_BEFORE_FIT:
    if (s->handled)
      ct_learner_set_nonfinite_handled(L, TRUE);
    break;
  case CT_EVENT_BEFORE_BATCH:
    if (s->nan_images && nan_now(s, L))
      ct_learner_images(L)[0] = NAN;
    break;
  case CT_EVENT_AFTER_PRED:
    if (!s->nan_images && nan_now(s, L))
      ct_learner_set_loss(L, NAN);
    break;
  case CT_EVENT_AFTER_LOSS:
    /* what a loss scaler does with an overflow: skip the step */
    if (s->handled && !isfinite(ct_learner_loss(L))) {
      s->skipped++;
      return CT_STATUS_CANCEL_BATCH;
    }
    break;
  case CT_EVENT_AFTER_BATCH:
    if (s->slow_ms > 0 && ct_learner_training(L))
      g_usleep((gulong) s->slow_ms * 1000);
    crash_now(s, L);
    break;
  case CT_EVENT_AFTER_FIT:
    if (s->handled && s->skipped)
      g_printerr("fault: skipped %" G_GINT64_FORMAT " non-finite batch(es)\n", s->skipped);
    break;
  default:
    break;
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  if (ct_params_get_bool(params, "fail_create")) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "fault: refusing to start, as asked");
    return NULL;
  }
  Fault *s = g_new0(Fault, 1);
  s->nan_step = ct_params_get_int(params, "nan_step");
  s->nan_images = strcmp(ct_params_get_string(params, "nan_what"), "images") == 0;
  s->handled = ct_params_get_bool(params, "handled");
  s->slow_ms = ct_params_get_int(params, "slow_ms");
  s->fail_once = g_strdup(ct_params_get_string(params, "fail_once"));
  s->crash = ct_params_get_string(params, "crash")[0];
  s->crash_step = ct_params_get_int(params, "crash_step");
  const char *ev = ct_params_get_string(params, "fail_event");
  s->fail_event = *ev ? ct_event_from_name(ev) : -1;
  if (*ev && s->fail_event < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "fault: no event '%s'", ev);
    g_free(s->fail_once);
    g_free(s);
    return NULL;
  }
  return s;
}

static void
destroy(void *state)
{
  Fault *s = state;
  g_free(s->fail_once);
  g_free(s);
}

static const CtParamSpec schema[] = {
  CT_PARAM("nan_step", CT_PARAM_INT, "0", "training step (1-based) whose loss becomes NaN", 0,
           1e12, NULL),
  CT_PARAM("nan_what", CT_PARAM_STRING, "loss", "what becomes NaN", 0, 0, "loss|images"),
  CT_PARAM("handled", CT_PARAM_BOOL, "false", "handle non-finite losses (skip the batch)", 0, 0,
           NULL),
  CT_PARAM("fail_create", CT_PARAM_BOOL, "false", "refuse to start", 0, 0, NULL),
  CT_PARAM("fail_event", CT_PARAM_STRING, "", "fail at this event", 0, 0, NULL),
  CT_PARAM("fail_once", CT_PARAM_STRING, "", "fail only while this file is missing (made then)",
           0, 0, NULL),
  CT_PARAM("slow_ms", CT_PARAM_INT, "0", "sleep after each training batch (ms)", 0, 1e6, NULL),
  CT_PARAM("crash", CT_PARAM_STRING, "", "crash at after_batch of crash_step", 0, 0,
           "|segv|abort|exit0"),
  CT_PARAM("crash_step", CT_PARAM_INT, "1", "training step (1-based) of crash", 1, 1e12, NULL),
  CT_PARAM_END,
};

#define ALL_EVENTS ((CT_EVENT_BIT(CT_EVENT_AFTER_LAYER_BACKWARD) - 1))

CT_PLUGIN_DEFINE(.name = "fault", .version = "1", .doc = "Makes things fail, for the tests",
                 .order = 1, .events = ALL_EVENTS, .params = schema, .create = create,
                 .destroy = destroy, .on_event = on_event)

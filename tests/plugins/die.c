/* die: a test plugin that ends its process at a training step on one rank
 * (SIGKILL: a crash), or stops it there (SIGSTOP: a hang), so that the
 * MPI tests can check that the other ranks exit instead of waiting. */
#include <cliptrain/plugin.h>

#include <signal.h>
#include <unistd.h>

typedef struct {
  int rank, step;
  gboolean hang;
} Die;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Die *d = state;
  if (ct_learner_rank(L) == d->rank && ct_learner_train_iter(L) == d->step)
    kill(getpid(), d->hang ? SIGSTOP : SIGKILL);
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  Die *d = g_new0(Die, 1);
  d->rank = (int) ct_params_get_int(params, "rank");
  d->step = (int) ct_params_get_int(params, "step");
  d->hang = ct_params_get_bool(params, "hang");
  return d;
}

static const CtParamSpec schema[] = {
  CT_PARAM("rank", CT_PARAM_INT, "1", "the rank that dies", 0, 1e6, NULL),
  CT_PARAM("step", CT_PARAM_INT, "2", "at this training step (0-based)", 0, 1e9, NULL),
  CT_PARAM("hang", CT_PARAM_BOOL, "false", "stop (hang) instead of dying", 0, 0, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "die", .version = "1.0", .doc = "Kills or stops one rank (tests)",
                 .order = 0, .events = CT_EVENT_BIT(CT_EVENT_BEFORE_BATCH),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = g_free,
                 .on_event = on_event)

/* grad_clip: clips the gradients' global L2 norm before each optimizer
 * step, as torch.nn.utils.clip_grad_norm_(params, max_norm) does: when the
 * norm over all gradients exceeds max_norm, every gradient is scaled by
 * max_norm / (norm + 1e-6).  The norm is accumulated in double.  Order 20:
 * after fp16 (15) has unscaled the gradients.  With ddp's zero each rank
 * clips its shard by the norm over every rank's shard. */
#include <cliptrain/plugin.h>

#include <math.h>

typedef struct {
  double max_norm;
} GradClip;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  GradClip *s = state;
  CtModel *m = ct_learner_model(L);
  /* the gradients the optimizer steps: all, or with ddp's zero this
   * rank's shard, whose squares the ranks then add up */
  size_t off, n;
  ct_optimizer_shard(ct_learner_optimizer(L), &off, &n);
  float *g = ct_model_grads(m) + off;
  double sq = 0;
  for (size_t i = 0; i < n; i++)
    sq += (double) g[i] * g[i];
  if (n != ct_model_n_params(m) &&
      !ct_comm_allreduce(ct_learner_comm(L), &sq, 1, CT_COMM_F64, CT_COMM_SUM, error))
    return CT_STATUS_ERROR;
  double norm = sqrt(sq);
  if (norm > s->max_norm) {
    float coef = (float) (s->max_norm / (norm + 1e-6));
    for (size_t i = 0; i < n; i++)
      g[i] *= coef;
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  GradClip *s = g_new0(GradClip, 1);
  s->max_norm = ct_params_get_double(params, "max_norm");
  return s;
}

static const CtParamSpec schema[] = {
  CT_PARAM("max_norm", CT_PARAM_DOUBLE, "1.0", "largest L2 norm of all gradients together (> 0)",
           1e-12, 1e12, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "grad_clip", .version = "1.0", .grads = CT_GRADS_WHOLE,
                 .doc = "Clips the global L2 norm of the gradients before each step (clip_grad_norm_)",
                 .order = 20, .events = CT_EVENT_BIT(CT_EVENT_BEFORE_STEP), .run = CT_RUN_TRAIN,
                 .params = schema, .create = create, .destroy = g_free, .on_event = on_event)

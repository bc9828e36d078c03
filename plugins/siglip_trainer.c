/* siglip_trainer: SigLIP's sigmoid loss (Zhai et al. 2023; open_clip's
 * SigLipLoss) instead of CLIP's contrastive loss.
 *
 * Every image-caption pair is a binary classification: z = exp(t) <img,
 * txt> + b, label +1 for an image's own caption and -1 for every other;
 * the loss is -(1 / global batch) sum log sigmoid(label z).  The model gets
 * the learned bias b as the parameter logit_bias (the plugin's
 * model_extras), saved and loaded with the weights.  A fresh model starts
 * at t = init_logit_scale and b = init_logit_bias; weights from model.init
 * or a resumed state keep theirs (CLIP weights have no logit_bias: it
 * starts at init_logit_bias).  After every step t is clamped to
 * [0, max_logit_scale].
 *
 * On several ranks (with ddp) each rank all-gathers the captions' features
 * and scores its own images against every caption of the global batch;
 * what its terms say of the other ranks' captions goes back to them
 * through an all-reduce of the gathered captions' gradient, of which each
 * rank keeps its own rows.  Weighted by the world size, since ddp averages
 * the ranks' gradients, the gradient is that of one process with the
 * global batch.  (open_clip's neighbour exchange passes the captions round
 * the ring instead, N - 1 steps of one rank's share each: less memory per
 * rank, but the communicator here offers collectives only, and an
 * all-gather of (global batch, embed_dim) features is small beside the
 * model.) */
#include <cliptrain/plugin.h>

#include <math.h>
#include <string.h>

typedef struct {
  double init_scale, init_bias, max_scale;
  int chunk;
  int G;                 /* rows of the largest global batch */
  float *txt_all;        /* (G, E) every rank's text features */
  float *d_txt_all;      /* (G, E) this rank's terms' gradient of them, then all ranks' */
  float *logits;         /* (chunk, G) */
  size_t *counts;        /* (world size) floats of each rank's features */
} Siglip;

static void
release(Siglip *s)
{
  g_clear_pointer(&s->txt_all, g_free);
  g_clear_pointer(&s->d_txt_all, g_free);
  g_clear_pointer(&s->logits, g_free);
  g_clear_pointer(&s->counts, g_free);
}

static gboolean
start(Siglip *s, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  if (!ct_model_logit_bias(m)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "the model has no logit_bias: these weights were not trained with "
                "siglip_trainer; use a loss that fits them (clip_trainer)");
    return FALSE;
  }
  release(s);
  int W = ct_learner_world_size(L), E = ct_model_config(m)->embed_dim;
  s->G = ct_model_max_batch(m) * W;
  s->txt_all = g_try_new0(float, (size_t) s->G * E);
  s->d_txt_all = g_try_new0(float, (size_t) s->G * E);
  /* the loss holds the rows of a chunk (whole blocks) of this rank's batch */
  int rows = MIN(CT_SIGLIP_CHUNK_ROWS(s->chunk), ct_model_max_batch(m));
  s->logits = g_try_new0(float, (size_t) rows * s->G);
  s->counts = g_new0(size_t, W);
  if (!s->txt_all || !s->d_txt_all || !s->logits) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "out of memory for the loss's %d x %d logits",
                rows, s->G);
    return FALSE;
  }
  return TRUE;
}

static gboolean
loss(Siglip *s, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  CtComm *comm = ct_learner_comm(L);
  int b = ct_learner_batch_size(L), W = ct_comm_size(comm), me = ct_comm_rank(comm);
  int E = ct_model_config(m)->embed_dim;
  if (!ct_comm_allgather_counts(comm, (size_t) b * E, s->counts, error))
    return FALSE;
  int G = 0, offset = 0;
  for (int r = 0; r < W; r++) {
    if (r == me)
      offset = G;
    G += (int) (s->counts[r] / (size_t) E);
  }
  if (G == 0) { /* every rank's share of a validation batch is empty */
    ct_learner_set_loss(L, 0.0);
    return TRUE;
  }
  if (G > s->G) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "a global batch of %d rows exceeds %d", G,
                s->G);
    return FALSE;
  }
  if (!ct_comm_allgatherv(comm, ct_learner_text_features(L), (size_t) b * E, s->txt_all, NULL,
                          CT_COMM_F32, error))
    return FALSE;
  gboolean grad = ct_learner_training(L);
  /* the global loss is a mean over the global batch's images; times W
   * because ddp averages the ranks' gradients */
  double weight = (double) W / G;
  float dt = 0, db = 0;
  double mine = ct_siglip_loss(s->logits, grad ? ct_learner_d_image_features(L) : NULL,
                               grad ? s->d_txt_all : NULL, grad ? &dt : NULL, grad ? &db : NULL,
                               ct_learner_image_features(L), s->txt_all, offset,
                               *ct_model_logit_scale(m), *ct_model_logit_bias(m), weight, b, G,
                               E, s->chunk);
  if (grad) {
    if (W > 1 && !ct_comm_allreduce(comm, s->d_txt_all, (size_t) G * E, CT_COMM_F32,
                                    CT_COMM_SUM, error))
      return FALSE;
    memcpy(ct_learner_d_text_features(L), s->d_txt_all + (size_t) offset * E,
           sizeof(float) * (size_t) b * E);
    *ct_learner_d_logit_scale(L) = dt;
    *ct_learner_d_logit_bias(L) = db;
  }
  double total = mine / W; /* this rank's share of the global batch's loss */
  if (W > 1 && !ct_comm_allreduce(comm, &total, 1, CT_COMM_F64, CT_COMM_SUM, error))
    return FALSE;
  ct_learner_set_loss(L, total);
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Siglip *s = state;
  gboolean ok = TRUE;
  if (event == CT_EVENT_BEFORE_FIT) {
    ok = start(s, L, error);
  } else if (event == CT_EVENT_AFTER_PRED && ct_learner_has_loss(L)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "another callback already computed this batch's loss: keep one loss callback "
                "(siglip_trainer, clip_trainer or distributed_clip_trainer)");
    ok = FALSE;
  } else if (event == CT_EVENT_AFTER_PRED) {
    ok = loss(s, L, error);
  } else if (event == CT_EVENT_AFTER_STEP) {
    float *t = ct_model_logit_scale(ct_learner_model(L));
    *t = fminf(fmaxf(*t, 0.0f), (float) s->max_scale);
  }
  return ok ? CT_STATUS_OK : CT_STATUS_ERROR;
}

static void
init_model(void *state, CtModel *m)
{
  Siglip *s = state;
  *ct_model_logit_scale(m) = (float) s->init_scale;
  if (ct_model_logit_bias(m))
    *ct_model_logit_bias(m) = (float) s->init_bias;
}

static void *
create(const CtParams *params, GError **error)
{
  Siglip *s = g_new0(Siglip, 1);
  s->init_scale = ct_params_get_double(params, "init_logit_scale");
  s->init_bias = ct_params_get_double(params, "init_logit_bias");
  s->max_scale = ct_params_get_double(params, "max_logit_scale");
  s->chunk = (int) ct_params_get_int(params, "chunk");
  return s;
}

static void
destroy(void *state)
{
  release(state);
  g_free(state);
}

static const CtParamSpec schema[] = {
  CT_PARAM("init_logit_scale", CT_PARAM_DOUBLE, "2.302585092994046",
           "t of a fresh model (logits are scaled by exp(t)); the paper's log 10", -100, 100,
           NULL),
  CT_PARAM("init_logit_bias", CT_PARAM_DOUBLE, "-10",
           "b of a fresh model, or of weights without logit_bias (CLIP's); the paper's -10",
           -1000, 1000, NULL),
  CT_PARAM("max_logit_scale", CT_PARAM_DOUBLE, "4.605170185988092",
           "t is clamped to [0, this] after every step (ln 100, as clip_trainer)", 0, 100, NULL),
  CT_PARAM("chunk", CT_PARAM_INT, "64",
           "image rows scored at a time, rounded up to a multiple of 16: the loss holds that "
           "many x (global batch) logits; the results do not depend on it",
           1, 1 << 20, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "siglip_trainer", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "SigLIP's sigmoid loss (adds the model's logit_bias); clamps "
                        "logit_scale to [0, max_logit_scale]",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_STEP),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = schema, .create = create,
                 .destroy = destroy, .on_event = on_event, .model_extras = CT_MODEL_LOGIT_BIAS,
                 .init_model = init_model)

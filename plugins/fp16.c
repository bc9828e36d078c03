/* fp16: mixed precision, learner.to_fp16() of the fastai/self_supervised
 * CLIP module.
 *
 * At before_fit it switches the model to PRECISION (fp16 or bf16): every
 * matrix product sees operands rounded to it, the activations saved for
 * backward are stored in 16 bits, and the master weights, gradients, layer
 * norm, softmax and loss stay float32 (ct_model_set_memory()).
 *
 * fp16 has a narrow range, so it scales the loss as fastai's
 * MixedPrecision (torch.cuda.amp.GradScaler) does: backward starts from
 * d loss * scale; before each step the gradients are unscaled and checked;
 * a non-finite gradient cancels the step and halves the scale; after
 * growth_interval clean steps in a row the scale doubles.  bf16 has
 * float32's range and needs no scaler.  The scale, the count of clean
 * steps and the count of skipped steps are kept in training states, and
 * logged each epoch as loss_scale and skipped_steps (fp16 only).
 *
 * Order 15: after grad_accumulation (10), whose cancelled micro-batch
 * steps must not count, and before grad_clip (20), which must see
 * unscaled gradients. */
#include <cliptrain/plugin.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>

typedef struct {
  CtPrecision precision;
  gboolean dynamic;
  double scale;         /* the current loss scale; init_scale at first */
  int64_t growth_interval;
  int64_t good;         /* clean steps since the scale last changed */
  int64_t skipped;      /* steps cancelled for overflow, in all */
  int64_t skipped_epoch_start;
} Fp16;

/* Unscale the gradients that the optimizer steps (all of them, or with
 * ddp's zero this rank's shard); FALSE when one is inf or NaN on any rank,
 * so that every rank cancels the same steps. */
static gboolean
unscale(CtLearner *L, CtModel *m, double scale, gboolean *finite_out, GError **error)
{
  size_t off, n;
  ct_optimizer_shard(ct_learner_optimizer(L), &off, &n);
  float *g = ct_model_grads(m) + off;
  float inv = (float) (1.0 / scale); /* a power of two: exact */
  gboolean finite = TRUE;
  for (size_t i = 0; i < n; i++) {
    g[i] *= inv;
    finite &= isfinite(g[i]) != 0;
  }
  int64_t all = finite;
  if (n != ct_model_n_params(m) &&
      !ct_comm_allreduce(ct_learner_comm(L), &all, 1, CT_COMM_I64, CT_COMM_MIN, error))
    return FALSE;
  *finite_out = all != 0;
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Fp16 *s = state;
  CtModel *m = ct_learner_model(L);
  gboolean scaler = s->precision == CT_PRECISION_FP16;
  switch (event) {
  case CT_EVENT_BEFORE_FIT:
    if (!ct_model_set_memory(m, s->precision, ct_model_checkpoint_nchunks(m), error))
      return CT_STATUS_ERROR;
    if (scaler) {
      ct_recorder_declare(ct_learner_recorder(L), "loss_scale");
      ct_recorder_declare(ct_learner_recorder(L), "skipped_steps");
    }
    return CT_STATUS_OK;
  case CT_EVENT_BEFORE_TRAIN:
    /* here rather than at before_fit: a resumed fit restores the state
     * after before_fit */
    ct_model_set_loss_scale(m, scaler ? (float) s->scale : 1.0f);
    return CT_STATUS_OK;
  case CT_EVENT_BEFORE_EPOCH:
    s->skipped_epoch_start = s->skipped;
    return CT_STATUS_OK;
  case CT_EVENT_BEFORE_STEP:
    if (!scaler)
      return CT_STATUS_OK;
    gboolean finite;
    if (!unscale(L, m, s->scale, &finite, error))
      return CT_STATUS_ERROR;
    if (!finite) {
      s->skipped++;
      s->good = 0;
      if (s->dynamic)
        s->scale = fmax(s->scale * 0.5, 1.0 / 16777216.0);
      ct_model_set_loss_scale(m, (float) s->scale);
      return CT_STATUS_CANCEL_STEP; /* the learner still zeroes the gradients */
    }
    if (s->dynamic && ++s->good >= s->growth_interval) {
      s->good = 0;
      s->scale = fmin(s->scale * 2.0, 16777216.0 * 256.0);
      ct_model_set_loss_scale(m, (float) s->scale);
    }
    return CT_STATUS_OK;
  case CT_EVENT_AFTER_EPOCH:
    if (scaler) {
      CtRecorder *rec = ct_learner_recorder(L);
      ct_recorder_log(rec, "loss_scale", s->scale);
      ct_recorder_log(rec, "skipped_steps", (double) (s->skipped - s->skipped_epoch_start));
    }
    return CT_STATUS_OK;
  case CT_EVENT_AFTER_FIT:
    ct_model_set_loss_scale(m, 1.0f);
    return CT_STATUS_OK;
  default:
    return CT_STATUS_OK;
  }
}

static GBytes *
state_save(void *state)
{
  Fp16 *s = state;
  char *text = g_strdup_printf("%.17g %" PRId64 " %" PRId64 " %" PRId64, s->scale, s->good,
                               s->skipped, s->skipped_epoch_start);
  return g_bytes_new_take(text, strlen(text) + 1);
}

static gboolean
state_load(void *state, GBytes *bytes, GError **error)
{
  Fp16 *s = state;
  gsize n;
  const char *text = g_bytes_get_data(bytes, &n);
  double scale;
  int64_t good, skipped, start;
  if (!text || n == 0 || text[n - 1] != '\0' ||
      sscanf(text, "%lg %" SCNd64 " %" SCNd64 " %" SCNd64, &scale, &good, &skipped, &start) != 4 ||
      !(scale > 0) || !isfinite(scale) || good < 0 || skipped < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "fp16: unreadable loss-scale state");
    return FALSE;
  }
  s->scale = scale;
  s->good = good;
  s->skipped = skipped;
  s->skipped_epoch_start = start;
  return TRUE;
}

static void *
create(const CtParams *params, GError **error)
{
  Fp16 *s = g_new0(Fp16, 1);
  if (!ct_precision_from_name(ct_params_get_string(params, "precision"), &s->precision, error)) {
    g_free(s);
    return NULL;
  }
  s->dynamic = ct_params_get_bool(params, "dynamic");
  s->scale = ct_params_get_double(params, "init_scale");
  s->growth_interval = ct_params_get_int(params, "growth_interval");
  double e = log2(s->scale);
  if (e != floor(e)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "fp16: init_scale %g is not a power of two (scaling must be exact)", s->scale);
    g_free(s);
    return NULL;
  }
  return s;
}

static const CtParamSpec schema[] = {
  CT_PARAM("precision", CT_PARAM_STRING, "fp16", "half format of products and saved activations",
           0, 0, "fp16|bf16"),
  CT_PARAM("init_scale", CT_PARAM_DOUBLE, "65536", "fp16: initial loss scale (a power of two)",
           1.0 / 16777216.0, 16777216.0 * 256.0, NULL),
  CT_PARAM("growth_interval", CT_PARAM_INT, "2000",
           "fp16: clean steps in a row before the scale doubles", 1, 1e9, NULL),
  CT_PARAM("dynamic", CT_PARAM_BOOL, "true",
           "fp16: adjust the scale (false: keep init_scale; overflowing steps are still skipped)",
           0, 0, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "fp16", .version = "1.0", .grads = CT_GRADS_WHOLE,
                 .doc = "Mixed precision (fp16 with dynamic loss scaling, or bf16), as fastai's "
                        "to_fp16()",
                 .order = 15,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_BEFORE_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_TRAIN) | CT_EVENT_BIT(CT_EVENT_BEFORE_STEP) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = g_free,
                 .on_event = on_event, .state_save = state_save, .state_load = state_load)

/* clip_trainer: the fastai/self_supervised CLIP module's CLIPTrainer.
 * Computes CLIP's symmetric contrastive loss from the image and text
 * features after each forward pass, fills d loss / d features and
 * d loss / d logit_scale for the backward pass, and clamps logit_scale to
 * [0, ln 100] after every step. */
#include <cliptrain/plugin.h>

#include <math.h>

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  CtModel *m = ct_learner_model(L);
  float *logit_scale = ct_model_logit_scale(m);
  if (event == CT_EVENT_AFTER_PRED) {
    if (ct_learner_has_loss(L)) { /* two loss callbacks would overwrite each other */
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "another callback already computed this batch's loss: keep one loss "
                  "callback (clip_trainer or distributed_clip_trainer)");
      return CT_STATUS_ERROR;
    }
    int B = ct_learner_batch_size(L);
    int E = ct_model_config(m)->embed_dim;
    if (B == 0) { /* a rank's empty share of a short last validation batch */
      ct_learner_set_loss(L, 0.0);
      return CT_STATUS_OK;
    }
    gboolean grad = ct_learner_training(L);
    double loss = ct_clip_loss(ct_learner_scratch_bb(L, 0),
                               grad ? ct_learner_d_image_features(L) : NULL,
                               grad ? ct_learner_d_text_features(L) : NULL,
                               grad ? ct_learner_d_logit_scale(L) : NULL,
                               ct_learner_scratch_bb(L, 1), ct_learner_image_features(L),
                               ct_learner_text_features(L), *logit_scale, B, E);
    ct_learner_set_loss(L, loss);
  } else if (event == CT_EVENT_AFTER_STEP) {
    /* the fastai/self_supervised CLIP module clamps to ln 100 so that
       exp(logit_scale) <= 100 */
    *logit_scale = fminf(fmaxf(*logit_scale, 0.0f), logf(100.0f));
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  static int token;
  return &token; /* no state */
}

CT_PLUGIN_DEFINE(.name = "clip_trainer", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "CLIP's contrastive loss; clamps logit_scale to [0, ln 100] after each step",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_AFTER_PRED) | CT_EVENT_BIT(CT_EVENT_AFTER_STEP),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = NULL, .create = create,
                 .destroy = NULL, .on_event = on_event)

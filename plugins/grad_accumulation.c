/* grad_accumulation: exact gradient accumulation for a contrastive loss,
 * with open_clip's method.
 *
 * Naive accumulation changes what the loss means: each micro-batch would
 * only see its own negatives.  Here every loop batch is a micro-batch:
 *  1. for micro-batches 1 .. n-1 the plugin keeps the inputs and the
 *     features of the forward pass and cancels backward and the step;
 *  2. at micro-batch n (or the last batch of the epoch) it computes the
 *     CLIP loss over all the cached features at once, then for each earlier
 *     micro-batch re-runs its forward pass (with activations) and
 *     backpropagates that micro-batch's rows of d loss / d features;
 *  3. the loop then backpropagates the current micro-batch (re-run last,
 *     so that its activations are the model's) and takes one step.
 * The gradients equal those of one batch of n micro-batches, within float
 * rounding, while the model holds activations for one micro-batch only.
 * The loss recorded for micro-batches 1 .. n-1 is their own (clip_trainer's);
 * at micro-batch n it is the whole batch's.  Order 10: after clip_trainer. */
#include <cliptrain/plugin.h>

#include <math.h>
#include <string.h>

typedef struct {
  int n;            /* micro-batches per step */
  int j;            /* micro-batches cached so far in this step */
  int cap_b;        /* rows per micro-batch the buffers hold */
  size_t npix, ctx, E;
  int *sizes;       /* (n) rows of each cached micro-batch */
  uint64_t *keys;   /* (n) its patch-dropout key: a re-run keeps the same patches */
  float *images;    /* (n, cap_b, 3, R, R) cached inputs */
  int32_t *tokens;  /* (n, cap_b, ctx) */
  float *img, *txt; /* (n * cap_b, E) cached features, packed */
  float *d_img, *d_txt; /* (n * cap_b, E) */
  float *logits, *scratch; /* (n * cap_b)^2 */
} Accum;

static void
release(Accum *a)
{
  g_free(a->sizes);
  g_free(a->keys);
  g_free(a->images);
  g_free(a->tokens);
  g_free(a->img);
  g_free(a->txt);
  g_free(a->d_img);
  g_free(a->d_txt);
  g_free(a->logits);
  g_free(a->scratch);
}

/* Buffers for micro-batches of up to B rows, allocated once at before_fit. */
static void
allocate(Accum *a, CtLearner *L)
{
  CtModel *m = ct_learner_model(L);
  const CtConfig *c = ct_model_config(m);
  release(a);
  a->cap_b = ct_model_max_batch(m);
  a->npix = (size_t) 3 * c->image_resolution * c->image_resolution;
  a->ctx = c->context_length;
  a->E = c->embed_dim;
  size_t rows = (size_t) a->n * a->cap_b;
  a->sizes = g_new0(int, a->n);
  a->keys = g_new0(uint64_t, a->n);
  a->images = g_new(float, rows * a->npix);
  a->tokens = g_new(int32_t, rows * a->ctx);
  a->img = g_new(float, rows * a->E);
  a->txt = g_new(float, rows * a->E);
  a->d_img = g_new(float, rows * a->E);
  a->d_txt = g_new(float, rows * a->E);
  a->logits = g_new(float, rows * rows);
  a->scratch = g_new(float, rows * rows);
}

/* Rows before micro-batch k in the packed feature buffers. */
static size_t
offset(const Accum *a, int k)
{
  size_t off = 0;
  for (int i = 0; i < k; i++)
    off += a->sizes[i];
  return off;
}

/* The whole batch's loss, and each earlier micro-batch's backward. */
static gboolean
accumulate(Accum *a, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  size_t N = offset(a, a->j), E = a->E;
  float d_scale = 0;
  double loss = ct_clip_loss(a->logits, a->d_img, a->d_txt, &d_scale, a->scratch, a->img,
                             a->txt, *ct_model_logit_scale(m), (int) N, (int) E);
  for (int k = 0; k + 1 < a->j; k++) {
    size_t off = offset(a, k);
    ct_model_set_patch_dropout_key(m, a->keys[k]);
    if (!ct_model_forward(m, a->images + (size_t) k * a->cap_b * a->npix,
                          a->tokens + (size_t) k * a->cap_b * a->ctx, a->sizes[k], error))
      return FALSE;
    ct_model_backward(m, a->d_img + off * E, a->d_txt + off * E);
  }
  /* the current micro-batch last: the loop's backward uses the model's
   * activations, so they must be this batch's again */
  int k = a->j - 1;
  size_t off = offset(a, k);
  ct_model_set_patch_dropout_key(m, a->keys[k]);
  if (!ct_model_forward(m, a->images + (size_t) k * a->cap_b * a->npix,
                        a->tokens + (size_t) k * a->cap_b * a->ctx, a->sizes[k], error))
    return FALSE;
  memcpy(ct_learner_d_image_features(L), a->d_img + off * E, sizeof(float) * a->sizes[k] * E);
  memcpy(ct_learner_d_text_features(L), a->d_txt + off * E, sizeof(float) * a->sizes[k] * E);
  *ct_learner_d_logit_scale(L) = d_scale;
  ct_learner_set_loss(L, loss);
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Accum *a = state;
  switch (event) {
  case CT_EVENT_BEFORE_FIT:
    if (ct_model_logit_bias(ct_learner_model(L))) { /* siglip_trainer's model */
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "grad_accumulation accumulates CLIP's contrastive loss, and this model has "
                  "SigLIP's logit_bias (siglip_trainer): drop grad_accumulation");
      return CT_STATUS_ERROR;
    }
    allocate(a, L);
    a->j = 0;
    return CT_STATUS_OK;
  case CT_EVENT_BEFORE_TRAIN:
    a->j = 0;
    return CT_STATUS_OK;
  case CT_EVENT_AFTER_PRED: {
    /* cache this micro-batch's inputs and features */
    int B = ct_learner_batch_size(L);
    int k = a->j++;
    a->sizes[k] = B;
    a->keys[k] = ct_model_patch_dropout_key(ct_learner_model(L));
    size_t off = offset(a, k);
    memcpy(a->images + (size_t) k * a->cap_b * a->npix, ct_learner_images(L),
           sizeof(float) * B * a->npix);
    memcpy(a->tokens + (size_t) k * a->cap_b * a->ctx, ct_learner_tokens(L),
           sizeof(int32_t) * B * a->ctx);
    memcpy(a->img + off * a->E, ct_learner_image_features(L), sizeof(float) * B * a->E);
    memcpy(a->txt + off * a->E, ct_learner_text_features(L), sizeof(float) * B * a->E);
    gboolean last = a->j == a->n || ct_learner_iter(L) + 1 == ct_learner_n_iter(L);
    if (last && !accumulate(a, L, error))
      return CT_STATUS_ERROR;
    return CT_STATUS_OK;
  }
  case CT_EVENT_BEFORE_BACKWARD:
    /* until the last micro-batch: no backward, no step */
    return a->j == 0 || (a->j < a->n && ct_learner_iter(L) + 1 < ct_learner_n_iter(L))
             ? CT_STATUS_CANCEL_BACKWARD
             : CT_STATUS_OK;
  case CT_EVENT_BEFORE_STEP:
    if (a->j < a->n && ct_learner_iter(L) + 1 < ct_learner_n_iter(L))
      return CT_STATUS_CANCEL_STEP;
    a->j = 0; /* stepped: start the next batch */
    return CT_STATUS_OK;
  default:
    return CT_STATUS_OK;
  }
}

static void *
create(const CtParams *params, GError **error)
{
  Accum *a = g_new0(Accum, 1);
  a->n = (int) ct_params_get_int(params, "n");
  return a;
}

static void
destroy(void *state)
{
  release(state);
  g_free(state);
}

static const CtParamSpec schema[] = {
  CT_PARAM("n", CT_PARAM_INT, "4", "micro-batches (loop batches) per optimizer step", 1, 65536,
           NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "grad_accumulation", .version = "1.0", .grads = CT_GRADS_WHOLE,
                 .doc = "Exact gradient accumulation for the contrastive loss (open_clip's method)",
                 .order = 10,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_BEFORE_TRAIN) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_BACKWARD) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_STEP),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = destroy,
                 .on_event = on_event)

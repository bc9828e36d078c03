/* learner.c: fastai's training loop, with callbacks.
 *
 * The structure follows fastai's Learner: each scope (fit, epoch, train,
 * validate, batch, backward, step) runs as
 *
 *   status = before_<scope>; if ok: status = body
 *   if status is this scope's cancel: status = after_cancel_<scope>
 *   else if status is not ok: return it (an outer scope handles it)
 *   if ok: status = after_<scope>
 *
 * which is fastai's _with_events with exceptions turned into statuses. */
#include "config.h"

#include "train/learner-private.h"
#include "model/model-private.h"
#include "train/plugin-loader.h"

#include <cliptrain/rng.h>

#include <math.h>
#include <stdarg.h>
#include <string.h>

static const char *const event_names[CT_N_EVENTS] = {
  "before_fit", "before_epoch", "before_train", "before_batch", "after_pred", "after_loss",
  "before_backward", "after_backward", "before_step", "after_step", "after_batch",
  "after_train", "before_validate", "after_validate", "after_epoch", "after_fit",
  "after_cancel_batch", "after_cancel_backward", "after_cancel_step", "after_cancel_train",
  "after_cancel_validate", "after_cancel_epoch", "after_cancel_fit", "after_layer_backward",
};

static const char *const status_names[] = {
  "ok", "cancel_batch", "cancel_backward", "cancel_step", "cancel_train",
  "cancel_valid", "cancel_epoch", "cancel_fit", "error",
};

const char *
ct_event_name(CtEvent event)
{
  return (unsigned) event < CT_N_EVENTS ? event_names[event] : NULL;
}

int
ct_event_from_name(const char *name)
{
  for (int i = 0; i < CT_N_EVENTS; i++)
    if (strcmp(event_names[i], name) == 0)
      return i;
  return -1;
}

const char *
ct_status_name(CtStatus status)
{
  if ((unsigned) status <= CT_STATUS_ERROR)
    return status_names[status];
  return status >= CT_STATUS_CUSTOM_FIRST ? "custom" : "invalid";
}

const CtLearner *volatile ct_learner_fitting;

/* ---------------------------------------------------------------- setup */

void
ct_callback_free(CtCallback *cb)
{
  if (!cb)
    return;
  if (cb->state && cb->desc->destroy)
    cb->desc->destroy(cb->state);
  ct_params_free(cb->params);
  g_free(cb->label);
  g_free(cb->file);
  g_free(cb->where);
  g_free(cb);
}

CtLearner *
ct_learner_new(CtModel *model, CtOptimizer *opt, CtLoader *train, CtLoader *valid,
               int batch_size, int n_epoch, uint64_t seed, const char *out_dir, GError **error)
{
  const CtConfig *c = ct_model_config(model);
  if (batch_size > ct_model_max_batch(model)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "batch size %d exceeds the model's %d",
                batch_size, ct_model_max_batch(model));
    return NULL;
  }
  CtLearner *L = g_new0(CtLearner, 1);
  L->model = model;
  L->opt = opt;
  L->train = train;
  L->valid = valid;
  L->batch_size = batch_size;
  L->n_epoch = n_epoch;
  L->seed = seed;
  L->out_dir = g_strdup(out_dir);
  L->recipe_values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  L->ckpt_meta = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  L->cbs = g_ptr_array_new_with_free_func((GDestroyNotify) ct_callback_free);
  size_t R = c->image_resolution, E = c->embed_dim, B = batch_size;
  L->images = g_new0(float, B * 3 * R * R);
  L->tokens = g_new0(int32_t, B * c->context_length);
  L->d_img = g_new0(float, B * E);
  L->d_txt = g_new0(float, B * E);
  L->scratch[0] = g_new0(float, B * B);
  L->scratch[1] = g_new0(float, B * B);
  ct_recorder_init(&L->rec, out_dir);
  ct_learner_add_callback(L, ct_recorder_callback_new());
  L->comm = ct_comm_new(NULL, NULL, NULL);
  return L;
}

void
ct_learner_set_comm(CtLearner *L, CtComm *comm)
{
  ct_comm_free(L->comm);
  L->comm = comm;
  if (ct_comm_rank(comm) != 0)
    g_clear_pointer(&L->rec.out_dir, g_free);
}

void
ct_learner_free(CtLearner *L)
{
  if (!L)
    return;
  g_ptr_array_free(L->cbs, TRUE); /* destroys plugin states first */
  ct_model_free(L->model);
  ct_optimizer_free(L->opt);
  if (L->sched)
    ct_schedule_free(L->sched);
  for (int i = 0; i < 2; i++) {
    CtLoader *ld = i ? L->valid : L->train;
    if (!ld)
      continue;
    CtDataset *ds = ct_loader_dataset(ld);
    ct_loader_free(ld);
    ct_dataset_free(ds);
  }
  g_hash_table_destroy(L->recipe_values);
  g_hash_table_destroy(L->ckpt_meta);
  ct_recorder_clear(&L->rec);
  g_free(L->out_dir);
  g_free(L->recipe_sha256);
  g_free(L->last_state);
  g_free(L->pending_opt);
  g_free(L->cancel_reason);
  ct_comm_free(L->comm);
  if (L->pending_states)
    g_hash_table_destroy(L->pending_states);
  g_free(L->images);
  g_free(L->tokens);
  g_free(L->d_img);
  g_free(L->d_txt);
  g_free(L->scratch[0]);
  g_free(L->scratch[1]);
  g_clear_error(&L->error);
  g_free(L);
}

void
ct_learner_add_callback(CtLearner *L, CtCallback *cb)
{
  cb->position = (int) L->cbs->len;
  g_ptr_array_add(L->cbs, cb);
}

void
ct_learner_set_recipe_value(CtLearner *L, const char *path, const char *value)
{
  g_hash_table_replace(L->recipe_values, g_strdup(path), g_strdup(value));
}

gboolean
ct_learner_set_step_in_backward(CtLearner *L, gboolean on, GError **error)
{
  L->step_in_backward = on;
  return !on || ct_model_set_block_grads_scratch(L->model, TRUE, error);
}

void
ct_learner_set_tokenizer(CtLearner *L, CtTokenizer *tok)
{
  L->tok = tok;
}

void
ct_learner_set_checkpoint_meta(CtLearner *L, const char *key, const char *value)
{
  g_hash_table_replace(L->ckpt_meta, g_strdup(key), g_strdup(value));
}

void
ct_learner_set_recipe(CtLearner *L, const char *yaml)
{
  ct_learner_set_checkpoint_meta(L, "recipe", yaml);
  g_free(L->recipe_sha256);
  L->recipe_sha256 = g_compute_checksum_for_string(G_CHECKSUM_SHA256, yaml, -1);
}

void
ct_learner_set_stops(CtLearner *L, const CtLearnerStops *s)
{
  L->stop_after = s->stop_after;
  L->save_every = s->save_every;
  L->deadline = s->deadline;
  L->stop_flag = s->stop_flag;
  L->save_seconds = s->save_seconds;
  L->save_flag = s->save_flag;
}

gboolean
ct_learner_stopped(const CtLearner *L)
{
  return L->stopped;
}

static int
cmp_callbacks(gconstpointer a, gconstpointer b)
{
  const CtCallback *x = *(CtCallback *const *) a, *y = *(CtCallback *const *) b;
  if (x->order != y->order)
    return x->order < y->order ? -1 : 1;
  return x->position - y->position;
}

/* ---------------------------------------------------------------- events */

static CtStatus
run_event(CtLearner *L, CtEvent ev)
{
  uint64_t bit = CT_EVENT_BIT(ev);
  for (guint i = 0; i < L->cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(L->cbs, i);
    const CtPluginDescriptor *d = cb->desc;
    if (!(d->events & bit) || !d->on_event)
      continue;
    if ((bit & CT_EVENTS_INNER) &&
        !(ct_plugin_desc_run(d) & (L->training ? CT_RUN_TRAIN : CT_RUN_VALID)))
      continue;
    GError *e = NULL;
    L->current_event = ev;
    L->current_cb = cb;
    CtStatus st = d->on_event(cb->state, L, ev, &e);
    L->current_cb = NULL;
    if (st == CT_STATUS_CANCEL_FIT && !L->cancel_by)
      L->cancel_by = cb;
    if (st == CT_STATUS_OK) {
      g_clear_error(&e);
      continue;
    }
    /* past CT_STATUS_ERROR: garbage, or the reserved range (the core's own
     * statuses and a callback's private ones), which no callback returns */
    gboolean invalid = (unsigned) st > CT_STATUS_ERROR;
    if (st == CT_STATUS_ERROR || invalid) {
      g_clear_error(&L->error);
      g_set_error(&L->error, CT_ERROR, CT_ERROR_FAILED, "plugin %s failed in %s: %s",
                  cb->label, ct_event_name(ev),
                  e ? e->message
                    : invalid ? "it returned an invalid status" : "it gave no reason");
      g_clear_error(&e);
      return CT_STATUS_ERROR;
    }
    g_clear_error(&e);
    return st;
  }
  return CT_STATUS_OK;
}

static CtStatus
fail(CtLearner *L, GError *e)
{
  g_clear_error(&L->error);
  L->error = e;
  return CT_STATUS_ERROR;
}

typedef CtStatus (*Body)(CtLearner *L);

static CtStatus
with_events(CtLearner *L, Body body, CtEvent before, CtEvent after, CtEvent after_cancel,
            CtStatus cancel)
{
  CtStatus st = run_event(L, before);
  if (st == CT_STATUS_OK)
    st = body(L);
  if (st == cancel)
    st = run_event(L, after_cancel);
  if (st != CT_STATUS_OK)
    return st;
  return run_event(L, after);
}

/* ---------------------------------------------------------------- one batch */

static void
layer_hook(void *data, size_t offset, size_t n)
{
  CtLearner *L = data;
  if (L->layer_status != CT_STATUS_OK)
    return;
  L->ready_off = offset;
  L->ready_n = n;
  L->layer_status = run_event(L, CT_EVENT_AFTER_LAYER_BACKWARD);
  if (L->layer_status == CT_STATUS_OK && L->step_in_backward) {
    /* the block's gradients are final: step it now.  They are in the
     * model's block scratch, which the next block overwrites, so the
     * whole buffer is never resident; or, if the scratch is off, in the
     * flat buffer, whose pages are given back */
    float *g = ct_model_ready_grads(L->model);
    ct_optimizer_step_range_from(L->opt, offset, n, g);
    if (g == ct_model_grads(L->model) + offset)
      ct_model_release_grads(L->model, offset, n);
  }
}

static CtStatus
do_backward(CtLearner *L)
{
  L->layer_status = CT_STATUS_OK;
  ct_model_backward(L->model, L->d_img, L->d_txt);
  /* the towers scale their gradients by the loss scale (fp16); so must this */
  ct_model_grads(L->model)[ct_model_find(L->model, "logit_scale")->offset] +=
    L->d_logit_scale * ct_model_loss_scale(L->model);
  const CtParamInfo *bias = ct_model_find(L->model, "logit_bias");
  if (bias)
    ct_model_grads(L->model)[bias->offset] += L->d_logit_bias * ct_model_loss_scale(L->model);
  return L->layer_status;
}

static CtStatus
do_step(CtLearner *L)
{
  ct_optimizer_step(L->opt);
  L->stepped = TRUE;
  return CT_STATUS_OK;
}

/* TerminateOnNaN: the step (1-based) and the state to go back to. */
static GError *
nonfinite_loss_error(const CtLearner *L)
{
  g_autofree char *back =
    L->last_state
      ? g_strdup_printf("the last good training state is %s (step %" G_GINT64_FORMAT
                        "): resume with cliptrain fit --resume %s",
                        L->last_state, L->last_state_iter, L->out_dir ? L->out_dir : ".")
      : g_strdup("no training state was saved before it (fit.save_state_every keeps one)");
  return g_error_new(CT_ERROR, CT_ERROR_FAILED,
                     "training step %" G_GINT64_FORMAT " (epoch %d, batch %d): the loss is %s; %s",
                     L->train_iter + 1, L->epoch, L->iter, isnan(L->loss) ? "NaN" : "infinite",
                     back);
}

static CtStatus
do_one_batch(CtLearner *L)
{
  const CtConfig *c = ct_model_config(L->model);
  GError *e = NULL;
  /* patch dropout draws from (seed, key, sample): the key is the training
   * step and the rank, restored on resume; validation runs in eval mode */
  if (L->training)
    ct_model_set_patch_dropout_key(L->model, (uint64_t) L->train_iter * ct_comm_size(L->comm) +
                                               (uint64_t) ct_comm_rank(L->comm));
  /* a rank's share of a short last validation batch may be empty: its
   * callbacks still run (they may take part in collectives), on no rows */
  if (L->B > 0 && !ct_model_forward(L->model, L->images, L->tokens, L->B, &e))
    return fail(L, e);
  L->has_loss = FALSE;
  L->loss = NAN;
  memset(L->d_img, 0, sizeof(float) * L->B * c->embed_dim);
  memset(L->d_txt, 0, sizeof(float) * L->B * c->embed_dim);
  L->d_logit_scale = 0;
  L->d_logit_bias = 0;
  CtStatus st = run_event(L, CT_EVENT_AFTER_PRED);
  if (st != CT_STATUS_OK)
    return st;
  if (!L->has_loss) {
    g_set_error(&e, CT_ERROR, CT_ERROR_CONFIG,
                "no callback computed the loss; add clip_trainer (or another loss callback) "
                "to the recipe's callbacks");
    return fail(L, e);
  }
  if (L->training && !L->nonfinite_handled && !isfinite(L->loss))
    return fail(L, nonfinite_loss_error(L));
  st = run_event(L, CT_EVENT_AFTER_LOSS);
  if (st != CT_STATUS_OK || !L->training)
    return st;
  st = with_events(L, do_backward, CT_EVENT_BEFORE_BACKWARD, CT_EVENT_AFTER_BACKWARD,
                   CT_EVENT_AFTER_CANCEL_BACKWARD, CT_STATUS_CANCEL_BACKWARD);
  if (st != CT_STATUS_OK)
    return st;
  L->stepped = FALSE;
  st = with_events(L, do_step, CT_EVENT_BEFORE_STEP, CT_EVENT_AFTER_STEP,
                   CT_EVENT_AFTER_CANCEL_STEP, CT_STATUS_CANCEL_STEP);
  if (st == CT_STATUS_OK && L->step_in_backward && !L->stepped) {
    g_set_error(&e, CT_ERROR, CT_ERROR_CONFIG,
                "training step %" G_GINT64_FORMAT ": a callback cancelled the step, but "
                "optimizer.step_in_backward had already stepped the blocks inside backward",
                L->train_iter + 1);
    return fail(L, e);
  }
  if (st != CT_STATUS_OK)
    return st;
  if (L->step_in_backward)
    ct_model_release_grads(L->model, 0, ct_model_n_params(L->model));
  else
    ct_model_zero_grad(L->model);
  return CT_STATUS_OK;
}

/* ---------------------------------------------------------------- batches */

/* After a training batch: was a stop asked for (a step count, a time
 * limit, a signal)?  Then the training state is saved here, and also every
 * save_every training steps, so that a killed run loses little. */
static CtStatus
maybe_stop(CtLearner *L)
{
  gint64 now = g_get_monotonic_time();
  const char *asked = L->save_flag ? *L->save_flag : NULL; /* a signal's "save now" */
  if (asked)
    *L->save_flag = NULL;
  /* clocks and signals differ: every rank stops (or saves) if one does */
  int64_t want[3] = {
    (L->stop_after > 0 && L->train_iter >= L->stop_after) ||
      (L->deadline > 0 && now >= L->deadline) || (L->stop_flag && *L->stop_flag),
    asked != NULL,
    L->save_seconds > 0 && now - L->last_save >= (gint64) (L->save_seconds * 1e6),
  };
  GError *e = NULL;
  if (ct_comm_size(L->comm) > 1 &&
      !ct_comm_allreduce(L->comm, want, 3, CT_COMM_I64, CT_COMM_MAX, &e))
    return fail(L, e);
  gboolean stop = want[0] != 0;
  gboolean periodic = (L->save_every > 0 && L->train_iter % L->save_every == 0) || want[1] ||
                      want[2];
  ct_learner_check_outputs(L);
  if (!stop && !periodic)
    return CT_STATUS_OK;
  g_autofree char *path = g_build_filename(L->out_dir ? L->out_dir : ".", "state.safetensors",
                                           NULL);
  if (!ct_learner_save_state(L, path, &e))
    return fail(L, e);
  L->last_save = g_get_monotonic_time();
  if (want[1] && !stop && ct_comm_rank(L->comm) == 0)
    ct_learner_log(L, "cliptrain: %s: saved the training state after step %" G_GINT64_FORMAT
                      " in %s; training goes on",
                   asked ? asked : "another rank's signal", L->train_iter, path);
  if (!stop)
    return CT_STATUS_OK;
  L->stopped = TRUE;
  return CT_STATUS_STOP;
}

static CtStatus
all_batches(CtLearner *L)
{
  CtLoader *ld = L->training ? L->train : L->valid;
  int first = 0;
  if (L->training && L->resuming) { /* continue the saved epoch where it stopped */
    first = L->resume_batch;
    L->resuming = FALSE;
  }
  ct_loader_start_at(ld, L->epoch, first);
  CtStatus st = CT_STATUS_OK;
  for (L->iter = first; L->iter < L->n_iter; L->iter++) {
    GError *e = NULL;
    if (L->training)
      ct_pace_step_start(L);
    if (!ct_loader_next(ld, L->images, L->tokens, &L->B, &e)) {
      st = fail(L, e);
      break;
    }
    /* the schedule sets lr (and mom) before the batch's callbacks run, as
     * fastai's ParamScheduler does in before_batch */
    if (L->training && L->sched &&
        !ct_schedule_apply(L->sched, L->opt, L->train_iter,
                           (int64_t) L->n_epoch * L->n_train_batches, &e)) {
      st = fail(L, e);
      break;
    }
    L->in_step = L->training;
    st = with_events(L, do_one_batch, CT_EVENT_BEFORE_BATCH, CT_EVENT_AFTER_BATCH,
                     CT_EVENT_AFTER_CANCEL_BATCH, CT_STATUS_CANCEL_BATCH);
    if (L->training) {
      L->train_iter++;
      L->next_batch = L->iter + 1;
    }
    if (L->training && st != CT_STATUS_ERROR) { /* the batch is whole */
      L->in_step = FALSE;
      ct_pace_step_end(L); /* timed, and the periodic log line when due */
    }
    if (st == CT_STATUS_OK && L->training)
      st = maybe_stop(L);
    if (st != CT_STATUS_OK)
      break;
  }
  ct_loader_stop(ld); /* drop what was prepared for batches not taken */
  int skipped = ct_dataset_take_skipped(ct_loader_dataset(ld));
  if (skipped > 0)
    ct_learner_log(L, "cliptrain: epoch %d: %s: skipped %d unreadable image%s", L->epoch,
                   L->training ? "training" : "validation", skipped, skipped == 1 ? "" : "s");
  return st;
}

static CtStatus
do_train(CtLearner *L)
{
  L->training = TRUE;
  L->n_iter = L->planned = L->planned_train = L->n_train_batches;
  L->next_batch = L->resuming ? L->resume_batch : 0;
  ct_model_set_training(L->model, TRUE); /* BatchNorm: batch statistics */
  return with_events(L, all_batches, CT_EVENT_BEFORE_TRAIN, CT_EVENT_AFTER_TRAIN,
                     CT_EVENT_AFTER_CANCEL_TRAIN, CT_STATUS_CANCEL_TRAIN);
}

static CtStatus
do_validate(CtLearner *L)
{
  if (!L->valid || ct_loader_n_batches(L->valid) == 0)
    return CT_STATUS_OK;
  L->training = FALSE;
  L->next_batch = L->n_train_batches; /* this epoch's training is over */
  L->n_iter = L->planned = ct_loader_n_batches(L->valid);
  /* eval mode for the whole validation, its callbacks included (BatchNorm
   * uses and keeps the running statistics), then back to training */
  ct_model_set_training(L->model, FALSE);
  CtStatus st = with_events(L, all_batches, CT_EVENT_BEFORE_VALIDATE, CT_EVENT_AFTER_VALIDATE,
                            CT_EVENT_AFTER_CANCEL_VALIDATE, CT_STATUS_CANCEL_VALID);
  ct_model_set_training(L->model, TRUE);
  return st;
}

static CtStatus
epoch_body(CtLearner *L)
{
  CtStatus st = do_train(L);
  if (st != CT_STATUS_OK)
    return st;
  return do_validate(L);
}

/* Saved callback states go back after before_fit, which may reset them. */
static CtStatus
restore_states(CtLearner *L)
{
  GError *e = NULL;
  /* the optimizer's state too: a plugin may have sharded it in before_fit */
  if (L->pending_opt && !ct_optimizer_load(L->opt, L->pending_opt, &e))
    return fail(L, e);
  g_clear_pointer(&L->pending_opt, g_free);
  if (!L->pending_states)
    return CT_STATUS_OK;
  for (guint i = 0; i < L->cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(L->cbs, i);
    if (!cb->desc->state_load)
      continue;
    g_autofree char *key = g_strdup_printf("plugin.%d.%s", cb->position, cb->desc->name);
    GBytes *bytes = g_hash_table_lookup(L->pending_states, key);
    if (!bytes) {
      g_set_error(&e, CT_ERROR, CT_ERROR_FORMAT, "the training state has nothing for plugin %s",
                  cb->label);
      return fail(L, e);
    }
    if (!cb->desc->state_load(cb->state, bytes, &e)) {
      GError *f = NULL;
      g_set_error(&f, CT_ERROR, CT_ERROR_FORMAT, "plugin %s refused its saved state: %s",
                  cb->label, e ? e->message : "no reason given");
      g_clear_error(&e);
      return fail(L, f);
    }
  }
  g_clear_pointer(&L->pending_states, g_hash_table_destroy);
  return CT_STATUS_OK;
}

static CtStatus
fit_body(CtLearner *L)
{
  CtStatus rs = restore_states(L);
  if (rs != CT_STATUS_OK)
    return rs;
  for (L->epoch = L->resuming ? L->resume_epoch : 0; L->epoch < L->n_epoch; L->epoch++) {
    CtStatus st = with_events(L, epoch_body, CT_EVENT_BEFORE_EPOCH, CT_EVENT_AFTER_EPOCH,
                              CT_EVENT_AFTER_CANCEL_EPOCH, CT_STATUS_CANCEL_EPOCH);
    GError *e = NULL;
    if (st != CT_STATUS_ERROR && ct_recorder_n_epochs(&L->rec) == L->epoch + 1 &&
        !ct_recorder_flush(&L->rec, L->epoch, &e))
      return fail(L, e);
    /* a plugin stopped the fit: the state to inspect or resume is kept in
     * the run folder, saved before after_cancel_fit and after_fit run */
    if (st == CT_STATUS_CANCEL_FIT && L->out_dir) {
      g_autofree char *path = g_build_filename(L->out_dir, "state.safetensors", NULL);
      if (!ct_learner_save_state(L, path, &e))
        return fail(L, e);
      L->cancel_saved = TRUE;
    }
    if (st != CT_STATUS_OK)
      return st;
  }
  return CT_STATUS_OK;
}

/* "cliptrain: early_stopping stopped the fit after epoch 3/10 (step
 * 48): valid_loss has not improved since epoch 1; the training state is
 * in OUT/state.safetensors" */
static void
say_cancelled(CtLearner *L)
{
  const char *reason = L->reason_by == L->cancel_by ? L->cancel_reason : NULL;
  gboolean done = ct_recorder_n_epochs(&L->rec) > L->epoch;
  g_autofree char *when =
    done ? g_strdup_printf("after epoch %d/%d", L->epoch, L->n_epoch)
         : g_strdup_printf("during epoch %d/%d", L->epoch, L->n_epoch);
  g_autofree char *state =
    L->cancel_saved ? g_strdup_printf("; the training state is in %s/state.safetensors",
                                      L->out_dir)
                    : g_strdup("");
  ct_learner_log(L, "cliptrain: %s stopped the fit %s (step %" G_GINT64_FORMAT "): %s%s",
                 L->cancel_by->desc->name, when, L->train_iter,
                 reason ? reason : "it gave no reason", state);
}

gboolean
ct_learner_fit(CtLearner *L, GError **error)
{
  size_t N = ct_dataset_len(ct_loader_dataset(L->train));
  int W = ct_comm_size(L->comm);
  if (W > 1) { /* each rank its block of every global batch */
    ct_loader_set_shard(L->train, ct_comm_rank(L->comm), W, FALSE);
    if (L->valid)
      ct_loader_set_shard(L->valid, ct_comm_rank(L->comm), W, TRUE);
  }
  L->n_train_batches = ct_loader_n_batches(L->train);
  if (L->n_train_batches == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "the training set has %zu samples, fewer than one batch of %d%s", N,
                L->batch_size * W, W > 1 ? " (the batch size times the ranks)" : "");
    return FALSE;
  }
  g_ptr_array_sort(L->cbs, cmp_callbacks);
  ct_model_set_backward_hook(L->model, layer_hook, L);
  ct_model_zero_grad(L->model);
  L->epoch = 0;
  if (!L->resuming)
    L->train_iter = 0;
  L->training = FALSE;
  L->stopped = FALSE;
  L->cancel_by = L->reason_by = NULL;
  L->cancel_saved = FALSE;
  ct_pace_fit_start(L);
  L->last_save = g_get_monotonic_time();
  ct_learner_fitting = L;
  CtStatus st = with_events(L, fit_body, CT_EVENT_BEFORE_FIT, CT_EVENT_AFTER_FIT,
                            CT_EVENT_AFTER_CANCEL_FIT, CT_STATUS_CANCEL_FIT);
  ct_learner_fitting = NULL;
  ct_model_set_backward_hook(L->model, NULL, NULL);
  if (st != CT_STATUS_ERROR && L->cancel_by && ct_comm_rank(L->comm) == 0)
    say_cancelled(L);
  if (st == CT_STATUS_ERROR) {
    g_propagate_error(error, L->error);
    L->error = NULL;
    return FALSE;
  }
  if (st == CT_STATUS_STOP)
    return TRUE; /* L->stopped says so */
  if (st != CT_STATUS_OK) {
    /* a cancel that no scope handles: fastai lets it escape fit too */
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s escaped the loop", ct_status_name(st));
    return FALSE;
  }
  return TRUE;
}

/* ---------------------------------------------------------------- validation alone */

static CtStatus
validate_epoch(CtLearner *L)
{
  return with_events(L, do_validate, CT_EVENT_BEFORE_EPOCH, CT_EVENT_AFTER_EPOCH,
                     CT_EVENT_AFTER_CANCEL_EPOCH, CT_STATUS_CANCEL_EPOCH);
}

gboolean
ct_learner_validate(CtLearner *L, GError **error)
{
  int W = ct_comm_size(L->comm);
  if (L->valid && W > 1)
    ct_loader_set_shard(L->valid, ct_comm_rank(L->comm), W, TRUE);
  if (!L->valid || ct_loader_n_batches(L->valid) == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "the validation set is empty");
    return FALSE;
  }
  L->n_train_batches = 0; /* no training: pct_train stays 0 */
  L->validate_only = TRUE;
  g_ptr_array_sort(L->cbs, cmp_callbacks);
  L->epoch = 0;
  L->train_iter = 0;
  L->training = FALSE;
  L->stopped = FALSE;
  CtStatus st = with_events(L, validate_epoch, CT_EVENT_BEFORE_FIT, CT_EVENT_AFTER_FIT,
                            CT_EVENT_AFTER_CANCEL_FIT, CT_STATUS_CANCEL_FIT);
  if (st == CT_STATUS_ERROR) {
    g_propagate_error(error, L->error);
    L->error = NULL;
    return FALSE;
  }
  if (st != CT_STATUS_OK) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s escaped the validation",
                ct_status_name(st));
    return FALSE;
  }
  return TRUE;
}

/* ---------------------------------------------------------------- accessors */

CtModel *
ct_learner_model(CtLearner *L)
{
  return L->model;
}

CtOptimizer *
ct_learner_optimizer(CtLearner *L)
{
  return L->opt;
}

CtComm *
ct_learner_comm(CtLearner *L)
{
  return L->comm;
}

int
ct_learner_rank(const CtLearner *L)
{
  return ct_comm_rank(L->comm);
}

int
ct_learner_world_size(const CtLearner *L)
{
  return ct_comm_size(L->comm);
}

gboolean
ct_learner_get_hparam(const CtLearner *L, const char *name, double *value)
{
  double v = ct_optimizer_get(L->opt, name); /* NAN: not a hyper-parameter of this kind */
  if (isnan(v))
    return FALSE;
  *value = v;
  return TRUE;
}

gboolean
ct_learner_set_hparam(CtLearner *L, const char *name, double value)
{
  return ct_optimizer_set(L->opt, name, value, NULL);
}

int64_t
ct_learner_step_count(const CtLearner *L)
{
  return ct_optimizer_step_count(L->opt);
}

gboolean
ct_learner_save_optimizer(CtLearner *L, const char *path, GError **error)
{
  return ct_optimizer_save(L->opt, path, error);
}

void
ct_learner_set_schedule(CtLearner *L, CtSchedule *sched)
{
  if (L->sched)
    ct_schedule_free(L->sched);
  L->sched = sched;
}

GHashTable *
ct_learner_checkpoint_metadata(CtLearner *L)
{
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, L->ckpt_meta);
  while (g_hash_table_iter_next(&it, &k, &v))
    g_hash_table_insert(h, g_strdup(k), g_strdup(v));
  g_hash_table_insert(h, g_strdup("step"),
                      g_strdup_printf("%" G_GINT64_FORMAT, ct_optimizer_step_count(L->opt)));
  g_hash_table_insert(h, g_strdup("epoch"), g_strdup_printf("%d", L->epoch));
  return h;
}

int ct_learner_epoch(const CtLearner *L) { return L->epoch; }
int ct_learner_n_epoch(const CtLearner *L) { return L->n_epoch; }
int ct_learner_iter(const CtLearner *L) { return L->iter; }
int ct_learner_n_iter(const CtLearner *L) { return L->n_iter; }
int64_t
ct_learner_n_valid(const CtLearner *L)
{
  return L->valid ? (int64_t) ct_dataset_len(ct_loader_dataset(L->valid)) : 0;
}
int64_t ct_learner_train_iter(const CtLearner *L) { return L->train_iter; }
gboolean ct_learner_training(const CtLearner *L) { return L->training; }
gboolean ct_learner_resumed(const CtLearner *L) { return L->resumed; }
uint64_t ct_learner_seed(const CtLearner *L) { return L->seed; }
const char *ct_learner_out_dir(const CtLearner *L) { return L->out_dir; }
int ct_learner_batch_size(const CtLearner *L) { return L->B; }
float *ct_learner_images(CtLearner *L) { return L->images; }
int32_t *ct_learner_tokens(CtLearner *L) { return L->tokens; }
double ct_learner_loss(const CtLearner *L) { return L->loss; }
gboolean ct_learner_has_loss(const CtLearner *L) { return L->has_loss; }
float *ct_learner_d_image_features(CtLearner *L) { return L->d_img; }
float *ct_learner_d_text_features(CtLearner *L) { return L->d_txt; }
float *ct_learner_d_logit_scale(CtLearner *L) { return &L->d_logit_scale; }
float *ct_learner_d_logit_bias(CtLearner *L) { return &L->d_logit_bias; }
CtRecorder *ct_learner_recorder(CtLearner *L) { return &L->rec; }
CtTokenizer *ct_learner_tokenizer(CtLearner *L) { return L->tok; }

double
ct_learner_pct_train(const CtLearner *L)
{
  double total = (double) L->n_epoch * L->n_train_batches;
  return total > 0 ? L->train_iter / total : 0.0;
}

void
ct_learner_cancel_reason(CtLearner *L, const char *format, ...)
{
  g_return_if_fail(L != NULL && format != NULL);
  va_list ap;
  va_start(ap, format);
  g_free(L->cancel_reason);
  L->cancel_reason = g_strdup_vprintf(format, ap);
  va_end(ap);
  L->reason_by = L->current_cb;
}

const char *
ct_learner_recipe_value(const CtLearner *L, const char *path)
{
  return g_hash_table_lookup(L->recipe_values, path);
}

const float *
ct_learner_image_features(const CtLearner *L)
{
  return ct_model_image_features(L->model);
}

const float *
ct_learner_text_features(const CtLearner *L)
{
  return ct_model_text_features(L->model);
}

void
ct_learner_set_loss(CtLearner *L, double loss)
{
  L->loss = loss;
  L->has_loss = TRUE;
}

void
ct_learner_set_nonfinite_handled(CtLearner *L, gboolean handled)
{
  g_return_if_fail(L != NULL);
  L->nonfinite_handled = handled;
}

gboolean
ct_learner_nonfinite_handled(const CtLearner *L)
{
  return L->nonfinite_handled;
}

float *
ct_learner_scratch_bb(CtLearner *L, int which)
{
  return L->scratch[which ? 1 : 0];
}

void
ct_learner_ready_params(const CtLearner *L, size_t *offset, size_t *n)
{
  *offset = L->ready_off;
  *n = L->ready_n;
}

/* learner.h: the training loop's state, as callbacks see it.
 *
 * A CtLearner runs fastai's Learner loop:
 *
 *   fit:      before_fit, epochs..., after_fit
 *   epoch:    before_epoch, train, validate, after_epoch
 *   train:    before_train, batches..., after_train
 *   validate: before_validate, batches..., after_validate
 *   batch:    before_batch, forward, after_pred, after_loss,
 *             [training only:] before_backward, backward, after_backward,
 *             before_step, optimizer step, after_step, zero grad;
 *             after_batch
 *
 * A callback returns a CtStatus.  A cancel status skips the rest of its
 * scope, then runs after_cancel_<scope> and after_<scope>, as fastai's
 * Cancel*Exception does; CT_STATUS_ERROR stops the run with the callback's
 * GError, naming the callback.  Every pointer returned here is owned by the
 * learner (transfer none) and valid for the whole fit unless stated. */
#ifndef CLIPTRAIN_LEARNER_H
#define CLIPTRAIN_LEARNER_H

#include <cliptrain/comm.h>
#include <cliptrain/ct-common.h>
#include <cliptrain/model.h>
#include <cliptrain/optimizer.h>

G_BEGIN_DECLS

typedef enum {
  CT_STATUS_OK = 0,
  CT_STATUS_CANCEL_BATCH,    /* skip the rest of the batch, step and zero-grad included */
  CT_STATUS_CANCEL_BACKWARD, /* skip the backward pass; the step still runs */
  CT_STATUS_CANCEL_STEP,     /* skip the optimizer step */
  CT_STATUS_CANCEL_TRAIN,    /* skip the rest of training; validation runs */
  CT_STATUS_CANCEL_VALID,    /* skip the rest of validation */
  CT_STATUS_CANCEL_EPOCH,    /* skip the rest of the epoch */
  CT_STATUS_CANCEL_FIT,      /* stop */
  CT_STATUS_ERROR,           /* a real error: the GError says what */
  /* The reserved range, as GStreamer reserves GST_FLOW_CUSTOM_SUCCESS:
   * values from CT_STATUS_CUSTOM_FIRST up are neither the loop's cancels
   * nor errors, so that nobody casts a private value into this enum.
   *   [CT_STATUS_CUSTOM_FIRST, CT_STATUS_CUSTOM_PLUGIN): the core's own
   *     internal statuses (the loop's "stop and save the training state");
   *   CT_STATUS_CUSTOM_PLUGIN and up: a callback's own statuses, to pass
   *     between its own functions.
   * on_event must return one of the statuses above, never one of these:
   * the loop stops the run with an error naming the callback ("it returned
   * an invalid status"). */
  CT_STATUS_CUSTOM_FIRST = 100,
  CT_STATUS_CUSTOM_PLUGIN = 128,
} CtStatus;

typedef enum {
  CT_EVENT_BEFORE_FIT,
  CT_EVENT_BEFORE_EPOCH,
  CT_EVENT_BEFORE_TRAIN,
  CT_EVENT_BEFORE_BATCH,
  CT_EVENT_AFTER_PRED,
  CT_EVENT_AFTER_LOSS,
  CT_EVENT_BEFORE_BACKWARD,
  CT_EVENT_AFTER_BACKWARD,
  CT_EVENT_BEFORE_STEP,
  CT_EVENT_AFTER_STEP,
  CT_EVENT_AFTER_BATCH,
  CT_EVENT_AFTER_TRAIN,
  CT_EVENT_BEFORE_VALIDATE,
  CT_EVENT_AFTER_VALIDATE,
  CT_EVENT_AFTER_EPOCH,
  CT_EVENT_AFTER_FIT,
  CT_EVENT_AFTER_CANCEL_BATCH,
  CT_EVENT_AFTER_CANCEL_BACKWARD,
  CT_EVENT_AFTER_CANCEL_STEP,
  CT_EVENT_AFTER_CANCEL_TRAIN,
  CT_EVENT_AFTER_CANCEL_VALIDATE,
  CT_EVENT_AFTER_CANCEL_EPOCH,
  CT_EVENT_AFTER_CANCEL_FIT,
  /* During backward, after each residual block and each tower's stem:
   * the gradients of ct_learner_ready_params() are final.  For plugins
   * that overlap communication with backward (ddp). */
  CT_EVENT_AFTER_LAYER_BACKWARD,
  CT_N_EVENTS
} CtEvent;

#define CT_EVENT_BIT(e) ((uint64_t) 1 << (e))
/* Events that run in training or validation only for callbacks restricted
 * to one of them (fastai's inner loop). */
#define CT_EVENTS_INNER                                                                   \
  (CT_EVENT_BIT(CT_EVENT_BEFORE_BATCH) | CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |              \
   CT_EVENT_BIT(CT_EVENT_AFTER_LOSS) | CT_EVENT_BIT(CT_EVENT_AFTER_BACKWARD) |            \
   CT_EVENT_BIT(CT_EVENT_AFTER_STEP) | CT_EVENT_BIT(CT_EVENT_AFTER_CANCEL_BATCH) |        \
   CT_EVENT_BIT(CT_EVENT_AFTER_BATCH))

/* "before_fit", ... (transfer none); NULL for an invalid event. */
CT_API const char *ct_event_name(CtEvent event);
/* The event called NAME, or -1. */
CT_API int ct_event_from_name(const char *name);
/* "ok", "cancel_batch", ... ; "custom" for the reserved range, "invalid"
 * for any other value.  (transfer none) */
CT_API const char *ct_status_name(CtStatus status);

typedef struct CtLearner CtLearner;
typedef struct CtRecorder CtRecorder;

/* ---- the model and the optimizer ---- */
CT_API CtModel *ct_learner_model(CtLearner *learner);
/* The optimizer that the loop steps (for plugins that shard it, like
 * ddp's zero option, or read its state). */
CT_API CtOptimizer *ct_learner_optimizer(CtLearner *learner);
/* Optimizer hyper-parameters by name ("lr", "beta1", "beta2", "eps",
 * "weight_decay"); set takes effect at the next step.  FALSE for an
 * unknown name. */
CT_API gboolean ct_learner_get_hparam(const CtLearner *learner, const char *name, double *value);
CT_API gboolean ct_learner_set_hparam(CtLearner *learner, const char *name, double value);
/* Write the optimizer's state (moments and step count, as
 * "exp_avg.<param>", "exp_avg_sq.<param>" tensors plus "step" metadata)
 * to PATH as safetensors, atomically. */
CT_API gboolean ct_learner_save_optimizer(CtLearner *learner, const char *path, GError **error);
/* What a checkpoint of this run should carry in its metadata: "recipe"
 * (the resolved recipe), "step", "epoch", and the tokenizer: "vocab" (the
 * learned merges, in OpenAI's format) or "vocab_file" and "vocab_sha256".
 * Callbacks add their own entries (g_strdup'd keys and values) and pass it
 * to ct_model_save().  (transfer full: g_hash_table_unref) */
CT_API GHashTable *ct_learner_checkpoint_metadata(CtLearner *learner);
/* Optimizer steps taken so far. */
CT_API int64_t ct_learner_step_count(const CtLearner *learner);

/* ---- the process group (comm.h) ----
 * The run's communicator: never NULL; world size 1 without a distributed
 * plugin.  Rank 0 alone writes the run's files (metrics, reports,
 * checkpoints) and prints progress; a callback that writes files or
 * prints should do the same.  Each rank sees its own shard of the data:
 * batch k of an epoch is the rank's block of the epoch's k-th global batch
 * of world_size x batch_size samples, so every rank has the same number of
 * batches and, together, they see what one process with the global batch
 * would.  In validation a rank's block may be empty (batch size 0) at the
 * end of the set; its callbacks still run, with no rows. */
CT_API CtComm *ct_learner_comm(CtLearner *learner);
CT_API int ct_learner_rank(const CtLearner *learner);
CT_API int ct_learner_world_size(const CtLearner *learner);

/* ---- where we are ---- */
CT_API int ct_learner_epoch(const CtLearner *learner);     /* 0-based */
CT_API int ct_learner_n_epoch(const CtLearner *learner);
CT_API int ct_learner_iter(const CtLearner *learner);      /* batch in this phase, 0-based */
CT_API int ct_learner_n_iter(const CtLearner *learner);    /* batches in this phase */
/* Batches this phase will run: n_iter, unless a callback that cuts the
 * phase short (short_epoch) said fewer, at before_train or
 * before_validate, with set_planned_iter (N is clamped to [1, n_iter]).
 * Progress displays count to it; the fit's ETA counts the training
 * phase's. */
CT_API int ct_learner_planned_iter(const CtLearner *learner);
CT_API void ct_learner_set_planned_iter(CtLearner *learner, int n);
CT_API int64_t ct_learner_train_iter(const CtLearner *learner); /* training batches so far */
/* Fraction of training done: train_iter / (n_epoch * training batches). */
CT_API double ct_learner_pct_train(const CtLearner *learner);
CT_API gboolean ct_learner_training(const CtLearner *learner);
/* Samples in the whole validation set (all ranks' shards together); 0
 * without one.  Known from before_fit on. */
CT_API int64_t ct_learner_n_valid(const CtLearner *learner);
/* TRUE when this fit continues a saved training state (--resume): files
 * a callback writes should then be appended to, not started again.
 * Saved callback states are restored right after before_fit. */
CT_API gboolean ct_learner_resumed(const CtLearner *learner);
CT_API uint64_t ct_learner_seed(const CtLearner *learner);
/* The run's output folder, or NULL when there is none (cliptrain eval
 * runs the validation alone and writes no files).  (transfer none) */
CT_API const char *ct_learner_out_dir(const CtLearner *learner);
/* A value of the resolved recipe by dotted path ("fit.epochs"), as text,
 * or NULL.  (transfer none) */
CT_API const char *ct_learner_recipe_value(const CtLearner *learner, const char *path);

/* The tokenizer of the run's captions (for metrics that encode prompts),
 * or NULL with synthetic data.  (transfer none) */
typedef struct _CtTokenizer CtTokenizer;
CT_API CtTokenizer *ct_learner_tokenizer(CtLearner *learner);

/* ---- the fit's pace, and lines on stderr ----
 * Figures of this process's fit, the same that the core's periodic log
 * line prints (output.log_every_steps, output.log_every_seconds; see
 * docs/training.md, "Logging"). */
/* Seconds since this fit began (in this process: a resumed fit counts
 * from its resume). */
CT_API double ct_learner_elapsed(const CtLearner *learner);
/* Training samples a second, all ranks together: the data loading, the
 * step and the batch's callbacks, over recent training steps (an
 * exponential moving average, beta 0.9); NAN before the first step. */
CT_API double ct_learner_samples_per_s(const CtLearner *learner);
/* The training steps' share of the machine's matrix-product rate, as
 * llm.c's MFU: the model's training FLOPs a sample (ct_config_step_flops,
 * whole context) times the samples a second of this rank, over the rate
 * of ct_sgemm on large square products at the fit's threads, measured
 * once, on the first call (about 0.2 s).  0.25 is 25%.  NAN before the
 * first step. */
CT_API double ct_learner_mfu(CtLearner *learner);
/* Seconds left in the fit: its training steps still to run (the planned
 * batches of every epoch left) at the pace so far (wall time a training
 * step, validation included once one has run).  NAN before the first
 * step. */
CT_API double ct_learner_eta(const CtLearner *learner);
/* A live display on stderr (the progress plugin's bar on a terminal)
 * registers CLEAR, which wipes it off the current line: lines printed
 * with ct_learner_log() call it first.  While one is registered, the core
 * prints no periodic log lines: the display shows the same figures.
 * CLEAR NULL unregisters. */
typedef void (*CtDisplayClear)(void *data);
CT_API void ct_learner_set_display(CtLearner *learner, CtDisplayClear clear, void *data);
/* Print one line on stderr (a newline is added), clearing a live display
 * first.  It prints on the rank that calls it: print from rank 0 unless
 * the line is about the rank's own part. */
CT_API void ct_learner_log(CtLearner *learner, const char *format, ...) G_GNUC_PRINTF(2, 3);
/* A callback that returns CT_STATUS_CANCEL_FIT says why, in a few words,
 * before returning ("valid_loss has not improved since epoch 1").  The
 * learner then prints which plugin stopped the fit, after which epoch,
 * and this reason, and saves the training state (state.safetensors). */
CT_API void ct_learner_cancel_reason(CtLearner *learner, const char *format, ...)
  G_GNUC_PRINTF(2, 3);

/* ---- the current batch ---- */
CT_API int ct_learner_batch_size(const CtLearner *learner);
/* (batch, 3, R, R) normalised pixels; callbacks may change them in
 * before_batch. */
CT_API float *ct_learner_images(CtLearner *learner);
/* (batch, context_length) token ids. */
CT_API int32_t *ct_learner_tokens(CtLearner *learner);

/* ---- predictions and loss ---- */
/* (batch, embed_dim) L2-normalised features, after after_pred's forward. */
CT_API const float *ct_learner_image_features(const CtLearner *learner);
CT_API const float *ct_learner_text_features(const CtLearner *learner);
/* The loss callback (clip_trainer) sets the loss and fills the gradient
 * buffers in after_pred.  The buffers are (batch, embed_dim), zeroed
 * before after_pred; d_logit_scale is (1).  Backward uses them. */
CT_API void ct_learner_set_loss(CtLearner *learner, double loss);
CT_API double ct_learner_loss(const CtLearner *learner);
CT_API gboolean ct_learner_has_loss(const CtLearner *learner);
CT_API float *ct_learner_d_image_features(CtLearner *learner);
CT_API float *ct_learner_d_text_features(CtLearner *learner);
CT_API float *ct_learner_d_logit_scale(CtLearner *learner);
/* d loss / d logit_bias, (1), zeroed before after_pred like the others;
 * backward adds it to the gradient of the model's logit_bias, when the
 * model has one (ct_model_logit_bias).  ABI minor 4. */
CT_API float *ct_learner_d_logit_bias(CtLearner *learner);
/* Non-finite losses.  By default a training batch whose loss is NaN or
 * infinite stops the run (fastai's TerminateOnNaN) with an error giving
 * the training step and the last good training state.  A callback that
 * handles non-finite values itself (a dynamic loss scaler, which skips the
 * step and lowers its scale) calls this with TRUE, at before_fit, to turn
 * the check off; it then owns what follows a non-finite loss. */
CT_API void ct_learner_set_nonfinite_handled(CtLearner *learner, gboolean handled);
CT_API gboolean ct_learner_nonfinite_handled(const CtLearner *learner);
/* (batch, batch) scratch space for a loss callback. */
CT_API float *ct_learner_scratch_bb(CtLearner *learner, int which /* 0 or 1 */);

/* During CT_EVENT_AFTER_LAYER_BACKWARD: the range of the flat gradient
 * buffer that is now final. */
CT_API void ct_learner_ready_params(const CtLearner *learner, size_t *offset, size_t *n);

/* ---- the recorder ---- */
CT_API CtRecorder *ct_learner_recorder(CtLearner *learner);
/* fastai's smoothed training loss: exponential moving average with beta
 * 0.98, debiased.  NAN before the first batch. */
CT_API double ct_recorder_smooth_loss(const CtRecorder *rec);
/* Training losses and learning rates, one per training batch so far. */
CT_API const double *ct_recorder_losses(const CtRecorder *rec, size_t *n);
CT_API const double *ct_recorder_lrs(const CtRecorder *rec, size_t *n);
/* Record NAME = VALUE for the current epoch (a metric, valid_loss, ...).
 * Names keep the order of their first use. */
CT_API void ct_recorder_log(CtRecorder *rec, const char *name, double value);
/* Completed epochs (those whose after_epoch has run), and the names logged. */
CT_API int ct_recorder_n_epochs(const CtRecorder *rec);
CT_API const char *const *ct_recorder_names(const CtRecorder *rec); /* NULL-terminated */
/* VALUE of NAME at EPOCH (the current one included); FALSE if not logged. */
CT_API gboolean ct_recorder_get(const CtRecorder *rec, int epoch, const char *name, double *value);

/* For trackers (save_model, early_stopping: fastai's TrackerCallback):
 * MONITOR's value in the current epoch's row, or FALSE with an error
 * naming it and listing what was logged. */
CT_API gboolean ct_recorder_monitor(CtLearner *learner, const char *monitor, double *value,
                                    GError **error);
/* A plugin that logs NAME every epoch declares it in before_fit, so that
 * a tracker's monitor can be checked before the first training step. */
CT_API void ct_recorder_declare(CtRecorder *rec, const char *name);
/* For trackers, in before_fit (they run after the metrics, which declare
 * theirs first): FALSE with an error listing what the run logs when
 * MONITOR is neither train_loss, valid_loss (with a validation set) nor a
 * declared name. */
CT_API gboolean ct_recorder_check_monitor(CtLearner *learner, const char *monitor,
                                          GError **error);
/* Whether smaller is better for COMP ("less", "greater", or "auto": less
 * for monitors whose name contains "loss" or "error", as fastai). */
CT_API gboolean ct_monitor_less_is_better(const char *comp, const char *monitor);

G_END_DECLS

#endif

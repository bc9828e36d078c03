/* learner-private.h: the CtLearner struct and the core's side of
 * callbacks.  Not installed. */
#ifndef CT_LEARNER_PRIVATE_H
#define CT_LEARNER_PRIVATE_H

#include <cliptrain/plugin.h>
#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>

#include "data/loader.h"

/* One callback in the loop: a loaded plugin's descriptor and its state. */
typedef struct {
  const CtPluginDescriptor *desc;
  char *label;      /* "clip_trainer (/path/clip_trainer.so)" for messages */
  char *file;       /* the plugin file, or NULL when built in */
  char *where;      /* its position in the recipe, or NULL */
  CtParams *params; /* owned */
  void *state;      /* owned through desc->destroy */
  int order;
  int position;     /* place in the recipe, for ties */
} CtCallback;

void ct_callback_free(CtCallback *cb);

typedef struct CtRecorderData CtRecorderData;

struct CtRecorder {
  double smooth, smooth_raw; /* debiased EMA and its raw accumulator */
  int64_t count;             /* batches in the EMA */
  GArray *losses, *lrs;      /* of double, per training batch */
  GPtrArray *names;          /* of char*, NULL-terminated view kept in names_v */
  GPtrArray *declared;       /* of char*: names plugins will log (ct_recorder_declare) */
  GArray *rows;              /* of GHashTable* name -> double*, per epoch */
  int n_epochs;              /* completed */
  double train_sum;          /* for the epoch's train loss */
  double valid_sum, valid_n; /* batch-size weighted */
  gint64 epoch_start;
  char *out_dir;             /* metrics.jsonl and history.csv go here (may be NULL) */
};

/* The fit's pace and its periodic log line (pace.c).  Nothing here is
 * allocated per step. */
typedef struct {
  int64_t every_steps;     /* a log line every this many training steps (0: never) */
  double every_seconds;    /* ... or this many seconds since the last (0: never) */
  gint64 fit_start;        /* monotonic microseconds when this process's fit began */
  gint64 last_log;         /* ... when the last log line was printed (fit_start before) */
  gint64 step_start;       /* ... when the current training batch began */
  int64_t steps;           /* training steps timed in this process */
  double ema_s, ema_n;     /* EMAs of a step's seconds and samples (their ratio needs no debias) */
  double flops_per_sample; /* the model's training FLOPs a sample */
  double sgemm_rate;       /* FLOP/s of ct_sgemm at the fit's threads; 0 before it is measured */
} CtPace;

struct CtLearner {
  CtModel *model;
  CtOptimizer *opt;
  CtSchedule *sched;        /* NULL: the optimizer's lr stays as set */
  CtLoader *train, *valid; /* owned, with their datasets */
  int batch_size, n_epoch;
  uint64_t seed;
  char *out_dir;
  CtTokenizer *tok;          /* borrowed from the run */
  CtComm *comm;              /* owned; a single process unless set */
  GHashTable *ckpt_meta;     /* checkpoint metadata from the run: key -> value */
  GHashTable *recipe_values; /* dotted path -> text */

  GPtrArray *cbs; /* of CtCallback*, sorted by (order, position) */
  CtRecorder rec;

  /* loop state */
  int epoch, iter, n_iter, n_train_batches;
  int next_batch;         /* the epoch's next training batch, for a saved state */
  int planned;            /* batches the current phase will run (set_planned_iter) */
  int planned_train;      /* ... the last training phase's, for the ETA */
  CtPace pace;
  CtDisplayClear display_clear; /* a live display on stderr (progress's bar), or NULL */
  void *display_data;
  /* a callback cancelled the fit: which one (the first), and why */
  const CtCallback *cancel_by;
  const CtCallback *current_cb; /* the callback whose on_event runs, or NULL */
  CtEvent current_event;        /* ... and the event it runs */
  const CtCallback *reason_by;  /* the one that gave cancel_reason */
  char *cancel_reason;
  gboolean cancel_saved;        /* its training state was saved */
  int64_t train_iter;
  gboolean training;
  int B;                  /* current batch's size */
  float *images;          /* (batch_size, 3, R, R) */
  int32_t *tokens;        /* (batch_size, context) */
  float *d_img, *d_txt;   /* (batch_size, E) */
  float d_logit_scale;
  float d_logit_bias;     /* with a logit_bias (SigLIP) */
  float *scratch[2];      /* (batch_size, batch_size) each */
  double loss;
  gboolean has_loss;
  size_t ready_off, ready_n;
  CtStatus layer_status;  /* first non-OK status from after_layer_backward */
  GError *error;          /* set with CT_STATUS_ERROR */

  /* stopping and resuming (state.c) */
  char *recipe_sha256;    /* of the resolved recipe; a resume must match it */
  gboolean resuming;      /* the next training phase starts at resume_batch */
  gboolean in_step;       /* a training batch is under way: the parameters may be half
                           * stepped, and no recovery state can be saved */
  int resume_epoch, resume_batch;
  int64_t stop_after;     /* stop after this many training batches in all (0: never) */
  gint64 deadline;        /* stop at this monotonic time in microseconds (0: never) */
  volatile int *stop_flag; /* set asynchronously (a signal): stop after this batch */
  gboolean stopped;       /* the fit stopped early, leaving a training state */
  gboolean resumed;       /* this fit continues a saved state */
  GHashTable *pending_states; /* "plugin.POS.NAME" -> GBytes, applied after before_fit */
  int64_t save_every;     /* also save a training state every this many training steps (0: never) */
  double save_seconds;    /* ... and after a step that ends this long after the last save (0: never) */
  gint64 last_save;       /* monotonic microseconds of the last state saved (the fit's start before) */
  const char *volatile *save_flag; /* set asynchronously (a signal) to why: save after this step, go on */
  guint output_failed;    /* bit 0: stdout, bit 1: stderr failed and was reported (output-errors.c) */
  char *last_state;       /* the last training state saved or resumed from, or NULL */
  char *pending_opt;      /* optimizer state to load after before_fit (a resume), or NULL */
  int64_t last_state_iter; /* its training step */

  /* a callback (a loss scaler) handles non-finite losses: no TerminateOnNaN */
  gboolean nonfinite_handled;
  gboolean step_in_backward; /* optimizer.step_in_backward: blocks step inside backward */
  gboolean stepped;          /* do_step ran in this batch */
  gboolean validate_only;    /* ct_learner_validate: no training, no train_loss */
};

/* The core's internal statuses, in CtStatus's reserved range (learner.h).
 * CT_STATUS_STOP: stop after this batch and save the training state.  It
 * unwinds the loop without running after_* events.  A callback cannot
 * return it: run_event refuses every status of the reserved range. */
#define CT_STATUS_STOP CT_STATUS_CUSTOM_FIRST

/* state.c: save the training state at the current batch, and load one
 * before ct_learner_fit() to resume where it was saved. */
gboolean ct_learner_save_state(CtLearner *learner, const char *path, GError **error);
gboolean ct_learner_load_state(CtLearner *learner, const char *path, GError **error);
/* After ct_learner_fit() failed: save the training state at PATH as of the
 * last whole training batch, so that a resume redoes what failed (the
 * batch's data, the validation, the epoch's end).  FALSE, with ERROR
 * saying why, when no step ran, when the failure came inside a training
 * batch (the parameters may be half stepped), or with several ranks (the
 * others may be waiting in a collective). */
gboolean ct_learner_save_recovery_state(CtLearner *learner, const char *path, GError **error);
/* Training steps that ran to their end (a failed one is not counted). */
int64_t ct_learner_whole_steps(const CtLearner *learner);

/* Takes ownership of MODEL, OPT, TRAIN and VALID and of the loaders'
 * datasets (VALID may be NULL).  OPT must be MODEL's. */
CtLearner *ct_learner_new(CtModel *model, CtOptimizer *opt, CtLoader *train, CtLoader *valid,
                          int batch_size, int n_epoch, uint64_t seed, const char *out_dir,
                          GError **error);
void ct_learner_free(CtLearner *learner);
/* The validation set once through the model, without training: the
 * events before_fit, before_epoch, before_validate, the validation
 * batches (after_pred, after_loss, ...), after_validate, after_epoch and
 * after_fit, with the cancels as in a fit.  The values logged (valid_loss,
 * metrics) are the recorder's row 0.  TRAIN may be NULL (ct_learner_new);
 * fails when there is no validation batch. */
gboolean ct_learner_validate(CtLearner *learner, GError **error);
/* Takes ownership of COMM, replacing the single-process one.  Ranks other
 * than 0 then write no recorder files. */
void ct_learner_set_comm(CtLearner *learner, CtComm *comm);
/* Takes ownership of CB.  Callbacks are sorted when fit starts. */
void ct_learner_add_callback(CtLearner *learner, CtCallback *cb);
/* Takes ownership of SCHED: it sets lr (and mom) before every training
 * batch, from the training step and the fit's total steps. */
void ct_learner_set_schedule(CtLearner *learner, CtSchedule *sched);
void ct_learner_set_recipe_value(CtLearner *learner, const char *path, const char *value);
/* The run sets everything else through these too, before ct_learner_fit().
 * Step each residual block inside backward (optimizer.step_in_backward):
 * the model's block gradients then live in a one-block scratch. */
gboolean ct_learner_set_step_in_backward(CtLearner *learner, gboolean on, GError **error);
/* The captions' tokenizer, borrowed: it must outlive the learner. */
void ct_learner_set_tokenizer(CtLearner *learner, CtTokenizer *tok);
/* Checkpoint metadata KEY = VALUE, both copied ("vocab", "vocab_file"). */
void ct_learner_set_checkpoint_meta(CtLearner *learner, const char *key, const char *value);
/* The resolved recipe's text: checkpoint metadata "recipe", and the sha256
 * that a training state records and a resume must match. */
void ct_learner_set_recipe(CtLearner *learner, const char *yaml);
/* When a fit stops early, leaving a training state (all 0/NULL: never). */
typedef struct {
  int64_t stop_after;      /* after this many training steps in all */
  int64_t save_every;      /* also save a training state every this many steps */
  double save_seconds;     /* ... and when this many seconds passed since the last one */
  gint64 deadline;         /* at this monotonic time, in microseconds */
  volatile int *stop_flag; /* once this is set (by a signal handler); borrowed */
  /* when this is set (by a signal handler, to a static text saying why,
   * "SIGUSR1"), save a training state after the current step and go on;
   * the learner sets it back to NULL.  Borrowed */
  const char *volatile *save_flag;
} CtLearnerStops;
void ct_learner_set_stops(CtLearner *learner, const CtLearnerStops *stops);
/* TRUE when the last fit stopped early and left a training state. */
gboolean ct_learner_stopped(const CtLearner *learner);
gboolean ct_learner_fit(CtLearner *learner, GError **error);

/* The learner whose ct_learner_fit() runs in this process, or NULL; with
 * its current_cb, current_event, train_iter, in_step, last_state and
 * out_dir, it tells a fatal signal's handler (which may only read) which
 * plugin and event were running.  Kept by pointer stores alone. */
extern const CtLearner *volatile ct_learner_fitting;

/* output-errors.c: whether writing to stdout or stderr failed (a closed
 * pipe, a full disk); each stream's failure is said once, in the run
 * folder's log.txt (and on stderr when only stdout failed), and the fit
 * goes on. */
void ct_learner_check_outputs(CtLearner *learner);

/* pace.c: the fit's start; a training batch's start and end (after
 * train_iter counts it), which prints the periodic log line when due. */
/* A log line every STEPS training steps or SECONDS seconds, whichever
 * comes first (0: not by that measure; both 0: never). */
void ct_learner_set_log_every(CtLearner *learner, int64_t steps, double seconds);
void ct_pace_fit_start(CtLearner *learner);
void ct_pace_step_start(CtLearner *learner);
void ct_pace_step_end(CtLearner *learner);

/* recorder.c */
void ct_recorder_init(CtRecorder *rec, const char *out_dir);
void ct_recorder_clear(CtRecorder *rec);
/* Set NAME in epoch EPOCH's row (for restoring a saved recorder). */
void ct_recorder_log_at(CtRecorder *rec, int epoch, const char *name, double value);
/* Write epoch EPOCH's row to metrics.jsonl and history.csv. */
gboolean ct_recorder_flush(CtRecorder *rec, int epoch, GError **error);
/* Rewrite metrics.jsonl and history.csv with the completed epochs' rows
 * alone: a resume drops rows written after its training state was saved
 * (by a run killed later), which it will write again. */
gboolean ct_recorder_rewrite(CtRecorder *rec, GError **error);
/* The recorder as a built-in callback (order 50, as fastai's Recorder). */
CtCallback *ct_recorder_callback_new(void);

#endif

/* run.h: a training run from a recipe: validate everything, build the
 * model, data, optimizer and callbacks, write the run folder, fit. */
#ifndef CT_RUN_H
#define CT_RUN_H

#include <cliptrain/ct-common.h>

typedef struct {
  const char *recipe;       /* path */
  const char *const *sets;  /* "a.b=value" overrides, NULL-terminated; may be NULL */
  const char *out_dir;      /* NULL: output.dir, else runs/<name>-<time> */
  int threads;              /* 0: the recipe's fit.threads */
  const char *resume;       /* a run folder to continue from its state.safetensors, or NULL */
  int64_t stop_after;       /* stop after this many training steps in all, resumable (0: no) */
  double time_limit;        /* stop after this many seconds, resumable (0: no) */
  gboolean handle_signals;  /* SIGINT/SIGTERM: stop after the current step, resumable */
  const char *max_batch_budget; /* "6GiB", "auto": pick the largest batch that fits, or NULL */
} CtRunOptions;

/* `cliptrain bench --loader`: run the recipe's training loader alone for
 * up to MAX_BATCHES batches (0: one epoch) and report the rate.  Returns
 * an exit status as ct_run_fit(). */
typedef struct {
  int batches, images, workers, batch_size;
  double seconds;
} CtLoaderBench;
CT_API int ct_run_loader_bench(const CtRunOptions *options, int max_batches, CtLoaderBench *out,
                               GError **error);

/* Returns 0 on success, 2 when the recipe (or a plugin it names) is bad,
 * 1 when the run fails; ERROR says why. */
CT_API int ct_run_fit(const CtRunOptions *options, GError **error);

/* `cliptrain recipe RECIPE`: the recipe resolved as a fit would write it
 * into its run folder (overrides applied, every default filled, the
 * plugins' included, paths absolute), without running anything: OPTIONS'
 * recipe and sets are read.  *YAML (transfer full) on success; the exit
 * status as ct_run_fit's. */
CT_API int ct_run_resolve(const CtRunOptions *options, char **yaml, GError **error);

/* `cliptrain fit RECIPE --print-lr-groups`: the optimizer's parameter
 * groups as the recipe builds them (ct_optim_describe_groups), without
 * data or training: OPTIONS' recipe and sets are read.  *TEXT (transfer
 * full) on success; the exit status as ct_run_fit's. */
CT_API int ct_run_lr_groups(const CtRunOptions *options, char **text, GError **error);

/* `cliptrain eval` (run-eval.c): the recipe's validation set through the
 * weights in MODEL_PATH (a weights file or a training state) with the
 * recipe's metrics and the callbacks that take part in validation (not
 * save_model, csv_logger, report, early_stopping), as a fit's validation;
 * no run folder.  OPTIONS' recipe, sets and threads are read.  RES gets
 * the values logged (valid_loss, the metrics: train_loss and time left
 * out).  Returns an exit status as ct_run_fit; a recipe without a
 * validation set, or weights of another config, is 2. */
typedef struct {
  char **names;      /* NULL-terminated */
  double *values;    /* one per name */
  int64_t n_samples; /* in the validation set */
} CtEvalResult;
CT_API int ct_run_eval(const CtRunOptions *options, const char *model_path, CtEvalResult *res,
                       GError **error);
CT_API void ct_eval_result_clear(CtEvalResult *res);

/* `cliptrain zeroshot --data`: zero-shot classification of a labelled
 * split of the recipe's data, by the zero_shot metric's rule. */
typedef struct {
  const char *model;             /* a weights file or a training state */
  const char *split;             /* "valid" (NULL) or "train" */
  int64_t limit;                 /* the first LIMIT samples (0: all) */
  const char *const *labels;     /* class names, label i = labels[i]; NULL: the recipe's */
  const char *const *templates;  /* NULL: the recipe's */
} CtZeroshotOptions;
typedef struct {
  char **classes;      /* C of them, NULL-terminated */
  int64_t *confusion;  /* (C, C): row = true class, column = top-1 prediction */
  int64_t n, top1, top5;
} CtZeroshotResult;
/* The classes are --labels, else the recipe's zero_shot metric's
 * class_names (samples matched to them by name), else the data's own
 * class names (data.classes, the folders); the templates likewise, else
 * data.templates.  Returns an exit status as ct_run_fit. */
CT_API int ct_run_zeroshot(const CtRunOptions *options, const CtZeroshotOptions *z,
                           CtZeroshotResult *res, GError **error);
CT_API void ct_zeroshot_result_clear(CtZeroshotResult *res);

#endif

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

#endif

/* run-private.h: the parts of a run (run.c) that live in their own
 * files: the recipe's plugins made callbacks (run-callbacks.c) and the run
 * folder (run-folder.c).  Not installed. */
#ifndef CT_RUN_PRIVATE_H
#define CT_RUN_PRIVATE_H

#include "setup/data-setup.h"
#include "setup/sections.h"
#include "train/learner-private.h"

/* run-callbacks.c */

/* The plugins of the recipe's callbacks and metrics, in order: found on
 * SEARCH, opened, their parameters checked (defaults written into the
 * tree) and filled; appended to CBS as CtCallback (not created yet).
 * *PRECISION gets the activation precision of the first fp16 callback
 * (CT_PRECISION_FP32 without one), for --max-batch-size.  Errors are
 * CT_ERROR_CONFIG at the item's position. */
gboolean ct_run_callbacks_load(CtRecipe *recipe, GPtrArray *search, GPtrArray *cbs,
                               CtPrecision *precision, GError **error);
/* create() each callback: a refusal of its parameters is a bad recipe
 * (CT_ERROR_CONFIG, naming it). */
gboolean ct_run_callbacks_create(GPtrArray *cbs, GError **error);
/* optimizer.step_in_backward (VALUE: auto|true|false) with the callbacks'
 * use of the gradients: "true" is refused with a callback that needs
 * every gradient before any step (CT_GRADS_WHOLE); "auto" is on when every
 * callback declares that it uses none (CT_GRADS_UNUSED).  RECIPE_PATH
 * names a callback without a position. */
gboolean ct_run_step_in_backward(const char *value, GPtrArray *cbs, const char *recipe_path,
                                 gboolean *on, GError **error);
/* The communicator of the first created callback that provides one
 * (every other provider must see the same group), else a single process.
 * (transfer full) */
CtComm *ct_run_comm(GPtrArray *cbs, GError **error);

/* run-folder.c */

/* runs/<recipe's base name>-<local time>.  (transfer full) */
char *ct_run_default_dir(const char *recipe_path);
/* *S becomes rank 0's string on every rank of COMM. */
gboolean ct_run_share_string(CtComm *comm, char **s, GError **error);
/* A new run's folder OUT: recipe.yaml (RECIPE as YAML, the text YAML),
 * manifest.json (version, recipe sha256, SEED, THREADS, the BLAS core,
 * step_in_backward IN_BACKWARD, each plugin of CBS with its file's
 * sha256), and vocab.txt when DATA's tokenizer was learned.  A folder that
 * already holds a run is refused (CT_ERROR_IO). */
gboolean ct_run_folder_prepare(CtRecipe *recipe, const char *out, const char *yaml,
                               GPtrArray *cbs, uint64_t seed, int threads, gboolean in_backward,
                               const CtData *data, GError **error);
/* After a fit that ran to its end: OUT/finished.json (the time, the
 * training steps and epochs, and the folder's files), and a list of the
 * files on stdout, the model first. */
gboolean ct_run_folder_finish(const char *out, CtLearner *learner, GError **error);
/* Whether OUT holds a run that finished; *TEXT (transfer full, may be
 * NULL) then says when and after how many steps. */
gboolean ct_run_folder_finished(const char *out, char **text);
/* Remove the folder OUT of a run that failed before its first step: all of
 * it when this run made it (CREATED), else only the files a run writes
 * before the fit (recipe.yaml, manifest.json, vocab.txt). */
void ct_run_folder_remove(const char *out, gboolean created);

/* run-lock.c */

/* One run at a time in a run folder: an exclusive lock on OUT/.lock (made
 * with OUT, when missing), which holds this process's PID, until
 * ct_run_unlock.  A folder another run holds is refused (CT_ERROR_IO)
 * naming its PID, and left as it is. */
typedef struct CtRunLock CtRunLock;
CtRunLock *ct_run_lock(const char *out, GError **error);
/* Remove OUT/.lock and release it (NULL: nothing). */
void ct_run_unlock(CtRunLock *lock);

/* run-signals.c */

/* A fit's signals from now on: the first SIGINT, SIGTERM or SIGHUP sets
 * the stop flag (a second quits at once, 128 + the signal); SIGUSR1 and
 * SIGUSR2 set the save flag to their name; SIGPIPE is ignored; SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL and SIGABRT say which plugin and event of
 * ct_learner_fitting were running, then take their former action; exit()
 * during a fit ends the process with status 1, saying where.  Both flags
 * start cleared. */
void ct_run_signals_install(void);
volatile int *ct_run_signals_stop_flag(void);
const char *volatile *ct_run_signals_save_flag(void);

#endif

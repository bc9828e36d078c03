/* run.c: from a recipe to a finished run, as a sequence of stages.
 *
 * Everything is validated before any work starts: unknown keys, types,
 * ranges, plugin names, plugin ABIs and plugin parameters.  The run folder
 * then gets recipe.yaml (the resolved recipe: every default filled, every
 * override applied), manifest.json, and, as epochs end, metrics.jsonl and
 * history.csv. */
#include "config.h"

#include "setup/run.h"
#include "base/file.h"
#include "setup/max-batch.h"
#include "setup/optim-setup.h"
#include "setup/run-private.h"
#include "train/plugin-loader.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- the model */

/* model.init: start from released or earlier weights (F16 included).  A
 * file whose config differs from the recipe's says which keys differ. */
static gboolean
load_init(const CtModelSection *ms, CtModel *m, GError **error)
{
  const CtConfig *cfg = &ms->cfg;
  const char *path = ms->init;
  const char *where = ct_section_where(&ms->base, offsetof(CtModelSection, init));
  if (!*path)
    return TRUE;
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st) {
    g_prefix_error(error, "%s: model.init: ", where);
    return FALSE;
  }
  CtConfig wc;
  GError *e = NULL;
  gboolean have = ct_safetensors_metadata(st, "config.embed_dim")
                    ? ct_config_from_metadata(&wc, st, &e)
                    : ct_config_from_weights(&wc, st, NULL, cfg->vision_heads,
                                             cfg->transformer_heads, &e);
  g_autofree char *diff = have ? ct_config_diff(&wc, cfg) : NULL;
  if (diff) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: model.init: %s does not match the recipe's model: %s; set model.preset "
                "and the keys to the weights' config",
                where, path, diff);
    ct_safetensors_free(st);
    return FALSE;
  }
  g_clear_error(&e);
  gboolean ok = ct_model_load_from(m, st, NULL, TRUE, error);
  if (!ok)
    g_prefix_error(error, "%s: model.init: ", where);
  ct_safetensors_free(st);
  return ok;
}

/* --max-batch-size: the largest batch (up to the training set) whose
 * predicted memory fits the budget becomes data.batch_size. */
static gboolean
pick_batch(CtRecipe *r, CtSections *s, CtPrecision precision, const CtData *data,
           const char *budget_text, gboolean fused, GError **error)
{
  size_t budget;
  if (!ct_parse_memory_budget(budget_text, &budget, error))
    return FALSE;
  int limit = (int) MIN(ct_dataset_len(data->train), (size_t) 1 << 20);
  int batch = ct_max_batch_search(s, precision, fused, budget, MAX(limit, 1), error);
  if (batch == 0)
    return FALSE;
  g_autofree char *where = g_strdup_printf("--max-batch-size %s", budget_text);
  ct_section_set_int(r, &s->data.base, offsetof(CtDataSection, batch_size), batch, where);
  return TRUE;
}

/* ---------------------------------------------------------------- the run */

/* What a fit holds between its stages.  Each stage takes what it needs
 * from here and leaves what it made; a value handed to the learner is
 * cleared here, and run_clear frees whatever is still held. */
typedef struct {
  const CtRunOptions *o;
  char *recipe_path;    /* o->recipe, or the resumed run's recipe.yaml */
  char *recipe_dir;     /* relative paths of the recipe start here */
  CtRecipe *recipe;     /* checked: every default filled */
  CtSections sec;       /* its sections, typed */
  GPtrArray *search;    /* plugin folders (char*) */
  GPtrArray *cbs;       /* CtCallback*, until the learner takes them */
  CtPrecision precision; /* of the activations, by the fp16 plugin */
  gboolean in_backward; /* optimizer.step_in_backward as resolved */
  CtComm *comm;         /* until the learner takes it */
  CtData data;          /* the datasets go to the loaders, the tokenizer stays */
  CtModel *model;
  CtOptimizer *opt;
  CtSchedule *sched;
  int threads;
  char *out;            /* the run folder */
  CtRunLock *lock;      /* rank 0's lock on it, for the whole run */
  gboolean written;     /* this run wrote the folder's first files (rank 0) */
  gboolean created;     /* ... and made the folder itself */
  gboolean done;        /* nothing more to do (a finished run resumed): exit 0 */
  char *yaml;           /* the resolved recipe's text */
  CtLearner *learner;
} Run;

/* A stage returns 0, or the exit status of ct_run_fit with ERROR set: 2
 * for a bad recipe (or a plugin it names), 1 for a failure of the run. */
typedef int (*Stage)(Run *run, GError **error);

/* The recipe with its overrides, and PARTS of its sections checked and
 * read. */
static int
read_recipe(Run *run, CtSectionsPart parts, GError **error)
{
  const CtRunOptions *o = run->o;
  run->recipe_path = o->resume ? g_build_filename(o->resume, "recipe.yaml", NULL)
                               : g_strdup(o->recipe);
  if (o->resume && o->sets && *o->sets) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "--resume continues %s as recorded; --set would change it", run->recipe_path);
    return 2;
  }
  g_autofree char *when = NULL;
  if (o->resume && ct_run_folder_finished(o->resume, &when)) {
    printf("cliptrain: %s: the run finished %s; there is nothing to resume (its files are "
           "listed in %s/finished.json)\n",
           o->resume, when ? when : "", o->resume);
    fflush(stdout);
    run->done = TRUE;
    return 0;
  }
  CtRecipe *r = run->recipe = ct_recipe_load(run->recipe_path, error);
  if (!r)
    return 2;
  for (const char *const *s = o->sets; s && *s; s++)
    if (!ct_recipe_override(r, *s, error))
      return 2;
  if (!ct_sections_read(r, parts, &run->sec, error))
    return 2;
  g_autofree char *dir = g_path_get_dirname(run->recipe_path);
  run->recipe_dir = g_canonicalize_filename(dir, NULL);
  return 0;
}

/* Every section, with its paths made absolute from the recipe's folder. */
static int
load_recipe(Run *run, GError **error)
{
  int rc = read_recipe(run, CT_SECTIONS_ALL, error);
  if (rc == 0 && !run->done)
    ct_sections_absolute_paths(run->recipe, &run->sec, run->recipe_dir);
  return rc;
}

/* The plugins of callbacks and metrics, found (plugin_path first, made
 * absolute by load_recipe), opened and their parameters checked. */
static int
load_callbacks(Run *run, GError **error)
{
  run->search = ct_plugin_search_path((const char *const *) run->sec.plugin_path);
  run->cbs = g_ptr_array_new_with_free_func((GDestroyNotify) ct_callback_free);
  return ct_run_callbacks_load(run->recipe, run->search, run->cbs, &run->precision, error)
           ? 0 : 2;
}

/* The callbacks created (a refusal of their parameters is a bad recipe
 * too, reported before anything is written), then what they decide: the
 * fused step and the process group, which every rank from here on knows
 * its place in. */
static int
start_callbacks(Run *run, GError **error)
{
  if (!ct_run_callbacks_create(run->cbs, error) ||
      !ct_run_step_in_backward(run->sec.optimizer.step_in_backward, run->cbs, run->recipe_path,
                               &run->in_backward, error) ||
      !(run->comm = ct_run_comm(run->cbs, error)))
    return 2;
  return 0;
}

/* The datasets and the tokenizer: errors in the recipe's data section are
 * still exit 2, those of the data itself 1. */
static int
build_data(Run *run, GError **error)
{
  if (!ct_data_open(&run->sec.data, run->recipe_dir, &run->sec.model.cfg, run->sec.seed,
                    &run->data, error))
    return (*error)->code != CT_ERROR_CONFIG ? 1 : 2;
  return 0;
}

/* The parameters the callbacks add to the model (a SigLIP loss's
 * logit_bias): CtModelExtras flags. */
static uint32_t
callback_extras(const Run *run)
{
  uint32_t extras = 0;
  for (guint i = 0; run->cbs && i < run->cbs->len; i++)
    extras |= ct_plugin_desc_model_extras(((CtCallback *) g_ptr_array_index(run->cbs, i))->desc);
  return extras;
}

/* The model at the batch size (--max-batch-size picks it first), with its
 * initial weights: a model.init of another config is a bad recipe. */
static int
build_model(Run *run, GError **error)
{
  const CtModelSection *ms = &run->sec.model;
  if (run->o->max_batch_budget && !run->o->resume &&
      !pick_batch(run->recipe, &run->sec, run->precision, &run->data, run->o->max_batch_budget,
                  run->in_backward, error))
    return 2;
  if (!(run->model = ct_model_new_extras(&ms->cfg, run->sec.data.batch_size,
                                         callback_extras(run), error)))
    return 1;
  if (ms->checkpoint &&
      !ct_model_set_memory(run->model, CT_PRECISION_FP32, ms->checkpoint_nchunks, error))
    return 1;
  if (!ct_model_set_patch_dropout(run->model, ms->patch_dropout, run->sec.seed, error)) {
    g_prefix_error(error, "%s: model.patch_dropout: ",
                   ct_section_where(&ms->base, offsetof(CtModelSection, patch_dropout)));
    return 2;
  }
  ct_model_init_weights(run->model, run->sec.seed);
  for (guint i = 0; i < run->cbs->len; i++) { /* then the callbacks' own initialisation */
    CtCallback *cb = g_ptr_array_index(run->cbs, i);
    ct_plugin_desc_init_model(cb->desc, cb->state, run->model);
  }
  if (!load_init(ms, run->model, error))
    return (*error)->code == CT_ERROR_IO ? 1 : 2;
  return 0;
}

/* The optimizer and the schedule: a glob that matches no tensor is still
 * a bad recipe.  After this stage everything is valid, and a failure is a
 * failure of the run. */
static int
build_optimizer(Run *run, GError **error)
{
  if (!(run->opt = ct_optim_build(&run->sec.optimizer, run->model, error)) ||
      !(run->sched = ct_schedule_build(&run->sec.schedule, run->sec.optimizer.lr, error)))
    return 2;
  return 0;
}

/* The threads, the signals, and the run folder: recipe.yaml, manifest.json
 * and vocab.txt.  A resume continues the folder's resolved recipe.yaml,
 * whose sha256 the training state records; a RECIPE argument is not read
 * again.  Rank 0 alone writes the run's files, in the folder it named;
 * the others wait for it. */
static int
prepare_folder(Run *run, GError **error)
{
  const CtRunOptions *o = run->o;
  CtFitSection *fit = &run->sec.fit;
  /* --threads is checked as fit.threads is; a resume takes it for this
   * process only (results do not depend on it), leaving the recorded
   * recipe, and so its sha256, as it was */
  if (o->threads > 0) {
    g_autofree char *where = g_strdup_printf("--threads %d", o->threads);
    if (!ct_section_check_int(&fit->base, offsetof(CtFitSection, threads), o->threads, where,
                              error))
      return 2;
    if (!o->resume)
      ct_section_set_int(run->recipe, &fit->base, offsetof(CtFitSection, threads), o->threads,
                         "--threads");
  }
  run->threads = o->threads > 0 ? o->threads : fit->threads;
  ct_set_num_threads(run->threads);
  const char *odir = run->sec.output.dir;
  run->out = o->resume    ? g_strdup(o->resume)
             : o->out_dir ? g_strdup(o->out_dir)
             : *odir      ? g_strdup(odir)
                          : ct_run_default_dir(run->recipe_path);
  /* signals are handled from before the run folder exists: a signal sent
   * once its files appear (as a job scheduler or a test may) is never lost
   * nor left to the default action; it stops the fit after its first step */
  if (o->handle_signals)
    ct_run_signals_install();
  if (!ct_run_share_string(run->comm, &run->out, error))
    return 1;
  run->yaml = ct_recipe_to_yaml(run->recipe);
  gboolean rank0 = ct_comm_rank(run->comm) == 0;
  gboolean first = rank0 && !o->resume;
  run->created = first && !g_file_test(run->out, G_FILE_TEST_EXISTS);
  /* rank 0 locks the folder before it writes there (a new run) or reads
   * its state (a resume), until the run ends: a second run is refused */
  gboolean ready = !rank0 || (run->lock = ct_run_lock(run->out, error)) != NULL;
  if (ready && first)
    ready = ct_run_folder_prepare(run->recipe, run->out, run->yaml, run->cbs, run->sec.seed,
                                  run->threads, run->in_backward, &run->data, error);
  run->written = first && ready;
  if (!ct_comm_agree(run->comm, ready, "rank 0 could not prepare the run folder", error))
    return 1;
  if (ct_comm_rank(run->comm) == 0) { /* on stdout: stderr's last line is an error, if any */
    printf("cliptrain: %s %s\n", o->resume ? "resuming the run in" : "the run's folder is",
           run->out);
    fflush(stdout);
  }
  return 0;
}

/* The tokenizer's checkpoint metadata: the learned merges, or the merges
 * file's path and sha256. */
static void
tokenizer_meta(Run *run)
{
  CtLearner *L = run->learner;
  if (!run->data.tok)
    return;
  if (run->data.learned) {
    g_autofree char *vpath = g_build_filename(run->out, "vocab.txt", NULL);
    g_autofree char *text = NULL;
    size_t n = 0;
    if (ct_file_read_all(vpath, "vocabulary", (size_t) 64 << 20, &text, &n, NULL))
      ct_learner_set_checkpoint_meta(L, "vocab", text);
    return;
  }
  const char *v = run->sec.data.vocab;
  g_autofree char *abs = g_path_is_absolute(v) ? g_strdup(v)
                                               : g_build_filename(run->recipe_dir, v, NULL);
  ct_learner_set_checkpoint_meta(L, "vocab_file", v);
  g_autofree char *sha = ct_file_sha256(abs, NULL); /* a regular file, read in bounded parts */
  if (sha)
    ct_learner_set_checkpoint_meta(L, "vocab_sha256", sha);
}

/* Every scalar of the resolved recipe, for ct_learner_recipe_value. */
static void
recipe_value(const char *path, const char *value, gpointer learner)
{
  ct_learner_set_recipe_value(learner, path, value);
}

/* The loaders and the learner, which takes the model, the optimizer, the
 * schedule, the process group and the callbacks (in recipe order). */
static int
build_learner(Run *run, GError **error)
{
  const CtDataSection *d = &run->sec.data;
  const CtConfig *cfg = &run->sec.model.cfg;
  uint64_t seed = run->sec.seed;
  CtDataset *train = run->data.train, *valid = run->data.valid;
  run->data.train = run->data.valid = NULL; /* the loaders' now */
  CtLoader *tl = ct_loader_new(train, cfg, d->batch_size, d->shuffle, d->drop_last, d->workers,
                               d->prefetch, seed);
  CtLoader *vl = valid ? ct_loader_new(valid, cfg, d->batch_size, FALSE, FALSE, d->workers,
                                       d->prefetch, seed)
                       : NULL;
  CtLearner *L = run->learner = ct_learner_new(run->model, run->opt, tl, vl, d->batch_size,
                                               run->sec.fit.epochs, seed, run->out, error);
  if (!L)
    return 1;
  run->model = NULL;
  run->opt = NULL;
  ct_learner_set_comm(L, g_steal_pointer(&run->comm));
  if (!ct_learner_set_step_in_backward(L, run->in_backward, error))
    return 1;
  ct_learner_set_schedule(L, g_steal_pointer(&run->sched));
  ct_recipe_foreach_scalar(run->recipe, recipe_value, L);
  ct_learner_set_tokenizer(L, run->data.tok);
  ct_learner_set_recipe(L, run->yaml);
  tokenizer_meta(run);
  while (run->cbs->len)
    ct_learner_add_callback(L, g_ptr_array_steal_index(run->cbs, 0));
  return 0;
}

/* --resume: the training state of the run folder; one that is not this
 * recipe's is bad usage. */
static int
restore_state(Run *run, GError **error)
{
  if (!run->o->resume)
    return 0;
  g_autofree char *state = g_build_filename(run->out, "state.safetensors", NULL);
  if (!ct_learner_load_state(run->learner, state, error))
    return (*error)->code == CT_ERROR_CONFIG ? 2 : 1;
  return 0;
}

static int
fit(Run *run, GError **error)
{
  const CtRunOptions *o = run->o;
  CtLearner *L = run->learner;
  CtLearnerStops stops = {
    .stop_after = o->stop_after,
    .save_every = run->sec.fit.save_state_every,
    .save_seconds = run->sec.fit.save_state_every_seconds,
    .deadline = o->time_limit > 0 ? g_get_monotonic_time() + (gint64) (o->time_limit * 1e6) : 0,
    .stop_flag = o->handle_signals ? ct_run_signals_stop_flag() : NULL,
    .save_flag = o->handle_signals ? ct_run_signals_save_flag() : NULL,
  };
  ct_learner_set_stops(L, &stops);
  ct_learner_set_log_every(L, run->sec.output.log_every_steps, run->sec.output.log_every_seconds);
  if (!ct_learner_fit(L, error)) {
    /* after a failure between steps, the state to continue from */
    g_autofree char *state = g_build_filename(run->out, "state.safetensors", NULL);
    GError *e = NULL;
    if (ct_learner_save_recovery_state(L, state, &e)) {
      char *msg = g_strdup_printf("%s; the training state after step %" G_GINT64_FORMAT
                                  " is in %s: continue with: cliptrain fit --resume %s",
                                  (*error)->message, ct_learner_train_iter(L), state, run->out);
      g_free((*error)->message);
      (*error)->message = msg;
    }
    g_clear_error(&e);
    return 1;
  }
  if (o->max_batch_budget && !o->resume)
    g_printerr("cliptrain: max-batch-size: the fit's peak resident memory was %.3f GiB\n",
               (double) ct_rss_peak() / 1073741824.0);
  if (ct_learner_stopped(L) && ct_learner_rank(L) == 0)
    g_printerr("cliptrain: stopped after %" G_GINT64_FORMAT " training steps; the training "
               "state is in %s/state.safetensors; continue with: cliptrain fit --resume %s\n",
               ct_learner_train_iter(L), run->out, run->out);
  else if (!ct_learner_stopped(L) && ct_learner_rank(L) == 0 &&
           !ct_run_folder_finish(run->out, L, error))
    return 1;
  fflush(stdout);
  ct_learner_check_outputs(L); /* the last lines too: a closed stdout is said, not fatal */
  return 0;
}

/* The one cleanup path.  A failed rank of several ends them all, after
 * saying why: the others may wait in a collective for it. */
static void
run_clear(Run *run, int rc, GError **error)
{
  CtComm *comm = run->learner ? ct_learner_comm(run->learner) : run->comm;
  if (rc != 0 && comm && ct_comm_size(comm) > 1) {
    g_printerr("cliptrain: rank %d of %d: %s\n", ct_comm_rank(comm), ct_comm_size(comm),
               error && *error ? (*error)->message : "the run failed");
    ct_comm_abort(comm, rc);
  }
  /* a run that failed before its first step leaves no folder to block --out */
  gboolean remove = rc != 0 && run->written &&
                    (!run->learner || ct_learner_whole_steps(run->learner) == 0);
  ct_comm_free(run->comm);
  ct_learner_free(run->learner);
  if (remove)
    ct_run_folder_remove(run->out, run->created);
  ct_run_unlock(run->lock); /* after the removal: no other run sees half a folder */
  if (run->opt)
    ct_optimizer_free(run->opt);
  if (run->sched)
    ct_schedule_free(run->sched);
  ct_model_free(run->model);
  ct_data_clear(&run->data); /* the tokenizer outlives the learner */
  if (run->cbs)
    g_ptr_array_free(run->cbs, TRUE);
  if (run->search)
    g_ptr_array_free(run->search, TRUE);
  ct_sections_clear(&run->sec);
  if (run->recipe)
    ct_recipe_free(run->recipe);
  g_free(run->recipe_path);
  g_free(run->recipe_dir);
  g_free(run->out);
  g_free(run->yaml);
}

/* Run STAGES (N of them) in order until one fails; then the cleanup. */
static int
run_stages(const CtRunOptions *o, const Stage *stages, size_t n, Run *run, GError **error)
{
  int rc = 0;
  run->o = o;
  for (size_t i = 0; rc == 0 && !run->done && i < n; i++)
    rc = stages[i](run, error);
  return rc;
}

int
ct_run_fit(const CtRunOptions *o, GError **error)
{
  static const Stage stages[] = {
    load_recipe,     /* the recipe and its sections, checked */
    load_callbacks,  /* plugins: found, opened, parameters checked */
    start_callbacks, /* created; the fused step and the process group */
    build_data,      /* datasets and tokenizer */
    build_model,     /* the model and its initial weights */
    build_optimizer, /* the optimizer and the schedule */
    prepare_folder,  /* threads, signals, the run folder */
    build_learner,   /* loaders and the learner, which takes everything */
    restore_state,   /* --resume */
    fit,             /* the loop */
  };
  Run run = { 0 };
  int rc = run_stages(o, stages, G_N_ELEMENTS(stages), &run, error);
  run_clear(&run, rc, error);
  return rc;
}

/* ---------------------------------------------------------------- other uses */

int
ct_run_resolve(const CtRunOptions *o, char **yaml, GError **error)
{
  static const Stage stages[] = { load_recipe, load_callbacks };
  Run run = { 0 };
  int rc = run_stages(o, stages, G_N_ELEMENTS(stages), &run, error);
  *yaml = rc == 0 ? ct_recipe_to_yaml(run.recipe) : NULL;
  run_clear(&run, rc, error);
  return rc;
}

/* --print-lr-groups: a model of the recipe's config for one sample, with
 * the parameters its callbacks add, as the optimizer only needs its
 * tensors */
static int
build_bare_model(Run *run, GError **error)
{
  return (run->model = ct_model_new_extras(&run->sec.model.cfg, 1, callback_extras(run), error))
           ? 0
           : 1;
}

int
ct_run_lr_groups(const CtRunOptions *o, char **text, GError **error)
{
  static const Stage stages[] = { load_recipe, load_callbacks, build_bare_model,
                                  build_optimizer };
  Run run = { 0 };
  int rc = run_stages(o, stages, G_N_ELEMENTS(stages), &run, error);
  *text = rc == 0 && run.opt ? ct_optim_describe_groups(run.opt) : NULL;
  run_clear(&run, rc, error);
  return rc;
}

static int
load_data_sections(Run *run, GError **error)
{
  int rc = read_recipe(run, CT_SECTIONS_DATA | CT_SECTIONS_MODEL, error);
  if (rc == 0)
    ct_sections_absolute_paths(run->recipe, &run->sec, run->recipe_dir);
  return rc;
}

int
ct_run_loader_bench(const CtRunOptions *o, int max_batches, CtLoaderBench *res, GError **error)
{
  static const Stage stages[] = { load_data_sections, build_data };
  Run run = { 0 };
  int rc = run_stages(o, stages, G_N_ELEMENTS(stages), &run, error);
  CtLoader *ld = NULL;
  float *images = NULL;
  int32_t *tokens = NULL;
  if (rc != 0)
    goto out;
  rc = 1;
  const CtDataSection *d = &run.sec.data;
  const CtConfig *cfg = &run.sec.model.cfg;
  int bs = d->batch_size;
  res->workers = d->workers;
  res->batch_size = bs;
  ld = ct_loader_new(run.data.train, cfg, bs, d->shuffle, d->drop_last, d->workers, d->prefetch,
                     run.sec.seed);
  images = g_new(float, (size_t) bs * 3 * cfg->image_resolution * cfg->image_resolution);
  tokens = g_new(int32_t, (size_t) bs * cfg->context_length);
  int n = ct_loader_n_batches(ld);
  if (max_batches > 0)
    n = MIN(n, max_batches);
  gint64 t0 = g_get_monotonic_time();
  ct_loader_start(ld, 0);
  res->images = 0;
  for (res->batches = 0; res->batches < n; res->batches++) {
    int B;
    if (!ct_loader_next(ld, images, tokens, &B, error))
      goto out;
    res->images += B;
  }
  res->seconds = (g_get_monotonic_time() - t0) / 1e6;
  rc = 0;
out:
  ct_loader_free(ld);
  g_free(images);
  g_free(tokens);
  run_clear(&run, 0, error);
  return rc;
}

/* run-eval.c: a trained model measured against a recipe's data, without
 * training and without a run folder.
 *
 * ct_run_eval runs the recipe's validation set through the model with the
 * recipe's metrics and the callbacks that take part in validation (the
 * loss callback for valid_loss, fp16 for the precision, short_epoch), as
 * the last validation of a fit would: the same loaders, batch size,
 * tokenizer and plugins.  Callbacks about a run's files or its course
 * (save_model, csv_logger, report, early_stopping) are left out.
 *
 * ct_run_zeroshot classifies the samples of a labelled split (idx,
 * image_folder, or a captioned source whose captions name the classes)
 * by the zero_shot metric's rule: a class vector is the re-normalised sum
 * over the templates of the normalised text features of its prompts;
 * logits = 100 image . class; a sample's class rank is its position in a
 * stable descending sort.  It gives the confusion matrix of top-1. */
#include "config.h"

#include "setup/run.h"
#include "setup/optim-setup.h"
#include "setup/run-private.h"
#include "train/plugin-loader.h"

#include <cliptrain/plugin.h>

#include <string.h>

/* What eval and zeroshot hold; eval_clear frees it. */
typedef struct {
  CtRecipe *recipe;
  CtSections sec;
  char *recipe_dir;
  GPtrArray *search, *cbs; /* cbs: CtCallback*, until the learner takes them */
  CtData data;
  CtModel *model;
  CtLearner *learner;
} Eval;

static void
eval_clear(Eval *ev)
{
  ct_learner_free(ev->learner);
  ct_model_free(ev->model);
  ct_data_clear(&ev->data);
  if (ev->cbs)
    g_ptr_array_free(ev->cbs, TRUE);
  if (ev->search)
    g_ptr_array_free(ev->search, TRUE);
  ct_sections_clear(&ev->sec);
  if (ev->recipe)
    ct_recipe_free(ev->recipe);
  g_free(ev->recipe_dir);
}

/* The recipe with its overrides, checked, its paths absolute; its plugins
 * found, opened and their parameters checked (not created). */
static int
eval_recipe(Eval *ev, const CtRunOptions *o, GError **error)
{
  if (!(ev->recipe = ct_recipe_load(o->recipe, error)))
    return 2;
  for (const char *const *s = o->sets; s && *s; s++)
    if (!ct_recipe_override(ev->recipe, *s, error))
      return 2;
  if (!ct_sections_read(ev->recipe, CT_SECTIONS_ALL, &ev->sec, error))
    return 2;
  g_autofree char *dir = g_path_get_dirname(o->recipe);
  ev->recipe_dir = g_canonicalize_filename(dir, NULL);
  ct_sections_absolute_paths(ev->recipe, &ev->sec, ev->recipe_dir); /* plugin_path too */
  ev->search = ct_plugin_search_path((const char *const *) ev->sec.plugin_path);
  ev->cbs = g_ptr_array_new_with_free_func((GDestroyNotify) ct_callback_free);
  CtPrecision precision;
  return ct_run_callbacks_load(ev->recipe, ev->search, ev->cbs, &precision, error) ? 0 : 2;
}

/* The threads: --threads (checked as fit.threads is), else fit.threads.
 * 0, or 2 for a --threads out of range. */
static int
eval_threads(Eval *ev, const CtRunOptions *o, GError **error)
{
  if (o->threads > 0) {
    g_autofree char *where = g_strdup_printf("--threads %d", o->threads);
    if (!ct_section_check_int(&ev->sec.fit.base, offsetof(CtFitSection, threads), o->threads,
                              where, error))
      return 2;
  }
  ct_set_num_threads(o->threads > 0 ? o->threads : ev->sec.fit.threads);
  return 0;
}

/* The model in PATH at the recipe's batch size, in inference mode; a
 * config other than the recipe's is a bad recipe for it (exit 2). */
static int
eval_model(Eval *ev, const char *path, GError **error)
{
  const CtConfig *rc = &ev->sec.model.cfg;
  ev->model = ct_model_new_from_file_heads(path, ev->sec.data.batch_size, rc->vision_heads,
                                           rc->transformer_heads, error);
  if (!ev->model)
    return 1;
  g_autofree char *diff = ct_config_diff(ct_model_config(ev->model), rc);
  if (diff) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the model does not match the recipe's model: %s; use the recipe it was "
                "trained with", path, diff);
    return 2;
  }
  const CtModelSection *ms = &ev->sec.model;
  if (ms->checkpoint &&
      !ct_model_set_memory(ev->model, CT_PRECISION_FP32, ms->checkpoint_nchunks, error))
    return 1;
  ct_model_set_training(ev->model, FALSE);
  return 0;
}

/* The datasets and the tokenizer, as a fit opens them. */
static int
eval_data(Eval *ev, GError **error)
{
  if (!ct_data_open(&ev->sec.data, ev->recipe_dir, &ev->sec.model.cfg, ev->sec.seed, &ev->data,
                    error))
    return (*error)->code != CT_ERROR_CONFIG ? 1 : 2;
  return 0;
}

/* ---------------------------------------------------------------- eval */

/* Callbacks about a run's files or its course: not run by eval. */
static const char *const not_in_eval[] = { "save_model", "csv_logger", "report",
                                           "early_stopping", NULL };

static void
recipe_value(const char *path, const char *value, gpointer learner)
{
  ct_learner_set_recipe_value(learner, path, value);
}

void
ct_eval_result_clear(CtEvalResult *res)
{
  g_strfreev(res->names);
  g_free(res->values);
  memset(res, 0, sizeof *res);
}

int
ct_run_eval(const CtRunOptions *o, const char *model_path, CtEvalResult *res, GError **error)
{
  memset(res, 0, sizeof *res);
  Eval ev = { 0 };
  CtOptimizer *opt = NULL;
  int rc = eval_recipe(&ev, o, error);
  for (guint i = 0; rc == 0 && i < ev.cbs->len;) {
    CtCallback *cb = g_ptr_array_index(ev.cbs, i);
    if (g_strv_contains(not_in_eval, cb->desc->name))
      g_ptr_array_remove_index(ev.cbs, i);
    else
      i++;
  }
  if (rc == 0 && !ct_run_callbacks_create(ev.cbs, error))
    rc = 2;
  CtComm *comm = rc == 0 ? ct_run_comm(ev.cbs, error) : NULL;
  if (rc == 0 && !comm)
    rc = 2;
  if (rc == 0)
    rc = eval_data(&ev, error);
  if (rc == 0 && !ev.data.valid) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the recipe has no validation set (data.valid_path, or the dataset's "
                "validation split): nothing to evaluate", o->recipe);
    rc = 2;
  }
  if (rc == 0)
    rc = eval_model(&ev, model_path, error);
  /* the learner wants an optimizer; it never steps */
  if (rc == 0 && !(opt = ct_optim_build(&ev.sec.optimizer, ev.model, error)))
    rc = 2;
  if (rc == 0)
    rc = eval_threads(&ev, o, error);
  if (rc == 0) {
    const CtDataSection *d = &ev.sec.data;
    CtDataset *valid = g_steal_pointer(&ev.data.valid);
    res->n_samples = (int64_t) ct_dataset_len(valid);
    CtLoader *vl = ct_loader_new(valid, &ev.sec.model.cfg, d->batch_size, FALSE, FALSE,
                                 d->workers, d->prefetch, ev.sec.seed);
    /* no run folder: the recorder writes no files (ct_learner_out_dir is NULL) */
    ev.learner = ct_learner_new(ev.model, opt, NULL, vl, d->batch_size, 1, ev.sec.seed, NULL,
                                error);
    if (!ev.learner) {
      ct_loader_free(vl);
      ct_dataset_free(valid);
      ct_optimizer_free(opt);
      rc = 1;
    }
  }
  if (rc == 0) {
    CtLearner *L = ev.learner;
    ev.model = NULL;
    ct_learner_set_comm(L, g_steal_pointer(&comm));
    ct_recipe_foreach_scalar(ev.recipe, recipe_value, L);
    ct_learner_set_tokenizer(L, ev.data.tok);
    g_autofree char *yaml = ct_recipe_to_yaml(ev.recipe);
    ct_learner_set_recipe(L, yaml);
    while (ev.cbs->len)
      ct_learner_add_callback(L, g_ptr_array_steal_index(ev.cbs, 0));
    if (!ct_learner_validate(L, error))
      rc = 1;
  }
  if (rc == 0) {
    /* row 0 as the fit's epochs record it, but train_loss (no training)
     * and time */
    CtRecorder *rec = ct_learner_recorder(ev.learner);
    GPtrArray *names = g_ptr_array_new();
    GArray *values = g_array_new(FALSE, FALSE, sizeof(double));
    for (const char *const *n = ct_recorder_names(rec); *n; n++) {
      double v;
      if (!strcmp(*n, "train_loss") || !strcmp(*n, "time") || !ct_recorder_get(rec, 0, *n, &v))
        continue;
      g_ptr_array_add(names, g_strdup(*n));
      g_array_append_val(values, v);
    }
    g_ptr_array_add(names, NULL);
    res->names = (char **) g_ptr_array_free(names, FALSE);
    res->values = (double *) (void *) g_array_free(values, FALSE);
  }
  ct_comm_free(comm);
  eval_clear(&ev);
  return rc;
}

/* ---------------------------------------------------------------- zeroshot */

/* The caption text of class NAME: data.captions maps it when it has it. */
static const char *
caption_of(const CtDataSection *d, const char *name)
{
  for (size_t i = 0; i < d->captions.n; i++)
    if (strcmp(d->captions.keys[i], name) == 0)
      return d->captions.values[i];
  return name;
}

/* (C, E) class vectors of TEXTS (the label text of each class) in
 * TEMPLATES, tokenized by the data's tokenizer, as zero_shot builds them
 * (ct_model_class_vectors).  (transfer full) */
static float *
class_vectors(CtModel *m, const CtTokenizer *tok, gboolean truncate, char **texts, int C,
              const char *const *templates, GError **error)
{
  int NT = (int) g_strv_length((char **) templates);
  int T = ct_model_config(m)->context_length, E = ct_model_config(m)->embed_dim;
  float *cls = g_new(float, (size_t) C * E);
  int32_t *prompts = g_new(int32_t, (size_t) C * NT * T); /* (C * NT, T) */
  gboolean ok = TRUE;
  for (int c = 0; c < C && ok; c++)
    for (int t = 0; t < NT && ok; t++) {
      g_autofree char *prompt = ct_template_fill(templates[t], texts[c]);
      ok = ct_tokenizer_tokenize(tok, prompt, T, truncate, prompts + ((size_t) c * NT + t) * T,
                                 error);
      if (!ok)
        g_prefix_error(error, "prompt '%s': ", prompt);
    }
  ok = ok && ct_model_class_vectors(m, prompts, C, NT, cls, error);
  g_free(prompts);
  if (!ok)
    g_clear_pointer(&cls, g_free);
  return cls;
}

void
ct_zeroshot_result_clear(CtZeroshotResult *res)
{
  g_strfreev(res->classes);
  g_free(res->confusion);
  memset(res, 0, sizeof *res);
}

/* The recipe's zero_shot metric, or NULL. */
static const CtCallback *
zero_shot_metric(GPtrArray *cbs)
{
  for (guint i = 0; i < cbs->len; i++) {
    const CtCallback *cb = g_ptr_array_index(cbs, i);
    if (strcmp(cb->desc->name, "zero_shot") == 0)
      return cb;
  }
  return NULL;
}

/* The class of every sample of DS: its label mapped to a class (by name
 * through SRC_NAMES when BY_NAME, else by position), or for a captioned
 * source the class whose caption (LABEL_TEMPLATE filled with its text) or
 * text is the sample's caption.  (transfer full) */
static int *
sample_classes(CtDataset *ds, const char *split, char **classes, char **texts, int C,
               gboolean by_name, const char *label_template, GError **error)
{
  size_t n = ct_dataset_len(ds);
  const char *const *src_names = ct_dataset_class_names(ds);
  int *truth = g_new(int, MAX(n, 1));
  char **captions = g_new0(char *, C + 1);
  for (int c = 0; c < C; c++)
    captions[c] = ct_template_fill(label_template, texts[c]);
  gboolean ok = TRUE;
  for (size_t i = 0; i < n && ok; i++) {
    int label = -1;
    g_autofree char *caption = NULL;
    if (!(ok = ct_dataset_label(ds, i, &label, &caption, error)))
      break;
    int c = -1;
    if (label >= 0 && by_name && src_names) {
      const char *name = label < (int) g_strv_length((char **) src_names) ? src_names[label] : NULL;
      for (int k = 0; name && k < C && c < 0; k++)
        if (strcmp(classes[k], name) == 0)
          c = k;
      if (c < 0) {
        g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                    "%s sample %zu: its class '%s' is none of the zero_shot metric's "
                    "class_names", split, i, name ? name : "(unnamed)");
        ok = FALSE;
      }
    } else if (label >= 0) {
      c = label;
      if (c >= C) {
        g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                    "%s sample %zu: label %d is out of range: there are %d classes", split, i,
                    label, C);
        ok = FALSE;
      }
    } else if (caption) {
      for (int k = 0; k < C && c < 0; k++)
        if (strcmp(caption, captions[k]) == 0 || strcmp(caption, texts[k]) == 0)
          c = k;
      if (c < 0) {
        g_autofree char *shown = ct_source_one_line(caption);
        g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                    "%s sample %zu: caption '%s' is none of the classes' captions (the label "
                    "template '%s' filled with a class)", split, i, shown, label_template);
        ok = FALSE;
      }
    } else {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "synthetic data has no classes: zeroshot --data needs labelled data");
      ok = FALSE;
    }
    truth[i] = c;
  }
  g_strfreev(captions);
  if (!ok)
    g_clear_pointer(&truth, g_free);
  return truth;
}

int
ct_run_zeroshot(const CtRunOptions *o, const CtZeroshotOptions *z, CtZeroshotResult *res,
                GError **error)
{
  memset(res, 0, sizeof *res);
  Eval ev = { 0 };
  int rc = eval_recipe(&ev, o, error);
  if (rc == 0)
    rc = eval_data(&ev, error);
  const gboolean train = z->split && strcmp(z->split, "train") == 0;
  const char *split = train ? "train" : "valid";
  CtDataset *ds = rc == 0 ? (train ? ev.data.train : ev.data.valid) : NULL;
  if (rc == 0 && !ds) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the recipe has no validation set (data.valid_path, or the dataset's "
                "validation split): use --split train", o->recipe);
    rc = 2;
  }
  if (rc == 0)
    rc = eval_model(&ev, z->model, error);
  /* the classes and templates: given, else the zero_shot metric's, else the data's */
  const CtCallback *zs = rc == 0 ? zero_shot_metric(ev.cbs) : NULL;
  const CtDataSection *d = &ev.sec.data;
  GPtrArray *classes = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *texts = g_ptr_array_new_with_free_func(g_free);
  const char *const *tmpl = NULL;
  const char *const default_tmpl[] = { "a photo of a {label}.", NULL };
  const char *label_template = "{label}";
  gboolean by_name = FALSE;
  if (rc == 0) {
    const char *const *names = z->labels                   ? z->labels
                               : zs                         ? ct_params_get_list(zs->params, "class_names")
                                                            : ct_dataset_class_names(ds);
    by_name = !z->labels && zs;
    for (const char *const *n = names; n && *n; n++) {
      g_ptr_array_add(classes, g_strdup(*n));
      g_ptr_array_add(texts, g_strdup(z->labels ? *n : caption_of(d, *n)));
    }
    tmpl = z->templates             ? z->templates
           : zs                     ? ct_params_get_list(zs->params, "templates")
           : d->templates.n         ? (const char *const *) d->templates.values
                                    : default_tmpl;
    if (zs && *ct_params_get_string(zs->params, "label_template"))
      label_template = ct_params_get_string(zs->params, "label_template");
    else if (d->templates.n)
      label_template = d->templates.values[0];
    if (!classes->len) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: the recipe names no classes: give --labels, a zero_shot metric with "
                  "class_names, or labelled data (dataset idx or image_folder)", o->recipe);
      rc = 2;
    } else if (!tmpl || !*tmpl) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "no prompt templates");
      rc = 2;
    } else {
      /* a template without {label} gives every class the same prompt */
      for (const char *const *t = tmpl; rc == 0 && *t; t++)
        if (!strstr(*t, "{label}")) {
          g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                      "prompt template '%.80s%s' has no {label}: every class would get the "
                      "same prompt", *t, strlen(*t) > 80 ? "..." : "");
          rc = 2;
        }
    }
  }
  if (rc == 0 && z->limit > 0 && (size_t) z->limit < ct_dataset_len(ds)) {
    size_t n = (size_t) z->limit, *idx = g_new(size_t, n);
    for (size_t i = 0; i < n; i++)
      idx[i] = ds->indices ? ds->indices[i] : i;
    ct_dataset_set_indices(ds, idx, n);
  }
  if (rc == 0 && ct_dataset_len(ds) == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "the %s set is empty", split);
    rc = 1;
  }
  int C = (int) classes->len;
  g_ptr_array_add(classes, NULL);
  g_ptr_array_add(texts, NULL);
  int *truth = rc == 0 ? sample_classes(ds, split, (char **) classes->pdata,
                                        (char **) texts->pdata, C, by_name, label_template,
                                        error)
                       : NULL;
  if (rc == 0 && !truth)
    rc = (*error)->code == CT_ERROR_CONFIG ? 2 : 1;
  float *cls = NULL, *images = NULL, *logits = NULL;
  int32_t *tokens = NULL;
  CtLoader *ld = NULL;
  if (rc == 0)
    rc = eval_threads(&ev, o, error);
  if (rc == 0) {
    cls = class_vectors(ev.model, ev.data.tok, d->truncate, (char **) texts->pdata, C, tmpl,
                        error);
    if (!cls)
      rc = 1;
  }
  if (rc == 0) {
    /* no augmentation, the first template, as validation sees the samples */
    ds->o.augment = FALSE;
    ds->o.hflip = FALSE;
    ds->o.random_template = FALSE;
    const CtConfig *cfg = ct_model_config(ev.model);
    int B = d->batch_size, E = cfg->embed_dim, R = cfg->image_resolution;
    ld = ct_loader_new(ds, cfg, B, FALSE, FALSE, d->workers, d->prefetch, ev.sec.seed);
    images = g_new(float, (size_t) B * 3 * R * R);
    tokens = g_new(int32_t, (size_t) B * cfg->context_length);
    logits = g_new(float, (size_t) B * C);
    res->confusion = g_new0(int64_t, (size_t) C * C);
    ct_loader_start(ld, 0);
    size_t at = 0;
    for (int k = 0; rc == 0 && k < ct_loader_n_batches(ld); k++) {
      int b;
      if (!ct_loader_next(ld, images, tokens, &b, error) ||
          !ct_model_encode_image(ev.model, images, b, error)) {
        rc = 1;
        break;
      }
      ct_sgemm(FALSE, TRUE, b, C, E, 100.0f, ct_model_image_features(ev.model), E, cls, E, 0.0f,
               logits, C);
      for (int i = 0; i < b; i++, at++) {
        const float *l = logits + (size_t) i * C;
        int t = truth[at], r = ct_class_rank(l, C, t), best = 0;
        for (int c = 1; c < C; c++)
          if (l[c] > l[best])
            best = c;
        res->confusion[(size_t) t * C + best]++;
        res->top1 += r == 0;
        res->top5 += r < 5;
        res->n++;
      }
    }
    ct_loader_stop(ld);
  }
  if (rc == 0)
    res->classes = (char **) g_ptr_array_free(g_steal_pointer(&classes), FALSE);
  else
    ct_zeroshot_result_clear(res);
  ct_loader_free(ld);
  g_free(images);
  g_free(tokens);
  g_free(logits);
  g_free(cls);
  g_free(truth);
  if (classes)
    g_ptr_array_free(classes, TRUE);
  g_ptr_array_free(texts, TRUE);
  eval_clear(&ev);
  return rc;
}

/* sections.h: the core's recipe sections as typed structs.
 *
 * Each section (data, model, optimizer, schedule, fit, output) is
 * described once, in sections.c, by a schema table of the kind plugins
 * declare (key, type, default, range, doc) bound to the fields below;
 * ct_sections_read validates the recipe once, filling the defaults into
 * the tree (so that the resolved recipe.yaml says them), and the
 * components take these structs: nothing outside the recipe code looks a
 * key up in the YAML tree.  Positions for errors come from
 * ct_section_where(&section.base, offsetof(...)).  The same tables print
 * `cliptrain recipe --keys` (ct_sections_describe). */
#ifndef CT_SECTIONS_H
#define CT_SECTIONS_H

#include "formats/recipe-schema.h"

#include <cliptrain/model.h>

/* data: where samples come from, their captions and tokenizer, and the
 * loaders.  Paths are absolute once ct_sections_absolute_paths ran. */
typedef struct {
  CtSection base;
  char *dataset;         /* synthetic|image_folder|csv|tsv|idx|webdataset */
  char *path, *valid_path;
  char *split;           /* image_folder: grandparent|random */
  char *train_folder, *valid_folder;
  double valid_pct;
  char *image_column, *caption_column;
  char *train_images, *train_labels, *valid_images, *valid_labels;
  char *classes;         /* ""|digits|fashion_mnist */
  CtRecipeList captions; /* MAP: class name -> caption */
  CtRecipeList templates;
  char *vocab;
  int vocab_size;
  gboolean truncate;
  char *corrupt;         /* fail|skip */
  gboolean random_resized_crop;
  double min_scale;
  gboolean hflip;
  int64_t n_train, n_valid;
  int caption_tokens;
  int batch_size;
  gboolean shuffle, drop_last;
  int workers, prefetch;
} CtDataSection;

/* model: a preset with any config key over it. */
typedef struct {
  CtSection base;
  char *preset;
  CtConfig cfg;          /* the preset, the keys over it, validated */
  char *init;            /* weights to start from, or "" */
  gboolean checkpoint;
  int checkpoint_nchunks;
  double patch_dropout;  /* training only: not a config key, so weights load either way */
} CtModelSection;

/* optimizer: the kind, its hyper-parameters (the kind's defaults), and
 * which tensors it updates how. */
typedef struct {
  CtSection base;
  char *name;            /* adam|adamw|sgd */
  double lr, beta1, beta2, eps, weight_decay;
  CtRecipeList no_decay; /* globs */
  CtRecipeList lr_mult;  /* MAP: glob -> factor (text) */
  CtRecipeList freeze;   /* globs */
  gboolean lock_image;
  int lock_image_unlocked;        /* blocks */
  int lock_image_unlocked_groups; /* open_clip's groups */
  gboolean lock_image_freeze_bn_stats;
  gboolean lock_text;
  int lock_text_unlocked;         /* blocks */
  int lock_text_unlocked_layers;  /* open_clip's groups */
  gboolean lock_norms;
  CtRecipeList layer_decay;       /* MAP: tower -> decay (text) */
  char *state_precision; /* fp32|bf16 */
  char *step_in_backward; /* auto|true|false */
} CtOptimizerSection;

/* schedule: the schedule and its own parameters; only those of NAME are
 * read (the others keep 0).  lr is optimizer.lr. */
typedef struct {
  CtSection base;
  char *name;
  double warmup, div, div_final, pct_start, mom_start, mom_mid, mom_end;
  double cooldown_steps, cooldown_power, lr_end;
} CtScheduleSection;

typedef struct {
  CtSection base;
  int epochs;
  int threads;
  int64_t save_state_every;
  double save_state_every_seconds;
} CtFitSection;

typedef struct {
  CtSection base;
  char *dir;             /* "" for runs/<recipe>-<time> */
  int64_t log_every_steps;  /* a log line every N training steps (0: not by steps) */
  double log_every_seconds; /* ... or every N seconds (0: not by time) */
} CtOutputSection;

/* The whole recipe but its plugin lists.  Zero-initialise; free with
 * ct_sections_clear. */
typedef struct {
  uint64_t seed;
  CtDataSection data;
  CtModelSection model;
  CtOptimizerSection optimizer;
  CtScheduleSection schedule;
  CtFitSection fit;
  CtOutputSection output;
  char **plugin_path;    /* folders as written, NULL-terminated */
} CtSections;

/* Which sections ct_sections_read reads (the top level always). */
typedef enum {
  CT_SECTIONS_DATA = 1 << 0,
  CT_SECTIONS_MODEL = 1 << 1,
  CT_SECTIONS_OPTIMIZER = 1 << 2, /* and schedule */
  CT_SECTIONS_FIT = 1 << 3,       /* fit, output and plugin_path */
  CT_SECTIONS_ALL = 0xf,
} CtSectionsPart;

/* Validate RECIPE's top level and the sections WHICH names, in the
 * recipe's order (seed, data, model, optimizer, schedule, fit, output,
 * plugin_path), and read them into OUT.  Errors name FILE:LINE:COLUMN. */
gboolean ct_sections_read(CtRecipe *recipe, CtSectionsPart which, CtSections *out,
                          GError **error);
void ct_sections_clear(CtSections *sections);
/* data.path, data.valid_path, data.vocab, model.init, output.dir and
 * plugin_path made absolute, in the fields and the tree: a value from a
 * recipe file from that file's folder, a --set value from the current
 * directory (ct_section_absolute_paths); DIR for the rest. */
void ct_sections_absolute_paths(CtRecipe *recipe, CtSections *sections, const char *dir);

/* One item of `callbacks` or `metrics`, normalised to {NAME: {params}}. */
typedef struct {
  const char *list;      /* "callbacks" or "metrics" */
  size_t index;
  const char *name;
  const char *where;     /* where the item was written */
  CtRNode *params;       /* its parameter mapping, in the tree (transfer none) */
} CtPluginUse;
typedef gboolean (*CtPluginUseFunc)(CtRecipe *recipe, const CtPluginUse *use, gpointer data,
                                    GError **error);
/* Each item of callbacks, then of metrics, in order: normalised in the
 * tree (NAME becomes {NAME: {}}), then passed to FUNC, which checks its
 * parameters against the plugin's schema.  Stops at the first error. */
gboolean ct_sections_each_plugin(CtRecipe *recipe, CtPluginUseFunc func, gpointer data,
                                 GError **error);

/* sections-keys.c: every key of the top level and the core's sections,
 * with its type, default, range and doc: `cliptrain recipe --keys`.
 * (transfer full) */
CT_API char *ct_sections_describe(void);

#endif

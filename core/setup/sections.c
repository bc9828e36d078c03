/* sections.c: the core's recipe sections: one schema table each, bound to
 * its typed struct (sections.h), and the one pass that validates a recipe
 * and reads them. */
#include "config.h"

#include "setup/sections-private.h"

#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>

#include <string.h>

/* ---------------------------------------------------------------- the tables */

/* The top level, in the order of the "known:" list of its errors. */
static const char *const top_names[] = { "seed", "data", "model", "optimizer", "schedule", "fit",
                                         "callbacks", "metrics", "output", "plugin_path", NULL };

const CtParamSpec ct_top_level_keys[] = {
  CT_PARAM("seed", CT_PARAM_INT, "0",
           "the recipe's seed for every random draw (initial weights, data order, augmentation), a "
           "non-negative integer", 0, 0, NULL),
  CT_PARAM("extends", CT_PARAM_STRING, "",
           "a recipe (relative to this one's folder) that this one is deep-merged over", 0, 0,
           NULL),
  CT_PARAM("callbacks", CT_PARAM_LIST, "[]",
           "plugins run in the loop, each NAME or {NAME: {params}} "
           "(cliptrain plugins NAME lists its params)", 0, 0, NULL),
  CT_PARAM("metrics", CT_PARAM_LIST, "[]", "plugins that compute metrics, as callbacks", 0, 0,
           NULL),
  CT_PARAM("plugin_path", CT_PARAM_LIST, "[]",
           "folders searched for plugins first, relative to the recipe's folder", 0, 0, NULL),
  CT_PARAM_END,
};

#define D(field, ...) CT_KEY(CtDataSection, field, __VA_ARGS__)
static const CtSectionKey data_keys[] = {
  D(dataset, "dataset", CT_PARAM_STRING, "synthetic", "where samples come from", 0, 0,
    "synthetic|image_folder|csv|tsv|idx|webdataset"),
  CT_PATH_KEY(CtDataSection, path, "path", "",
              "image_folder root, csv/tsv file, idx folder, or training shards"),
  CT_PATH_KEY(CtDataSection, valid_path, "valid_path", "", "csv/tsv file or shards for validation"),
  D(split, "split", CT_PARAM_STRING, "grandparent", "image_folder: by train/valid folders or random", 0, 0, "grandparent|random"),
  D(train_folder, "train_folder", CT_PARAM_STRING, "train", "image_folder: training folder", 0, 0, NULL),
  D(valid_folder, "valid_folder", CT_PARAM_STRING, "valid", "image_folder: validation folder", 0, 0, NULL),
  D(valid_pct, "valid_pct", CT_PARAM_DOUBLE, "0.2", "random split: validation fraction", 0, 1, NULL),
  D(image_column, "image_column", CT_PARAM_STRING, "filepath", "csv/tsv: image path column", 0, 0, NULL),
  D(caption_column, "caption_column", CT_PARAM_STRING, "title", "csv/tsv: caption column", 0, 0, NULL),
  D(train_images, "train_images", CT_PARAM_STRING, "train-images-idx3-ubyte.gz", "idx: training images (in path)", 0, 0, NULL),
  D(train_labels, "train_labels", CT_PARAM_STRING, "train-labels-idx1-ubyte.gz", "idx: training labels", 0, 0, NULL),
  D(valid_images, "valid_images", CT_PARAM_STRING, "t10k-images-idx3-ubyte.gz", "idx: validation images", 0, 0, NULL),
  D(valid_labels, "valid_labels", CT_PARAM_STRING, "t10k-labels-idx1-ubyte.gz", "idx: validation labels", 0, 0, NULL),
  D(classes, "classes", CT_PARAM_STRING, "", "idx class names: digits or fashion_mnist (empty: from the source)", 0, 0, "|digits|fashion_mnist"),
  D(captions, "captions", CT_PARAM_MAP, "{}", "class name -> caption text (num_to_txt in the fastai/self_supervised CLIP module)", 0, 0, NULL),
  D(templates, "templates", CT_PARAM_LIST, "['{label}']", "caption templates for labelled data", 0, 0, NULL),
  CT_PATH_KEY(CtDataSection, vocab, "vocab", "",
              "BPE merges file (OpenAI's bpe_simple_vocab_16e6.txt.gz); empty: learn"),
  D(vocab_size, "vocab_size", CT_PARAM_INT, "0", "learned vocabulary size (0: the model's vocab_size)", 0, 1 << 24, NULL),
  D(truncate, "truncate", CT_PARAM_BOOL, "false", "cut captions longer than the context", 0, 0, NULL),
  D(corrupt, "corrupt", CT_PARAM_STRING, "fail", "unreadable images: fail, or skip and count", 0, 0, "fail|skip"),
  D(random_resized_crop, "random_resized_crop", CT_PARAM_BOOL, "false", "training augmentation", 0, 0, NULL),
  D(min_scale, "min_scale", CT_PARAM_DOUBLE, "0.9", "random_resized_crop scale lower bound", 0.01, 1, NULL),
  D(hflip, "hflip", CT_PARAM_BOOL, "false", "training: random horizontal flips", 0, 0, NULL),
  D(n_train, "n_train", CT_PARAM_INT, "0", "synthetic: samples (0: 256); others: a seeded subset (0: all)", 0, 1e9, NULL),
  D(n_valid, "n_valid", CT_PARAM_INT, "0", "synthetic: samples (0: 64); others: a seeded subset (0: all)", 0, 1e9, NULL),
  D(caption_tokens, "caption_tokens", CT_PARAM_INT, "0", "synthetic: caption length, 0 for random lengths", 0, 1e6, NULL),
  D(batch_size, "batch_size", CT_PARAM_INT, "16", "samples per batch", 1, 1 << 20, NULL),
  D(shuffle, "shuffle", CT_PARAM_BOOL, "true", "reshuffle the training set every epoch", 0, 0, NULL),
  D(drop_last, "drop_last", CT_PARAM_BOOL, "true", "drop the last incomplete training batch", 0, 0, NULL),
  D(workers, "workers", CT_PARAM_INT, "2", "loader threads (0: load in the training thread)", 0, 256, NULL),
  D(prefetch, "prefetch", CT_PARAM_INT, "2", "batches prepared ahead", 1, 64, NULL),
  CT_KEY_END,
};
#undef D

/* The config keys, in ct_config_keys() order, take the preset's values as
 * defaults; 0 is allowed where it means "a ResNet" (the patch size) or
 * "a ViT" (the stages). */
#define M(field, name, min, doc)                                                               \
  CT_KEY(CtModelSection, cfg.field, name, CT_PARAM_INT, NULL, doc, min, 1 << 24, NULL)
static const CtSectionKey model_keys[] = {
  CT_KEY(CtModelSection, preset, "preset", CT_PARAM_STRING, "tiny",
         "model preset: its config, then any key below over it", 0, 0,
         "vitb32|vitl14|small|tiny|fashion|rn50|rn101|rn50x4|rn"),
  M(embed_dim, "embed_dim", 1, "joint embedding width"),
  M(image_resolution, "image_resolution", 1, "R: images are (3, R, R)"),
  M(vision_layers, "vision_layers", 1,
    "ViT blocks; a ResNet's blocks in all, or a list of 4: its blocks per stage ([3, 4, 6, 3] is RN50)"),
  M(vision_width, "vision_width", 1, "image tower width (a ResNet's stem width)"),
  M(vision_patch_size, "vision_patch_size", 0, "ViT patch size P (R a multiple of P); 0: a ResNet"),
  M(vision_heads, "vision_heads", 1, "image tower heads (a ResNet's attention pool)"),
  M(context_length, "context_length", 1, "tokens per caption"),
  M(vocab_size, "vocab_size", 1, "token ids"),
  M(transformer_width, "transformer_width", 1, "text tower width"),
  M(transformer_heads, "transformer_heads", 1, "text tower heads"),
  M(transformer_layers, "transformer_layers", 1, "text tower blocks"),
  M(vision_stages[0], "vision_stage1", 0, "a ResNet's blocks in stage 1 (layer1); 0 for a ViT"),
  M(vision_stages[1], "vision_stage2", 0, "a ResNet's blocks in stage 2"),
  M(vision_stages[2], "vision_stage3", 0, "a ResNet's blocks in stage 3"),
  M(vision_stages[3], "vision_stage4", 0, "a ResNet's blocks in stage 4"),
  CT_PATH_KEY(CtModelSection, init, "init", "",
              "weights to start from (fine-tuning); empty: OpenAI's init"),
  CT_KEY(CtModelSection, checkpoint, "checkpoint", CT_PARAM_BOOL, "false",
         "activation checkpointing: recompute blocks in backward", 0, 0, NULL),
  CT_KEY(CtModelSection, checkpoint_nchunks, "checkpoint_nchunks", CT_PARAM_INT, "2",
         "segments of each tower's blocks when checkpointing", 1, 4096, NULL),
  CT_KEY(CtModelSection, patch_dropout, "patch_dropout", CT_PARAM_DOUBLE, "0",
         "FLIP patch dropout: the fraction of a ViT image's patch tokens dropped in training "
         "(0: off; below 1); validation and inference use every token", 0, 1, NULL),
  CT_KEY_END,
};
#undef M

/* lr, beta1, beta2, eps, weight_decay and no_decay: the kind's defaults */
#define O(field, ...) CT_KEY(CtOptimizerSection, field, __VA_ARGS__)
static const CtSectionKey optimizer_keys[] = {
  O(name, "name", CT_PARAM_STRING, "adamw", "optimizer", 0, 0, "adam|adamw|sgd"),
  O(lr, "lr", CT_PARAM_DOUBLE, NULL, "learning rate (a schedule's peak)", 0, 10, NULL),
  O(beta1, "beta1", CT_PARAM_DOUBLE, NULL, "first-moment decay (fastai's mom)", 0, 1, NULL),
  O(beta2, "beta2", CT_PARAM_DOUBLE, NULL, "second-moment decay (sqr_mom); not sgd", 0, 1, NULL),
  O(eps, "eps", CT_PARAM_DOUBLE, NULL, "denominator epsilon; not sgd", 0, 1, NULL),
  O(weight_decay, "weight_decay", CT_PARAM_DOUBLE, NULL, "decoupled weight decay", 0, 10, NULL),
  O(no_decay, "no_decay", CT_PARAM_LIST, NULL, "tensors without weight decay (globs)", 0, 0, NULL),
  O(lr_mult, "lr_mult", CT_PARAM_MAP, "{}", "glob -> learning-rate factor (later globs win)", 0, 0, NULL),
  O(freeze, "freeze", CT_PARAM_LIST, "[]", "tensors never updated (globs)", 0, 0, NULL),
  O(lock_image, "lock_image", CT_PARAM_BOOL, "false", "freeze the image tower (open_clip's lock-image); or {unlocked_groups: N, freeze_bn_stats: B}, written as the two keys below", 0, 0, NULL),
  O(lock_image_unlocked, "lock_image_unlocked", CT_PARAM_INT, "0", "with lock_image: last blocks left trainable", 0, 1e6, NULL),
  O(lock_image_unlocked_groups, "lock_image_unlocked_groups", CT_PARAM_INT, "0", "with lock_image: top lock groups left trainable (open_clip's --lock-image-unlocked-groups; 0: none)", 0, 1e6, NULL),
  O(lock_image_freeze_bn_stats, "lock_image_freeze_bn_stats", CT_PARAM_BOOL, "false", "with lock_image: a ResNet's locked groups' BatchNorm in eval mode (--lock-image-freeze-bn-stats)", 0, 0, NULL),
  O(lock_text, "lock_text", CT_PARAM_BOOL, "false", "freeze the text tower (lock-text); or {unlocked_layers: N}, written as the key below", 0, 0, NULL),
  O(lock_text_unlocked, "lock_text_unlocked", CT_PARAM_INT, "0", "with lock_text: last blocks left trainable", 0, 1e6, NULL),
  O(lock_text_unlocked_layers, "lock_text_unlocked_layers", CT_PARAM_INT, "0", "with lock_text: top lock groups left trainable (open_clip's --lock-text-unlocked-layers; 0: none)", 0, 1e6, NULL),
  O(lock_norms, "lock_norms", CT_PARAM_BOOL, "false", "keep a locked tower's layer norms trainable", 0, 0, NULL),
  O(layer_decay, "layer_decay", CT_PARAM_MAP, "{}", "tower (image, text) -> layer-wise lr decay in (0, 1]: lr * decay^(blocks above)", 0, 0, NULL),
  O(state_precision, "state_precision", CT_PARAM_STRING, "fp32",
    "moments stored as fp32, or bf16 (half the memory, stochastic rounding)", 0, 0, "fp32|bf16"),
  O(step_in_backward, "step_in_backward", CT_PARAM_STRING, "auto",
    "step each block inside backward from a one-block scratch: no whole gradient "
    "buffer; auto: when every callback declares it uses no gradient",
    0, 0, "auto|true|false"),
  CT_KEY_END,
};
#undef O

typedef struct {
  const char *kind, *lr, *beta1, *beta2, *eps, *wd;
} KindDefaults;

static const KindDefaults kind_defaults[] = {
  { "adam", "1e-3", "0.9", "0.99", "1e-5", "0.01" },   /* fastai */
  { "adamw", "5e-4", "0.9", "0.98", "1e-6", "0.2" },   /* open_clip, ViT */
  { "sgd", "1e-2", "0.9", "0.99", "1e-5", "0" },       /* beta2, eps unused */
};

/* Every schedule's parameters but lr (optimizer.lr); a schedule reads
 * those it has, in its own order, with its own defaults.  Their ranges
 * are the schedule's (ct_schedule_set says them). */
#define S(field, ...) CT_KEY(CtScheduleSection, field, __VA_ARGS__)
static const CtSectionKey schedule_keys[] = {
  S(name, "name", CT_PARAM_STRING, "const", "learning-rate schedule", 0, 0,
    "const|one_cycle|flat_cos|warmup_cosine|const_cooldown"),
  S(warmup, "warmup", CT_PARAM_DOUBLE, NULL, "steps of linear warmup to lr (whole, >= 0)", 0, 0, NULL),
  S(div, "div", CT_PARAM_DOUBLE, NULL, "lr starts at lr / div (> 0)", 0, 0, NULL),
  S(div_final, "div_final", CT_PARAM_DOUBLE, NULL, "lr ends at lr / div_final (> 0)", 0, 0, NULL),
  S(pct_start, "pct_start", CT_PARAM_DOUBLE, NULL,
    "fraction of training before the cosine descent (one_cycle: rising; flat_cos: flat)", 0, 0, NULL),
  S(mom_start, "mom_start", CT_PARAM_DOUBLE, NULL, "momentum (beta1) at the start, in [0, 1)", 0, 0, NULL),
  S(mom_mid, "mom_mid", CT_PARAM_DOUBLE, NULL, "momentum at the peak lr, in [0, 1)", 0, 0, NULL),
  S(mom_end, "mom_end", CT_PARAM_DOUBLE, NULL, "momentum at the end, in [0, 1)", 0, 0, NULL),
  S(cooldown_steps, "cooldown_steps", CT_PARAM_DOUBLE, NULL, "final steps of the cooldown (whole, >= 0)", 0, 0, NULL),
  S(cooldown_power, "cooldown_power", CT_PARAM_DOUBLE, NULL, "the cooldown's power (> 0; 1: linear)", 0, 0, NULL),
  S(lr_end, "lr_end", CT_PARAM_DOUBLE, NULL, "lr at the end of the cooldown (>= 0)", 0, 0, NULL),
  CT_KEY_END,
};
#undef S

static const CtSectionKey fit_keys[] = {
  CT_KEY(CtFitSection, epochs, "epochs", CT_PARAM_INT, "1", "epochs to train", 1, 100000, NULL),
  CT_KEY(CtFitSection, threads, "threads", CT_PARAM_INT, "2", "BLAS threads", 1, 1024, NULL),
  CT_KEY(CtFitSection, save_state_every, "save_state_every", CT_PARAM_INT, "0",
         "also save the training state every N training steps, for --resume after a crash "
         "(0: only when stopped)", 0, 1e12, NULL),
  CT_KEY(CtFitSection, save_state_every_seconds, "save_state_every_seconds", CT_PARAM_DOUBLE,
         "1800", "... and after the first step that ends this many seconds after the last "
         "state saved, so that a crash loses at most that much training (0: not by time)", 0,
         1e9, NULL),
  CT_KEY_END,
};

static const CtSectionKey output_keys[] = {
  CT_PATH_KEY(CtOutputSection, dir, "dir", "",
              "run folder (empty: runs/<recipe>-<time> in the current directory)"),
  CT_KEY(CtOutputSection, log_every_steps, "log_every_steps", CT_PARAM_INT, "100",
         "a log line on stderr every N training steps (0: not by steps)", 0, 1e12, NULL),
  CT_KEY(CtOutputSection, log_every_seconds, "log_every_seconds", CT_PARAM_DOUBLE, "30",
         "... or every N seconds, whichever comes first (0: not by time; both 0: no log lines)",
         0, 1e9, NULL),
  CT_KEY_END,
};

const CtSectionInfo ct_section_infos[] = {
  { "data", "the samples, their captions and tokenizer, and the loaders", data_keys },
  { "model", "the CLIP model: a preset and any config key over it", model_keys },
  { "optimizer", "the optimizer, its hyper-parameters and which tensors it updates how",
    optimizer_keys },
  { "schedule", "the learning-rate schedule; each reads only its own parameters",
    schedule_keys },
  { "fit", "the loop", fit_keys },
  { "output", "the run folder and the log lines on stderr", output_keys },
  { NULL, NULL, NULL },
};

/* ---------------------------------------------------------------- defaults chosen by a key */

static char **
pairs_free_to_strv(GPtrArray *pairs)
{
  g_ptr_array_add(pairs, NULL);
  return (char **) g_ptr_array_free(pairs, FALSE);
}

static void
add_pair(GPtrArray *pairs, const char *key, char *value)
{
  g_ptr_array_add(pairs, g_strdup(key));
  g_ptr_array_add(pairs, value);
}

/* "['a', 'b']" for a LIST default */
static char *
flow_list(const char *const *items)
{
  GString *s = g_string_new("[");
  for (const char *const *i = items; *i; i++)
    g_string_append_printf(s, "%s'%s'", i == items ? "" : ", ", *i);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

char **
ct_sections_optimizer_defaults(const char *kind)
{
  const KindDefaults *d = &kind_defaults[1]; /* adamw, also for an unknown kind */
  for (size_t i = 0; i < G_N_ELEMENTS(kind_defaults); i++)
    if (kind && strcmp(kind_defaults[i].kind, kind) == 0)
      d = &kind_defaults[i];
  GPtrArray *p = g_ptr_array_new();
  add_pair(p, "lr", g_strdup(d->lr));
  add_pair(p, "beta1", g_strdup(d->beta1));
  add_pair(p, "beta2", g_strdup(d->beta2));
  add_pair(p, "eps", g_strdup(d->eps));
  add_pair(p, "weight_decay", g_strdup(d->wd));
  add_pair(p, "no_decay", flow_list(ct_optimizer_default_no_decay()));
  return pairs_free_to_strv(p);
}

char **
ct_sections_model_defaults(const char *preset)
{
  CtConfig cfg;
  if (!ct_config_preset(preset, &cfg, NULL))
    return NULL;
  GPtrArray *p = g_ptr_array_new();
  for (const char *const *k = ct_config_keys(); *k; k++)
    add_pair(p, *k, g_strdup_printf("%ld", ct_config_get(&cfg, *k)));
  return pairs_free_to_strv(p);
}

char **
ct_sections_schedule_defaults(const char *name)
{
  CtSchedule *probe = ct_schedule_new(name, NULL);
  if (!probe)
    return NULL;
  GPtrArray *p = g_ptr_array_new();
  for (const char *const *k = ct_schedule_params(probe); *k; k++) {
    if (!strcmp(*k, "lr") || !strcmp(*k, "lr_max"))
      continue; /* optimizer.lr */
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    add_pair(p, *k, g_strdup(g_ascii_dtostr(buf, sizeof buf, ct_schedule_get(probe, *k))));
  }
  ct_schedule_free(probe);
  return pairs_free_to_strv(p);
}

/* ---------------------------------------------------------------- reading */

/* No unknown section; seed a non-negative integer (0 when absent). */
static gboolean
read_top(CtRecipe *r, CtSections *s, GError **error)
{
  CtRNode *root = ct_recipe_root(r);
  for (size_t i = 0; i < ct_rnode_n_items(root); i++) {
    const char *key = ct_rnode_key(root, i);
    if (g_strv_contains(top_names, key))
      continue;
    const char *guess = ct_did_you_mean(key, top_names);
    g_autofree char *known = g_strjoinv(", ", (char **) top_names);
    return ct_recipe_error(error, ct_rnode_where(ct_rnode_item(root, i)),
                        "unknown section '%s'%s%s%s (known: %s)", key,
                        guess ? "; did you mean '" : "", guess ? guess : "", guess ? "'?" : "",
                        known);
  }
  CtRNode *seed = ct_rnode_get(root, "seed");
  int64_t v = 0;
  if (!seed)
    ct_rnode_set_scalar(r, root, "seed", "0", "default");
  else if (ct_rnode_kind(seed) != CT_RNODE_SCALAR || !ct_rnode_to_int(seed, &v, NULL) || v < 0)
    return ct_recipe_error(error, ct_rnode_where(seed), "seed: expected a non-negative integer");
  s->seed = (uint64_t) v;
  return TRUE;
}

/* optimizer.lock_image / lock_text written as a mapping (open_clip's
 * options by their names): checked against SCHEMA, then written as
 * KEY: true and the flat keys FLAT (one per SCHEMA entry, in order), at
 * the positions the values had.  A flat key given beside the mapping is
 * an error: the two would say it twice. */
static gboolean
lock_mapping(CtRecipe *r, CtRNode *opt, const char *key, const CtParamSpec *schema,
             const char *const *flat, GError **error)
{
  CtRNode *node = ct_rnode_get(opt, key);
  if (!node || ct_rnode_kind(node) != CT_RNODE_MAPPING)
    return TRUE; /* a boolean: the section's check reads it */
  g_autofree char *context = g_strdup_printf("optimizer.%s", key);
  if (!ct_recipe_check(r, node, context, schema, error))
    return FALSE;
  for (size_t i = 0; schema[i].name; i++) {
    CtRNode *given = ct_rnode_get(opt, flat[i]);
    if (given)
      return ct_recipe_error(error, ct_rnode_where(given),
                             "optimizer.%s: given twice, here and as %s.%s", flat[i], context,
                             schema[i].name);
  }
  g_autofree char *where = g_strdup(ct_rnode_where(node));
  for (size_t i = 0; schema[i].name; i++) {
    CtRNode *v = ct_rnode_get(node, schema[i].name);
    ct_rnode_set_scalar(r, opt, flat[i], ct_rnode_scalar(v), ct_rnode_where(v));
  }
  ct_rnode_set_scalar(r, opt, key, "true", where);
  return TRUE;
}

static gboolean
lock_mappings(CtRecipe *r, GError **error)
{
  CtRNode *opt = ct_rnode_get(ct_recipe_root(r), "optimizer");
  if (!opt || ct_rnode_kind(opt) != CT_RNODE_MAPPING)
    return TRUE;
  static const CtParamSpec image[] = {
    CT_PARAM("unlocked_groups", CT_PARAM_INT, "0", "top lock groups left trainable", 0, 1e6,
             NULL),
    CT_PARAM("freeze_bn_stats", CT_PARAM_BOOL, "false",
             "a ResNet's locked BatchNorm layers in eval mode", 0, 0, NULL),
    CT_PARAM_END,
  };
  static const char *const image_flat[] = { "lock_image_unlocked_groups",
                                            "lock_image_freeze_bn_stats" };
  static const CtParamSpec text[] = {
    CT_PARAM("unlocked_layers", CT_PARAM_INT, "0", "top lock groups left trainable", 0, 1e6,
             NULL),
    CT_PARAM_END,
  };
  static const char *const text_flat[] = { "lock_text_unlocked_layers" };
  return lock_mapping(r, opt, "lock_image", image, image_flat, error) &&
         lock_mapping(r, opt, "lock_text", text, text_flat, error);
}

static gboolean
read_optimizer(CtRecipe *r, CtSections *s, GError **error)
{
  if (!lock_mappings(r, error))
    return FALSE;
  g_auto(GStrv) defaults = ct_sections_optimizer_defaults(ct_section_peek(r, "optimizer", "name",
                                                                          NULL));
  return ct_section_read(r, "optimizer", optimizer_keys, (const char *const *) defaults,
                         &s->optimizer.base, error);
}

/* The schedule's own keys: name, then its parameters in its order. */
static gboolean
read_schedule(CtRecipe *r, CtSections *s, GError **error)
{
  const char *name = ct_section_peek(r, "schedule", "name", NULL);
  char **defaults = ct_sections_schedule_defaults(name ? name : "const");
  if (!defaults) /* let the check report the bad name with its position */
    defaults = ct_sections_schedule_defaults("const");
  GArray *keys = g_array_new(TRUE, TRUE, sizeof(CtSectionKey));
  g_array_append_val(keys, schedule_keys[0]);
  for (char **d = defaults; d[0]; d += 2)
    for (const CtSectionKey *k = schedule_keys + 1; k->spec.name; k++)
      if (strcmp(k->spec.name, d[0]) == 0)
        g_array_append_val(keys, *k);
  gboolean ok = ct_section_read_owned(r, "schedule", (CtSectionKey *) g_array_free(keys, FALSE),
                                      (const char *const *) defaults, &s->schedule.base, error);
  g_strfreev(defaults);
  return ok;
}

/* model.vision_layers as a list of 4 counts: a ResNet's blocks per stage
 * (OpenAI's vision_layers tuple).  It becomes the keys vision_stage1..4,
 * vision_layers their sum, and vision_patch_size 0 unless given. */
static gboolean
resnet_stages(CtRecipe *r, CtRNode *node, GError **error)
{
  CtRNode *vl = ct_rnode_get(node, "vision_layers");
  if (!vl || ct_rnode_kind(vl) != CT_RNODE_SEQUENCE)
    return TRUE;
  if (ct_rnode_n_items(vl) != 4)
    return ct_recipe_error(error, ct_rnode_where(vl),
                        "model.vision_layers: a list is a ResNet's blocks per stage and needs 4 "
                        "counts (RN50: [3, 4, 6, 3]), not %zu", ct_rnode_n_items(vl));
  int64_t v[4], sum = 0;
  for (int i = 0; i < 4; i++) {
    CtRNode *it = ct_rnode_item(vl, i);
    if (ct_rnode_kind(it) != CT_RNODE_SCALAR || !ct_rnode_to_int(it, &v[i], NULL) || v[i] < 1 ||
        v[i] > 4096)
      return ct_recipe_error(error, ct_rnode_where(it),
                          "model.vision_layers[%d]: expected a count from 1 to 4096", i);
    sum += v[i];
  }
  g_autofree char *where = g_strdup(ct_rnode_where(vl));
  for (int i = 0; i < 4; i++) {
    char key[32], val[32];
    g_snprintf(key, sizeof key, "vision_stage%d", i + 1);
    g_snprintf(val, sizeof val, "%" G_GINT64_FORMAT, v[i]);
    ct_rnode_set_scalar(r, node, key, val, where);
  }
  char total[32];
  g_snprintf(total, sizeof total, "%" G_GINT64_FORMAT, sum);
  ct_rnode_set_scalar(r, node, "vision_layers", total, where);
  if (!ct_rnode_get(node, "vision_patch_size"))
    ct_rnode_set_scalar(r, node, "vision_patch_size", "0", where);
  return TRUE;
}

/* model: a preset, then any config key over it; the resolved recipe holds
 * the whole config. */
static gboolean
read_model(CtRecipe *r, CtSections *s, GError **error)
{
  CtModelSection *m = &s->model;
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), "model", "default");
  if (ct_rnode_kind(node) != CT_RNODE_MAPPING)
    return ct_recipe_error(error, ct_rnode_where(node), "model: expected a mapping");
  const char *where = NULL, *preset = ct_section_peek(r, "model", "preset", &where);
  GError *e = NULL;
  if (!ct_config_preset(preset ? preset : "tiny", &m->cfg, &e)) {
    ct_recipe_error(error, where, "model.preset: %s", e->message);
    g_error_free(e);
    return FALSE;
  }
  if (!resnet_stages(r, node, error))
    return FALSE;
  gboolean layers_given = ct_rnode_get(node, "vision_layers") != NULL;
  g_auto(GStrv) defaults = ct_sections_model_defaults(preset ? preset : "tiny");
  if (!ct_section_read(r, "model", model_keys, (const char *const *) defaults, &m->base, error))
    return FALSE;
  size_t vl = offsetof(CtModelSection, cfg.vision_layers);
  if (!layers_given && ct_config_is_resnet(&m->cfg))
    m->cfg.vision_layers = 0; /* the stages' sum, whatever the preset's was */
  if (!ct_config_validate(&m->cfg, &e)) {
    ct_recipe_error(error, m->base.where, "model: %s", e->message);
    g_error_free(e);
    return FALSE;
  }
  if (!layers_given && ct_config_is_resnet(&m->cfg))
    ct_section_set_int(r, &m->base, vl, m->cfg.vision_layers, "default");
  /* patch dropout: below 1 (the schema's range includes its end), and a
   * ViT's only */
  const char *pd = ct_section_where(&m->base, offsetof(CtModelSection, patch_dropout));
  if (m->patch_dropout >= 1)
    return ct_recipe_error(error, pd, "model.patch_dropout: patch dropout %g is out of range: "
                           "expected 0 <= p < 1", m->patch_dropout);
  if (m->patch_dropout > 0 && ct_config_is_resnet(&m->cfg))
    return ct_recipe_error(error, pd, "model.patch_dropout: patch dropout %g needs a ViT image "
                           "tower; this model's is a ResNet", m->patch_dropout);
  return TRUE;
}

/* plugin_path: a list of folders */
static gboolean
read_plugin_path(CtRecipe *r, CtSections *s, GError **error)
{
  CtRNode *pp = ct_rnode_get(ct_recipe_root(r), "plugin_path");
  if (pp && ct_rnode_kind(pp) != CT_RNODE_SEQUENCE)
    return ct_recipe_error(error, ct_rnode_where(pp), "plugin_path: expected a list of folders");
  GPtrArray *dirs = g_ptr_array_new_with_free_func(g_free);
  for (size_t i = 0; pp && i < ct_rnode_n_items(pp); i++) {
    CtRNode *dir = ct_rnode_item(pp, i);
    if (ct_rnode_kind(dir) != CT_RNODE_SCALAR) {
      g_ptr_array_free(dirs, TRUE);
      return ct_recipe_error(error, ct_rnode_where(dir), "plugin_path: expected a list of folders");
    }
    g_ptr_array_add(dirs, g_strdup(ct_rnode_scalar(dir)));
  }
  g_ptr_array_set_free_func(dirs, NULL);
  g_ptr_array_add(dirs, NULL);
  g_strfreev(s->plugin_path);
  s->plugin_path = (char **) g_ptr_array_free(dirs, FALSE);
  return TRUE;
}

gboolean
ct_sections_read(CtRecipe *r, CtSectionsPart which, CtSections *s, GError **error)
{
  g_return_val_if_fail(r != NULL && s != NULL, FALSE);
  if (!read_top(r, s, error))
    return FALSE;
  if ((which & CT_SECTIONS_DATA) &&
      !ct_section_read(r, "data", data_keys, NULL, &s->data.base, error))
    return FALSE;
  if ((which & CT_SECTIONS_MODEL) && !read_model(r, s, error))
    return FALSE;
  if ((which & CT_SECTIONS_OPTIMIZER) &&
      (!read_optimizer(r, s, error) || !read_schedule(r, s, error)))
    return FALSE;
  if ((which & CT_SECTIONS_FIT) &&
      (!ct_section_read(r, "fit", fit_keys, NULL, &s->fit.base, error) ||
       !ct_section_read(r, "output", output_keys, NULL, &s->output.base, error) ||
       !read_plugin_path(r, s, error)))
    return FALSE;
  return TRUE;
}

void
ct_sections_clear(CtSections *s)
{
  ct_section_clear(&s->data.base);
  ct_section_clear(&s->model.base);
  ct_section_clear(&s->optimizer.base);
  ct_section_clear(&s->schedule.base);
  ct_section_clear(&s->fit.base);
  ct_section_clear(&s->output.base);
  g_strfreev(s->plugin_path);
  memset(s, 0, sizeof *s);
}

void
ct_sections_absolute_paths(CtRecipe *r, CtSections *s, const char *dir)
{
  ct_section_absolute_paths(r, &s->data.base, dir);
  ct_section_absolute_paths(r, &s->model.base, dir);
  ct_section_absolute_paths(r, &s->output.base, dir);
  CtRNode *pp = ct_rnode_get(ct_recipe_root(r), "plugin_path");
  for (size_t i = 0; s->plugin_path && s->plugin_path[i]; i++) {
    if (g_path_is_absolute(s->plugin_path[i]))
      continue;
    CtRNode *item = ct_rnode_item(pp, i);
    char *abs = ct_recipe_absolute_path(item, s->plugin_path[i], dir);
    g_autofree char *where = g_strdup(ct_rnode_where(item));
    ct_rnode_set_item_scalar(r, pp, i, abs, where);
    g_free(s->plugin_path[i]);
    s->plugin_path[i] = abs;
  }
}

/* ---------------------------------------------------------------- plugin lists */

/* Item I of LIST normalised to {NAME: {params}}; *NAME and *WHERE
 * (transfer full) say what and where the user wrote. */
static gboolean
normalise_plugin(CtRecipe *r, const char *section, CtRNode *list, size_t i, char **name,
                 char **where, GError **error)
{
  CtRNode *item = ct_rnode_item(list, i);
  *where = g_strdup(ct_rnode_where(item));
  if (ct_rnode_kind(item) == CT_RNODE_SCALAR) {
    *name = g_strdup(ct_rnode_scalar(item));
    g_autofree char *set = g_strdup_printf("%s.%zu={%s: {}}", section, i, *name);
    return ct_recipe_override(r, set, error);
  }
  if (ct_rnode_kind(item) != CT_RNODE_MAPPING || ct_rnode_n_items(item) != 1)
    return ct_recipe_error(error, ct_rnode_where(item),
                        "%s.%zu: expected a plugin name or {name: {params}}", section, i);
  *name = g_strdup(ct_rnode_key(item, 0));
  CtRNode *params = ct_rnode_item(item, 0);
  if (ct_rnode_kind(params) != CT_RNODE_SCALAR)
    return TRUE;
  const char *v = ct_rnode_scalar(params);
  if (*v && strcmp(v, "~") && strcmp(v, "null"))
    return ct_recipe_error(error, ct_rnode_where(params),
                        "%s.%zu (%s): expected a mapping of parameters", section, i, *name);
  g_autofree char *set = g_strdup_printf("%s.%zu.%s={}", section, i, *name);
  return ct_recipe_override(r, set, error);
}

gboolean
ct_sections_each_plugin(CtRecipe *r, CtPluginUseFunc func, gpointer data, GError **error)
{
  static const char *const lists[] = { "callbacks", "metrics" };
  for (size_t l = 0; l < G_N_ELEMENTS(lists); l++) {
    CtRNode *list = ct_rnode_get(ct_recipe_root(r), lists[l]);
    if (!list)
      continue;
    if (ct_rnode_kind(list) != CT_RNODE_SEQUENCE)
      return ct_recipe_error(error, ct_rnode_where(list), "%s: expected a list of plugins",
                          lists[l]);
    for (size_t i = 0; i < ct_rnode_n_items(list); i++) {
      g_autofree char *name = NULL, *where = NULL;
      if (!normalise_plugin(r, lists[l], list, i, &name, &where, error))
        return FALSE;
      CtPluginUse use = { lists[l], i, name, where,
                          ct_rnode_item(ct_rnode_item(list, i), 0) };
      if (!func(r, &use, data, error))
        return FALSE;
    }
  }
  return TRUE;
}

/* run.c: from a recipe to a finished run.
 *
 * Everything is validated before any work starts: unknown keys, types,
 * ranges, plugin names, plugin ABIs and plugin parameters.  The run folder
 * then gets recipe.yaml (the resolved recipe: every default filled, every
 * override applied), manifest.json, and, as epochs end, metrics.jsonl and
 * history.csv. */
#include "config.h"

#include "setup/run.h"
#include "setup/max-batch.h"

#include "setup/data-setup.h"
#include "train/learner-private.h"
#include "setup/optim-setup.h"
#include "train/plugin-loader.h"
#include "formats/recipe.h"

#include <cblas.h>
#include <cliptrain/tokenizer.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

static const char *const sections[] = { "seed", "data", "model", "optimizer", "schedule", "fit",
                                        "callbacks", "metrics", "output", "plugin_path", NULL };

static const CtParamSpec fit_schema[] = {
  CT_PARAM("epochs", CT_PARAM_INT, "1", "epochs to train", 1, 100000, NULL),
  CT_PARAM("threads", CT_PARAM_INT, "2", "BLAS threads", 1, 1024, NULL),
  CT_PARAM("save_state_every", CT_PARAM_INT, "0",
           "also save the training state every N training steps, for --resume after a crash "
           "(0: only when stopped)", 0, 1e12, NULL),
  CT_PARAM_END,
};

static const CtParamSpec output_schema[] = {
  CT_PARAM("dir", CT_PARAM_STRING, "", "run folder (empty: runs/<recipe>-<time>)", 0, 0, NULL),
  CT_PARAM_END,
};

/* ---------------------------------------------------------------- helpers */

static gboolean
config_error(GError **error, const CtRNode *node, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean
config_error(GError **error, const CtRNode *node, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: %s", ct_rnode_where(node), msg);
  return FALSE;
}

static gboolean
config_error_at(GError **error, const char *where, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean
config_error_at(GError **error, const char *where, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: %s", where, msg);
  return FALSE;
}

static int64_t
get_int(CtRecipe *r, const char *path)
{
  int64_t v = 0;
  ct_rnode_to_int(ct_recipe_lookup(r, path), &v, NULL);
  return v;
}

static gboolean
get_bool(CtRecipe *r, const char *path)
{
  gboolean v = FALSE;
  ct_rnode_to_bool(ct_recipe_lookup(r, path), &v, NULL);
  return v;
}

/* Every scalar of the tree by dotted path, for ct_learner_recipe_value. */
static void
collect_values(CtLearner *L, CtRNode *node, const char *prefix)
{
  if (ct_rnode_kind(node) == CT_RNODE_SCALAR) {
    ct_learner_set_recipe_value(L, prefix, ct_rnode_scalar(node));
    return;
  }
  for (size_t i = 0; i < ct_rnode_n_items(node); i++) {
    g_autofree char *key = ct_rnode_kind(node) == CT_RNODE_MAPPING
                             ? g_strdup(ct_rnode_key(node, i))
                             : g_strdup_printf("%zu", i);
    g_autofree char *path = *prefix ? g_strconcat(prefix, ".", key, NULL) : g_strdup(key);
    collect_values(L, ct_rnode_item(node, i), path);
  }
}

/* ---------------------------------------------------------------- sections */

static gboolean
check_root(CtRecipe *r, GError **error)
{
  CtRNode *root = ct_recipe_root(r);
  for (size_t i = 0; i < ct_rnode_n_items(root); i++) {
    const char *key = ct_rnode_key(root, i);
    if (g_strv_contains(sections, key))
      continue;
    const char *guess = ct_did_you_mean(key, sections);
    g_autofree char *known = g_strjoinv(", ", (char **) sections);
    return config_error(error, ct_rnode_item(root, i),
                        "unknown section '%s'%s%s%s (known: %s)", key,
                        guess ? "; did you mean '" : "", guess ? guess : "",
                        guess ? "'?" : "", known);
  }
  CtRNode *seed = ct_rnode_get(root, "seed");
  if (!seed)
    ct_rnode_set_scalar(r, root, "seed", "0", "default");
  else {
    int64_t v;
    if (ct_rnode_kind(seed) != CT_RNODE_SCALAR || !ct_rnode_to_int(seed, &v, NULL) || v < 0)
      return config_error(error, seed, "seed: expected a non-negative integer");
  }
  return TRUE;
}

static gboolean
check_section(CtRecipe *r, const char *name, const CtParamSpec *schema, GError **error)
{
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), name, "default");
  return ct_recipe_check(r, node, name, schema, error);
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
    return config_error(error, vl,
                        "model.vision_layers: a list is a ResNet's blocks per stage and needs 4 "
                        "counts (RN50: [3, 4, 6, 3]), not %zu", ct_rnode_n_items(vl));
  int64_t v[4], sum = 0;
  for (int i = 0; i < 4; i++) {
    CtRNode *it = ct_rnode_item(vl, i);
    if (ct_rnode_kind(it) != CT_RNODE_SCALAR || !ct_rnode_to_int(it, &v[i], NULL) || v[i] < 1 ||
        v[i] > 4096)
      return config_error(error, it, "model.vision_layers[%d]: expected a count from 1 to 4096",
                          i);
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
check_model(CtRecipe *r, CtConfig *cfg, GError **error)
{
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), "model", "default");
  if (ct_rnode_kind(node) != CT_RNODE_MAPPING)
    return config_error(error, node, "model: expected a mapping");
  CtRNode *preset = ct_rnode_get(node, "preset");
  const char *name = preset && ct_rnode_kind(preset) == CT_RNODE_SCALAR
                       ? ct_rnode_scalar(preset) : "tiny";
  GError *e = NULL;
  if (!ct_config_preset(name, cfg, &e)) {
    config_error(error, preset ? preset : node, "model.preset: %s", e->message);
    g_error_free(e);
    return FALSE;
  }
  if (!resnet_stages(r, node, error))
    return FALSE;
  gboolean layers_given = ct_rnode_get(node, "vision_layers") != NULL;
  const char *const *keys = ct_config_keys();
  guint n = g_strv_length((char **) keys);
  g_autofree CtParamSpec *schema = g_new0(CtParamSpec, n + 5);
  GPtrArray *defaults = g_ptr_array_new_with_free_func(g_free);
  schema[0] = (CtParamSpec) CT_PARAM("preset", CT_PARAM_STRING, "tiny", "model preset", 0, 0,
                                     "vitb32|vitl14|small|tiny|fashion|rn50|rn101|rn50x4|rn");
  for (guint i = 0; i < n; i++) {
    char *def = g_strdup_printf("%ld", ct_config_get(cfg, keys[i]));
    g_ptr_array_add(defaults, def);
    /* 0: a ResNet's patch size, a ViT's stages */
    int min = g_str_equal(keys[i], "vision_patch_size") || g_str_has_prefix(keys[i], "vision_stage")
                ? 0 : 1;
    schema[i + 1] = (CtParamSpec) CT_PARAM(keys[i], CT_PARAM_INT, def, "model config", min,
                                           1 << 24, NULL);
  }
  schema[n + 1] = (CtParamSpec) CT_PARAM("init", CT_PARAM_STRING, "",
                                         "weights to start from (fine-tuning); empty: OpenAI's init",
                                         0, 0, NULL);
  schema[n + 2] = (CtParamSpec) CT_PARAM("checkpoint", CT_PARAM_BOOL, "false",
                                         "activation checkpointing: recompute blocks in backward",
                                         0, 0, NULL);
  schema[n + 3] = (CtParamSpec) CT_PARAM("checkpoint_nchunks", CT_PARAM_INT, "2",
                                         "segments of each tower's blocks when checkpointing", 1,
                                         4096, NULL);
  gboolean ok = ct_recipe_check(r, node, "model", schema, error);
  for (guint i = 0; ok && i < n; i++) {
    g_autofree char *path = g_strconcat("model.", keys[i], NULL);
    ct_config_set(cfg, keys[i], (long) get_int(r, path), NULL);
  }
  g_ptr_array_free(defaults, TRUE);
  if (ok && !layers_given && ct_config_is_resnet(cfg))
    cfg->vision_layers = 0; /* the stages' sum, whatever the preset's was */
  if (ok && !ct_config_validate(cfg, &e)) {
    config_error(error, node, "model: %s", e->message);
    g_error_free(e);
    return FALSE;
  }
  if (ok && !layers_given && ct_config_is_resnet(cfg)) {
    g_autofree char *v = g_strdup_printf("%d", cfg->vision_layers);
    ct_rnode_set_scalar(r, node, "vision_layers", v, "default");
  }
  return ok;
}

/* Relative paths of the data section become absolute, so that the
 * resolved recipe.yaml (and --resume, which reads it from the run folder)
 * finds the same files from anywhere. */
static void
absolute_paths(CtRecipe *r, const char *dir)
{
  static const char *const keys[] = { "data.path", "data.valid_path", "data.vocab", "model.init",
                                      NULL };
  for (const char *const *k = keys; *k; k++) {
    g_autofree char *section = g_strndup(*k, strchr(*k, '.') - *k);
    CtRNode *data = ct_rnode_get(ct_recipe_root(r), section);
    const char *key = strchr(*k, '.') + 1;
    CtRNode *v = data ? ct_rnode_get(data, key) : NULL;
    const char *text = v && ct_rnode_kind(v) == CT_RNODE_SCALAR ? ct_rnode_scalar(v) : "";
    if (!*text || g_path_is_absolute(text))
      continue;
    g_autofree char *abs = g_canonicalize_filename(text, dir);
    g_autofree char *where = g_strdup(ct_rnode_where(v));
    ct_rnode_set_scalar(r, data, key, abs, where);
  }
}

/* model.init: start from released or earlier weights (F16 included).  A
 * file whose config differs from the recipe's says which keys differ. */
static gboolean
load_init(CtRecipe *r, CtModel *m, const CtConfig *cfg, GError **error)
{
  CtRNode *node = ct_recipe_lookup(r, "model.init");
  const char *path = node ? ct_rnode_scalar(node) : "";
  if (!*path)
    return TRUE;
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st) {
    g_prefix_error(error, "%s: model.init: ", ct_rnode_where(node));
    return FALSE;
  }
  CtConfig wc;
  GError *e = NULL;
  gboolean have = ct_safetensors_metadata(st, "config.embed_dim")
                    ? ct_config_from_metadata(&wc, st, &e)
                    : ct_config_from_weights(&wc, st, NULL, cfg->vision_heads,
                                             cfg->transformer_heads, &e);
  if (have) {
    GString *diff = g_string_new(NULL);
    for (const char *const *k = ct_config_keys(); *k; k++)
      if (ct_config_get(&wc, *k) != ct_config_get(cfg, *k))
        g_string_append_printf(diff, "%s%s %ld (the recipe says %ld)", diff->len ? ", " : "",
                               *k, ct_config_get(&wc, *k), ct_config_get(cfg, *k));
    if (diff->len) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: model.init: %s does not match the recipe's model: %s; set model.preset "
                  "and the keys to the weights' config",
                  ct_rnode_where(node), path, diff->str);
      g_string_free(diff, TRUE);
      ct_safetensors_free(st);
      return FALSE;
    }
    g_string_free(diff, TRUE);
  }
  g_clear_error(&e);
  gboolean ok = ct_model_load_from(m, st, NULL, TRUE, error);
  if (!ok)
    g_prefix_error(error, "%s: model.init: ", ct_rnode_where(node));
  ct_safetensors_free(st);
  return ok;
}

/* --max-batch-size: the largest batch (up to the training set) whose
 * predicted memory fits the budget becomes data.batch_size. */
static gboolean
pick_batch(CtRecipe *r, const CtConfig *cfg, const CtData *data, const char *budget_text,
           gboolean fused, GError **error)
{
  size_t budget;
  if (!ct_parse_memory_budget(budget_text, &budget, error))
    return FALSE;
  int limit = (int) MIN(ct_dataset_len(data->train), (size_t) 1 << 20);
  int batch = ct_max_batch_search(r, cfg, fused, budget, MAX(limit, 1), error);
  if (batch == 0)
    return FALSE;
  CtRNode *d = ct_rnode_get(ct_recipe_root(r), "data");
  g_autofree char *text = g_strdup_printf("%d", batch);
  g_autofree char *where = g_strdup_printf("--max-batch-size %s", budget_text);
  ct_rnode_set_scalar(r, d, "batch_size", text, where);
  return TRUE;
}

/* callbacks and metrics: each item is NAME or {NAME: {params}} */
static gboolean
load_plugins(CtRecipe *r, const char *section, GPtrArray *search, GPtrArray *out,
             GError **error)
{
  CtRNode *list = ct_rnode_get(ct_recipe_root(r), section);
  if (!list)
    return TRUE;
  if (ct_rnode_kind(list) != CT_RNODE_SEQUENCE)
    return config_error(error, list, "%s: expected a list of plugins", section);
  for (size_t i = 0; i < ct_rnode_n_items(list); i++) {
    CtRNode *item = ct_rnode_item(list, i);
    g_autofree char *name = NULL;
    /* where the user wrote it, before normalising NAME to {NAME: {}} */
    g_autofree char *where = g_strdup(ct_rnode_where(item));
    if (ct_rnode_kind(item) == CT_RNODE_SCALAR) {
      name = g_strdup(ct_rnode_scalar(item));
      g_autofree char *set = g_strdup_printf("%s.%zu={%s: {}}", section, i, name);
      if (!ct_recipe_override(r, set, error))
        return FALSE;
    } else if (ct_rnode_kind(item) == CT_RNODE_MAPPING && ct_rnode_n_items(item) == 1) {
      name = g_strdup(ct_rnode_key(item, 0));
      CtRNode *params = ct_rnode_item(item, 0);
      if (ct_rnode_kind(params) == CT_RNODE_SCALAR) {
        const char *v = ct_rnode_scalar(params);
        if (*v && strcmp(v, "~") && strcmp(v, "null"))
          return config_error(error, params, "%s.%zu (%s): expected a mapping of parameters",
                              section, i, name);
        g_autofree char *set = g_strdup_printf("%s.%zu.%s={}", section, i, name);
        if (!ct_recipe_override(r, set, error))
          return FALSE;
      }
    } else {
      return config_error(error, item, "%s.%zu: expected a plugin name or {name: {params}}",
                          section, i);
    }
    item = ct_rnode_item(list, i);
    GError *e = NULL;
    char *file = ct_plugin_find(name, search, &e);
#ifndef CT_HAVE_MPI
    if (!file && (strcmp(name, "ddp") == 0 || strcmp(name, "distributed_clip_trainer") == 0)) {
      g_clear_error(&e);
      g_set_error(&e, CT_ERROR, CT_ERROR_CONFIG,
                  "plugin '%s' trains on several processes with MPI, and this cliptrain was "
                  "built without MPI: install the Debian packages libopenmpi-dev and "
                  "openmpi-bin, then run ./configure and make again", name);
    }
#endif
    const CtPluginDescriptor *d = file ? ct_plugin_open(file, &e) : NULL;
    if (!d) {
      config_error_at(error, where, "%s.%zu: %s", section, i, e->message);
      g_error_free(e);
      g_free(file);
      return FALSE;
    }
    if (strcmp(d->name, name) != 0) {
      config_error_at(error, where, "%s.%zu: %s declares the name '%s', not '%s'", section, i,
                      file, d->name, name);
      g_free(file);
      return FALSE;
    }
    CtRNode *pnode = ct_rnode_item(item, 0);
    g_autofree char *ctx = g_strdup_printf("%s.%zu (%s)", section, i, name);
    if (!ct_recipe_check(r, pnode, ctx, d->params, error)) {
      g_free(file);
      return FALSE;
    }
    CtCallback *cb = g_new0(CtCallback, 1);
    cb->desc = d;
    cb->file = file;
    cb->label = g_strdup_printf("%s (%s)", name, file);
    cb->where = g_strdup(where);
    cb->order = d->order;
    cb->params = ct_params_new(d->params);
    ct_params_fill(cb->params, pnode);
    g_ptr_array_add(out, cb);
  }
  return TRUE;
}

/* ---------------------------------------------------------------- the fused step */

/* optimizer.step_in_backward steps each block before backward ends.
 * "true": refused with a callback that needs every gradient before any
 * step (CT_GRADS_WHOLE); "auto": on when every callback declares that it
 * uses no gradient (CT_GRADS_UNUSED), off otherwise; "false": off. */
static gboolean
resolve_step_in_backward(CtRecipe *r, GPtrArray *cbs, const char *recipe_path, gboolean *on,
                         GError **error)
{
  const char *v = ct_rnode_scalar(ct_recipe_lookup(r, "optimizer.step_in_backward"));
  *on = FALSE;
  if (g_str_equal(v, "false"))
    return TRUE;
  gboolean all_unused = TRUE;
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    CtGradsUse use = ct_plugin_desc_grads(cb->desc);
    if (use == CT_GRADS_WHOLE && g_str_equal(v, "true")) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: %s: optimizer.step_in_backward steps each block inside backward, "
                  "and %s needs every gradient before any step; drop one of them",
                  cb->where ? cb->where : recipe_path, cb->label, cb->desc->name);
      return FALSE;
    }
    all_unused = all_unused && use == CT_GRADS_UNUSED;
  }
  *on = g_str_equal(v, "true") || all_unused;
  return TRUE;
}

/* ---------------------------------------------------------------- outputs */

static gboolean
write_manifest(const char *out, const char *recipe_yaml, GPtrArray *cbs, uint64_t seed,
               int threads, gboolean in_backward, GError **error)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "cliptrain_version");
  json_builder_add_string_value(b, ct_version());
  json_builder_set_member_name(b, "recipe_sha256");
  g_autofree char *rsha = g_compute_checksum_for_string(G_CHECKSUM_SHA256, recipe_yaml, -1);
  json_builder_add_string_value(b, rsha);
  json_builder_set_member_name(b, "seed");
  json_builder_add_int_value(b, (gint64) seed);
  json_builder_set_member_name(b, "threads");
  json_builder_add_int_value(b, threads);
  json_builder_set_member_name(b, "blas_core");
  json_builder_add_string_value(b, openblas_get_corename());
  /* optimizer.step_in_backward as resolved ("auto" depends on the plugins) */
  json_builder_set_member_name(b, "step_in_backward");
  json_builder_add_boolean_value(b, in_backward);
  json_builder_set_member_name(b, "plugins");
  json_builder_begin_array(b);
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "name");
    json_builder_add_string_value(b, cb->desc->name);
    json_builder_set_member_name(b, "version");
    json_builder_add_string_value(b, cb->desc->version ? cb->desc->version : "");
    json_builder_set_member_name(b, "file");
    json_builder_add_string_value(b, cb->file);
    json_builder_set_member_name(b, "sha256");
    g_autofree char *sha = ct_file_sha256(cb->file, NULL);
    json_builder_add_string_value(b, sha ? sha : "");
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  json_generator_set_pretty(gen, TRUE);
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  g_autofree char *text = json_generator_to_data(gen, NULL);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  g_autofree char *path = g_build_filename(out, "manifest.json", NULL);
  if (!g_file_set_contents_full(path, text, -1,
                                G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                0644, error)) {
    g_prefix_error(error, "%s: ", path);
    return FALSE;
  }
  return TRUE;
}

static char *
default_out_dir(const char *recipe)
{
  g_autofree char *base = g_path_get_basename(recipe);
  char *dot = strrchr(base, '.');
  if (dot)
    *dot = 0;
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *stamp = g_date_time_format(now, "%Y%m%d-%H%M%S");
  g_autofree char *leaf = g_strdup_printf("%s-%s", base, stamp);
  return g_build_filename("runs", leaf, NULL);
}

/* ---------------------------------------------------------------- ranks */

/* The communicator of the first plugin that provides one; every other
 * provider must see the same group.  A single process without any. */
static CtComm *
find_comm(GPtrArray *cbs, GError **error)
{
  CtComm *comm = NULL;
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    const CtCommOps *ops = ct_plugin_desc_comm(cb->desc, cb->state);
    if (!ops)
      continue;
    if (ops->struct_size < offsetof(CtCommOps, reserved)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: %s: its communicator table is too old",
                  cb->where, cb->label);
      ct_comm_free(comm);
      return NULL;
    }
    if (!comm) {
      comm = ct_comm_new(cb->desc->name, ops, cb->state);
    } else if (ops->rank(cb->state) != ct_comm_rank(comm) ||
               ops->size(cb->state) != ct_comm_size(comm)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: %s sees rank %d of %d, but %s sees rank %d of %d", cb->where, cb->label,
                  ops->rank(cb->state), ops->size(cb->state), ct_comm_name(comm),
                  ct_comm_rank(comm), ct_comm_size(comm));
      ct_comm_free(comm);
      return NULL;
    }
  }
  return comm ? comm : ct_comm_new(NULL, NULL, NULL);
}

/* *S becomes rank 0's string on every rank. */
static gboolean
share_string(CtComm *comm, char **s, GError **error)
{
  if (ct_comm_size(comm) == 1)
    return TRUE;
  int64_t len = (int64_t) strlen(*s) + 1;
  if (!ct_comm_broadcast(comm, &len, 1, CT_COMM_I64, 0, error))
    return FALSE;
  char *buf = g_malloc0((gsize) len);
  if (ct_comm_rank(comm) == 0)
    memcpy(buf, *s, (size_t) len);
  if (!ct_comm_broadcast(comm, buf, (size_t) len, CT_COMM_BYTE, 0, error)) {
    g_free(buf);
    return FALSE;
  }
  g_free(*s);
  *s = buf;
  return TRUE;
}

/* A new run's folder: recipe.yaml, manifest.json, vocab.txt. */
static gboolean
prepare_out(CtRecipe *r, const char *out, const char *recipe_out, const char *yaml,
            GPtrArray *cbs, uint64_t seed, int threads, gboolean in_backward, const CtData *data,
            GError **error)
{
  if (g_file_test(recipe_out, G_FILE_TEST_EXISTS)) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s already holds a run; choose another --out",
                out);
    return FALSE;
  }
  if (g_mkdir_with_parents(out, 0755) != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", out, g_strerror(errno));
    return FALSE;
  }
  if (!ct_recipe_write(r, recipe_out, error) || !write_manifest(out, yaml, cbs, seed, threads,
                                                                in_backward, error))
    return FALSE;
  if (data->learned) {
    g_autofree char *vpath = g_build_filename(out, "vocab.txt", NULL);
    if (!ct_tokenizer_save(data->tok, vpath, error))
      return FALSE;
  }
  return TRUE;
}

/* ---------------------------------------------------------------- signals */

/* The first SIGINT or SIGTERM asks the loop to stop after the current
 * step and save a training state; a second one ends the process at once,
 * with the shell's status for a death by that signal (130, 143).  Only
 * async-signal-safe calls here: write() and _exit(). */
static volatile int stop_requested;

static void
say(const char *msg)
{
  ssize_t k = write(STDERR_FILENO, msg, strlen(msg));
  (void) k;
}

static void
on_signal(int sig)
{
  const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
  if (stop_requested) {
    say("cliptrain: ");
    say(name);
    say(" again: quitting at once; the last training state saved is kept\n");
    _exit(128 + sig);
  }
  stop_requested = 1;
  say("cliptrain: ");
  say(name);
  say(": stopping after this step to save the training state (send it again to quit at "
      "once)\n");
}

static void
install_signals(void)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
}

/* ---------------------------------------------------------------- the run */

/* What a fit holds between its stages.  Each stage takes what it needs
 * from here and leaves what it made; a value handed to the learner is
 * cleared here, and run_clear frees whatever is still held. */
typedef struct {
  const CtRunOptions *o;
  char *recipe_path;   /* o->recipe, or the resumed run's recipe.yaml */
  char *recipe_dir;    /* relative paths of the recipe start here */
  CtRecipe *recipe;    /* checked: every default filled */
  CtConfig cfg;        /* the model section */
  uint64_t seed;
  GPtrArray *search;   /* plugin folders (char*) */
  GPtrArray *cbs;      /* CtCallback*, created, until the learner takes them */
  gboolean in_backward; /* optimizer.step_in_backward as resolved */
  CtComm *comm;        /* until the learner takes it */
  CtData data;         /* the datasets go to the loaders, the tokenizer stays */
  int batch;
  CtModel *model;
  CtOptimizer *opt;
  CtSchedule *sched;
  int threads;
  char *out;           /* the run folder */
  char *yaml;          /* the resolved recipe's text */
  CtLearner *learner;
} Run;

/* A stage returns 0, or the exit status of ct_run_fit with ERROR set: 2
 * for a bad recipe (or a plugin it names), 1 for a failure of the run. */
typedef int (*Stage)(Run *run, GError **error);

/* The recipe, its overrides and every core section, checked. */
static int
load_recipe(Run *run, GError **error)
{
  const CtRunOptions *o = run->o;
  run->recipe_path = o->resume ? g_build_filename(o->resume, "recipe.yaml", NULL)
                               : g_strdup(o->recipe);
  if (o->resume && o->sets && *o->sets) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "--resume continues %s as recorded; --set would change it", run->recipe_path);
    return 2;
  }
  CtRecipe *r = run->recipe = ct_recipe_load(run->recipe_path, error);
  if (!r)
    return 2;
  for (const char *const *s = o->sets; s && *s; s++)
    if (!ct_recipe_override(r, *s, error))
      return 2;
  if (!check_root(r, error) || !ct_data_check(r, error) || !check_model(r, &run->cfg, error) ||
      !ct_optim_check(r, error) || !check_section(r, "fit", fit_schema, error) ||
      !check_section(r, "output", output_schema, error))
    return 2;
  run->seed = (uint64_t) get_int(r, "seed");
  run->recipe_dir = g_path_get_dirname(run->recipe_path);
  absolute_paths(r, run->recipe_dir);
  return 0;
}

/* The plugins of callbacks and metrics, loaded, checked and created (a
 * refusal of their parameters is a bad recipe too, reported before
 * anything is written); then what they decide: the fused step and the
 * process group, which every rank from here on knows its place in. */
static int
load_callbacks(Run *run, GError **error)
{
  CtRecipe *r = run->recipe;
  /* plugin_path: folders, relative to the recipe's folder */
  CtRNode *pp = ct_rnode_get(ct_recipe_root(r), "plugin_path");
  if (pp && ct_rnode_kind(pp) != CT_RNODE_SEQUENCE)
    return config_error(error, pp, "plugin_path: expected a list of folders"), 2;
  GPtrArray *extra = g_ptr_array_new_with_free_func(g_free);
  for (size_t i = 0; pp && i < ct_rnode_n_items(pp); i++) {
    const char *dir = ct_rnode_scalar(ct_rnode_item(pp, i));
    g_ptr_array_add(extra, g_path_is_absolute(dir)
                             ? g_strdup(dir)
                             : g_build_filename(run->recipe_dir, dir, NULL));
  }
  g_ptr_array_add(extra, NULL);
  run->search = ct_plugin_search_path((const char *const *) extra->pdata);
  g_ptr_array_free(extra, TRUE);
  run->cbs = g_ptr_array_new_with_free_func((GDestroyNotify) ct_callback_free);
  if (!load_plugins(r, "callbacks", run->search, run->cbs, error) ||
      !load_plugins(r, "metrics", run->search, run->cbs, error))
    return 2;
  for (guint i = 0; i < run->cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(run->cbs, i);
    GError *e = NULL;
    cb->state = cb->desc->create ? cb->desc->create(cb->params, &e) : NULL;
    if (cb->desc->create && !cb->state) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: %s: %s", cb->where, cb->label,
                  e ? e->message : "it refused its parameters without a reason");
      g_clear_error(&e);
      return 2;
    }
  }
  if (!resolve_step_in_backward(r, run->cbs, run->recipe_path, &run->in_backward, error) ||
      !(run->comm = find_comm(run->cbs, error)))
    return 2;
  return 0;
}

/* The datasets and the tokenizer: errors in the recipe's data section are
 * still exit 2, those of the data itself 1. */
static int
build_data(Run *run, GError **error)
{
  if (!ct_data_open(run->recipe, run->recipe_dir, &run->cfg, run->seed, &run->data, error))
    return (*error)->code != CT_ERROR_CONFIG ? 1 : 2;
  return 0;
}

/* The model at the batch size (--max-batch-size picks it first), with its
 * initial weights: a model.init of another config is a bad recipe. */
static int
build_model(Run *run, GError **error)
{
  CtRecipe *r = run->recipe;
  if (run->o->max_batch_budget && !run->o->resume &&
      !pick_batch(r, &run->cfg, &run->data, run->o->max_batch_budget, run->in_backward, error))
    return 2;
  run->batch = (int) get_int(r, "data.batch_size");
  if (!(run->model = ct_model_new(&run->cfg, run->batch, error)))
    return 1;
  if (get_bool(r, "model.checkpoint") &&
      !ct_model_set_memory(run->model, CT_PRECISION_FP32,
                           (int) get_int(r, "model.checkpoint_nchunks"), error))
    return 1;
  ct_model_init_weights(run->model, run->seed);
  if (!load_init(r, run->model, &run->cfg, error))
    return (*error)->code == CT_ERROR_IO ? 1 : 2;
  return 0;
}

/* The optimizer and the schedule: a glob that matches no tensor is still
 * a bad recipe.  After this stage everything is valid, and a failure is a
 * failure of the run. */
static int
build_optimizer(Run *run, GError **error)
{
  if (!(run->opt = ct_optim_build(run->recipe, run->model, error)) ||
      !(run->sched = ct_schedule_build(run->recipe, error)))
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
  CtRecipe *r = run->recipe;
  run->threads = o->threads > 0 ? o->threads : (int) get_int(r, "fit.threads");
  if (o->threads > 0) {
    g_autofree char *t = g_strdup_printf("%d", o->threads);
    ct_rnode_set_scalar(r, ct_rnode_get(ct_recipe_root(r), "fit"), "threads", t, "--threads");
  }
  ct_set_num_threads(run->threads);
  const char *odir = ct_rnode_scalar(ct_recipe_lookup(r, "output.dir"));
  run->out = o->resume    ? g_strdup(o->resume)
             : o->out_dir ? g_strdup(o->out_dir)
             : *odir      ? g_strdup(odir)
                          : default_out_dir(run->recipe_path);
  /* signals are handled from before the run folder exists: a signal sent
   * once its files appear (as a job scheduler or a test may) is never lost
   * nor left to the default action; it stops the fit after its first step */
  if (o->handle_signals) {
    stop_requested = 0;
    install_signals();
  }
  if (!share_string(run->comm, &run->out, error))
    return 1;
  g_autofree char *recipe_out = g_build_filename(run->out, "recipe.yaml", NULL);
  run->yaml = ct_recipe_to_yaml(r);
  gboolean ready = ct_comm_rank(run->comm) != 0 || o->resume ||
                   prepare_out(r, run->out, recipe_out, run->yaml, run->cbs, run->seed,
                               run->threads, run->in_backward, &run->data, error);
  return ct_comm_agree(run->comm, ready, "rank 0 could not prepare the run folder", error) ? 0
                                                                                            : 1;
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
    if (g_file_get_contents(vpath, &text, NULL, NULL))
      ct_learner_set_checkpoint_meta(L, "vocab", text);
    return;
  }
  const char *v = ct_rnode_scalar(ct_recipe_lookup(run->recipe, "data.vocab"));
  g_autofree char *abs = g_path_is_absolute(v) ? g_strdup(v)
                                               : g_build_filename(run->recipe_dir, v, NULL);
  ct_learner_set_checkpoint_meta(L, "vocab_file", v);
  g_autofree char *text = NULL;
  gsize len = 0;
  if (g_file_get_contents(abs, &text, &len, NULL)) {
    g_autofree char *sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (guchar *) text, len);
    ct_learner_set_checkpoint_meta(L, "vocab_sha256", sha);
  }
}

/* The loaders and the learner, which takes the model, the optimizer, the
 * schedule, the process group and the callbacks (in recipe order). */
static int
build_learner(Run *run, GError **error)
{
  CtRecipe *r = run->recipe;
  CtDataset *train = run->data.train, *valid = run->data.valid;
  run->data.train = run->data.valid = NULL; /* the loaders' now */
  int workers = (int) get_int(r, "data.workers"), prefetch = (int) get_int(r, "data.prefetch");
  CtLoader *tl = ct_loader_new(train, &run->cfg, run->batch, get_bool(r, "data.shuffle"),
                               get_bool(r, "data.drop_last"), workers, prefetch, run->seed);
  CtLoader *vl = valid ? ct_loader_new(valid, &run->cfg, run->batch, FALSE, FALSE, workers,
                                       prefetch, run->seed)
                       : NULL;
  CtLearner *L = run->learner = ct_learner_new(run->model, run->opt, tl, vl, run->batch,
                                               (int) get_int(r, "fit.epochs"), run->seed,
                                               run->out, error);
  if (!L)
    return 1;
  run->model = NULL;
  run->opt = NULL;
  ct_learner_set_comm(L, g_steal_pointer(&run->comm));
  if (!ct_learner_set_step_in_backward(L, run->in_backward, error))
    return 1;
  ct_learner_set_schedule(L, g_steal_pointer(&run->sched));
  collect_values(L, ct_recipe_root(r), "");
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
    .save_every = get_int(run->recipe, "fit.save_state_every"),
    .deadline = o->time_limit > 0 ? g_get_monotonic_time() + (gint64) (o->time_limit * 1e6) : 0,
    .stop_flag = o->handle_signals ? &stop_requested : NULL,
  };
  ct_learner_set_stops(L, &stops);
  if (!ct_learner_fit(L, error))
    return 1;
  if (o->max_batch_budget && !o->resume)
    g_printerr("cliptrain: max-batch-size: the fit's peak resident memory was %.3f GiB\n",
               (double) ct_rss_peak() / 1073741824.0);
  if (ct_learner_stopped(L) && ct_learner_rank(L) == 0)
    g_printerr("cliptrain: stopped after %" G_GINT64_FORMAT " training steps; the training "
               "state is in %s/state.safetensors; continue with: cliptrain fit --resume %s\n",
               ct_learner_train_iter(L), run->out, run->out);
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
  ct_comm_free(run->comm);
  ct_learner_free(run->learner);
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
  if (run->recipe)
    ct_recipe_free(run->recipe);
  g_free(run->recipe_path);
  g_free(run->recipe_dir);
  g_free(run->out);
  g_free(run->yaml);
}

int
ct_run_fit(const CtRunOptions *o, GError **error)
{
  static const Stage stages[] = {
    load_recipe,     /* the recipe and its sections, checked */
    load_callbacks,  /* plugins: loaded, checked, created */
    build_data,      /* datasets and tokenizer */
    build_model,     /* the model and its initial weights */
    build_optimizer, /* the optimizer and the schedule */
    prepare_folder,  /* threads, signals, the run folder */
    build_learner,   /* loaders and the learner, which takes everything */
    restore_state,   /* --resume */
    fit,             /* the loop */
  };
  Run run = { .o = o };
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < G_N_ELEMENTS(stages); i++)
    rc = stages[i](&run, error);
  run_clear(&run, rc, error);
  return rc;
}

int
ct_run_loader_bench(const CtRunOptions *o, int max_batches, CtLoaderBench *res, GError **error)
{
  int rc = 2;
  CtConfig cfg;
  CtData data = { 0 };
  CtLoader *ld = NULL;
  float *images = NULL;
  int32_t *tokens = NULL;
  g_autofree char *dir = g_path_get_dirname(o->recipe);
  CtRecipe *r = ct_recipe_load(o->recipe, error);
  if (!r)
    return 2;
  for (const char *const *s = o->sets; s && *s; s++)
    if (!ct_recipe_override(r, *s, error))
      goto out;
  if (!check_root(r, error) || !ct_data_check(r, error) || !check_model(r, &cfg, error))
    goto out;
  if (!ct_data_open(r, dir, &cfg, (uint64_t) get_int(r, "seed"), &data, error)) {
    rc = (*error)->code == CT_ERROR_CONFIG ? 2 : 1;
    goto out;
  }
  rc = 1;
  int bs = (int) get_int(r, "data.batch_size");
  res->workers = (int) get_int(r, "data.workers");
  res->batch_size = bs;
  ld = ct_loader_new(data.train, &cfg, bs, get_bool(r, "data.shuffle"),
                     get_bool(r, "data.drop_last"), res->workers,
                     (int) get_int(r, "data.prefetch"), (uint64_t) get_int(r, "seed"));
  images = g_new(float, (size_t) bs * 3 * cfg.image_resolution * cfg.image_resolution);
  tokens = g_new(int32_t, (size_t) bs * cfg.context_length);
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
  ct_data_clear(&data);
  ct_recipe_free(r);
  return rc;
}

/* state.c: the training state, for an exact resume.
 *
 * One safetensors file, written atomically: the parameters ("model.NAME"),
 * the recorder's per-batch losses and learning rates (F64), and in the
 * metadata the loop's position (epoch, next training batch, training
 * iterations, optimizer steps), the recorder's smoothing state and rows,
 * the model's config ("config.*") and the tokenizer ("vocab", or
 * "vocab_file" and "vocab_sha256") as checkpoints carry them,
 * and the sha256 of the resolved recipe, which a resume must match.  Each
 * plugin's saved state is a U8 tensor "plugin.POS.NAME" in the file's
 * body, so that its size is not bounded by the header's (states written
 * before kept it base64 in the metadata under the same key: still read).  The optimizer's state goes into
 * state-opt-STEP.safetensors beside it (ct_optimizer_save), written first
 * and named with its sha256 in the state, so that a crash between the two
 * writes leaves the previous pair intact; older optimizer files are then
 * removed, and a failed state write removes the new optimizer file.  With several ranks, rank 0 writes the state (the ranks hold
 * the same parameters) and, for a sharded optimizer (ddp's zero), every
 * rank writes its own state-opt-STEP.rank-R.safetensors first; the ranks
 * agree that every write succeeded before the state is written and before
 * older files go.  Everything else a batch depends on (data order, augmentation)
 * is a function of (seed, epoch, index). */
#include "config.h"

#include "train/learner-private.h"

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>

/* Optimizer files older than KEEP that belong to this rank: with a
 * sharded optimizer, rank R's "state-opt-STEP.rank-R.safetensors"; else
 * (rank 0) the unsharded "state-opt-STEP.safetensors". */
static void
remove_other_opt_files(const char *dir, const char *keep, int shard_rank)
{
  g_autofree char *suffix = shard_rank >= 0 ? g_strdup_printf(".rank-%d.safetensors", shard_rank)
                                            : g_strdup(".safetensors");
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    if (!g_str_has_prefix(name, "state-opt-") || !g_str_has_suffix(name, suffix) ||
        strcmp(name, keep) == 0)
      continue;
    if (shard_rank < 0 && strstr(name, ".rank-"))
      continue; /* a shard: its rank's own to remove */
    g_autofree char *p = g_build_filename(dir, name, NULL);
    g_unlink(p);
  }
  if (d)
    g_dir_close(d);
}

/* Temporary files of atomic writes that a killed run left behind
 * (NAME.safetensors.tmp.XXXXXX, NAME.tmp.XXXXXX): never complete, never
 * read, removed when the run resumes. */
static void
remove_stale_temporaries(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    const char *t = g_strrstr(name, ".tmp.");
    if (t && t != name && strlen(t) == strlen(".tmp.XXXXXX")) {
      g_autofree char *p = g_build_filename(dir, name, NULL);
      g_unlink(p);
    }
  }
  if (d)
    g_dir_close(d);
}

static char *
dtostr(double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup(g_ascii_dtostr(buf, sizeof buf, v)); /* round-trips exactly */
}

static char *
rows_json(const CtRecorder *rec)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "names");
  json_builder_begin_array(b);
  for (const char *const *n = ct_recorder_names(rec); *n; n++)
    json_builder_add_string_value(b, *n);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "rows");
  json_builder_begin_array(b);
  for (guint e = 0; e < rec->rows->len && (int) e < rec->n_epochs; e++) {
    json_builder_begin_object(b);
    for (const char *const *n = ct_recorder_names(rec); *n; n++) {
      double v;
      if (!ct_recorder_get(rec, (int) e, *n, &v))
        continue;
      json_builder_set_member_name(b, *n);
      g_autofree char *text = dtostr(v);
      json_builder_add_string_value(b, text);
    }
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  char *text = json_generator_to_data(gen, NULL);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  return text;
}

/* A state must be one to go back to: parameters that hold NaN or inf are
 * refused, leaving the last good state in place. */
static gboolean
check_finite(CtLearner *L, GError **error)
{
  CtModel *m = L->model;
  const float *p = ct_model_params(m);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *t = ct_model_tensor(m, i);
    for (size_t k = 0; k < t->numel; k++)
      if (!isfinite(p[t->offset + k])) {
        g_autofree char *back =
          L->last_state ? g_strdup_printf("the last good one is %s (step %" G_GINT64_FORMAT ")",
                                          L->last_state, L->last_state_iter)
                        : g_strdup("none was saved before");
        g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                    "training step %" G_GINT64_FORMAT ": tensor '%s' holds %s; the training "
                    "state was not saved (%s)",
                    L->train_iter, t->name, isnan(p[t->offset + k]) ? "NaN" : "inf", back);
        return FALSE;
      }
  }
  return TRUE;
}

#define OTHER_RANK_FAILED "another rank could not save its part of the training state"

/* After a failed save: this rank's new optimizer file goes, so that none is
 * left without its state; one of the same name that the state in place
 * names (saved at this very step) stays. */
static void
drop_new_opt_file(const CtLearner *L, const char *dir, const char *leaf)
{
  if (!leaf || (L->last_state && L->last_state_iter == L->train_iter))
    return;
  g_autofree char *p = g_build_filename(dir, leaf, NULL);
  g_unlink(p);
}

/* The optimizer's file: rank 0's for a whole optimizer, every rank's own
 * shard for a sharded one (ddp's zero).  Sets *LEAF and *SHA. */
static gboolean
save_optimizer_part(CtLearner *L, const char *dir, gboolean sharded, char **leaf, char **sha,
                    GError **error)
{
  int rank = ct_comm_rank(L->comm);
  if (!sharded && rank != 0)
    return TRUE;
  *leaf = sharded ? g_strdup_printf("state-opt-%" G_GINT64_FORMAT ".rank-%d.safetensors",
                                    L->train_iter, rank)
                  : g_strdup_printf("state-opt-%" G_GINT64_FORMAT ".safetensors", L->train_iter);
  g_autofree char *path = g_build_filename(dir, *leaf, NULL);
  if (!ct_optimizer_save(L->opt, path, error))
    return FALSE;
  *sha = ct_file_sha256(path, error);
  return *sha != NULL;
}

gboolean
ct_learner_save_state(CtLearner *L, const char *path, GError **error)
{
  int rank = ct_comm_rank(L->comm), W = ct_comm_size(L->comm);
  size_t soff, sn;
  ct_optimizer_shard(L->opt, &soff, &sn);
  gboolean sharded = sn != ct_model_n_params(L->model);
  g_autofree char *dir = g_path_get_dirname(path);
  g_autofree char *opt_leaf = NULL, *opt_sha = NULL;
  /* ranks hold the same parameters: rank 0 checks and writes them */
  gboolean ok = (rank != 0 || check_finite(L, error)) &&
                save_optimizer_part(L, dir, sharded, &opt_leaf, &opt_sha, error);
  if (!ct_comm_agree(L->comm, ok, OTHER_RANK_FAILED, ok ? error : NULL)) {
    drop_new_opt_file(L, dir, opt_leaf);
    return FALSE;
  }
  char *shas = NULL; /* (W, 65) every rank's shard sha256, NUL-terminated */
  if (sharded && W > 1) {
    char mine[65] = { 0 };
    g_strlcpy(mine, opt_sha, sizeof mine);
    shas = g_new0(char, (size_t) W * 65);
    if (!ct_comm_allgatherv(L->comm, mine, 65, shas, NULL, CT_COMM_BYTE, error)) {
      g_free(shas);
      drop_new_opt_file(L, dir, opt_leaf);
      return FALSE;
    }
  }
  /* where a resume starts: the next training batch of this epoch, or,
   * once the epoch is over (a plugin stopped the fit after it), the next
   * epoch's first */
  gboolean epoch_done = L->rec.n_epochs > L->epoch;
  int epoch = epoch_done ? L->epoch + 1 : L->epoch;
  int next = epoch_done ? 0 : L->next_batch;
  if (rank == 0) {
    CtSafetensorsWriter *w = ct_safetensors_writer_new();
    CtModel *m = L->model;
    float *p = ct_model_params(m);
    for (size_t i = 0; ok && i < ct_model_n_tensors(m); i++) {
      const CtParamInfo *t = ct_model_tensor(m, i);
      g_autofree char *a = g_strconcat("model.", t->name, NULL);
      ok = ct_safetensors_writer_add(w, a, CT_DTYPE_F32, t->ndim, t->shape, p + t->offset,
                                     error);
    }
    /* buffers (BatchNorm running statistics), so that a resumed run
     * continues them bit for bit; rank 0's, as ddp keeps them */
    float *buf = ct_model_buffers(m);
    for (size_t i = 0; ok && i < ct_model_n_buffer_tensors(m); i++) {
      const CtParamInfo *t = ct_model_buffer_tensor(m, i);
      g_autofree char *a = g_strconcat("model.", t->name, NULL);
      ok = ct_safetensors_writer_add(w, a, CT_DTYPE_F32, t->ndim, t->shape, buf + t->offset,
                                     error);
    }
    int64_t nl = L->rec.losses->len;
    ok = ok &&
         ct_safetensors_writer_add(w, "recorder.losses", CT_DTYPE_F64, 1, &nl,
                                   L->rec.losses->data, error) &&
         ct_safetensors_writer_add(w, "recorder.lrs", CT_DTYPE_F64, 1, &nl, L->rec.lrs->data,
                                   error);
    struct {
      const char *key;
      char *value;
    } meta[] = {
      { "format", g_strdup("cliptrain training state 1") },
      { "recipe_sha256", g_strdup(L->recipe_sha256 ? L->recipe_sha256 : "") },
      { "epoch", g_strdup_printf("%d", epoch) },
      { "next_batch", g_strdup_printf("%d", next) },
      { "train_iter", g_strdup_printf("%" G_GINT64_FORMAT, L->train_iter) },
      { "world_size", g_strdup_printf("%d", W) },
      { "optimizer_sharded", g_strdup(sharded ? "1" : "0") },
      { "optimizer_file", g_strdup(opt_leaf) },
      { "optimizer_sha256", g_strdup(opt_sha) },
      { "smooth_raw", dtostr(L->rec.smooth_raw) },
      { "smooth_count", g_strdup_printf("%" G_GINT64_FORMAT, L->rec.count) },
      { "n_epochs", g_strdup_printf("%d", L->rec.n_epochs) },
      { "recorder", rows_json(&L->rec) },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(meta); i++)
      ct_safetensors_writer_set_metadata(w, meta[i].key, meta[i].value);
    /* what makes the state usable as weights on its own (cliptrain embed
     * --model STATE): the model's config and the tokenizer, as
     * checkpoints carry them */
    for (const char *const *key = ct_config_keys(); *key; key++) {
      g_autofree char *mk = g_strconcat("config.", *key, NULL);
      g_autofree char *val = g_strdup_printf("%ld", ct_config_get(ct_model_config(m), *key));
      ct_safetensors_writer_set_metadata(w, mk, val);
    }
    static const char *const tok_keys[] = { "vocab", "vocab_file", "vocab_sha256" };
    for (size_t i = 0; i < G_N_ELEMENTS(tok_keys); i++) {
      const char *v = g_hash_table_lookup(L->ckpt_meta, tok_keys[i]);
      if (v)
        ct_safetensors_writer_set_metadata(w, tok_keys[i], v);
    }
    if (L->cancel_by) /* a plugin stopped the fit: a resume says so */
      ct_safetensors_writer_set_metadata(w, "stopped_by", L->cancel_by->desc->name);
    for (int r = 0; shas && r < W; r++) { /* each rank's shard, by name and sha256 */
      g_autofree char *k1 = g_strdup_printf("optimizer_file.%d", r);
      g_autofree char *v1 =
        g_strdup_printf("state-opt-%" G_GINT64_FORMAT ".rank-%d.safetensors", L->train_iter, r);
      g_autofree char *k2 = g_strdup_printf("optimizer_sha256.%d", r);
      ct_safetensors_writer_set_metadata(w, k1, v1);
      ct_safetensors_writer_set_metadata(w, k2, shas + (size_t) r * 65);
    }
    /* plugin states: byte tensors, borrowed by the writer until written */
    GPtrArray *held = g_ptr_array_new_with_free_func((GDestroyNotify) g_bytes_unref);
    for (guint i = 0; ok && i < L->cbs->len; i++) {
      CtCallback *cb = g_ptr_array_index(L->cbs, i);
      if (!cb->desc->state_save)
        continue;
      GBytes *bytes = cb->desc->state_save(cb->state);
      if (!bytes)
        bytes = g_bytes_new(NULL, 0);
      g_ptr_array_add(held, bytes);
      gsize len;
      const void *data = g_bytes_get_data(bytes, &len);
      int64_t n = (int64_t) len;
      g_autofree char *key = g_strdup_printf("plugin.%d.%s", cb->position, cb->desc->name);
      ok = ct_safetensors_writer_add(w, key, CT_DTYPE_U8, 1, &n, data, error);
    }
    ok = ok && ct_safetensors_writer_write(w, path, error);
    ct_safetensors_writer_free(w);
    g_ptr_array_unref(held);
    for (size_t i = 0; i < G_N_ELEMENTS(meta); i++)
      g_free(meta[i].value);
  }
  g_free(shas);
  if (!ct_comm_agree(L->comm, ok, OTHER_RANK_FAILED, ok ? error : NULL)) {
    drop_new_opt_file(L, dir, opt_leaf);
    return FALSE;
  }
  /* the new state is in place: this rank's older optimizer files go */
  if (opt_leaf)
    remove_other_opt_files(dir, opt_leaf, sharded ? rank : -1);
  g_free(L->last_state);
  L->last_state = g_strdup(path);
  L->last_state_iter = L->train_iter;
  return TRUE;
}

int64_t
ct_learner_whole_steps(const CtLearner *L)
{
  return L->train_iter - (L->in_step ? 1 : 0);
}

gboolean
ct_learner_save_recovery_state(CtLearner *L, const char *path, GError **error)
{
  const char *why = ct_learner_whole_steps(L) == 0 ? "no training step had run"
                    : L->in_step                  ? "it failed inside a training step"
                    : ct_comm_size(L->comm) > 1 ? "the run has several ranks"
                                                  : NULL;
  if (why) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "no training state was saved: %s", why);
    return FALSE;
  }
  return ct_learner_save_state(L, path, error); /* at next_batch, as a stop saves it */
}

static gboolean
meta_int(const CtSafetensors *st, const char *key, int64_t *out, GError **error)
{
  const char *v = ct_safetensors_metadata(st, key);
  char *end = NULL;
  if (v)
    *out = g_ascii_strtoll(v, &end, 10);
  if (!v || !end || *end || end == v) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: training state lacks a valid '%s'",
                ct_safetensors_path(st), key);
    return FALSE;
  }
  return TRUE;
}

static gboolean
load_recorder(CtRecorder *rec, const CtSafetensors *st, GError **error)
{
  const CtTensorInfo *t = ct_safetensors_find(st, "recorder.losses");
  size_t n = t ? t->numel : 0;
  g_array_set_size(rec->losses, n);
  g_array_set_size(rec->lrs, n);
  /* F64 copied as stored: read_f32 would round */
  const CtTensorInfo *tl = ct_safetensors_find(st, "recorder.lrs");
  if (!t || !tl || t->dtype != CT_DTYPE_F64 || tl->numel != n) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: training state lacks the recorder",
                ct_safetensors_path(st));
    return FALSE;
  }
  memcpy(rec->losses->data, ct_safetensors_data(st, t), n * sizeof(double));
  memcpy(rec->lrs->data, ct_safetensors_data(st, tl), n * sizeof(double));
  rec->smooth_raw = g_ascii_strtod(ct_safetensors_metadata(st, "smooth_raw"), NULL);
  int64_t count = 0, ne = 0;
  if (!meta_int(st, "smooth_count", &count, error) || !meta_int(st, "n_epochs", &ne, error))
    return FALSE;
  rec->count = count;
  rec->smooth = count ? rec->smooth_raw / (1 - pow(0.98, (double) count)) : NAN;
  JsonParser *parser = json_parser_new();
  const char *text = ct_safetensors_metadata(st, "recorder");
  if (!text || !json_parser_load_from_data(parser, text, -1, NULL)) {
    g_object_unref(parser);
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: training state's recorder is not JSON",
                ct_safetensors_path(st));
    return FALSE;
  }
  JsonObject *root = json_node_get_object(json_parser_get_root(parser));
  JsonArray *names = json_object_get_array_member(root, "names");
  JsonArray *rows = json_object_get_array_member(root, "rows");
  /* names first, in their order, so that columns keep it */
  for (guint e = 0; e < json_array_get_length(rows); e++) {
    JsonObject *row = json_array_get_object_element(rows, e);
    for (guint k = 0; k < json_array_get_length(names); k++) {
      const char *name = json_array_get_string_element(names, k);
      if (!json_object_has_member(row, name))
        continue;
      ct_recorder_log_at(rec, (int) e, name,
                         g_ascii_strtod(json_object_get_string_member(row, name), NULL));
    }
  }
  rec->n_epochs = (int) ne;
  g_object_unref(parser);
  return TRUE;
}

/* The plugins' saved states into STATES (key "plugin.POS.NAME" -> GBytes):
 * U8 tensors, or base64 metadata in states written before. */
static gboolean
load_plugin_states(GHashTable *states, const CtSafetensors *st, GError **error)
{
  const char **keys = ct_safetensors_metadata_keys(st);
  for (const char **k = keys; *k; k++) {
    if (!g_str_has_prefix(*k, "plugin."))
      continue;
    gsize len;
    guchar *data = g_base64_decode(ct_safetensors_metadata(st, *k), &len);
    g_hash_table_insert(states, g_strdup(*k), g_bytes_new_take(data, len));
  }
  g_free(keys);
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
    const CtTensorInfo *t = ct_safetensors_tensor(st, i);
    if (!g_str_has_prefix(t->name, "plugin."))
      continue;
    if (t->dtype != CT_DTYPE_U8 || t->ndim != 1) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s: tensor '%s' (a plugin's saved state) must be U8 with one dim",
                  ct_safetensors_path(st), t->name);
      return FALSE;
    }
    g_hash_table_insert(states, g_strdup(t->name),
                        g_bytes_new(ct_safetensors_data(st, t), t->nbytes));
  }
  return TRUE;
}

gboolean
ct_learner_load_state(CtLearner *L, const char *path, GError **error)
{
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return FALSE;
  gboolean ok = FALSE;
  g_autofree char *dir = g_path_get_dirname(path);
  g_autofree char *opt_path = NULL, *got_sha = NULL, *k1 = NULL, *k2 = NULL;
  const char *sha = ct_safetensors_metadata(st, "recipe_sha256");
  if (!sha || !L->recipe_sha256 || strcmp(sha, L->recipe_sha256) != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the training state belongs to another recipe (sha256 %s, this one %s)",
                path, sha ? sha : "none", L->recipe_sha256 ? L->recipe_sha256 : "none");
    goto out;
  }
  int64_t epoch, next, titer;
  if (!meta_int(st, "epoch", &epoch, error) || !meta_int(st, "next_batch", &next, error) ||
      !meta_int(st, "train_iter", &titer, error))
    goto out;
  /* a state saved by N ranks continues on N ranks: the data shards, and
   * a sharded optimizer's files, are theirs */
  int64_t world = 1;
  if (ct_safetensors_metadata(st, "world_size") && !meta_int(st, "world_size", &world, error))
    goto out;
  int W = ct_comm_size(L->comm), rank = ct_comm_rank(L->comm);
  if (world != W) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the training state was saved by %" G_GINT64_FORMAT " rank%s; this run has "
                "%d: resume it with as many",
                path, world, world == 1 ? "" : "s", W);
    goto out;
  }
  gboolean sharded = g_strcmp0(ct_safetensors_metadata(st, "optimizer_sharded"), "1") == 0;
  k1 = sharded ? g_strdup_printf("optimizer_file.%d", rank) : g_strdup("optimizer_file");
  k2 = sharded ? g_strdup_printf("optimizer_sha256.%d", rank) : g_strdup("optimizer_sha256");
  const char *opt_leaf = ct_safetensors_metadata(st, k1);
  const char *opt_sha = ct_safetensors_metadata(st, k2);
  if (sharded && W == 1) { /* one rank: its shard is the file itself */
    opt_leaf = ct_safetensors_metadata(st, "optimizer_file");
    opt_sha = ct_safetensors_metadata(st, "optimizer_sha256");
  }
  opt_path = opt_leaf ? g_build_filename(dir, opt_leaf, NULL) : NULL;
  got_sha = opt_path ? ct_file_sha256(opt_path, NULL) : NULL;
  if (!opt_leaf || !opt_sha || !got_sha || strchr(opt_leaf, '/') || strcmp(opt_sha, got_sha)) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: its optimizer state %s is missing or does not match", path,
                opt_leaf ? opt_leaf : "(unnamed)");
    goto out;
  }
  CtModel *m = L->model;
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    g_autofree char *key = g_strconcat("model.", ct_model_buffer_tensor(m, i)->name, NULL);
    if (!ct_safetensors_find(st, key)) {
      g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
                  "%s: tensor '%s' (BatchNorm running statistics) is missing", path, key);
      goto out;
    }
  }
  if (!ct_model_load_from(m, st, "model.", FALSE, error))
    goto out;
  /* a sharded state loads once the plugin that shards the optimizer has
   * done so (in before_fit); a whole one loads now */
  if (sharded) {
    g_free(L->pending_opt);
    L->pending_opt = g_strdup(opt_path);
  } else if (!ct_optimizer_load(L->opt, opt_path, error)) {
    goto out;
  }
  if (!load_recorder(&L->rec, st, error))
    goto out;
  /* callback states: restored after before_fit (see learner.c) */
  L->pending_states = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                            (GDestroyNotify) g_bytes_unref);
  if (!load_plugin_states(L->pending_states, st, error))
    goto out;
  /* files written after this state was saved (by a run killed later) are
   * written again as the run goes on */
  if (!ct_recorder_rewrite(&L->rec, error))
    goto out;
  if (rank == 0)
    remove_stale_temporaries(dir);
  const char *by = ct_safetensors_metadata(st, "stopped_by");
  if (by && rank == 0 && epoch < L->n_epoch)
    g_printerr("cliptrain: %s had stopped this fit after epoch %" G_GINT64_FORMAT
               "; it goes on from epoch %" G_GINT64_FORMAT "\n",
               by, epoch - 1, epoch);
  else if (by && rank == 0)
    g_printerr("cliptrain: %s had stopped this fit after its last epoch; no epoch is left\n",
               by);
  L->resume_epoch = (int) epoch;
  L->resume_batch = (int) next;
  L->train_iter = titer;
  L->resuming = TRUE;
  L->resumed = TRUE;
  g_free(L->last_state);
  L->last_state = g_strdup(path);
  L->last_state_iter = titer;
  ok = TRUE;
out:
  ct_safetensors_free(st);
  return ok;
}

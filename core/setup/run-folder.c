/* run-folder.c: a run's folder: its name, what a new run writes there
 * before the fit (recipe.yaml, manifest.json, vocab.txt) and after it
 * (finished.json), and its removal when a run fails before its first
 * step; metrics, models and states come from the learner and plugins. */
#include "config.h"

#include "setup/run-private.h"
#include "base/file-write.h"

#include <cblas.h>
#include <cliptrain/tokenizer.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Model files (model*.safetensors) before the rest, then by name. */
static int
models_first(const void *a, const void *b)
{
  const char *x = *(char *const *) a, *y = *(char *const *) b;
  gboolean mx = g_str_has_prefix(x, "model") && g_str_has_suffix(x, ".safetensors");
  gboolean my = g_str_has_prefix(y, "model") && g_str_has_suffix(y, ".safetensors");
  return mx != my ? (mx ? -1 : 1) : strcmp(x, y);
}

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
  return ct_file_write_atomic(path, text, strlen(text), error);
}

char *
ct_run_default_dir(const char *recipe)
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

gboolean
ct_run_share_string(CtComm *comm, char **s, GError **error)
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

gboolean
ct_run_folder_prepare(CtRecipe *r, const char *out, const char *yaml, GPtrArray *cbs,
                      uint64_t seed, int threads, gboolean in_backward, const CtData *data,
                      GError **error)
{
  g_autofree char *recipe_out = g_build_filename(out, "recipe.yaml", NULL);
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

/* ---------------------------------------------------------------- the end */

/* The folder's plain files, sorted, model files first; not temporary
 * files, nor hidden ones (the run's .lock).  (transfer full) */
static GPtrArray *
folder_files(const char *out)
{
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  GDir *d = g_dir_open(out, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    g_autofree char *p = g_build_filename(out, name, NULL);
    if (g_file_test(p, G_FILE_TEST_IS_REGULAR) && !strstr(name, ".tmp.") && name[0] != '.')
      g_ptr_array_add(names, g_strdup(name));
  }
  if (d)
    g_dir_close(d);
  g_ptr_array_sort(names, (GCompareFunc) models_first);
  return names;
}

/* "812 B", "1.7 KiB", "3.2 MiB", "1.1 GiB" (ASCII, whatever the locale) */
static char *
human_size(goffset n)
{
  static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  double v = (double) n;
  int u = 0;
  while (v >= 1024 && u < 4)
    v /= 1024, u++;
  return u ? g_strdup_printf("%.1f %s", v, unit[u])
           : g_strdup_printf("%" G_GINT64_FORMAT " B", (gint64) n);
}

gboolean
ct_run_folder_finish(const char *out, CtLearner *L, GError **error)
{
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%d %H:%M:%S");
  GPtrArray *files = folder_files(out);
  g_ptr_array_add(files, g_strdup("finished.json"));
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "finished");
  json_builder_add_string_value(b, stamp);
  json_builder_set_member_name(b, "train_steps");
  json_builder_add_int_value(b, ct_learner_train_iter(L));
  json_builder_set_member_name(b, "epochs");
  json_builder_add_int_value(b, ct_recorder_n_epochs(ct_learner_recorder(L)));
  if (L->cancel_by) { /* a plugin ended the fit (early_stopping) */
    json_builder_set_member_name(b, "stopped_by");
    json_builder_add_string_value(b, L->cancel_by->desc->name);
  }
  json_builder_set_member_name(b, "files");
  json_builder_begin_array(b);
  for (guint i = 0; i < files->len; i++)
    json_builder_add_string_value(b, files->pdata[i]);
  json_builder_end_array(b);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_autofree char *text = json_to_string(root, TRUE);
  json_node_unref(root);
  g_object_unref(b);
  g_autofree char *path = g_build_filename(out, "finished.json", NULL);
  gboolean ok = ct_file_write_atomic(path, text, strlen(text), error);
  if (ok) {
    printf("cliptrain: finished after %" G_GINT64_FORMAT " training steps; %s holds:\n",
           ct_learner_train_iter(L), out);
    for (guint i = 0; i < files->len; i++) {
      g_autofree char *p = g_build_filename(out, files->pdata[i], NULL);
      GStatBuf st;
      g_autofree char *size = g_stat(p, &st) == 0 ? human_size(st.st_size) : g_strdup("?");
      printf("  %-28s %s\n", (char *) files->pdata[i], size);
    }
    fflush(stdout);
  }
  g_ptr_array_unref(files);
  return ok;
}

gboolean
ct_run_folder_finished(const char *out, char **text)
{
  g_autofree char *path = g_build_filename(out, "finished.json", NULL);
  if (text)
    *text = NULL;
  if (!g_file_test(path, G_FILE_TEST_EXISTS))
    return FALSE;
  JsonParser *p = json_parser_new();
  if (text && json_parser_load_from_file(p, path, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    JsonObject *o = json_node_get_object(json_parser_get_root(p));
    const char *by = json_object_get_string_member_with_default(o, "stopped_by", NULL);
    g_autofree char *stopped = by ? g_strdup_printf(" (%s stopped it)", by) : g_strdup("");
    *text = g_strdup_printf("on %s after %" G_GINT64_FORMAT " training steps%s",
                            json_object_get_string_member_with_default(o, "finished", "?"),
                            json_object_get_int_member_with_default(o, "train_steps", 0),
                            stopped);
  }
  g_object_unref(p);
  return TRUE;
}

/* Remove DIR and what it holds, without following links; DEPTH bounds it. */
static void
remove_tree(const char *dir, int depth)
{
  GDir *d = depth < 8 ? g_dir_open(dir, 0, NULL) : NULL;
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    g_autofree char *p = g_build_filename(dir, name, NULL);
    GStatBuf st;
    if (g_lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      remove_tree(p, depth + 1);
    else
      g_unlink(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(dir);
}

void
ct_run_folder_remove(const char *out, gboolean created)
{
  if (created) {
    remove_tree(out, 0);
    return;
  }
  static const char *const ours[] = { "recipe.yaml", "manifest.json", "vocab.txt" };
  for (size_t i = 0; i < G_N_ELEMENTS(ours); i++) {
    g_autofree char *p = g_build_filename(out, ours[i], NULL);
    g_unlink(p);
  }
}

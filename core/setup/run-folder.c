/* run-folder.c: a run's folder: its name, and what a new run writes
 * there before the fit (recipe.yaml, manifest.json, vocab.txt); metrics
 * and states come later, from the learner. */
#include "config.h"

#include "setup/run-private.h"

#include <cblas.h>
#include <cliptrain/tokenizer.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

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

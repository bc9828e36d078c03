/* check-run: is every file of a run folder whole?  For the chaos and
 * full-disk tests, after a run was killed or failed.
 *
 *   tests/unit/check-run DIR
 *
 * Prints one line per file and exits 1 if any is damaged:
 *   *.safetensors   the header validates and every float tensor reads;
 *                   state.safetensors also names an optimizer file whose
 *                   sha256 matches
 *   *.jsonl         every line is a JSON object and ends with a newline
 *   *.json          parses
 *   *.csv           every line ends with a newline and has the header's
 *                   number of fields
 *   *.yaml          loads as a recipe
 *   *.tmp.XXXXXX    a temporary file that a killed write left: reported,
 *                   not an error (never read; a resume removes it) */
#include "config.h"

#include "formats/recipe.h"

#include <cliptrain/cliptrain.h>
#include <json-glib/json-glib.h>
#include <string.h>

static gboolean
check_safetensors(const char *dir, const char *path, GError **error)
{
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return FALSE;
  gboolean ok = TRUE;
  for (size_t i = 0; ok && i < ct_safetensors_n_tensors(st); i++) {
    const CtTensorInfo *t = ct_safetensors_tensor(st, i);
    if (!ct_dtype_is_float(t->dtype))
      continue;
    float *buf = g_new(float, MAX(t->numel, 1));
    ok = ct_safetensors_read_f32(st, t->name, buf, t->numel, error);
    g_free(buf);
  }
  const char *opt = ct_safetensors_metadata(st, "optimizer_file");
  if (ok && g_str_has_suffix(path, "/state.safetensors")) {
    g_autofree char *opt_path = opt ? g_build_filename(dir, opt, NULL) : NULL;
    g_autofree char *sha = opt_path ? ct_file_sha256(opt_path, NULL) : NULL;
    const char *want = ct_safetensors_metadata(st, "optimizer_sha256");
    if (!sha || !want || strcmp(sha, want) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: its optimizer file %s is %s", path,
                  opt ? opt : "(none)", sha ? "not the one it names" : "missing");
      ok = FALSE;
    }
  }
  ct_safetensors_free(st);
  return ok;
}

static gboolean
check_lines(const char *path, gboolean csv, GError **error)
{
  g_autofree char *text = NULL;
  gsize len;
  if (!g_file_get_contents(path, &text, &len, error))
    return FALSE;
  if (len > 0 && text[len - 1] != '\n') {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: the last line is cut short", path);
    return FALSE;
  }
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  int fields = -1;
  for (int i = 0; lines[i] && lines[i + 1]; i++) {
    if (csv) {
      int n = 1;
      for (const char *c = lines[i]; *c; c++)
        n += *c == ',';
      if (fields < 0)
        fields = n;
      if (n != fields) {
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s:%d: %d fields, the header has %d",
                    path, i + 1, n, fields);
        return FALSE;
      }
      continue;
    }
    JsonParser *p = json_parser_new();
    gboolean ok = json_parser_load_from_data(p, lines[i], -1, NULL) &&
                  JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p));
    g_object_unref(p);
    if (!ok) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s:%d: not a JSON object", path, i + 1);
      return FALSE;
    }
  }
  return TRUE;
}

static gboolean
check_file(const char *dir, const char *name, const char *path, GError **error)
{
  if (g_str_has_suffix(name, ".safetensors"))
    return check_safetensors(dir, path, error);
  if (g_str_has_suffix(name, ".jsonl"))
    return check_lines(path, FALSE, error);
  if (g_str_has_suffix(name, ".csv"))
    return check_lines(path, TRUE, error);
  if (g_str_has_suffix(name, ".json")) {
    JsonParser *p = json_parser_new();
    gboolean ok = json_parser_load_from_file(p, path, error);
    g_object_unref(p);
    return ok;
  }
  if (g_str_has_suffix(name, ".yaml")) {
    CtRecipe *r = ct_recipe_load(path, error);
    if (r)
      ct_recipe_free(r);
    return r != NULL;
  }
  return TRUE;
}

int
main(int argc, char **argv)
{
  if (argc != 2) {
    g_printerr("usage: check-run DIR\n");
    return 2;
  }
  GError *error = NULL;
  GDir *d = g_dir_open(argv[1], 0, &error);
  if (!d) {
    g_printerr("check-run: %s\n", error->message);
    return 1;
  }
  int bad = 0;
  const char *name;
  while ((name = g_dir_read_name(d))) {
    g_autofree char *path = g_build_filename(argv[1], name, NULL);
    const char *t = g_strrstr(name, ".tmp.");
    if (t && strlen(t) == strlen(".tmp.XXXXXX")) {
      g_print("%s: a temporary file left by an interrupted write\n", path);
      continue;
    }
    if (check_file(argv[1], name, path, &error)) {
      g_print("%s: ok\n", path);
      continue;
    }
    g_print("%s: DAMAGED: %s\n", path, error->message);
    g_clear_error(&error);
    bad++;
  }
  g_dir_close(d);
  return bad ? 1 : 0;
}

/* checkpoint.c: model weights to and from safetensors, under OpenAI's
 * state-dict names.  Loading checks every tensor's presence and shape
 * before the model is touched; saving is atomic. */
#include "config.h"

#include "model-private.h"

#include <string.h>

/* Keys that OpenAI's released state dicts hold besides parameters. */
static const char *const ignored_keys[] = { "input_resolution", "context_length", "vocab_size",
                                            NULL };

static gboolean
same_shape(const CtParamInfo *want, const CtTensorInfo *got)
{
  if (want->ndim == 0) /* a scalar: [] or [1] */
    return got->numel == 1 && got->ndim <= 1;
  if (got->ndim != want->ndim)
    return FALSE;
  for (int i = 0; i < want->ndim; i++)
    if (got->shape[i] != want->shape[i])
      return FALSE;
  return TRUE;
}

static gboolean
is_float_dtype(CtDtype d)
{
  return d == CT_DTYPE_F32 || d == CT_DTYPE_F16 || d == CT_DTYPE_BF16 || d == CT_DTYPE_F64;
}

gboolean
ct_model_load_from(CtModel *m, const CtSafetensors *st, const char *prefix, gboolean strict,
                   GError **error)
{
  g_return_val_if_fail(m != NULL && st != NULL, FALSE);
  const char *path = ct_safetensors_path(st);
  const char *pre = prefix ? prefix : "";
  size_t plen = strlen(pre);

  /* First pass: check everything, so that a bad file changes nothing. */
  for (guint i = 0; i < m->infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    g_autofree char *key = g_strconcat(pre, info->name, NULL);
    const CtTensorInfo *t = ct_safetensors_find(st, key);
    if (!t) {
      g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: tensor '%s' is missing", path, key);
      return FALSE;
    }
    if (!is_float_dtype(t->dtype)) {
      g_set_error(error, CT_ERROR, CT_ERROR_DTYPE,
                  "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64", path,
                  key, ct_dtype_name(t->dtype));
      return FALSE;
    }
    if (!same_shape(info, t)) {
      g_autofree char *got = ct_shape_string(t->ndim, t->shape);
      g_autofree char *want = ct_shape_string(info->ndim, info->shape);
      g_set_error(error, CT_ERROR, CT_ERROR_SHAPE,
                  "%s: tensor '%s' has shape %s but the model config expects %s: the config "
                  "does not match the weights",
                  path, key, got, want);
      return FALSE;
    }
  }
  if (strict) {
    for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
      const CtTensorInfo *t = ct_safetensors_tensor(st, i);
      if (strncmp(t->name, pre, plen) != 0)
        continue;
      const char *name = t->name + plen;
      if (ct_model_find(m, name) || g_strv_contains(ignored_keys, name))
        continue;
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: tensor '%s' is not a parameter of this model: the config does not "
                  "match the weights",
                  path, t->name);
      return FALSE;
    }
  }
  for (guint i = 0; i < m->infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    g_autofree char *key = g_strconcat(pre, info->name, NULL);
    if (!ct_safetensors_read_f32(st, key, m->params + info->offset, info->numel, error))
      return FALSE;
  }
  return TRUE;
}

gboolean
ct_model_load(CtModel *m, const char *path, GError **error)
{
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return FALSE;
  gboolean ok = ct_model_load_from(m, st, NULL, TRUE, error);
  ct_safetensors_free(st);
  return ok;
}

gboolean
ct_model_save(CtModel *m, const char *path, GHashTable *metadata, GError **error)
{
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  gboolean ok = FALSE;
  for (guint i = 0; i < m->infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    if (!ct_safetensors_writer_add(w, info->name, CT_DTYPE_F32, info->ndim, info->shape,
                                   m->params + info->offset, error))
      goto out;
  }
  if (metadata) {
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, metadata);
    while (g_hash_table_iter_next(&it, &k, &v))
      ct_safetensors_writer_set_metadata(w, k, v);
  }
  for (const char *const *key = ct_config_keys(); *key; key++) {
    g_autofree char *mk = g_strconcat("config.", *key, NULL);
    g_autofree char *val = g_strdup_printf("%ld", ct_config_get(&m->cfg, *key));
    ct_safetensors_writer_set_metadata(w, mk, val);
  }
  ct_safetensors_writer_set_metadata(w, "format", "pt");
  ct_safetensors_writer_set_metadata(w, "cliptrain.version", ct_version());
  ok = ct_safetensors_writer_write(w, path, error);
out:
  ct_safetensors_writer_free(w);
  return ok;
}

gboolean
ct_config_from_metadata(CtConfig *cfg, const CtSafetensors *st, GError **error)
{
  CtConfig c = { 0 };
  for (const char *const *key = ct_config_keys(); *key; key++) {
    g_autofree char *mk = g_strconcat("config.", *key, NULL);
    const char *val = ct_safetensors_metadata(st, mk);
    char *end = NULL;
    gint64 v = val ? g_ascii_strtoll(val, &end, 10) : 0;
    if (!val || !end || *end || end == val) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: metadata '%s' is %s", ct_safetensors_path(st), mk,
                  val ? "not an integer" : "missing");
      return FALSE;
    }
    if (!ct_config_set(&c, *key, (long) v, error)) {
      g_prefix_error(error, "%s: ", ct_safetensors_path(st));
      return FALSE;
    }
  }
  if (!ct_config_validate(&c, error)) {
    g_prefix_error(error, "%s: ", ct_safetensors_path(st));
    return FALSE;
  }
  *cfg = c;
  return TRUE;
}

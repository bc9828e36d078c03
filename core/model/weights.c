/* weights.c: model weights to and from safetensors, under OpenAI's
 * state-dict names.  Loading checks every tensor's presence, shape and
 * finiteness (no NaN or inf) before the model is touched; saving is atomic. */
#include "config.h"

#include "model/model-private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keys that OpenAI's released state dicts hold besides parameters. */
static const char *const ignored_keys[] = { "input_resolution", "context_length", "vocab_size",
                                            NULL };

/* TRUE for a key the model ignores: OpenAI's extra keys, and a BatchNorm's
 * num_batches_tracked (nn.BatchNorm2d counts batches; momentum 0.1 makes
 * the count unused). */
static gboolean
ignored_key(const CtModel *m, const char *name)
{
  if (g_strv_contains(ignored_keys, name))
    return TRUE;
  if (!g_str_has_suffix(name, ".num_batches_tracked"))
    return FALSE;
  g_autofree char *stem = g_strndup(name, strlen(name) - strlen("num_batches_tracked"));
  g_autofree char *rm = g_strconcat(stem, "running_mean", NULL);
  return ct_model_find_buffer(m, rm) != NULL;
}

/* Check tensor KEY of ST against INFO (dtype, shape).  NULL without an
 * error when the tensor is absent. */
static const CtTensorInfo *
check_tensor(const CtSafetensors *st, const char *key, const CtParamInfo *info, GError **error)
{
  const char *path = ct_safetensors_path(st);
  const CtTensorInfo *t = ct_safetensors_find(st, key);
  if (!t)
    return NULL;
  if (!ct_dtype_is_float(t->dtype)) {
    g_set_error(error, CT_ERROR, CT_ERROR_DTYPE,
                "%s: tensor '%s' has dtype %s; weights must be F32, F16, BF16 or F64", path,
                key, ct_dtype_name(t->dtype));
    return NULL;
  }
  if (!ct_param_shape_matches(info, t)) {
    g_autofree char *got = ct_shape_string(t->ndim, t->shape);
    g_autofree char *want = ct_shape_string(info->ndim, info->shape);
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE,
                "%s: tensor '%s' has shape %s but the model config expects %s: the config "
                "does not match the weights",
                path, key, got, want);
    return NULL;
  }
  return t;
}

/* The index of T's first NaN or inf element (T a float tensor of ST), or
 * -1: read as stored, before the model is touched. */
static gssize
first_nonfinite(const CtSafetensors *st, const CtTensorInfo *t)
{
  const guint8 *p = ct_safetensors_data(st, t);
  for (size_t i = 0; i < t->numel; i++) {
    gboolean bad;
    if (t->dtype == CT_DTYPE_F32) {
      float v;
      memcpy(&v, p + i * 4, 4);
      bad = !isfinite(v);
    } else if (t->dtype == CT_DTYPE_F64) {
      double v;
      memcpy(&v, p + i * 8, 8);
      bad = !isfinite(v);
    } else { /* F16, BF16: the exponent's bits all set */
      guint16 h;
      memcpy(&h, p + i * 2, 2);
      h = GUINT16_FROM_LE(h);
      bad = t->dtype == CT_DTYPE_F16 ? (h & 0x7C00) == 0x7C00 : (h & 0x7F80) == 0x7F80;
    }
    if (bad)
      return (gssize) i;
  }
  return -1;
}

/* KEY of ST, checked as check_tensor does and for NaN or inf values. */
static const CtTensorInfo *
check_finite_tensor(const CtSafetensors *st, const char *key, const CtParamInfo *info,
                    GError **error)
{
  const CtTensorInfo *t = check_tensor(st, key, info, error);
  gssize bad = t ? first_nonfinite(st, t) : -1;
  if (bad < 0)
    return t;
  g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
              "%s: tensor '%s' holds NaN or inf (element %zd of %zu): these weights cannot be "
              "used", ct_safetensors_path(st), key, bad, t->numel);
  return NULL;
}

/* TRUE for a parameter that a file may lack: logit_bias (SigLIP's), which
 * CLIP weights do not have; it then keeps its value (its initialisation,
 * or the siglip_trainer's init_logit_bias). */
static gboolean
optional_param(const CtParamInfo *info)
{
  return strcmp(info->name, "logit_bias") == 0;
}

gboolean
ct_param_shape_matches(const CtParamInfo *want, const CtTensorInfo *got)
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

gboolean
ct_model_load_from(CtModel *m, const CtSafetensors *st, const char *prefix, gboolean strict,
                   GError **error)
{
  g_return_val_if_fail(m != NULL && st != NULL, FALSE);
  const char *path = ct_safetensors_path(st);
  const char *pre = prefix ? prefix : "";
  size_t plen = strlen(pre);

  /* First pass: check everything, so that a bad file changes nothing. */
  GError *e = NULL;
  for (guint i = 0; i < m->infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->infos, CtParamInfo, i);
    g_autofree char *key = g_strconcat(pre, info->name, NULL);
    if (check_finite_tensor(st, key, info, &e) || (!e && optional_param(info)))
      continue;
    if (!e)
      g_set_error(&e, CT_ERROR, CT_ERROR_MISSING, "%s: tensor '%s' is missing", path, key);
    g_propagate_error(error, e);
    return FALSE;
  }
  /* buffers (running statistics): required when strict, else read when
   * present */
  for (guint i = 0; i < m->buf_infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->buf_infos, CtParamInfo, i);
    g_autofree char *key = g_strconcat(pre, info->name, NULL);
    if (check_finite_tensor(st, key, info, &e) || (!e && !strict))
      continue;
    if (!e)
      g_set_error(&e, CT_ERROR, CT_ERROR_MISSING,
                  "%s: tensor '%s' (BatchNorm running statistics) is missing", path, key);
    g_propagate_error(error, e);
    return FALSE;
  }
  if (strict) {
    for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
      const CtTensorInfo *t = ct_safetensors_tensor(st, i);
      if (strncmp(t->name, pre, plen) != 0)
        continue;
      const char *name = t->name + plen;
      if (ct_model_find(m, name) || ct_model_find_buffer(m, name) || ignored_key(m, name))
        continue;
      if (strcmp(name, "logit_bias") == 0)
        g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                    "%s: tensor '%s' is SigLIP's, and this model has no logit_bias: list "
                    "siglip_trainer in the recipe's callbacks", path, t->name);
      else
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
    if (optional_param(info) && !ct_safetensors_find(st, key))
      continue; /* keeps its value */
    if (!ct_safetensors_read_f32(st, key, m->params + info->offset, info->numel, error))
      return FALSE;
  }
  for (guint i = 0; i < m->buf_infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->buf_infos, CtParamInfo, i);
    g_autofree char *key = g_strconcat(pre, info->name, NULL);
    if (ct_safetensors_find(st, key) &&
        !ct_safetensors_read_f32(st, key, m->buffers + info->offset, info->numel, error))
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
  for (guint i = 0; i < m->buf_infos->len; i++) {
    const CtParamInfo *info = &g_array_index(m->buf_infos, CtParamInfo, i);
    if (!ct_safetensors_writer_add(w, info->name, CT_DTYPE_F32, info->ndim, info->shape,
                                   m->buffers + info->offset, error))
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
  if (m->extras & CT_MODEL_LOGIT_BIAS)
    ct_safetensors_writer_set_metadata(w, "config.logit_bias", "1");
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
    if (!val && g_str_has_prefix(*key, "vision_stage"))
      continue; /* written before ResNets: a ViT */
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

/* ------------------------------------------------- config from the shapes */

/* Tensor PRE+NAME with NDIM dimensions, or NULL with an error. */
static const CtTensorInfo *
shape_of(const CtSafetensors *st, const char *pre, const char *name, int ndim, const char *want,
         GError **error)
{
  g_autofree char *key = g_strconcat(pre, name, NULL);
  const CtTensorInfo *t = ct_safetensors_find(st, key);
  if (!t) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
                "%s: tensor '%s' is missing: not a CLIP state dict, and the file has no "
                "config.* metadata", ct_safetensors_path(st), key);
    return NULL;
  }
  if (t->ndim != ndim) {
    g_autofree char *got = ct_shape_string(t->ndim, t->shape);
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE, "%s: tensor '%s' has shape %s, not %s",
                ct_safetensors_path(st), key, got, want);
    return NULL;
  }
  return t;
}

/* Number of tensors PRE+STACK+"<N>.attn.in_proj_weight". */
static long
count_blocks(const CtSafetensors *st, const char *pre, const char *stack)
{
  g_autofree char *head = g_strconcat(pre, stack, NULL);
  size_t hl = strlen(head);
  long n = 0;
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
    const char *name = ct_safetensors_tensor(st, i)->name;
    if (strncmp(name, head, hl) != 0 || !g_ascii_isdigit(name[hl]))
      continue;
    const char *p = name + hl;
    while (g_ascii_isdigit(*p))
      p++;
    if (strcmp(p, ".attn.in_proj_weight") == 0)
      n++;
  }
  return n;
}

static gboolean
has_prefix_tensor(const CtSafetensors *st, const char *pre, const char *what)
{
  g_autofree char *head = g_strconcat(pre, what, NULL);
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++)
    if (g_str_has_prefix(ct_safetensors_tensor(st, i)->name, head))
      return TRUE;
  return FALSE;
}

/* Number of distinct N in tensors PRE+"visual.layer<STAGE>.<N>.*". */
static long
count_stage_blocks(const CtSafetensors *st, const char *pre, int stage)
{
  g_autofree char *head = g_strdup_printf("%svisual.layer%d.", pre, stage);
  size_t hl = strlen(head);
  long n = 0;
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
    const char *name = ct_safetensors_tensor(st, i)->name;
    if (strncmp(name, head, hl) != 0 || !g_ascii_isdigit(name[hl]))
      continue;
    long k = strtol(name + hl, NULL, 10);
    n = MAX(n, k + 1); /* blocks are numbered 0 .. n-1 */
  }
  return n;
}

/* The text tower's keys from the shapes (both image towers share them). */
static gboolean
text_from_weights(CtConfig *c, const CtSafetensors *st, const char *pre, int transformer_heads,
                  GError **error)
{
  const CtTensorInfo *proj, *pos, *wte, *lnf;
  if (!(proj = shape_of(st, pre, "text_projection", 2, "(width, embed_dim)", error)) ||
      !(pos = shape_of(st, pre, "positional_embedding", 2, "(context_length, width)", error)) ||
      !(wte = shape_of(st, pre, "token_embedding.weight", 2, "(vocab_size, width)", error)) ||
      !(lnf = shape_of(st, pre, "ln_final.weight", 1, "(width)", error)))
    return FALSE;
  int64_t TW = lnf->shape[0];
  c->embed_dim = (int) MIN(proj->shape[1], 1 << 25);
  c->context_length = (int) MIN(pos->shape[0], 1 << 25);
  c->vocab_size = (int) MIN(wte->shape[0], 1 << 25);
  c->transformer_width = (int) MIN(TW, 1 << 25);
  c->transformer_heads = transformer_heads > 0 ? transformer_heads : (int) MAX(TW / 64, 1);
  c->transformer_layers = (int) count_blocks(st, pre, "transformer.resblocks.");
  return TRUE;
}

/* A ModifiedResNet image tower, as OpenAI's build_model reads it: the
 * blocks per stage by counting visual.layerN.<i>, the width from
 * visual.layer1.0.conv1.weight, the resolution from the attention pool's
 * positional embedding (grid * grid + 1 rows, grid = R / 32). */
static gboolean
resnet_from_weights(CtConfig *cfg, const CtSafetensors *st, const char *pre, int vision_heads,
                    int transformer_heads, GError **error)
{
  const char *path = ct_safetensors_path(st);
  const CtTensorInfo *c1, *apos;
  if (!(c1 = shape_of(st, pre, "visual.layer1.0.conv1.weight", 4, "(width, width, 1, 1)",
                      error)) ||
      !(apos = shape_of(st, pre, "visual.attnpool.positional_embedding", 2,
                        "(grid * grid + 1, 32 * width)", error)))
    return FALSE;
  CtConfig c = { 0 };
  int64_t n = apos->shape[0] - 1, G = 0;
  while (G < (1 << 13) && (G + 1) * (G + 1) <= n)
    G++;
  if (G * G != n || n < 1) {
    g_autofree char *got = ct_shape_string(apos->ndim, apos->shape);
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE,
                "%s: tensor '%svisual.attnpool.positional_embedding' has shape %s, not "
                "(grid * grid + 1, 32 * width)", path, pre, got);
    return FALSE;
  }
  c.vision_width = (int) MIN(c1->shape[0], 1 << 25);
  c.image_resolution = (int) (G * 32);
  c.vision_patch_size = 0;
  c.vision_heads = vision_heads > 0 ? vision_heads : MAX(c.vision_width * 32 / 64, 1);
  for (int i = 0; i < 4; i++)
    c.vision_stages[i] = (int) MIN(count_stage_blocks(st, pre, i + 1), 1 << 25);
  if (!text_from_weights(&c, st, pre, transformer_heads, error))
    return FALSE;
  if (!ct_config_validate(&c, error)) {
    g_prefix_error(error, "%s: ", path);
    return FALSE;
  }
  *cfg = c;
  return TRUE;
}

gboolean
ct_config_from_weights(CtConfig *cfg, const CtSafetensors *st, const char *prefix,
                       int vision_heads, int transformer_heads, GError **error)
{
  g_return_val_if_fail(cfg != NULL && st != NULL, FALSE);
  const char *path = ct_safetensors_path(st), *pre = prefix ? prefix : "";
  if (has_prefix_tensor(st, pre, "visual.layer1.") || has_prefix_tensor(st, pre, "visual.attnpool."))
    return resnet_from_weights(cfg, st, pre, vision_heads, transformer_heads, error);
  const CtTensorInfo *conv, *vpos, *proj, *pos, *wte, *lnf;
  if (!(conv = shape_of(st, pre, "visual.conv1.weight", 4, "(width, 3, patch, patch)", error)) ||
      !(vpos = shape_of(st, pre, "visual.positional_embedding", 2, "(grid * grid + 1, width)", error)) ||
      !(proj = shape_of(st, pre, "text_projection", 2, "(width, embed_dim)", error)) ||
      !(pos = shape_of(st, pre, "positional_embedding", 2, "(context_length, width)", error)) ||
      !(wte = shape_of(st, pre, "token_embedding.weight", 2, "(vocab_size, width)", error)) ||
      !(lnf = shape_of(st, pre, "ln_final.weight", 1, "(width)", error)))
    return FALSE;
  int64_t P = conv->shape[3], n = vpos->shape[0] - 1, G = 0;
  const char *bad = NULL;
  if (conv->shape[1] != 3 || conv->shape[2] != P)
    bad = "visual.conv1.weight";
  while (!bad && G < (1 << 13) && (G + 1) * (G + 1) <= n)
    G++;
  if (!bad && (G * G != n || n < 1))
    bad = "visual.positional_embedding";
  if (bad) {
    g_autofree char *key = g_strconcat(pre, bad, NULL);
    const CtTensorInfo *t = ct_safetensors_find(st, key);
    g_autofree char *got = ct_shape_string(t->ndim, t->shape);
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE, "%s: tensor '%s' has shape %s, not %s", path,
                key, got, t == conv ? "(width, 3, patch, patch)" : "(grid * grid + 1, width)");
    return FALSE;
  }
  int64_t VW = conv->shape[0], TW = lnf->shape[0];
  const struct {
    const char *key;
    int64_t v;
  } fields[] = {
    { "embed_dim", proj->shape[1] },
    { "image_resolution", P * G },
    { "vision_layers", count_blocks(st, pre, "visual.transformer.resblocks.") },
    { "vision_width", VW },
    { "vision_patch_size", P },
    { "vision_heads", vision_heads > 0 ? vision_heads : MAX(VW / 64, 1) },
    { "context_length", pos->shape[0] },
    { "vocab_size", wte->shape[0] },
    { "transformer_width", TW },
    { "transformer_heads", transformer_heads > 0 ? transformer_heads : MAX(TW / 64, 1) },
    { "transformer_layers", count_blocks(st, pre, "transformer.resblocks.") },
  };
  CtConfig c = { 0 };
  for (size_t i = 0; i < G_N_ELEMENTS(fields); i++) {
    if (fields[i].v < 1 || fields[i].v > (1 << 24)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: %s = %" G_GINT64_FORMAT " read from the weights' shapes is out of range%s",
                  path, fields[i].key, fields[i].v,
                  g_str_has_suffix(fields[i].key, "_layers")
                    ? " (no resblocks.N.attn.in_proj_weight tensors)" : "");
      return FALSE;
    }
    ct_config_set(&c, fields[i].key, (long) fields[i].v, NULL);
  }
  if (!ct_config_validate(&c, error)) {
    g_prefix_error(error, "%s: ", path);
    return FALSE;
  }
  *cfg = c;
  return TRUE;
}

uint32_t
ct_model_extras_of_file(const CtSafetensors *st, const char *prefix)
{
  g_autofree char *key = g_strconcat(prefix ? prefix : "", "logit_bias", NULL);
  gboolean bias = g_strcmp0(ct_safetensors_metadata(st, "config.logit_bias"), "1") == 0 ||
                  ct_safetensors_find(st, key) != NULL;
  return bias ? CT_MODEL_LOGIT_BIAS : 0;
}

CtModel *
ct_model_new_from_file(const char *path, int max_batch, GError **error)
{
  return ct_model_new_from_file_heads(path, max_batch, 0, 0, error);
}

CtModel *
ct_model_new_from_file_heads(const char *path, int max_batch, int vision_heads,
                             int transformer_heads, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return NULL;
  /* a training state (ct_learner_save_state) holds the parameters and
   * buffers as "model.NAME", beside the optimizer's and recorder's data */
  const char *pre = g_strcmp0(ct_safetensors_metadata(st, "format"),
                              "cliptrain training state 1") == 0 ? "model." : NULL;
  gboolean has_config = FALSE;
  for (const char *const *key = ct_config_keys(); *key && !has_config; key++) {
    g_autofree char *mk = g_strconcat("config.", *key, NULL);
    has_config = ct_safetensors_metadata(st, mk) != NULL;
  }
  CtConfig cfg;
  CtModel *m = NULL;
  if (has_config ? ct_config_from_metadata(&cfg, st, error)
                 : ct_config_from_weights(&cfg, st, pre, vision_heads, transformer_heads,
                                          error)) {
    if (!(m = ct_model_new_extras(&cfg, max_batch, ct_model_extras_of_file(st, pre), error)))
      g_prefix_error(error, "%s: ", path);
    else if (!ct_model_load_from(m, st, pre, TRUE, error))
      g_clear_pointer(&m, ct_model_free);
  }
  ct_safetensors_free(st);
  return m;
}

/* config.c: model configs: presets, validation, keys, sizes and FLOPs. */
#include "config.h"

#include <cliptrain/model.h>

#include <stddef.h>
#include <string.h>

typedef struct {
  const char *name;
  CtConfig cfg;
} Preset;

/* embed, R, vision layers, width, patch, heads, context, vocab, text width, heads, layers */
static const Preset presets[] = {
  { "vitb32", { 512, 224, 12, 768, 32, 12, 77, 49408, 512, 8, 12 } },
  { "vitl14", { 512, 224, 24, 1024, 14, 16, 77, 49408, 512, 8, 12 } },
  { "small", { 256, 64, 4, 256, 8, 4, 32, 49408, 256, 4, 4 } },
  { "tiny", { 64, 32, 2, 64, 8, 1, 16, 1000, 64, 1, 2 } },
  /* recipes/fashion_mnist.yaml's model, for side-by-side benchmarks */
  { "fashion", { 128, 28, 4, 128, 7, 2, 16, 640, 128, 2, 2 } },
};

static const char *const preset_names[] = { "vitb32", "vitl14", "small", "tiny", "fashion",
                                             NULL };

static const char *const keys[] = {
  "embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
  "vision_heads", "context_length", "vocab_size", "transformer_width", "transformer_heads",
  "transformer_layers", NULL,
};

static const size_t key_offsets[] = {
  offsetof(CtConfig, embed_dim), offsetof(CtConfig, image_resolution),
  offsetof(CtConfig, vision_layers), offsetof(CtConfig, vision_width),
  offsetof(CtConfig, vision_patch_size), offsetof(CtConfig, vision_heads),
  offsetof(CtConfig, context_length), offsetof(CtConfig, vocab_size),
  offsetof(CtConfig, transformer_width), offsetof(CtConfig, transformer_heads),
  offsetof(CtConfig, transformer_layers),
};

const char *const *
ct_config_preset_names(void)
{
  return preset_names;
}

const char *const *
ct_config_keys(void)
{
  return keys;
}

gboolean
ct_config_preset(const char *name, CtConfig *cfg, GError **error)
{
  g_return_val_if_fail(name != NULL && cfg != NULL, FALSE);
  for (size_t i = 0; i < G_N_ELEMENTS(presets); i++)
    if (strcmp(presets[i].name, name) == 0) {
      *cfg = presets[i].cfg;
      return TRUE;
    }
  g_autofree char *list = g_strjoinv(", ", (char **) preset_names);
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "unknown preset '%s' (known: %s)", name, list);
  return FALSE;
}

static int
key_index(const char *key)
{
  for (int i = 0; keys[i]; i++)
    if (strcmp(keys[i], key) == 0)
      return i;
  return -1;
}

gboolean
ct_config_set(CtConfig *cfg, const char *key, long value, GError **error)
{
  int i = key_index(key);
  if (i < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "unknown model config key '%s'", key);
    return FALSE;
  }
  if (value < 0 || value > (1L << 24)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "model config %s = %ld is out of range",
                key, value);
    return FALSE;
  }
  *(int *) ((char *) cfg + key_offsets[i]) = (int) value;
  return TRUE;
}

long
ct_config_get(const CtConfig *cfg, const char *key)
{
  int i = key_index(key);
  return i < 0 ? -1 : *(const int *) ((const char *) cfg + key_offsets[i]);
}

gboolean
ct_config_validate(CtConfig *cfg, GError **error)
{
  if (cfg->vision_heads == 0 && cfg->vision_width > 0)
    cfg->vision_heads = cfg->vision_width / 64 > 0 ? cfg->vision_width / 64 : 1;
  for (int i = 0; keys[i]; i++) {
    long v = ct_config_get(cfg, keys[i]);
    if (v <= 0 || v > (1L << 24)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "model config %s = %ld must be positive",
                  keys[i], v);
      return FALSE;
    }
  }
  if (cfg->image_resolution % cfg->vision_patch_size != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config image_resolution %d is not a multiple of vision_patch_size %d",
                cfg->image_resolution, cfg->vision_patch_size);
    return FALSE;
  }
  if (cfg->vision_width % cfg->vision_heads != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vision_width %d is not a multiple of vision_heads %d",
                cfg->vision_width, cfg->vision_heads);
    return FALSE;
  }
  if (cfg->transformer_width % cfg->transformer_heads != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config transformer_width %d is not a multiple of transformer_heads %d",
                cfg->transformer_width, cfg->transformer_heads);
    return FALSE;
  }
  if (cfg->vocab_size < 3) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vocab_size %d is too small (start and end tokens need 2 ids)",
                cfg->vocab_size);
    return FALSE;
  }
  return TRUE;
}

/* forward FLOPs of one transformer stack over T tokens of width W */
static double
stack_flops(int layers, double T, double W)
{
  return layers * (24.0 * T * W * W + 4.0 * T * T * W);
}

double
ct_config_step_flops(const CtConfig *c, int batch, int text_tokens)
{
  double G = c->image_resolution / c->vision_patch_size;
  double Tv = G * G + 1, W = c->vision_width, P = c->vision_patch_size;
  double vis = 2.0 * G * G * 3 * P * P * W + stack_flops(c->vision_layers, Tv, W) +
               2.0 * W * c->embed_dim;
  double tw = c->transformer_width;
  double txt = stack_flops(c->transformer_layers, text_tokens, tw) + 2.0 * tw * c->embed_dim;
  double fwd = batch * (vis + txt) + 2.0 * batch * batch * c->embed_dim;
  return 3.0 * fwd;
}

static size_t
stack_params(int layers, size_t W)
{
  return (size_t) layers * (12 * W * W + 13 * W);
}

size_t
ct_config_n_params(const CtConfig *c)
{
  size_t W = c->vision_width, P = c->vision_patch_size, E = c->embed_dim;
  size_t G = c->image_resolution / c->vision_patch_size;
  size_t tw = c->transformer_width;
  size_t vis = W * 3 * P * P + W + (G * G + 1) * W + 2 * W + stack_params(c->vision_layers, W) +
               2 * W + W * E;
  size_t txt = (size_t) c->vocab_size * tw + (size_t) c->context_length * tw +
               stack_params(c->transformer_layers, tw) + 2 * tw + tw * E;
  return vis + txt + 1;
}

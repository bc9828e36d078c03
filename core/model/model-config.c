/* model-config.c: model configs: presets, validation, keys, sizes and FLOPs. */
#include "config.h"

#include <cliptrain/model.h>

#include "model/model-config-private.h"
#include "formats/recipe.h"

#include <stddef.h>
#include <string.h>

typedef struct {
  const char *name;
  CtConfig cfg;
} Preset;

/* embed, R, vision layers, width, patch, heads, context, vocab, text width, heads, layers,
 * and a ResNet's blocks per stage */
static const Preset presets[] = {
  { "vitb32", { 512, 224, 12, 768, 32, 12, 77, 49408, 512, 8, 12, { 0 } } },
  { "vitl14", { 512, 224, 24, 1024, 14, 16, 77, 49408, 512, 8, 12, { 0 } } },
  { "small", { 256, 64, 4, 256, 8, 4, 32, 49408, 256, 4, 4, { 0 } } },
  { "tiny", { 64, 32, 2, 64, 8, 1, 16, 1000, 64, 1, 2, { 0 } } },
  /* recipes/fashion_mnist.yaml's model, for side-by-side benchmarks */
  { "fashion", { 128, 28, 4, 128, 7, 2, 16, 640, 128, 2, 2, { 0 } } },
  /* OpenAI's ModifiedResNet image towers (vision_patch_size 0) */
  { "rn50", { 1024, 224, 16, 64, 0, 32, 77, 49408, 512, 8, 12, { 3, 4, 6, 3 } } },
  { "rn101", { 512, 224, 33, 64, 0, 32, 77, 49408, 512, 8, 12, { 3, 4, 23, 3 } } },
  { "rn50x4", { 640, 288, 26, 80, 0, 40, 77, 49408, 640, 10, 12, { 4, 6, 10, 6 } } },
  /* a ResNet that trains in minutes on two cores */
  { "rn", { 64, 64, 4, 16, 0, 8, 16, 1000, 64, 1, 2, { 1, 1, 1, 1 } } },
};

static const char *const preset_names[] = { "vitb32", "vitl14", "small", "tiny", "fashion",
                                             "rn50", "rn101", "rn50x4", "rn", NULL };

static const char *const keys[] = {
  "embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
  "vision_heads", "context_length", "vocab_size", "transformer_width", "transformer_heads",
  "transformer_layers", "vision_stage1", "vision_stage2", "vision_stage3", "vision_stage4",
  NULL,
};

static const size_t key_offsets[] = {
  offsetof(CtConfig, embed_dim), offsetof(CtConfig, image_resolution),
  offsetof(CtConfig, vision_layers), offsetof(CtConfig, vision_width),
  offsetof(CtConfig, vision_patch_size), offsetof(CtConfig, vision_heads),
  offsetof(CtConfig, context_length), offsetof(CtConfig, vocab_size),
  offsetof(CtConfig, transformer_width), offsetof(CtConfig, transformer_heads),
  offsetof(CtConfig, transformer_layers), offsetof(CtConfig, vision_stages[0]),
  offsetof(CtConfig, vision_stages[1]), offsetof(CtConfig, vision_stages[2]),
  offsetof(CtConfig, vision_stages[3]),
};

gboolean
ct_config_is_resnet(const CtConfig *cfg)
{
  return cfg->vision_patch_size == 0;
}

/* Keys that may be 0: the patch size (a ResNet) and the stages (a ViT). */
static gboolean
may_be_zero(const char *key)
{
  return g_str_equal(key, "vision_patch_size") || g_str_has_prefix(key, "vision_stage");
}

static gboolean
validate_resnet(CtConfig *cfg, GError **error)
{
  int sum = 0;
  for (int i = 0; i < 4; i++) {
    if (cfg->vision_stages[i] < 1 || cfg->vision_stages[i] > 4096) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "model config vision_stage%d = %d: a ResNet image tower (vision_patch_size 0) "
                  "needs 1 to 4096 blocks in each of its 4 stages (vision_layers: [3, 4, 6, 3] "
                  "is RN50)", i + 1, cfg->vision_stages[i]);
      return FALSE;
    }
    sum += cfg->vision_stages[i];
  }
  if (cfg->vision_layers == 0)
    cfg->vision_layers = sum;
  if (cfg->vision_layers != sum) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vision_layers %d is not the sum of the ResNet's stages %d+%d+%d+%d: "
                "give a ResNet's vision_layers as a list of 4 counts", cfg->vision_layers,
                cfg->vision_stages[0], cfg->vision_stages[1], cfg->vision_stages[2],
                cfg->vision_stages[3]);
    return FALSE;
  }
  if (cfg->vision_heads == 0)
    cfg->vision_heads = MAX(cfg->vision_width * 32 / 64, 1);
  int R = cfg->image_resolution, S = R / 32;
  if (R % 32 != 0 || S * S + 1 > 1024) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config image_resolution %d: a ResNet needs a multiple of 32, at most 992",
                R);
    return FALSE;
  }
  if (cfg->vision_width % 2 != 0 || cfg->vision_width > (1 << 16)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vision_width %d: a ResNet's stem width must be even",
                cfg->vision_width);
    return FALSE;
  }
  if (cfg->vision_width * 32 % cfg->vision_heads != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vision_width * 32 = %d (the attention pool) is not a multiple of "
                "vision_heads %d", cfg->vision_width * 32, cfg->vision_heads);
    return FALSE;
  }
  return TRUE;
}

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

char *
ct_config_diff(const CtConfig *got, const CtConfig *want)
{
  GString *diff = g_string_new(NULL);
  for (const char *const *k = ct_config_keys(); *k; k++)
    if (ct_config_get(got, *k) != ct_config_get(want, *k))
      g_string_append_printf(diff, "%s%s %ld (the recipe says %ld)", diff->len ? ", " : "", *k,
                             ct_config_get(got, *k), ct_config_get(want, *k));
  return g_string_free(diff, diff->len == 0);
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
  g_autofree char *shown = ct_quote_cut(name);
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "unknown preset '%s' (known: %s)", shown, list);
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
    g_autofree char *shown = ct_quote_cut(key);
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "unknown model config key '%s'", shown);
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
  gboolean resnet = ct_config_is_resnet(cfg);
  if (resnet && cfg->vision_width > 0 && !validate_resnet(cfg, error))
    return FALSE;
  if (cfg->vision_heads == 0 && cfg->vision_width > 0)
    cfg->vision_heads = cfg->vision_width / 64 > 0 ? cfg->vision_width / 64 : 1;
  for (int i = 0; keys[i]; i++) {
    long v = ct_config_get(cfg, keys[i]);
    if (v == 0 && may_be_zero(keys[i]))
      continue;
    if (v <= 0 || v > (1L << 24)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "model config %s = %ld must be positive",
                  keys[i], v);
      return FALSE;
    }
  }
  if (!resnet && (cfg->vision_stages[0] || cfg->vision_stages[1] || cfg->vision_stages[2] ||
                  cfg->vision_stages[3])) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config vision_stage1..4 are set but vision_patch_size is %d: stages are "
                "for a ResNet image tower (vision_patch_size 0)", cfg->vision_patch_size);
    return FALSE;
  }
  if (!resnet && cfg->image_resolution % cfg->vision_patch_size != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "model config image_resolution %d is not a multiple of vision_patch_size %d",
                cfg->image_resolution, cfg->vision_patch_size);
    return FALSE;
  }
  if (!resnet && cfg->vision_width % cfg->vision_heads != 0) {
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

/* Forward FLOPs that readout pruning leaves out of a stack of L >= 1
 * blocks over T tokens of width W: for all rows but one a sequence, the
 * last block's out_proj, c_fc and c_proj (18 W^2 a row) and its
 * attention's scores and weighted sums (4 T W a row). */
static double
pruned_flops(int layers, double T, double W)
{
  return layers > 0 ? (T - 1) * (18.0 * W * W + 4.0 * T * W) : 0.0;
}

/* The ModifiedResNet walked as OpenAI builds it: per image, the matrix
 * FLOPs (2 * outputs * fan-in of every convolution and projection, the
 * attention pool's scores and weighted sums) and the parameters. */
static void
resnet_walk_blocks(const CtConfig *c, double *flops, size_t *params, size_t *blocks,
                   size_t *largest);

static void
resnet_walk(const CtConfig *c, double *flops, size_t *params)
{
  size_t blocks, largest;
  resnet_walk_blocks(c, flops, params, &blocks, &largest);
}

/* The same, also the parameters that go through the block scratch under
 * the step inside backward (BLOCKS: every Bottleneck and the attention
 * pool) and the most of them at once (LARGEST). */
static void
resnet_walk_blocks(const CtConfig *c, double *flops, size_t *params, size_t *blocks,
                   size_t *largest)
{
  *blocks = *largest = 0;
  double f = 0, W = c->vision_width, R = c->image_resolution;
  size_t p = 0, w = c->vision_width, w2 = w / 2;
  double S = R / 2; /* the stem's three convolutions run at R/2 */
  f += 2.0 * S * S * (W / 2) * 27 + 2.0 * S * S * (W / 2) * (W / 2) * 9 +
       2.0 * S * S * W * (W / 2) * 9;
  p += w2 * 27 + w2 * w2 * 9 + w * w2 * 9 + 2 * (w2 + w2 + w);
  S /= 2; /* the stem's average pool */
  size_t inplanes = w;
  for (int st = 0; st < 4; st++) {
    size_t P = w << st;
    for (int j = 0; j < c->vision_stages[st]; j++) {
      int s = j == 0 && st > 0 ? 2 : 1;
      double So = S / s;
      f += 2.0 * S * S * P * inplanes + 2.0 * S * S * P * P * 9 + 2.0 * So * So * 4 * P * P;
      size_t bp = P * inplanes + P * P * 9 + 4 * P * P + 2 * (P + P + 4 * P);
      if (s > 1 || inplanes != 4 * P) {
        f += 2.0 * So * So * 4 * P * inplanes;
        bp += 4 * P * inplanes + 2 * 4 * P;
      }
      p += bp;
      *blocks += bp;
      *largest = MAX(*largest, bp);
      inplanes = 4 * P;
      S = So;
    }
  }
  size_t C = 32 * w, T = (size_t) (S * S) + 1, E = c->embed_dim;
  f += 2.0 * C * C + 2.0 * 2 * T * C * C + 2.0 * 2 * T * C + 2.0 * C * E;
  size_t pool = T * C + 3 * (C * C + C) + E * C + E;
  p += pool;
  *blocks += pool;
  *largest = MAX(*largest, pool);
  *flops = f;
  *params = p;
}

double
ct_config_step_flops(const CtConfig *c, int batch, int text_tokens)
{
  double vis;
  if (ct_config_is_resnet(c)) {
    size_t np;
    resnet_walk(c, &vis, &np);
  } else {
    double G = c->image_resolution / c->vision_patch_size;
    double Tv = G * G + 1, W = c->vision_width, P = c->vision_patch_size;
    vis = 2.0 * G * G * 3 * P * P * W + stack_flops(c->vision_layers, Tv, W) +
          2.0 * W * c->embed_dim;
  }
  double tw = c->transformer_width;
  double txt = stack_flops(c->transformer_layers, text_tokens, tw) + 2.0 * tw * c->embed_dim;
  double fwd = batch * (vis + txt) + 2.0 * batch * batch * c->embed_dim;
  return 3.0 * fwd;
}

double
ct_config_readout_saving(const CtConfig *c, int batch, int text_tokens)
{
  double f = pruned_flops(c->transformer_layers, text_tokens, c->transformer_width);
  if (!ct_config_is_resnet(c)) {
    double G = c->image_resolution / c->vision_patch_size;
    f += pruned_flops(c->vision_layers, G * G + 1, c->vision_width);
  }
  return 3.0 * batch * f;
}

double
ct_config_patch_dropout_saving(const CtConfig *c, int batch, int keep, gboolean prune)
{
  if (ct_config_is_resnet(c))
    return 0;
  double G = c->image_resolution / c->vision_patch_size, GG = G * G;
  double W = c->vision_width, P = c->vision_patch_size;
  int L = c->vision_layers;
  double all = 2.0 * GG * 3 * P * P * W + stack_flops(L, GG + 1, W) -
               (prune ? pruned_flops(L, GG + 1, W) : 0);
  double kept = 2.0 * keep * 3 * P * P * W + stack_flops(L, keep + 1.0, W) -
                (prune ? pruned_flops(L, keep + 1.0, W) : 0);
  return 3.0 * batch * (all - kept);
}

static size_t
stack_params(int layers, size_t W)
{
  return (size_t) layers * (12 * W * W + 13 * W);
}

size_t
ct_config_fused_grads(const CtConfig *c)
{
  size_t tw = c->transformer_width, blocks;
  size_t largest = c->transformer_layers > 0 ? stack_params(1, tw) : 0;
  if (ct_config_is_resnet(c)) {
    double f;
    size_t p, rb, rl;
    resnet_walk_blocks(c, &f, &p, &rb, &rl);
    blocks = rb;
    largest = MAX(largest, rl);
  } else {
    blocks = stack_params(c->vision_layers, c->vision_width);
    if (c->vision_layers > 0)
      largest = MAX(largest, stack_params(1, c->vision_width));
  }
  blocks += stack_params(c->transformer_layers, tw);
  return ct_config_n_params(c) - blocks + largest;
}

size_t
ct_config_n_params(const CtConfig *c)
{
  size_t W = c->vision_width, P = c->vision_patch_size, E = c->embed_dim;
  size_t tw = c->transformer_width;
  size_t vis;
  if (ct_config_is_resnet(c)) {
    double f;
    resnet_walk(c, &f, &vis);
  } else {
    size_t G = c->image_resolution / c->vision_patch_size;
    vis = W * 3 * P * P + W + (G * G + 1) * W + 2 * W + stack_params(c->vision_layers, W) +
          2 * W + W * E;
  }
  size_t txt = (size_t) c->vocab_size * tw + (size_t) c->context_length * tw +
               stack_params(c->transformer_layers, tw) + 2 * tw + tw * E;
  return vis + txt + 1;
}

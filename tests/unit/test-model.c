/* test-model: the model's layout, initialisation, checkpoints and the
 * errors for bad weights and bad input. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#if defined(__SANITIZE_ADDRESS__) /* GCC */
#define CT_TEST_ASAN 1
#elif defined(__has_feature) /* clang */
#if __has_feature(address_sanitizer)
#define CT_TEST_ASAN 1
#endif
#endif

static char *tmpdir;

static CtModel *
tiny_model(int batch, uint64_t seed)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  GError *error = NULL;
  CtModel *m = ct_model_new(&cfg, batch, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, seed);
  return m;
}

static void
test_presets(void)
{
  for (const char *const *p = ct_config_preset_names(); *p; p++) {
    CtConfig cfg;
    g_assert_true(ct_config_preset(*p, &cfg, NULL));
    g_assert_true(ct_config_validate(&cfg, NULL));
  }
  /* OpenAI's ViT-B/32 has 151,277,313 parameters */
  CtConfig b32;
  g_assert_true(ct_config_preset("vitb32", &b32, NULL));
  g_assert_cmpuint(ct_config_n_params(&b32), ==, 151277313);
  GError *error = NULL;
  CtConfig bad;
  g_assert_false(ct_config_preset("vitb33", &bad, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "vitb33"));
  g_clear_error(&error);
  /* shapes that do not divide are refused with the key named */
  bad = b32;
  bad.image_resolution = 225;
  g_assert_null(ct_model_new(&bad, 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "image_resolution"));
  g_clear_error(&error);
  bad = b32;
  bad.transformer_heads = 7;
  g_assert_null(ct_model_new(&bad, 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "transformer_heads"));
  g_clear_error(&error);
  /* vision_heads 0 means width / 64 */
  bad = b32;
  bad.vision_heads = 0;
  g_assert_true(ct_config_validate(&bad, NULL));
  g_assert_cmpint(bad.vision_heads, ==, 12);
}

static void
test_layout(void)
{
  CtModel *m = tiny_model(1, 0);
  const CtConfig *c = ct_model_config(m);
  g_assert_cmpuint(ct_model_n_params(m), ==, ct_config_n_params(c));
  /* OpenAI's state-dict order and names */
  g_assert_cmpstr(ct_model_tensor(m, 0)->name, ==, "positional_embedding");
  g_assert_cmpstr(ct_model_tensor(m, 1)->name, ==, "text_projection");
  g_assert_cmpstr(ct_model_tensor(m, 2)->name, ==, "logit_scale");
  g_assert_cmpint(ct_model_tensor(m, 2)->ndim, ==, 0);
  size_t last = ct_model_n_tensors(m) - 1;
  g_assert_cmpstr(ct_model_tensor(m, last)->name, ==, "ln_final.bias");
  const CtParamInfo *w = ct_model_find(m, "visual.transformer.resblocks.1.attn.in_proj_weight");
  g_assert_nonnull(w);
  g_assert_cmpint(w->shape[0], ==, 3 * c->vision_width);
  g_assert_true(w->decay);
  g_assert_false(ct_model_find(m, "token_embedding.weight")->decay);
  g_assert_false(ct_model_find(m, "visual.ln_pre.bias")->decay);
  g_assert_null(ct_model_find(m, "visual.transformer.resblocks.2.ln_1.weight"));
  /* tensors tile the flat buffer exactly */
  size_t off = 0;
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    g_assert_cmpuint(ct_model_tensor(m, i)->offset, ==, off);
    off += ct_model_tensor(m, i)->numel;
  }
  g_assert_cmpuint(off, ==, ct_model_n_params(m));
  ct_model_free(m);
}

static double
tensor_std(CtModel *m, const char *name)
{
  const CtParamInfo *t = ct_model_find(m, name);
  const float *p = ct_model_params(m) + t->offset;
  double s = 0, s2 = 0;
  for (size_t i = 0; i < t->numel; i++)
    s += p[i], s2 += (double) p[i] * p[i];
  double mean = s / t->numel;
  return sqrt(s2 / t->numel - mean * mean);
}

static void
test_init(void)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("small", &cfg, NULL));
  CtModel *a = ct_model_new(&cfg, 1, NULL), *b = ct_model_new(&cfg, 1, NULL);
  ct_model_init_weights(a, 42);
  ct_model_init_weights(b, 42);
  g_assert_cmpmem(ct_model_params(a), ct_model_n_params(a) * 4, ct_model_params(b),
                  ct_model_n_params(b) * 4);
  ct_model_init_weights(b, 43);
  g_assert_true(memcmp(ct_model_params(a), ct_model_params(b), ct_model_n_params(a) * 4) != 0);

  double w = cfg.transformer_width, L = cfg.transformer_layers, vw = cfg.vision_width;
  struct {
    const char *name;
    double std;
  } table[] = {
    { "token_embedding.weight", 0.02 },
    { "positional_embedding", 0.01 },
    { "transformer.resblocks.0.attn.in_proj_weight", pow(w, -0.5) },
    { "transformer.resblocks.1.attn.out_proj.weight", pow(w, -0.5) * pow(2 * L, -0.5) },
    { "transformer.resblocks.2.mlp.c_proj.weight", pow(w, -0.5) * pow(2 * L, -0.5) },
    { "transformer.resblocks.3.mlp.c_fc.weight", pow(2 * w, -0.5) },
    { "text_projection", pow(w, -0.5) },
    { "visual.positional_embedding", pow(vw, -0.5) },
    { "visual.proj", pow(vw, -0.5) },
    /* vision blocks keep PyTorch's defaults, as OpenAI's code does:
     * xavier_uniform for in_proj, U(+-1/sqrt(fan_in)) for linears */
    { "visual.transformer.resblocks.0.attn.in_proj_weight", sqrt(6.0 / (4 * vw)) / sqrt(3.0) },
    { "visual.transformer.resblocks.0.mlp.c_fc.weight", 1 / sqrt(vw) / sqrt(3.0) },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(table); i++) {
    double s = tensor_std(a, table[i].name);
    if (fabs(s / table[i].std - 1) > 0.05)
      g_test_fail_printf("%s: std %.5f, expected %.5f", table[i].name, s, table[i].std);
  }
  g_assert_cmpfloat_with_epsilon(*ct_model_logit_scale(a), log(1 / 0.07), 1e-6);
  const CtParamInfo *ln = ct_model_find(a, "ln_final.weight");
  g_assert_cmpfloat(ct_model_params(a)[ln->offset], ==, 1.0f);
  const CtParamInfo *bias = ct_model_find(a, "transformer.resblocks.0.attn.in_proj_bias");
  g_assert_cmpfloat(ct_model_params(a)[bias->offset], ==, 0.0f);
  ct_model_free(a);
  ct_model_free(b);
}

/* ------------------------------------------------------------ passes */

static void
make_batch(const CtConfig *c, int B, float **images, int32_t **tokens)
{
  ct_test_make_batch(c, B, 5, 3, 1, c->context_length - 2, images, tokens);
}

/* Three AdamW steps; returns the losses. */
static void
train_steps(CtModel *m, const float *images, const int32_t *tokens, int B, double *losses,
            int steps)
{
  int E = ct_model_config(m)->embed_dim;
  CtOptimizer *opt = ct_optimizer_new(m, "adamw", NULL);
  ct_optimizer_set(opt, "lr", 1e-3, NULL);
  g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  for (int s = 0; s < steps; s++) {
    g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
    float ds;
    losses[s] = ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m),
                             ct_model_text_features(m), *ct_model_logit_scale(m), B, E);
    ct_model_zero_grad(m);
    ct_model_backward(m, di, dt);
    ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += ds;
    ct_optimizer_step(opt);
  }
  ct_optimizer_free(opt);
}

static void
test_reproducible(void)
{
  int B = 4;
  CtModel *a = tiny_model(B, 9), *b = tiny_model(B, 9);
  float *images;
  int32_t *tokens;
  make_batch(ct_model_config(a), B, &images, &tokens);
  double la[4], lb[4];
  train_steps(a, images, tokens, B, la, 4);
  train_steps(b, images, tokens, B, lb, 4);
  g_assert_cmpmem(la, sizeof la, lb, sizeof lb);
  g_assert_cmpmem(ct_model_params(a), ct_model_n_params(a) * 4, ct_model_params(b),
                  ct_model_n_params(b) * 4);
  g_assert_cmpfloat(la[3], <, la[0]); /* it learns this batch */
  ct_model_free(a);
  ct_model_free(b);
  g_free(images);
  g_free(tokens);
}

/* A sample's features do not depend on the rest of its batch. */
static void
test_batch_independent(void)
{
  int B = 3;
  CtModel *m = tiny_model(B, 2);
  const CtConfig *c = ct_model_config(m);
  float *images;
  int32_t *tokens;
  make_batch(c, B, &images, &tokens);
  int E = c->embed_dim;
  g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
  g_autofree float *img3 = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  g_autofree float *txt3 = g_memdup2(ct_model_text_features(m), sizeof(float) * B * E);
  size_t img_stride = (size_t) 3 * c->image_resolution * c->image_resolution;
  g_assert_true(ct_model_forward(m, images + 2 * img_stride, tokens + 2 * c->context_length, 1,
                                 NULL));
  for (int e = 0; e < E; e++) {
    g_assert_cmpfloat_with_epsilon(ct_model_image_features(m)[e], img3[2 * E + e], 1e-6);
    g_assert_cmpfloat_with_epsilon(ct_model_text_features(m)[e], txt3[2 * E + e], 1e-6);
  }
  ct_model_free(m);
  g_free(images);
  g_free(tokens);
}

/* Gradients and features of one CLIP loss step, into fresh buffers. */
static void
step_grads(CtModel *m, const float *images, const int32_t *tokens, int B, float **grads,
           float **feats)
{
  int E = ct_model_config(m)->embed_dim;
  g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
  float ds;
  ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m), ct_model_text_features(m),
               *ct_model_logit_scale(m), B, E);
  ct_model_zero_grad(m);
  ct_model_backward(m, di, dt);
  *grads = g_memdup2(ct_model_grads(m), ct_model_n_params(m) * 4);
  *feats = g_memdup2(ct_model_text_features(m), sizeof(float) * B * E);
}

/* Readout pruning: the last blocks computed for the read rows only give
 * the features and gradients of the whole blocks, within float rounding,
 * at every precision, with and without checkpointing. */
static void
test_prune_readout(void)
{
  static const struct {
    CtPrecision prec;
    int chunks;
    double ftol, gtol; /* features absolute, gradients relative to the largest */
  } modes[] = {
    { CT_PRECISION_FP32, 0, 1e-6, 1e-5 },
    { CT_PRECISION_FP32, 2, 1e-6, 1e-5 },
    { CT_PRECISION_BF16, 0, 2e-2, 5e-2 },
    { CT_PRECISION_FP16, 3, 4e-3, 1e-2 },
  };
  int B = 4;
  CtConfig cfg;
  g_assert_true(ct_config_preset("fashion", &cfg, NULL)); /* two heads a tower */
  float *images;
  int32_t *tokens;
  make_batch(&cfg, B, &images, &tokens); /* captions of 3 to 6 tokens */
  int E = cfg.embed_dim;
  for (gsize k = 0; k < G_N_ELEMENTS(modes); k++) {
    CtModel *m = ct_model_new(&cfg, B, NULL);
    g_assert_nonnull(m);
    ct_model_init_weights(m, 11);
    g_assert_true(ct_model_set_memory(m, modes[k].prec, modes[k].chunks, NULL));
    size_t n = ct_model_n_params(m);
    float *g[2], *ft[2], *fi[2];
    for (int on = 0; on < 2; on++) {
      ct_model_set_prune_readout(m, on);
      step_grads(m, images, tokens, B, &g[on], &ft[on]);
      fi[on] = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
    }
    double gmax = 0, gdiff = 0, fdiff = 0;
    size_t same = 0;
    for (size_t i = 0; i < n; i++) {
      gmax = MAX(gmax, fabs(g[0][i]));
      gdiff = MAX(gdiff, fabs(g[0][i] - g[1][i]));
      same += g[0][i] == g[1][i];
    }
    for (int i = 0; i < B * E; i++)
      fdiff = MAX(fdiff, MAX(fabs(fi[0][i] - fi[1][i]), fabs(ft[0][i] - ft[1][i])));
    g_test_message("%s, checkpoint %d: features differ by %.2e, gradients by %.2e of %.2e "
                   "(%zu of %zu the same bits)", ct_precision_name(modes[k].prec),
                   modes[k].chunks, fdiff, gdiff, gmax, same, n);
    g_assert_cmpfloat(gmax, >, 0);
    g_assert_cmpfloat(fdiff, <=, modes[k].ftol);
    g_assert_cmpfloat(gdiff, <=, modes[k].gtol * gmax);
    for (int on = 0; on < 2; on++)
      g_free(g[on]), g_free(ft[on]), g_free(fi[on]);
    ct_model_free(m);
  }
  g_free(images);
  g_free(tokens);
}

/* Text trimming: short captions give the untrimmed features and gradients
 * within float rounding; captions that fill the context, the same bits. */
static void
test_trim_text(void)
{
  int B = 4;
  CtModel *m = tiny_model(B, 4);
  const CtConfig *c = ct_model_config(m);
  int T = c->context_length, E = c->embed_dim;
  size_t n = ct_model_n_params(m);
  float *images;
  int32_t *tokens;
  make_batch(c, B, &images, &tokens); /* captions of 3 to 6 tokens of 16 */
  for (int full = 0; full < 2; full++) {
    if (full) { /* the last caption fills the context */
      int32_t *row = tokens + (size_t) (B - 1) * T;
      for (int t = 1; t < T - 1; t++)
        row[t] = 1 + (t * 37) % (c->vocab_size - 3);
      row[T - 1] = c->vocab_size - 1;
    }
    float *g0, *f0, *g1, *f1;
    ct_model_set_trim_text(m, FALSE);
    step_grads(m, images, tokens, B, &g0, &f0);
    ct_model_set_trim_text(m, TRUE);
    step_grads(m, images, tokens, B, &g1, &f1);
    double gmax = 0, gdiff = 0, fdiff = 0;
    for (size_t i = 0; i < n; i++) {
      gmax = MAX(gmax, fabs(g0[i]));
      gdiff = MAX(gdiff, fabs(g0[i] - g1[i]));
    }
    for (int i = 0; i < B * E; i++)
      fdiff = MAX(fdiff, fabs(f0[i] - f1[i]));
    g_test_message("%s captions: features differ by %.2e, gradients by %.2e of %.2e",
                   full ? "full" : "short", fdiff, gdiff, gmax);
    if (full) {
      g_assert_cmpmem(g0, n * 4, g1, n * 4);
      g_assert_cmpmem(f0, sizeof(float) * B * E, f1, sizeof(float) * B * E);
    } else {
      g_assert_cmpfloat(fdiff, <=, 1e-6);
      g_assert_cmpfloat(gdiff, <=, 1e-5 * gmax);
    }
    g_free(g0), g_free(f0), g_free(g1), g_free(f1);
  }
  ct_model_free(m);
  g_free(images);
  g_free(tokens);
}

static void
test_bad_input(void)
{
  int B = 2;
  CtModel *m = tiny_model(B, 1);
  const CtConfig *c = ct_model_config(m);
  float *images;
  int32_t *tokens;
  make_batch(c, B, &images, &tokens);
  GError *error = NULL;
  g_assert_false(ct_model_forward(m, images, tokens, 3, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "batch"));
  g_clear_error(&error);
  tokens[c->context_length + 2] = c->vocab_size; /* row 1, position 2 */
  g_assert_false(ct_model_forward(m, images, tokens, B, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "row 1, position 2"));
  g_clear_error(&error);
  ct_model_free(m);
  g_free(images);
  g_free(tokens);
}

/* ------------------------------------------------------------ checkpoints */

static void
test_save_load(void)
{
  CtModel *a = tiny_model(1, 3), *b = tiny_model(1, 4);
  g_autofree char *path = g_build_filename(tmpdir, "m.safetensors", NULL);
  GError *error = NULL;
  GHashTable *meta = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(meta, "step", "12");
  g_assert_true(ct_model_save(a, path, meta, &error));
  g_assert_no_error(error);
  g_hash_table_unref(meta);
  g_assert_true(ct_model_load(b, path, &error));
  g_assert_no_error(error);
  g_assert_cmpmem(ct_model_params(a), ct_model_n_params(a) * 4, ct_model_params(b),
                  ct_model_n_params(b) * 4);
  CtSafetensors *st = ct_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(ct_safetensors_metadata(st, "step"), ==, "12");
  CtConfig cfg;
  g_assert_true(ct_config_from_metadata(&cfg, st, &error));
  g_assert_cmpmem(&cfg, sizeof cfg, ct_model_config(a), sizeof cfg);
  /* logit_scale is written as a scalar, as in OpenAI's state dict */
  g_assert_cmpint(ct_safetensors_find(st, "logit_scale")->ndim, ==, 0);
  ct_safetensors_free(st);
  ct_model_free(a);
  ct_model_free(b);
}

static uint16_t
to_half(float f)
{
  /* round to nearest even; subnormals kept, overflow not handled (weights are small) */
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  int exp = (int) ((x >> 23) & 0xff) - 127 + 15;
  uint32_t mant = x & 0x7fffff;
  int shift = 13;
  uint32_t h;
  if (exp <= 0) { /* subnormal half: the implicit bit joins the mantissa */
    if (exp < -10)
      return (uint16_t) sign;
    mant |= 0x800000;
    shift = 14 - exp;
    h = mant >> shift;
  } else {
    h = (uint32_t) exp << 10 | mant >> 13;
  }
  uint32_t rest = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (h & 1)))
    h++; /* a carry into the exponent is still the right rounding */
  return (uint16_t) (sign | h);
}

/* OpenAI releases F16 weights; they load, converted to float32. */
static void
test_load_f16(void)
{
  CtModel *a = tiny_model(1, 3), *b = tiny_model(1, 4);
  g_autofree char *path = g_build_filename(tmpdir, "f16.safetensors", NULL);
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  size_t n = ct_model_n_params(a);
  uint16_t *half = g_new(uint16_t, n);
  for (size_t i = 0; i < n; i++)
    half[i] = to_half(ct_model_params(a)[i]);
  for (size_t i = 0; i < ct_model_n_tensors(a); i++) {
    const CtParamInfo *t = ct_model_tensor(a, i);
    g_assert_true(ct_safetensors_writer_add(w, t->name, CT_DTYPE_F16, t->ndim, t->shape,
                                            half + t->offset, NULL));
  }
  GError *error = NULL;
  g_assert_true(ct_safetensors_writer_write(w, path, &error));
  g_assert_no_error(error);
  ct_safetensors_writer_free(w);
  g_assert_true(ct_model_load(b, path, &error));
  g_assert_no_error(error);
  for (size_t i = 0; i < n; i++) {
    float x = ct_model_params(a)[i], y = ct_model_params(b)[i];
    if (fabsf(x - y) > 1e-3f * fabsf(x) + 6e-8f)
      g_test_fail_printf("parameter %zu: %g read back as %g", i, x, y);
  }
  g_free(half);
  ct_model_free(a);
  ct_model_free(b);
}

/* Bad weights, one row each: how the file is spoiled, and the error. */
typedef enum { DROP, RESHAPE, AS_I64, EXTRA, OTHER_CONFIG, TRUNCATE } Spoil;

static const struct {
  const char *what;
  Spoil spoil;
  const char *tensor;
  int code;
  const char *expect;
} bad_weights[] = {
  { "missing tensor", DROP, "visual.ln_post.bias", CT_ERROR_MISSING, "'visual.ln_post.bias' is missing" },
  { "mis-shaped tensor", RESHAPE, "text_projection", CT_ERROR_SHAPE, "'text_projection' has shape [64, 63]" },
  { "integer weights", AS_I64, "visual.proj", CT_ERROR_DTYPE, "'visual.proj' has dtype I64" },
  { "unknown tensor", EXTRA, "visual.attnpool.q_proj.weight", CT_ERROR_CONFIG, "'visual.attnpool.q_proj.weight' is not a parameter" },
  { "config mismatch", OTHER_CONFIG, "positional_embedding", CT_ERROR_SHAPE, "the config does not match the weights" },
  { "truncated file", TRUNCATE, NULL, CT_ERROR_FORMAT, "" },
};

static void
test_bad_weights(void)
{
  for (size_t k = 0; k < G_N_ELEMENTS(bad_weights); k++) {
    CtModel *a = tiny_model(1, 3);
    g_autofree char *path = g_strdup_printf("%s/bad%zu.safetensors", tmpdir, k);
    CtSafetensorsWriter *w = ct_safetensors_writer_new();
    int64_t odd[2] = { 64, 63 };
    static int64_t ints[64 * 64];
    for (size_t i = 0; i < ct_model_n_tensors(a); i++) {
      const CtParamInfo *t = ct_model_tensor(a, i);
      gboolean hit = bad_weights[k].tensor && g_str_equal(t->name, bad_weights[k].tensor);
      const float *data = ct_model_params(a) + t->offset;
      if (hit && bad_weights[k].spoil == DROP)
        continue;
      if (hit && bad_weights[k].spoil == RESHAPE)
        g_assert_true(ct_safetensors_writer_add(w, t->name, CT_DTYPE_F32, 2, odd, data, NULL));
      else if (hit && bad_weights[k].spoil == AS_I64)
        g_assert_true(ct_safetensors_writer_add(w, t->name, CT_DTYPE_I64, t->ndim, t->shape,
                                                ints, NULL));
      else
        g_assert_true(ct_safetensors_writer_add(w, t->name, CT_DTYPE_F32, t->ndim, t->shape,
                                                data, NULL));
    }
    if (bad_weights[k].spoil == EXTRA) {
      int64_t shape[1] = { 4 };
      g_assert_true(ct_safetensors_writer_add(w, bad_weights[k].tensor, CT_DTYPE_F32, 1, shape,
                                              ct_model_params(a), NULL));
    }
    g_assert_true(ct_safetensors_writer_write(w, path, NULL));
    ct_safetensors_writer_free(w);
    if (bad_weights[k].spoil == TRUNCATE) {
      g_autofree char *data = NULL;
      gsize len;
      g_assert_true(g_file_get_contents(path, &data, &len, NULL));
      g_assert_true(g_file_set_contents(path, data, len / 2, NULL));
    }
    CtModel *b = a;
    if (bad_weights[k].spoil == OTHER_CONFIG) {
      CtConfig cfg = *ct_model_config(a);
      cfg.context_length = 20;
      b = ct_model_new(&cfg, 1, NULL);
    }
    GError *error = NULL;
    g_assert_false(ct_model_load(b, path, &error));
    g_test_message("%s: %s", bad_weights[k].what, error ? error->message : "(no error)");
    g_assert_error(error, CT_ERROR, bad_weights[k].code);
    g_assert_true(g_str_has_prefix(error->message, path)); /* names the file */
    g_assert_nonnull(strstr(error->message, bad_weights[k].expect));
    g_clear_error(&error);
    if (b != a)
      ct_model_free(b);
    ct_model_free(a);
  }
}

/* A failed load leaves the model as it was. */
static void
test_failed_load_changes_nothing(void)
{
  CtModel *a = tiny_model(1, 3);
  g_autofree char *path = g_build_filename(tmpdir, "bad0.safetensors", NULL);
  g_autofree float *before = g_memdup2(ct_model_params(a), ct_model_n_params(a) * 4);
  g_assert_false(ct_model_load(a, path, NULL));
  g_assert_cmpmem(before, ct_model_n_params(a) * 4, ct_model_params(a),
                  ct_model_n_params(a) * 4);
  ct_model_free(a);
}

/* Released gradient pages are populated in one call before each block's
 * backward (ct_model_prepare_grads): a product accumulating into a
 * released page would otherwise fault it twice, a read of the zero page
 * and then a copy on write, and at vitb32's size those faults cost a
 * quarter of a step.  The faults between two consecutive blocks' hooks
 * are one block's backward: at most one a page, where two a page is what
 * the kernel does unprompted (probed first).  The gradients are those of
 * a backward into cleared, resident buffers, bit for bit. */
typedef struct {
  long faults[64];
  size_t off[64], n[64];
  int k;
} FaultLog;

static long
minor_faults(void)
{
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

static void
fault_hook(void *data, size_t off, size_t n)
{
  FaultLog *l = data;
  if (l->k < 64) {
    l->faults[l->k] = minor_faults();
    l->off[l->k] = off;
    l->n[l->k++] = n;
  }
}

/* Why this kernel's fault counts cannot tell (NULL when they can). */
static const char *
fault_counts_unusable(void)
{
#ifdef CT_TEST_ASAN
  return "AddressSanitizer's shadow memory faults too";
#endif
  long page = sysconf(_SC_PAGESIZE);
  size_t len = 64 * (size_t) page;
  char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  g_assert_true(p != MAP_FAILED);
  gboolean populate = madvise(p, len, MADV_POPULATE_WRITE) == 0;
  munmap(p, len);
  if (!populate)
    return "this kernel lacks MADV_POPULATE_WRITE (Linux 5.14)";
  p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  g_assert_true(p != MAP_FAILED);
  long f0 = minor_faults();
  for (size_t i = 0; i < len; i += (size_t) page) {
    volatile char *v = p + i;
    char c = *v;
    *v = (char) (c + 1);
  }
  long twice = minor_faults() - f0;
  munmap(p, len);
  return twice < 2 * 64 ? "this kernel does not fault a read-then-written page twice" : NULL;
}

static void
test_released_grads_populated(void)
{
  int B = 2;
  CtConfig cfg;
  g_assert_true(ct_config_preset("small", &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, B, NULL);
  g_assert_nonnull(m);
  ct_model_init_weights(m, 4);
  float *images;
  int32_t *tokens;
  make_batch(&cfg, B, &images, &tokens);
  float *want, *feats;
  step_grads(m, images, tokens, B, &want, &feats); /* into resident, cleared buffers */

  size_t n = ct_model_n_params(m);
  int E = cfg.embed_dim;
  g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
  float ds;
  ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m), ct_model_text_features(m),
               *ct_model_logit_scale(m), B, E);
  ct_model_release_grads(m, 0, n);
  FaultLog log = { .k = 0 };
  ct_model_set_backward_hook(m, fault_hook, &log);
  ct_model_backward(m, di, dt);
  g_assert_cmpmem(want, n * 4, ct_model_grads(m), n * 4);

  const char *why = fault_counts_unusable();
  long page = sysconf(_SC_PAGESIZE);
  int checked = 0;
  for (int k = 1; k < log.k && !why; k++) {
    if (log.off[k] + log.n[k] != log.off[k - 1])
      continue; /* not the block just before in the same tower */
    long pages = (long) ((log.n[k] * sizeof(float) + (size_t) page - 1) / (size_t) page) + 1;
    long faults = log.faults[k] - log.faults[k - 1];
    if (faults > pages + 8)
      g_error("a block's backward into %ld released gradient pages faulted %ld times", pages,
              faults);
    checked++;
  }
  if (!why)
    g_assert_cmpint(checked, >=, 2 * (cfg.vision_layers - 1) - 1);
  ct_model_free(m);
  g_free(want);
  g_free(feats);
  g_free(images);
  g_free(tokens);
  if (why) /* the gradients were checked; the fault counts could not be */
    g_test_skip(why);
}

/* The block scratch (ct_model_set_block_grads_scratch): each residual
 * block's gradients reach the backward hook through ct_model_ready_grads,
 * outside the flat buffer, with the bits of an ordinary backward; the flat
 * buffer's block ranges stay zero and, released before, take no memory;
 * the other tensors' gradients land in the flat buffer as usual; and with
 * the scratch off again, backward writes the flat buffer once more.  For
 * the ViT preset and the ResNet one. */
typedef struct {
  CtModel *m;
  float *got;   /* (n_params) the hook's gradients, by flat offset */
  char *block;  /* (n_params) 1 where a block's range lies */
  int calls;
  size_t total;   /* the hook's ranges' lengths, summed */
  size_t largest; /* and the longest */
} ScratchLog;

static void
scratch_hook(void *data, size_t off, size_t n)
{
  ScratchLog *l = data;
  float *g = ct_model_ready_grads(l->m);
  float *flat = ct_model_grads(l->m);
  g_assert_nonnull(g);
  g_assert_true(g + n <= flat || g >= flat + ct_model_n_params(l->m));
  memcpy(l->got + off, g, n * sizeof(float));
  memset(l->block + off, 1, n);
  l->calls++;
  l->total += n;
  l->largest = MAX(l->largest, n);
}

/* Whole pages of [P, P + BYTES) that are resident. */
static size_t
resident_pages(const void *p, size_t bytes)
{
  size_t page = (size_t) sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t) p + page - 1) & ~(uintptr_t) (page - 1);
  uintptr_t hi = ((uintptr_t) p + bytes) & ~(uintptr_t) (page - 1);
  if (hi <= lo)
    return 0;
  size_t np = (hi - lo) / page, count = 0;
  unsigned char *vec = g_new(unsigned char, np);
  g_assert_cmpint(mincore((void *) lo, hi - lo, vec), ==, 0);
  for (size_t i = 0; i < np; i++)
    count += vec[i] & 1;
  g_free(vec);
  return count;
}

static void
check_block_scratch(const char *preset)
{
  int B = 2;
  CtConfig cfg;
  g_assert_true(ct_config_preset(preset, &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, B, NULL);
  g_assert_nonnull(m);
  ct_model_init_weights(m, 4);
  float *images;
  int32_t *tokens;
  make_batch(&cfg, B, &images, &tokens);
  float *want, *feats;
  step_grads(m, images, tokens, B, &want, &feats); /* the flat buffer, as usual */

  size_t n = ct_model_n_params(m);
  int E = cfg.embed_dim;
  g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  ScratchLog log = { .m = m, .got = g_new0(float, n), .block = g_new0(char, n) };
  g_assert_true(ct_model_set_block_grads_scratch(m, TRUE, NULL));
  g_assert_true(ct_model_set_block_grads_scratch(m, TRUE, NULL)); /* again: no change */
  ct_model_set_backward_hook(m, scratch_hook, &log);
  g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
  float ds;
  ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m), ct_model_text_features(m),
               *ct_model_logit_scale(m), B, E);
  ct_model_release_grads(m, 0, n);
  ct_model_backward(m, di, dt);
  g_assert_null(ct_model_ready_grads(m)); /* outside the hook */
  /* every block of both towers, and a ResNet's attention pool */
  g_assert_cmpint(log.calls, ==,
                  cfg.transformer_layers + cfg.vision_layers + ct_config_is_resnet(&cfg));
  const float *flat = ct_model_grads(m);
  /* the first run of blocks' whole pages were released and never touched
   * again (checked before anything reads them: a read maps the zero page,
   * which mincore counts) */
  size_t first = 0;
  while (!log.block[first])
    first++;
  size_t last = first;
  while (last < n && log.block[last])
    last++;
  g_assert_cmpuint(resident_pages(flat + first, (last - first) * sizeof(float)), ==, 0);
  size_t in_blocks = 0;
  for (size_t i = 0; i < n; i++) {
    if (log.block[i]) {
      in_blocks++;
      if (memcmp(&log.got[i], &want[i], sizeof(float)) != 0)
        g_error("%s: block gradient %zu is %.9g in the scratch, %.9g by the flat buffer", preset,
                i, log.got[i], want[i]);
      if (flat[i] != 0.0f)
        g_error("%s: the flat buffer's block range holds %.9g at %zu", preset, flat[i], i);
    } else if (memcmp(&flat[i], &want[i], sizeof(float)) != 0) {
      g_error("%s: gradient %zu outside the blocks is %.9g, not %.9g", preset, i, flat[i],
              want[i]);
    }
  }
  g_assert_cmpuint(in_blocks, >, 0);
  g_assert_cmpuint(in_blocks, ==, log.total); /* ranges that do not overlap */
  /* what --max-batch-size counts resident */
  g_assert_cmpuint(ct_config_fused_grads(&cfg), ==, n - log.total + log.largest);

  /* off again: the flat buffer once more, the same bits */
  g_assert_true(ct_model_set_block_grads_scratch(m, FALSE, NULL));
  ct_model_set_backward_hook(m, NULL, NULL);
  g_free(want);
  g_free(feats);
  float *again;
  step_grads(m, images, tokens, B, &again, &feats);
  g_free(feats);
  step_grads(m, images, tokens, B, &want, &feats);
  g_assert_cmpmem(again, n * 4, want, n * 4);
  for (size_t i = first; i < last; i++)
    g_assert_cmpmem(&again[i], 4, &log.got[i], 4);
  ct_model_free(m);
  g_free(again);
  g_free(want);
  g_free(feats);
  g_free(images);
  g_free(tokens);
  g_free(log.got);
  g_free(log.block);
}

static void
test_block_grads_scratch(void)
{
  check_block_scratch("small");
  check_block_scratch("rn");
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("ct-test-model-XXXXXX", NULL);
  g_test_add_func("/model/presets", test_presets);
  g_test_add_func("/model/layout", test_layout);
  g_test_add_func("/model/init", test_init);
  g_test_add_func("/model/reproducible", test_reproducible);
  g_test_add_func("/model/batch-independent", test_batch_independent);
  g_test_add_func("/model/trim-text", test_trim_text);
  g_test_add_func("/model/prune-readout", test_prune_readout);
  g_test_add_func("/model/bad-input", test_bad_input);
  g_test_add_func("/model/save-load", test_save_load);
  g_test_add_func("/model/load-f16", test_load_f16);
  g_test_add_func("/model/bad-weights", test_bad_weights);
  g_test_add_func("/model/failed-load-changes-nothing", test_failed_load_changes_nothing);
  g_test_add_func("/model/released-grads-populated", test_released_grads_populated);
  g_test_add_func("/model/block-grads-scratch", test_block_grads_scratch);
  int rc = g_test_run();
  ct_test_remove_dir(tmpdir);
  g_free(tmpdir);
  return rc;
}

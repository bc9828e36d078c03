/* test-resnet: the ModifiedResNet image tower at the model level:
 * parameter counts (OpenAI's published RN50/RN101/RN50x4 sizes), the
 * initialisation, weight-decay flags, config from the shapes, running
 * statistics in checkpoints (F32 and a synthetic F16 RN50 state dict with
 * num_batches_tracked), training and eval modes, activation checkpointing
 * and half precision (gradients bit-identical with and without
 * checkpointing), the backward hook, and the activation arena's size. */
#include "config.h"

#include "model/model-private.h"
#include "test-util.h"

#include <cliptrain/cliptrain.h>

#include <math.h>
#include <string.h>

static char *tmpdir;

static CtConfig
preset(const char *name)
{
  CtConfig cfg;
  GError *error = NULL;
  g_assert_true(ct_config_preset(name, &cfg, &error));
  g_assert_no_error(error);
  return cfg;
}

/* A small ResNet: 2,1,1,2 blocks (identity shortcuts in layer1 and
 * layer4), 64 px, width 8, a 1-layer text tower. */
static CtConfig
small_rn(void)
{
  CtConfig c = preset("rn");
  c.vision_width = 8, c.vision_heads = 2, c.vision_layers = 0;
  c.vision_stages[0] = 2, c.vision_stages[1] = 1, c.vision_stages[2] = 1, c.vision_stages[3] = 2;
  c.embed_dim = 16, c.context_length = 8, c.vocab_size = 50, c.transformer_width = 16;
  c.transformer_layers = 1;
  GError *error = NULL;
  g_assert_true(ct_config_validate(&c, &error));
  g_assert_no_error(error);
  return c;
}

static CtModel *
new_model(const CtConfig *cfg, int batch, uint64_t seed)
{
  GError *error = NULL;
  CtModel *m = ct_model_new(cfg, batch, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, seed);
  /* OpenAI's init zeroes every bn3 gain, which makes each residual branch
   * vanish; give them values so that every tensor matters */
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *t = ct_model_tensor(m, i);
    if (g_str_has_suffix(t->name, "bn3.weight") && strstr(t->name, "layer"))
      for (size_t k = 0; k < t->numel; k++)
        ct_model_params(m)[t->offset + k] = 0.5f + 0.01f * (float) (k % 7);
  }
  return m;
}

/* Seeded images (B, 3, R, R) and token rows (B, T). */
static void
inputs(const CtConfig *c, int B, float **images, int32_t **tokens)
{
  CtRng rng;
  ct_rng_init(&rng, 99);
  size_t n = (size_t) B * 3 * c->image_resolution * c->image_resolution;
  *images = g_new(float, n);
  ct_rng_normal_fill(&rng, *images, n, 1.0);
  *tokens = g_new0(int32_t, (size_t) B * c->context_length);
  for (int b = 0; b < B; b++) {
    int32_t *t = *tokens + (size_t) b * c->context_length;
    int len = 3 + b % (c->context_length - 2);
    t[0] = c->vocab_size - 2;
    for (int i = 1; i < len - 1; i++)
      t[i] = 1 + (b * 7 + i * 3) % (c->vocab_size - 3);
    t[len - 1] = c->vocab_size - 1;
  }
}

/* One forward (training mode) and backward from fixed feature gradients;
 * returns a copy of the gradients. */
static float *
grads_of(CtModel *m, const float *images, const int32_t *tokens, int B)
{
  const CtConfig *c = ct_model_config(m);
  GError *error = NULL;
  g_assert_true(ct_model_forward(m, images, tokens, B, &error));
  g_assert_no_error(error);
  size_t n = (size_t) B * c->embed_dim;
  g_autofree float *di = g_new(float, n), *dt = g_new(float, n);
  for (size_t i = 0; i < n; i++) {
    di[i] = (float) sin(0.37 * i);
    dt[i] = (float) cos(0.23 * i);
  }
  ct_model_zero_grad(m);
  ct_model_backward(m, di, dt);
  return g_memdup2(ct_model_grads(m), sizeof(float) * ct_model_n_params(m));
}

/* ------------------------------------------------------------ sizes */

/* OpenAI's released models: RN50 102,007,137 parameters, RN101
 * 119,688,033, RN50x4 178,300,601 (as counted from their state dicts,
 * without buffers). */
static void
test_param_counts(void)
{
  static const struct {
    const char *name;
    size_t n;
  } want[] = { { "rn50", 102007137 }, { "rn101", 119688033 }, { "rn50x4", 178300601 } };
  for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
    CtConfig c = preset(want[i].name);
    g_assert_true(ct_config_validate(&c, NULL));
    g_test_message("%s: %zu parameters", want[i].name, ct_config_n_params(&c));
    g_assert_cmpuint(ct_config_n_params(&c), ==, want[i].n);
  }
  /* the model's own layout agrees with the count */
  CtConfig c = small_rn();
  CtModel *m = new_model(&c, 1, 1);
  g_assert_cmpuint(ct_model_n_params(m), ==, ct_config_n_params(&c));
  g_assert_true(ct_config_step_flops(&c, 4, c.context_length) > 0);
  ct_model_free(m);
}

static void
test_init_and_decay(void)
{
  CtConfig c = small_rn();
  GError *error = NULL;
  CtModel *m = ct_model_new(&c, 1, &error);
  ct_model_init_weights(m, 3);
  const float *p = ct_model_params(m);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *t = ct_model_tensor(m, i);
    const char *n = t->name;
    if (!g_str_has_prefix(n, "visual."))
      continue;
    gboolean bn = strstr(n, ".bn") || strstr(n, "downsample.1.");
    gboolean conv = g_str_has_suffix(n, "conv1.weight") || g_str_has_suffix(n, "conv2.weight") ||
                    g_str_has_suffix(n, "conv3.weight") || g_str_has_suffix(n, "downsample.0.weight");
    gboolean proj_w = strstr(n, "attnpool.") && strstr(n, "_proj.weight");
    /* decay: convolution and projection weights only */
    if (t->decay != (conv || proj_w))
      g_error("%s: decay %d", n, t->decay);
    double s = 0, q = 0;
    for (size_t k = 0; k < t->numel; k++)
      s += p[t->offset + k], q += (double) p[t->offset + k] * p[t->offset + k];
    if (bn && g_str_has_suffix(n, "bn3.weight") && strstr(n, "layer"))
      g_assert_cmpfloat(q, ==, 0.0); /* OpenAI zeroes every Bottleneck's bn3 gain */
    else if (bn && g_str_has_suffix(n, ".weight"))
      g_assert_cmpfloat(s, ==, (double) t->numel);
    else if (bn)
      g_assert_cmpfloat(q, ==, 0.0);
    if (proj_w) { /* N(0, C^-0.5), C = 32 * width */
      double std = sqrt(q / t->numel), want = 1.0 / sqrt(32.0 * c.vision_width);
      g_assert_cmpfloat(fabs(std / want - 1), <, 0.05);
    }
  }
  /* the optimizer's default no_decay globs agree with CtParamInfo.decay */
  CtOptimizer *opt = ct_optimizer_new(m, "adamw", &error);
  g_assert_no_error(error);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++)
    if (ct_optimizer_decays(opt, i) != ct_model_tensor(m, i)->decay)
      g_error("%s: the optimizer decays it: %d, CtParamInfo.decay %d", ct_model_tensor(m, i)->name,
              ct_optimizer_decays(opt, i), ct_model_tensor(m, i)->decay);
  ct_optimizer_free(opt);
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *t = ct_model_buffer_tensor(m, i);
    float want = g_str_has_suffix(t->name, "running_var") ? 1.0f : 0.0f;
    for (size_t k = 0; k < t->numel; k++)
      g_assert_cmpfloat(ct_model_buffers(m)[t->offset + k], ==, want);
  }
  ct_model_free(m);
  /* a ViT has no buffers */
  CtConfig v = preset("tiny");
  m = ct_model_new(&v, 1, &error);
  g_assert_cmpuint(ct_model_n_buffer_floats(m), ==, 0);
  g_assert_null(ct_model_buffers(m));
  ct_model_free(m);
}

static void
test_bad_configs(void)
{
  CtConfig c = preset("rn");
  c.image_resolution = 48; /* not a multiple of 32 */
  GError *error = NULL;
  g_assert_false(ct_config_validate(&c, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_clear_error(&error);
  c = preset("rn");
  c.vision_stages[2] = 0;
  g_assert_false(ct_config_validate(&c, &error));
  g_assert_nonnull(strstr(error->message, "vision_stage3"));
  g_clear_error(&error);
  c = preset("rn");
  c.vision_layers = 7; /* not the stages' sum */
  g_assert_false(ct_config_validate(&c, &error));
  g_clear_error(&error);
  c = preset("tiny");
  c.vision_stages[0] = 2; /* stages on a ViT */
  g_assert_false(ct_config_validate(&c, &error));
  g_clear_error(&error);
  g_assert_true(ct_config_set(&c, "vision_stage1", 0, &error));
  g_assert_cmpint(ct_config_get(&c, "vision_stage1"), ==, 0);
}

/* ------------------------------------------------------------ checkpoints */

static void
write_state_dict(CtModel *m, const char *path, CtDtype dtype, gboolean nbt)
{
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  GPtrArray *keep = g_ptr_array_new_with_free_func(g_free);
  GError *error = NULL;
  static const int64_t zero = 0;
  for (int pass = 0; pass < 2; pass++) {
    size_t n = pass ? ct_model_n_buffer_tensors(m) : ct_model_n_tensors(m);
    for (size_t i = 0; i < n; i++) {
      const CtParamInfo *t = pass ? ct_model_buffer_tensor(m, i) : ct_model_tensor(m, i);
      const float *src = (pass ? ct_model_buffers(m) : ct_model_params(m)) + t->offset;
      const void *data = src;
      if (dtype == CT_DTYPE_F16) {
        uint16_t *h = g_new(uint16_t, t->numel);
        for (size_t k = 0; k < t->numel; k++) { /* round to nearest (test data: no ties) */
          float f = src[k];
          h[k] = 0;
          union { float f; uint32_t u; } v = { f };
          uint32_t sign = (v.u >> 16) & 0x8000;
          float a = fabsf(f);
          if (a < 6.1035156e-05f) { /* subnormal or zero */
            h[k] = (uint16_t) (sign | (uint32_t) lrintf(a / 5.9604645e-08f));
          } else {
            int e;
            float mant = frexpf(a, &e); /* a = mant * 2^e, mant in [0.5, 1) */
            uint32_t m10 = (uint32_t) lrintf((mant * 2 - 1) * 1024);
            if (m10 == 1024)
              m10 = 0, e++;
            h[k] = (uint16_t) (sign | (uint32_t) (e - 1 + 15) << 10 | m10);
          }
        }
        g_ptr_array_add(keep, h);
        data = h;
      }
      int64_t one = 1;
      g_assert_true(ct_safetensors_writer_add(w, t->name, dtype, t->ndim ? t->ndim : 1,
                                              t->ndim ? t->shape : &one, data, &error));
      if (pass && nbt && g_str_has_suffix(t->name, "running_var")) {
        g_autofree char *stem = g_strndup(t->name, strlen(t->name) - strlen("running_var"));
        g_autofree char *k = g_strconcat(stem, "num_batches_tracked", NULL);
        g_assert_true(ct_safetensors_writer_add(w, k, CT_DTYPE_I64, 0, NULL, &zero, &error));
      }
    }
  }
  g_assert_true(ct_safetensors_writer_write(w, path, &error));
  g_assert_no_error(error);
  ct_safetensors_writer_free(w);
  g_ptr_array_free(keep, TRUE);
}

/* ct_model_save writes the running statistics and the config; a model
 * read back has the same parameters, buffers and config. */
static void
test_save_load(void)
{
  CtConfig c = small_rn();
  CtModel *a = new_model(&c, 2, 5);
  for (size_t i = 0; i < ct_model_n_buffer_floats(a); i++)
    ct_model_buffers(a)[i] = 0.25f + 0.001f * (float) i;
  g_autofree char *path = g_build_filename(tmpdir, "rn.safetensors", NULL);
  GError *error = NULL;
  g_assert_true(ct_model_save(a, path, NULL, &error));
  g_assert_no_error(error);
  CtModel *b = ct_model_new_from_file(path, 2, &error);
  g_assert_no_error(error);
  g_assert_true(ct_config_is_resnet(ct_model_config(b)));
  ct_test_assert_same_config(&c, ct_model_config(b));
  g_assert_cmpmem(ct_model_params(a), sizeof(float) * ct_model_n_params(a), ct_model_params(b),
                  sizeof(float) * ct_model_n_params(b));
  g_assert_cmpmem(ct_model_buffers(a), sizeof(float) * ct_model_n_buffer_floats(a),
                  ct_model_buffers(b), sizeof(float) * ct_model_n_buffer_floats(b));
  ct_model_free(b);

  /* without metadata, with num_batches_tracked: the config from the shapes */
  g_autofree char *bare = g_build_filename(tmpdir, "bare.safetensors", NULL);
  write_state_dict(a, bare, CT_DTYPE_F32, TRUE);
  b = ct_model_new_from_file(bare, 2, &error);
  g_assert_no_error(error);
  CtConfig heads = c; /* without metadata the pool's heads are OpenAI's width * 32 / 64 */
  heads.vision_heads = c.vision_width * 32 / 64;
  ct_test_assert_same_config(&heads, ct_model_config(b));
  g_assert_cmpmem(ct_model_buffers(a), sizeof(float) * ct_model_n_buffer_floats(a),
                  ct_model_buffers(b), sizeof(float) * ct_model_n_buffer_floats(b));
  ct_model_free(b);

  /* a strict load needs the running statistics */
  CtModel *v = ct_model_new(&c, 1, &error);
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  for (size_t i = 0; i < ct_model_n_tensors(a); i++) {
    const CtParamInfo *t = ct_model_tensor(a, i);
    int64_t one = 1;
    ct_safetensors_writer_add(w, t->name, CT_DTYPE_F32, t->ndim ? t->ndim : 1,
                              t->ndim ? t->shape : &one, ct_model_params(a) + t->offset, NULL);
  }
  g_autofree char *nobuf = g_build_filename(tmpdir, "nobuf.safetensors", NULL);
  g_assert_true(ct_safetensors_writer_write(w, nobuf, &error));
  ct_safetensors_writer_free(w);
  g_assert_false(ct_model_load(v, nobuf, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_MISSING);
  g_assert_nonnull(strstr(error->message, "running"));
  g_clear_error(&error);
  ct_model_free(v);
  ct_model_free(a);
}

/* OpenAI's RN50 state dict as F16, with num_batches_tracked and without
 * metadata, loads: the config is rn50's and the values are the F16 ones. */
static void
test_rn50_f16(void)
{
  CtConfig c = preset("rn50");
  GError *error = NULL;
  CtModel *a = ct_model_new(&c, 1, &error);
  g_assert_no_error(error);
  ct_model_init_weights(a, 11);
  for (size_t i = 0; i < ct_model_n_buffer_floats(a); i++)
    ct_model_buffers(a)[i] = 0.5f + (float) (i % 5);
  g_autofree char *path = g_build_filename(tmpdir, "rn50-f16.safetensors", NULL);
  write_state_dict(a, path, CT_DTYPE_F16, TRUE);
  CtModel *b = ct_model_new_from_file(path, 1, &error);
  g_assert_no_error(error);
  CtConfig want = c;
  g_assert_true(ct_config_validate(&want, NULL));
  ct_test_assert_same_config(&want, ct_model_config(b));
  double worst = 0;
  for (size_t i = 0; i < ct_model_n_params(a); i++) {
    double x = ct_model_params(a)[i], y = ct_model_params(b)[i];
    worst = fmax(worst, fabs(x - y) / fmax(fabs(x), 6.1e-5));
  }
  g_test_message("rn50 F16: worst relative difference %.3g", worst);
  g_assert_cmpfloat(worst, <=, 1.0 / 1024); /* F16 keeps 11 bits */
  g_assert_cmpmem(ct_model_buffers(a), sizeof(float) * ct_model_n_buffer_floats(a),
                  ct_model_buffers(b), sizeof(float) * ct_model_n_buffer_floats(b));
  ct_model_free(b);
  ct_model_free(a);
  g_unlink(path);
}

/* ------------------------------------------------------------ modes */

static void
test_modes(void)
{
  CtConfig c = small_rn();
  int B = 3;
  CtModel *m = new_model(&c, B, 7);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  inputs(&c, B, &images, &tokens);
  GError *error = NULL;
  size_t nb = ct_model_n_buffer_floats(m), E = c.embed_dim;
  g_autofree float *b0 = g_memdup2(ct_model_buffers(m), sizeof(float) * nb);
  g_assert_true(ct_model_training(m));
  g_assert_true(ct_model_encode_image(m, images, B, &error));
  g_autofree float *train = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  /* training mode moved the running statistics */
  g_assert_true(memcmp(b0, ct_model_buffers(m), sizeof(float) * nb) != 0);
  g_autofree float *b1 = g_memdup2(ct_model_buffers(m), sizeof(float) * nb);

  ct_model_set_training(m, FALSE);
  g_assert_true(ct_model_encode_image(m, images, B, &error));
  g_autofree float *eval = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  g_assert_cmpmem(b1, sizeof(float) * nb, ct_model_buffers(m), sizeof(float) * nb);
  g_assert_true(memcmp(train, eval, sizeof(float) * B * E) != 0);
  /* eval mode: an image's features do not depend on the rest of the batch */
  size_t img = (size_t) 3 * c.image_resolution * c.image_resolution;
  g_assert_true(ct_model_encode_image(m, images + img, 1, &error));
  double d = 0;
  for (size_t i = 0; i < E; i++)
    d = fmax(d, fabs(ct_model_image_features(m)[i] - eval[E + i]));
  g_assert_cmpfloat(d, <, 1e-5);
  /* training mode: they do (batch statistics) */
  ct_model_set_training(m, TRUE);
  g_assert_true(ct_model_encode_image(m, images, 2, &error));
  g_autofree float *two = g_memdup2(ct_model_image_features(m), sizeof(float) * 2 * E);
  g_assert_true(ct_model_encode_image(m, images, 3, &error));
  d = 0;
  for (size_t i = 0; i < E; i++)
    d = fmax(d, fabs(ct_model_image_features(m)[i] - two[i]));
  g_assert_cmpfloat(d, >, 1e-4);
  ct_model_free(m);
}

/* ------------------------------------------------------------ memory */

typedef struct {
  GArray *ranges; /* of size_t pairs */
  CtModel *m;
  GPtrArray *snaps;
} HookLog;

static void
hook(void *data, size_t off, size_t n)
{
  HookLog *h = data;
  size_t r[2] = { off, n };
  g_array_append_vals(h->ranges, r, 2);
  g_ptr_array_add(h->snaps, g_memdup2(ct_model_grads(h->m) + off, sizeof(float) * n));
}

/* Gradients (and running statistics) with activation checkpointing equal
 * those without, bit for bit, at every precision; half precision is near
 * float32 but not equal to it. */
static void
test_checkpointing_precision(void)
{
  CtConfig c = small_rn();
  int B = 3;
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  inputs(&c, B, &images, &tokens);
  float *ref32 = NULL;
  for (int prec = CT_PRECISION_FP32; prec <= CT_PRECISION_FP16; prec++) {
    float *ref = NULL, *refbuf = NULL;
    size_t n = 0, nb = 0;
    static const int chunks[] = { 0, 1, 2, 3, 6 };
    for (size_t k = 0; k < G_N_ELEMENTS(chunks); k++) {
      CtModel *m = new_model(&c, B, 21);
      GError *error = NULL;
      g_assert_true(ct_model_set_memory(m, prec, chunks[k], &error));
      g_assert_no_error(error);
      g_assert_cmpuint(ct_model_activation_bytes(m), ==,
                       ct_config_activation_bytes(&c, B, prec, chunks[k]));
      /* without checkpointing stage 1's and 4's first outputs are
       * recomputed in backward (the bits compared below) */
      if (chunks[k] == 0)
        g_assert_true(m->rn.blocks[0].yr && m->rn.blocks[4].yr);
      float *g = grads_of(m, images, tokens, B);
      n = ct_model_n_params(m);
      nb = ct_model_n_buffer_floats(m);
      if (!ref) {
        ref = g;
        refbuf = g_memdup2(ct_model_buffers(m), sizeof(float) * nb);
      } else {
        g_test_message("%s, %d chunks: %zu activation bytes", ct_precision_name(prec), chunks[k],
                       ct_model_activation_bytes(m));
        g_assert_cmpmem(g, sizeof(float) * n, ref, sizeof(float) * n);
        g_assert_cmpmem(ct_model_buffers(m), sizeof(float) * nb, refbuf, sizeof(float) * nb);
        g_free(g);
      }
      ct_model_free(m);
    }
    if (prec == CT_PRECISION_FP32) {
      ref32 = ref;
    } else {
      /* products were rounded: the gradients differ from float32's, but
       * point the same way.  (This small random ResNet, BatchNorm over
       * 2x2 maps included, is sensitive: a 0.4% relative change of its
       * float32 weights moves its gradients by about 35%, as much as bf16
       * does; so the check is on the direction.) */
      double dot = 0, a2 = 0, b2 = 0, diff = 0;
      for (size_t i = 0; i < n; i++) {
        dot += (double) ref32[i] * ref[i];
        a2 += (double) ref32[i] * ref32[i];
        b2 += (double) ref[i] * ref[i];
        diff = fmax(diff, fabs(ref32[i] - ref[i]));
      }
      double cosine = dot / sqrt(a2 * b2);
      g_test_message("%s: cosine with the fp32 gradient %.4f", ct_precision_name(prec), cosine);
      g_assert_cmpfloat(diff, >, 0);
      g_assert_cmpfloat(cosine, >, 0.85);
      g_free(ref);
    }
    g_free(refbuf);
  }
  g_free(ref32);

  /* checkpointing keeps less: with 6 blocks in 6 segments, fewer bytes */
  g_assert_cmpuint(ct_config_activation_bytes(&c, 8, CT_PRECISION_FP32, 6), <,
                   ct_config_activation_bytes(&c, 8, CT_PRECISION_FP32, 0));
  CtConfig r50 = preset("rn50");
  g_assert_cmpuint(ct_config_activation_bytes(&r50, 4, CT_PRECISION_FP32, 4), <,
                   ct_config_activation_bytes(&r50, 4, CT_PRECISION_FP32, 0));
  /* rn50 recomputes its block outputs but each stage's last in backward
   * (at bf16 those of the stages whose outputs fit in the dead stages
   * above: not layer3's), and bf16 keeps the stem's and the blocks' BN
   * inputs and pooled maps, and the outputs it keeps, as 16-bit codes: its
   * 15 extra samples (batch 16 less batch 1) take at most 80% of float32's
   * (78% when written) */
  double extra[2];
  for (int k = 0; k < 2; k++) {
    CtPrecision p = k ? CT_PRECISION_BF16 : CT_PRECISION_FP32;
    extra[k] = (double) ct_config_activation_bytes(&r50, 16, p, 0) -
               (double) ct_config_activation_bytes(&r50, 1, p, 0);
  }
  g_test_message("rn50, 15 extra samples: fp32 %.1f MiB, bf16 %.1f MiB", extra[0] / 1048576,
                 extra[1] / 1048576);
  g_assert_cmpfloat(extra[1], <=, 0.80 * extra[0]);
}

/* The hook reports each Bottleneck's tensors, and the attention pool's,
 * once, when they are final; ranges are whole tensors. */
static void
test_hook(void)
{
  CtConfig c = small_rn();
  int B = 2;
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  inputs(&c, B, &images, &tokens);
  for (int chunks = 0; chunks <= 2; chunks += 2) {
    CtModel *m = new_model(&c, B, 4);
    g_assert_true(ct_model_set_memory(m, CT_PRECISION_FP32, chunks, NULL));
    HookLog h = { g_array_new(FALSE, FALSE, sizeof(size_t)), m,
                  g_ptr_array_new_with_free_func(g_free) };
    ct_model_set_backward_hook(m, hook, &h);
    g_autofree float *g = grads_of(m, images, tokens, B);
    /* 6 Bottlenecks, the attention pool and 1 text block */
    g_assert_cmpuint(h.ranges->len / 2, ==, 6 + 1 + 1);
    guint blocks = 0, pools = 0;
    for (guint i = 0; i < h.ranges->len; i += 2) {
      size_t off = g_array_index(h.ranges, size_t, i), n = g_array_index(h.ranges, size_t, i + 1);
      /* final when reported */
      g_assert_cmpmem(g_ptr_array_index(h.snaps, i / 2), sizeof(float) * n, g + off,
                      sizeof(float) * n);
      /* a range is whole tensors: a Bottleneck's conv1.weight onwards */
      for (size_t t = 0; t < ct_model_n_tensors(m); t++) {
        const CtParamInfo *p = ct_model_tensor(m, t);
        if (p->offset == off && strstr(p->name, "visual.layer") &&
            g_str_has_suffix(p->name, ".conv1.weight"))
          blocks++;
        /* the pool: its positional embedding to c_proj's bias */
        if (p->offset == off && !strcmp(p->name, "visual.attnpool.positional_embedding")) {
          pools++;
          g_assert_cmpuint(off + n, ==, ct_model_find(m, "visual.attnpool.c_proj.bias")->offset +
                                            ct_model_find(m, "visual.attnpool.c_proj.bias")->numel);
        }
        gboolean in = p->offset >= off && p->offset < off + n;
        if (in)
          g_assert_cmpuint(p->offset + p->numel, <=, off + n);
      }
    }
    g_assert_cmpuint(blocks, ==, 6);
    g_assert_cmpuint(pools, ==, 1);
    g_array_free(h.ranges, TRUE);
    g_ptr_array_free(h.snaps, TRUE);
    ct_model_free(m);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ct_set_num_threads(2);
  tmpdir = g_dir_make_tmp("ct-test-resnet-XXXXXX", NULL);
  g_test_add_func("/resnet/param-counts", test_param_counts);
  g_test_add_func("/resnet/init-and-decay", test_init_and_decay);
  g_test_add_func("/resnet/bad-configs", test_bad_configs);
  g_test_add_func("/resnet/save-load", test_save_load);
  g_test_add_func("/resnet/rn50-f16", test_rn50_f16);
  g_test_add_func("/resnet/modes", test_modes);
  g_test_add_func("/resnet/checkpointing-precision", test_checkpointing_precision);
  g_test_add_func("/resnet/backward-hook", test_hook);
  int rc = g_test_run();
  if (!g_getenv("CT_KEEP")) ct_test_remove_dir(tmpdir);
  g_free(tmpdir);
  return rc;
}

/* test-lock: LiT-style locking.  A tower's frozen lock groups run no
 * backward, and the groups left get the gradients of a full backward bit
 * for bit (both towers, ViT and ResNet, fp32 and bf16, with and without
 * activation checkpointing); frozen blocks call no backward hook; locked
 * weights stay bit-identical through training, the fused step included;
 * freeze_bn_stats keeps the locked ResNet groups' running statistics. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <string.h>

#define B 4

/* A ViT of 3 blocks and a text tower of 3 ("tiny" deepened), or a ResNet
 * of stages (1, 2, 1, 1) with the same text tower. */
static CtModel *
new_model(gboolean resnet, CtPrecision prec, int nchunks)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset(resnet ? "rn" : "tiny", &cfg, NULL));
  cfg.transformer_layers = 3;
  if (resnet) {
    cfg.vision_stages[1] = 2;
    cfg.vision_layers = 0;
  } else {
    cfg.vision_layers = 3;
  }
  GError *error = NULL;
  CtModel *m = ct_model_new(&cfg, B, &error);
  g_assert_no_error(error);
  g_assert_true(ct_model_set_memory(m, prec, nchunks, &error));
  ct_model_init_weights(m, 7);
  /* the ResNet's bn3 gains start at zero (OpenAI's init), which would
   * leave its blocks' inner gradients zero: make every parameter count */
  CtRng rng;
  ct_rng_init(&rng, 11);
  float *p = ct_model_params(m);
  for (size_t i = 0; i < ct_model_n_params(m); i++)
    p[i] += 0.02f * (float) (ct_rng_uniform(&rng) - 0.5);
  return m;
}

static void
make_batch(const CtConfig *c, float **images, int32_t **tokens)
{
  ct_test_make_batch(c, B, 5, 4, 1, c->context_length - 4, images, tokens);
}

/* One forward, loss and backward from zeroed gradients; the gradients and
 * the image features, copied.  (transfer full) */
static float *
backward_grads(CtModel *m, const float *images, const int32_t *tokens, float **feats)
{
  int E = ct_model_config(m)->embed_dim;
  g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  GError *error = NULL;
  g_assert_true(ct_model_forward(m, images, tokens, B, &error));
  g_assert_no_error(error);
  float ds;
  ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m), ct_model_text_features(m),
               *ct_model_logit_scale(m), B, E);
  ct_model_zero_grad(m);
  ct_model_backward(m, di, dt);
  if (feats)
    *feats = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  return g_memdup2(ct_model_grads(m), ct_model_n_params(m) * sizeof(float));
}

/* Is tensor I in a group that FROZEN (image, text) freezes? */
static gboolean
tensor_frozen(const CtModel *m, size_t i, const int frozen[2])
{
  const char *tower;
  int g = ct_model_lock_group(m, i, &tower);
  if (!tower)
    return FALSE;
  return g < frozen[strcmp(tower, "image") == 0 ? 0 : 1];
}

static void
check_grads(gboolean resnet, CtPrecision prec, int nchunks)
{
  CtModel *m = new_model(resnet, prec, nchunks);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(ct_model_config(m), &images, &tokens);
  g_autofree float *feat0 = NULL;
  g_autofree float *full = backward_grads(m, images, tokens, &feat0);
  int Gi = ct_model_n_lock_groups(m, "image"), Gt = ct_model_n_lock_groups(m, "text");
  g_assert_cmpint(Gi, ==, resnet ? 6 : 5);
  g_assert_cmpint(Gt, ==, 5);
  size_t E = ct_model_config(m)->embed_dim;
  for (int n = 0; n <= MAX(Gi, Gt); n++) {
    /* the image tower frozen from the bottom up, the text tower from the
     * top down: every count of each */
    int frozen[2] = { MIN(n, Gi), MAX(Gt - n, 0) };
    GError *error = NULL;
    g_assert_true(ct_model_set_frozen_groups(m, "image", frozen[0], &error));
    g_assert_true(ct_model_set_frozen_groups(m, "text", frozen[1], &error));
    g_assert_no_error(error);
    g_autofree float *feat = NULL;
    g_autofree float *g = backward_grads(m, images, tokens, &feat);
    g_assert_cmpmem(feat, E * B * sizeof(float), feat0, E * B * sizeof(float));
    size_t n_live = 0, n_frozen = 0;
    for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
      const CtParamInfo *t = ct_model_tensor(m, i);
      const float *got = g + t->offset, *want = full + t->offset;
      if (tensor_frozen(m, i, frozen)) {
        for (size_t k = 0; k < t->numel; k++)
          if (got[k] != 0)
            g_error("%s, %s, %d chunks, frozen (%d, %d): %s[%zu] = %g, a frozen gradient",
                    resnet ? "resnet" : "vit", ct_precision_name(prec), nchunks, frozen[0],
                    frozen[1], t->name, k, got[k]);
        n_frozen++;
      } else {
        if (memcmp(got, want, t->numel * sizeof(float)) != 0)
          g_error("%s, %s, %d chunks, frozen (%d, %d): %s differs from the full backward's",
                  resnet ? "resnet" : "vit", ct_precision_name(prec), nchunks, frozen[0],
                  frozen[1], t->name);
        n_live++;
      }
    }
    g_assert_cmpuint(n_live + n_frozen, ==, ct_model_n_tensors(m));
    g_assert_cmpuint(n_live, >=, 1); /* logit_scale */
  }
  /* the full backward's gradients are not zero where they are compared */
  size_t nz = 0;
  for (size_t k = 0; k < ct_model_n_params(m); k++)
    nz += full[k] != 0;
  g_assert_cmpuint(nz, >, ct_model_n_params(m) / 2);
  ct_model_free(m);
}

static void
test_grads_vit(void)
{
  check_grads(FALSE, CT_PRECISION_FP32, 0);
  check_grads(FALSE, CT_PRECISION_FP32, 2);
  check_grads(FALSE, CT_PRECISION_FP32, 3);
  check_grads(FALSE, CT_PRECISION_BF16, 0);
  check_grads(FALSE, CT_PRECISION_BF16, 2);
}

static void
test_grads_resnet(void)
{
  check_grads(TRUE, CT_PRECISION_FP32, 0);
  check_grads(TRUE, CT_PRECISION_FP32, 2);
  check_grads(TRUE, CT_PRECISION_BF16, 0);
  check_grads(TRUE, CT_PRECISION_BF16, 2);
}

/* ---------------------------------------------------------------- groups */

static int
group_of(const CtModel *m, const char *name, const char **tower)
{
  const CtParamInfo *t = ct_model_find(m, name);
  g_assert_nonnull(t);
  return ct_model_lock_group(m, (size_t) (t - ct_model_tensor(m, 0)), tower);
}

static void
test_groups(void)
{
  CtModel *m = new_model(FALSE, CT_PRECISION_FP32, 0);
  const struct {
    const char *name, *tower;
    int group;
  } vit[] = {
    { "visual.conv1.weight", "image", 0 },
    { "visual.class_embedding", "image", 0 },
    { "visual.positional_embedding", "image", 0 },
    { "visual.ln_pre.bias", "image", 0 },
    { "visual.transformer.resblocks.0.attn.in_proj_weight", "image", 1 },
    { "visual.transformer.resblocks.1.mlp.c_fc.bias", "image", 2 },
    { "visual.transformer.resblocks.2.ln_2.weight", "image", 3 },
    { "visual.ln_post.weight", "image", 3 },
    { "visual.proj", "image", 4 },
    { "token_embedding.weight", "text", 0 },
    { "positional_embedding", "text", 0 },
    { "transformer.resblocks.0.ln_1.weight", "text", 1 },
    { "transformer.resblocks.2.attn.out_proj.bias", "text", 3 },
    { "ln_final.bias", "text", 3 },
    { "text_projection", "text", 4 },
    { "logit_scale", NULL, -1 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(vit); i++) {
    const char *tower;
    g_assert_cmpint(group_of(m, vit[i].name, &tower), ==, vit[i].group);
    g_assert_cmpstr(tower, ==, vit[i].tower);
  }
  GError *error = NULL;
  g_assert_false(ct_model_set_frozen_groups(m, "image", 6, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_model_set_frozen_groups(m, "audio", 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_cmpint(ct_model_n_lock_groups(m, "audio"), ==, -1);
  g_assert_cmpint(ct_model_frozen_groups(m, "image"), ==, 0);
  ct_model_free(m);

  m = new_model(TRUE, CT_PRECISION_FP32, 0);
  const struct {
    const char *name;
    int group;
  } rn[] = {
    { "visual.conv1.weight", 0 },      { "visual.bn3.bias", 0 },
    { "visual.layer1.0.conv1.weight", 1 }, { "visual.layer2.1.bn2.weight", 2 },
    { "visual.layer3.0.downsample.0.weight", 3 }, { "visual.layer4.0.conv3.weight", 4 },
    { "visual.attnpool.positional_embedding", 5 }, { "visual.attnpool.c_proj.weight", 5 },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(rn); i++) {
    const char *tower;
    g_assert_cmpint(group_of(m, rn[i].name, &tower), ==, rn[i].group);
    g_assert_cmpstr(tower, ==, "image");
  }
  ct_model_free(m);
}

/* ---------------------------------------------------------------- hooks */

typedef struct {
  GArray *ranges; /* of size_t pairs */
} Hooked;

static void
record_hook(void *data, size_t offset, size_t n)
{
  Hooked *h = data;
  size_t r[2] = { offset, n };
  g_array_append_vals(h->ranges, r, 2);
}

/* The hook is called for the blocks that run backward only: those above
 * the frozen groups. */
static void
test_hook(void)
{
  for (int resnet = 0; resnet < 2; resnet++) {
    CtModel *m = new_model(resnet, CT_PRECISION_FP32, 2);
    g_autofree float *images = NULL;
    g_autofree int32_t *tokens = NULL;
    make_batch(ct_model_config(m), &images, &tokens);
    Hooked h = { g_array_new(FALSE, FALSE, sizeof(size_t)) };
    ct_model_set_backward_hook(m, record_hook, &h);
    /* image: stem and block 0 (ViT) or stem and layer1, layer2 (ResNet: 3
     * of its 5 blocks); text: stem, blocks 0 and 1 */
    int fi = resnet ? 3 : 2;
    g_assert_true(ct_model_set_frozen_groups(m, "image", fi, NULL));
    g_assert_true(ct_model_set_frozen_groups(m, "text", 3, NULL));
    g_free(backward_grads(m, images, tokens, NULL));
    /* the blocks hooked: image blocks 1, 2 (ViT) or the attention pool,
     * layer4.0, layer3.0; text block 2 */
    const char *const want_vit[] = { "visual.transformer.resblocks.2.attn.in_proj_weight",
                                     "visual.transformer.resblocks.1.attn.in_proj_weight",
                                     "transformer.resblocks.2.attn.in_proj_weight", NULL };
    const char *const want_rn[] = { "visual.attnpool.positional_embedding",
                                    "visual.layer4.0.conv1.weight",
                                    "visual.layer3.0.conv1.weight",
                                    "transformer.resblocks.2.attn.in_proj_weight", NULL };
    const char *const *want = resnet ? want_rn : want_vit;
    g_assert_cmpuint(h.ranges->len, ==, 2 * g_strv_length((char **) want));
    for (guint i = 0; want[i]; i++)
      g_assert_cmpuint(g_array_index(h.ranges, size_t, 2 * i), ==,
                       ct_model_find(m, want[i])->offset);
    /* a wholly frozen model calls no hook at all */
    g_array_set_size(h.ranges, 0);
    g_assert_true(ct_model_set_frozen_groups(m, "image", ct_model_n_lock_groups(m, "image"),
                                             NULL));
    g_assert_true(ct_model_set_frozen_groups(m, "text", 5, NULL));
    g_autofree float *g = backward_grads(m, images, tokens, NULL);
    g_assert_cmpuint(h.ranges->len, ==, 0);
    for (size_t k = 0; k < ct_model_n_params(m); k++)
      g_assert_cmpfloat(g[k], ==, 0);
    g_array_free(h.ranges, TRUE);
    ct_model_free(m);
  }
}

/* ---------------------------------------------------------------- training */

typedef struct {
  CtModel *m;
  CtOptimizer *opt;
} Fused;

static void
fused_hook(void *data, size_t offset, size_t n)
{
  Fused *f = data;
  ct_optimizer_step_range_from(f->opt, offset, n, ct_model_ready_grads(f->m));
}

/* Locked through the optimizer as the recipe does it: the locked tensors
 * stay bit-identical through steps, the others move; with the fused step
 * (the block scratch) too, whose result equals the plain step's. */
static void
test_train(void)
{
  for (int resnet = 0; resnet < 2; resnet++) {
    float *after[2] = { NULL, NULL };
    for (int fused = 0; fused < 2; fused++) {
      CtModel *m = new_model(resnet, CT_PRECISION_FP32, 0);
      g_autofree float *images = NULL;
      g_autofree int32_t *tokens = NULL;
      make_batch(ct_model_config(m), &images, &tokens);
      CtOptimizer *opt = ct_optimizer_new(m, "adamw", NULL);
      g_assert_true(ct_optimizer_set(opt, "lr", 1e-2, NULL));
      GError *error = NULL;
      g_assert_true(ct_optimizer_lock_groups(opt, "image", 2, FALSE, &error));
      g_assert_true(ct_optimizer_lock_groups(opt, "text", 1, FALSE, &error));
      g_assert_no_error(error);
      int fi = ct_optimizer_frozen_groups(opt, "image"), ft = ct_optimizer_frozen_groups(opt, "text");
      g_assert_cmpint(fi, ==, ct_model_n_lock_groups(m, "image") - 2);
      g_assert_cmpint(ft, ==, 4);
      g_assert_true(ct_model_set_frozen_groups(m, "image", fi, NULL));
      g_assert_true(ct_model_set_frozen_groups(m, "text", ft, NULL));
      Fused f = { m, opt };
      if (fused) {
        g_assert_true(ct_model_set_block_grads_scratch(m, TRUE, NULL));
        ct_model_set_backward_hook(m, fused_hook, &f);
      }
      g_autofree float *before = g_memdup2(ct_model_params(m), ct_model_n_params(m) * 4);
      int E = ct_model_config(m)->embed_dim;
      g_autofree float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
      g_autofree float *di = g_new(float, B * E), *dt = g_new(float, B * E);
      for (int s = 0; s < 3; s++) {
        g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
        float ds;
        ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m),
                     ct_model_text_features(m), *ct_model_logit_scale(m), B, E);
        ct_model_zero_grad(m);
        ct_model_backward(m, di, dt);
        ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += ds;
        ct_optimizer_step(opt);
      }
      const float *p = ct_model_params(m);
      int frozen[2] = { fi, ft };
      for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
        const CtParamInfo *t = ct_model_tensor(m, i);
        gboolean same = memcmp(p + t->offset, before + t->offset, t->numel * 4) == 0;
        g_assert_cmpint(ct_optimizer_is_frozen(opt, i), ==, tensor_frozen(m, i, frozen));
        if (tensor_frozen(m, i, frozen) && !same)
          g_error("%s: locked, but changed", t->name);
        if (!tensor_frozen(m, i, frozen) && same)
          g_error("%s: trainable, but unchanged", t->name);
      }
      after[fused] = g_memdup2(p, ct_model_n_params(m) * 4);
      if (fused)
        g_assert_cmpmem(after[0], ct_model_n_params(m) * 4, after[1], ct_model_n_params(m) * 4);
      ct_optimizer_free(opt);
      ct_model_free(m);
    }
    g_free(after[0]);
    g_free(after[1]);
  }
}

/* ---------------------------------------------------------------- batch norm */

static float *
buffer_copy(CtModel *m)
{
  return g_memdup2(ct_model_buffers(m), ct_model_n_buffer_floats(m) * sizeof(float));
}

/* freeze_bn_stats: the locked groups' BatchNorm layers normalise with
 * their running statistics and leave them alone; the others update
 * theirs.  Wholly locked, a training forward is an eval forward. */
static void
test_freeze_bn_stats(void)
{
  CtModel *m = new_model(TRUE, CT_PRECISION_FP32, 0);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(ct_model_config(m), &images, &tokens);
  /* the stem, layer1 and layer2 locked */
  g_assert_true(ct_model_set_frozen_groups(m, "image", 3, NULL));
  ct_model_set_freeze_bn_stats(m, TRUE);
  g_assert_true(ct_model_freeze_bn_stats(m));
  g_autofree float *b0 = buffer_copy(m);
  g_free(backward_grads(m, images, tokens, NULL));
  g_autofree float *b1 = buffer_copy(m);
  size_t moved = 0, kept = 0;
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *t = ct_model_buffer_tensor(m, i);
    gboolean locked = !g_str_has_prefix(t->name, "visual.layer3.") &&
                      !g_str_has_prefix(t->name, "visual.layer4.");
    gboolean same = memcmp(b0 + t->offset, b1 + t->offset, t->numel * 4) == 0;
    if (locked && !same)
      g_error("%s: a locked group's running statistics moved", t->name);
    if (!locked && same)
      g_error("%s: an unlocked group's running statistics did not move", t->name);
    *(locked ? &kept : &moved) += 1;
  }
  g_assert_cmpuint(kept, >=, 6 + 2 * 3 * 3); /* the stem's 3 BN, layer1's and layer2's */
  g_assert_cmpuint(moved, >=, 2 * 3 * 2);

  /* without freeze_bn_stats, a locked group's statistics still move (the
   * forward runs in training mode), as open_clip's lock() alone */
  ct_model_set_freeze_bn_stats(m, FALSE);
  g_free(backward_grads(m, images, tokens, NULL));
  g_autofree float *b2 = buffer_copy(m);
  const CtParamInfo *stem = ct_model_find_buffer(m, "visual.bn1.running_mean");
  g_assert_nonnull(stem);
  g_assert_true(memcmp(b1 + stem->offset, b2 + stem->offset, stem->numel * 4) != 0);

  /* every group but the pool locked, with frozen statistics: a training
   * forward gives the eval forward's features */
  g_assert_true(ct_model_set_frozen_groups(m, "image", 5, NULL));
  ct_model_set_freeze_bn_stats(m, TRUE);
  size_t E = ct_model_config(m)->embed_dim;
  g_assert_true(ct_model_encode_image(m, images, B, NULL));
  g_autofree float *train = g_memdup2(ct_model_image_features(m), E * B * 4);
  ct_model_set_training(m, FALSE);
  g_assert_true(ct_model_encode_image(m, images, B, NULL));
  g_assert_cmpmem(train, E * B * 4, ct_model_image_features(m), E * B * 4);
  ct_model_free(m);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/lock/groups", test_groups);
  g_test_add_func("/lock/grads-vit", test_grads_vit);
  g_test_add_func("/lock/grads-resnet", test_grads_resnet);
  g_test_add_func("/lock/hook", test_hook);
  g_test_add_func("/lock/train", test_train);
  g_test_add_func("/lock/freeze-bn-stats", test_freeze_bn_stats);
  return g_test_run();
}

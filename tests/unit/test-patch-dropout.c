/* test-patch-dropout.c: FLIP patch dropout of the ViT image tower
 * (ct_model_set_patch_dropout): the draw (count, order, determinism), eval
 * mode, the gradients of the dropped patches, and the memory options.
 * Parity with PyTorch is tests/torch/patch-dropout.sh. */
#include "config.h"

#include "test-util.h"

#include <cliptrain/loss.h>
#include <cliptrain/model.h>
#include <cliptrain/optimizer.h>
#include <cliptrain/rng.h>

#include <glib.h>
#include <math.h>
#include <string.h>

/* tiny: 32 x 32 images of 8 x 8 patches, GG = 16; 3 blocks a tower so that
 * 2 checkpoint chunks are uneven */
static CtModel *
tiny(int B, double p, uint64_t seed)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  cfg.vision_layers = 3;
  cfg.transformer_layers = 3;
  GError *error = NULL;
  CtModel *m = ct_model_new(&cfg, B, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, 11);
  g_assert_true(ct_model_set_patch_dropout(m, p, seed, &error));
  g_assert_no_error(error);
  return m;
}

static void
make_batch(const CtConfig *c, int B, float **images, int32_t **tokens)
{
  ct_test_make_batch(c, B, 3, 3, 5, c->context_length - 2, images, tokens);
}


static void
test_count(void)
{
  /* open_clip: max(1, int(num_tokens * (1 - prob))) */
  CtModel *m = tiny(2, 0.5, 1);
  const CtConfig *c = ct_model_config(m);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(c, 2, &images, &tokens);
  static const struct {
    double p;
    int k;
  } rows[] = { { 0.0, 16 }, { 0.05, 15 }, { 0.25, 12 }, { 0.5, 8 }, { 0.75, 4 },
               { 0.9, 1 },  { 0.95, 1 },  { 0.999, 1 } };
  for (gsize i = 0; i < G_N_ELEMENTS(rows); i++) {
    g_assert_true(ct_model_set_patch_dropout(m, rows[i].p, 1, NULL));
    g_assert_true(ct_model_encode_image(m, images, 2, NULL));
    int k = -1;
    const int *keep = ct_model_kept_patches(m, &k);
    g_assert_cmpint(k, ==, rows[i].k);
    g_assert_true((keep == NULL) == (rows[i].p == 0));
    for (int b = 0; keep && b < 2; b++)
      for (int j = 0; j < k; j++) {
        int v = keep[b * k + j];
        g_assert_cmpint(v, >=, 0);
        g_assert_cmpint(v, <, 16);
        if (j > 0)
          g_assert_cmpint(keep[b * k + j - 1], <, v); /* ascending, distinct */
      }
  }
  ct_model_free(m);
}

/* Out of range, and a ResNet tower: refused, nothing changed. */
static void
test_refused(void)
{
  CtModel *m = tiny(1, 0.25, 1);
  GError *error = NULL;
  g_assert_false(ct_model_set_patch_dropout(m, 1.0, 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_model_set_patch_dropout(m, -0.1, 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_cmpfloat(ct_model_patch_dropout(m), ==, 0.25);
  ct_model_free(m);

  CtConfig cfg;
  g_assert_true(ct_config_preset("rn", &cfg, NULL));
  m = ct_model_new(&cfg, 1, NULL);
  g_assert_false(ct_model_set_patch_dropout(m, 0.5, 1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_null(strchr(error->message, '\n'));
  g_clear_error(&error);
  g_assert_true(ct_model_set_patch_dropout(m, 0, 1, &error));
  g_assert_no_error(error);
  ct_model_free(m);
}

/* The draw is a function of (seed, key, sample): the same again, another
 * for another key or seed, and each sample its own. */
static void
test_deterministic(void)
{
  int B = 4;
  CtModel *a = tiny(B, 0.5, 7), *b = tiny(B, 0.5, 7), *c = tiny(B, 0.5, 8);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(ct_model_config(a), B, &images, &tokens);
  int ka, kb, kc;
  ct_model_set_patch_dropout_key(a, 3);
  ct_model_set_patch_dropout_key(b, 3);
  ct_model_set_patch_dropout_key(c, 3);
  double la = ct_test_clip_loss_and_grads(a, images, tokens, B);
  double lb = ct_test_clip_loss_and_grads(b, images, tokens, B);
  ct_test_clip_loss_and_grads(c, images, tokens, B);
  const int *pa = ct_model_kept_patches(a, &ka), *pb = ct_model_kept_patches(b, &kb);
  const int *pc = ct_model_kept_patches(c, &kc);
  g_assert_cmpint(ka, ==, 8);
  g_assert_cmpmem(pa, ka * B * sizeof(int), pb, kb * B * sizeof(int));
  g_assert_cmpfloat(la, ==, lb);
  size_t n = ct_model_n_params(a);
  g_assert_cmpmem(ct_model_grads(a), n * 4, ct_model_grads(b), n * 4);
  g_assert_true(memcmp(pa, pc, ka * B * sizeof(int)) != 0); /* another seed */
  gboolean differ = FALSE;
  for (int s = 1; s < B; s++)
    differ |= memcmp(pa, pa + s * ka, ka * sizeof(int)) != 0;
  g_assert_true(differ); /* samples draw apart */
  g_autofree int *first = g_memdup2(pa, ka * B * sizeof(int));
  ct_model_set_patch_dropout_key(a, 4);
  g_assert_true(ct_model_encode_image(a, images, B, NULL));
  g_assert_true(memcmp(first, ct_model_kept_patches(a, &ka), ka * B * sizeof(int)) != 0);
  ct_model_set_patch_dropout_key(a, 3); /* the same key again: the same patches */
  g_assert_true(ct_model_encode_image(a, images, B, NULL));
  g_assert_cmpmem(first, ka * B * sizeof(int), ct_model_kept_patches(a, &ka), ka * B * sizeof(int));
  ct_model_free(a);
  ct_model_free(b);
  ct_model_free(c);
}

/* Eval mode keeps every token: features, loss and gradients bit for bit
 * those of a model without patch dropout; so is p = 0 in training mode. */
static void
test_eval_all(void)
{
  int B = 3;
  CtModel *ref = tiny(B, 0, 1), *m = tiny(B, 0.75, 1), *z = tiny(B, 0, 9);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(ct_model_config(ref), B, &images, &tokens);
  size_t n = ct_model_n_params(ref);
  int E = ct_model_config(ref)->embed_dim, k;
  double lr = ct_test_clip_loss_and_grads(ref, images, tokens, B);
  ct_model_set_training(m, FALSE);
  double lm = ct_test_clip_loss_and_grads(m, images, tokens, B);
  g_assert_null(ct_model_kept_patches(m, &k));
  g_assert_cmpint(k, ==, 16);
  g_assert_cmpfloat(lr, ==, lm);
  g_assert_cmpmem(ct_model_image_features(ref), B * E * 4, ct_model_image_features(m), B * E * 4);
  g_assert_cmpmem(ct_model_grads(ref), n * 4, ct_model_grads(m), n * 4);
  ct_model_set_patch_dropout_key(z, 5);
  double lz = ct_test_clip_loss_and_grads(z, images, tokens, B);
  g_assert_cmpfloat(lr, ==, lz);
  g_assert_cmpmem(ct_model_grads(ref), n * 4, ct_model_grads(z), n * 4);
  /* back to training mode: fewer tokens, other features */
  ct_model_set_training(m, TRUE);
  double lt = ct_test_clip_loss_and_grads(m, images, tokens, B);
  g_assert_nonnull(ct_model_kept_patches(m, &k));
  g_assert_cmpint(k, ==, 4);
  g_assert_cmpfloat(lt, !=, lr);
  ct_model_free(ref);
  ct_model_free(m);
  ct_model_free(z);
}

/* Only kept patches receive gradients: with one image, the positional
 * embedding's rows of the dropped patches stay zero, the class row and
 * the kept ones do not; conv1's gradient comes from the kept patches
 * alone (an image changed in its dropped patches gives the same). */
static void
test_grads_kept_only(void)
{
  CtModel *m = tiny(1, 0.5, 2);
  const CtConfig *c = ct_model_config(m);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(c, 1, &images, &tokens);
  int E = c->embed_dim, W = c->vision_width, k;
  g_autofree float *dfeat = g_new(float, E);
  for (int i = 0; i < E; i++)
    dfeat[i] = (float) (i % 5) - 2.0f;
  g_assert_true(ct_model_encode_image(m, images, 1, NULL));
  const int *keep = ct_model_kept_patches(m, &k);
  g_assert_cmpint(k, ==, 8);
  gboolean kept[16] = { FALSE };
  for (int j = 0; j < k; j++)
    kept[keep[j]] = TRUE;
  ct_model_zero_grad(m);
  ct_model_backward(m, dfeat, NULL);
  const float *dpos = ct_model_grads(m) + ct_model_find(m, "visual.positional_embedding")->offset;
  for (int t = 0; t < 17; t++) {
    double s = 0;
    for (int cc = 0; cc < W; cc++)
      s += (double) dpos[t * W + cc] * dpos[t * W + cc];
    if (t == 0 || kept[t - 1])
      g_assert_cmpfloat(s, >, 0);
    else
      g_assert_cmpfloat(s, ==, 0);
  }
  size_t nconv = ct_model_find(m, "visual.conv1.weight")->numel;
  size_t oconv = ct_model_find(m, "visual.conv1.weight")->offset;
  g_autofree float *dconv = g_memdup2(ct_model_grads(m) + oconv, nconv * 4);
  g_autofree float *feat = g_memdup2(ct_model_image_features(m), E * 4);
  /* scribble over the dropped patches: nothing the tower computes changes */
  int R = c->image_resolution, P = c->vision_patch_size, G = R / P;
  for (int i = 0; i < 16; i++)
    for (int ch = 0; kept[i] == FALSE && ch < 3; ch++)
      for (int y = 0; y < P; y++)
        for (int x = 0; x < P; x++)
          images[((size_t) ch * R + (i / G) * P + y) * R + (i % G) * P + x] = 100.0f;
  g_assert_true(ct_model_encode_image(m, images, 1, NULL));
  g_assert_cmpmem(feat, E * 4, ct_model_image_features(m), E * 4);
  ct_model_zero_grad(m);
  ct_model_backward(m, dfeat, NULL);
  g_assert_cmpmem(dconv, nconv * 4, ct_model_grads(m) + oconv, nconv * 4);
  ct_model_free(m);
}

/* With the memory options: activation checkpointing recomputes with the
 * same patches (bit for bit, at each precision, over two steps); readout
 * pruning off gives nearly the same; half precision stays close. */
static void
test_memory_options(gconstpointer data)
{
  CtPrecision prec = GPOINTER_TO_INT(data);
  int B = 4;
  CtModel *r = tiny(B, 0.5, 5), *m = tiny(B, 0.5, 5);
  g_autofree float *images = NULL;
  g_autofree int32_t *tokens = NULL;
  make_batch(ct_model_config(r), B, &images, &tokens);
  g_assert_true(ct_model_set_memory(r, prec, 0, NULL));
  g_assert_true(ct_model_set_memory(m, prec, 2, NULL));
  size_t n = ct_model_n_params(r);
  CtOptimizer *om = ct_optimizer_new(m, "adamw", NULL), *or = ct_optimizer_new(r, "adamw", NULL);
  for (int step = 0; step < 2; step++) {
    ct_model_set_patch_dropout_key(r, step);
    ct_model_set_patch_dropout_key(m, step);
    double la = ct_test_clip_loss_and_grads(r, images, tokens, B);
    double lb = ct_test_clip_loss_and_grads(m, images, tokens, B);
    g_assert_cmpfloat(la, ==, lb);
    g_assert_cmpmem(ct_model_grads(r), n * 4, ct_model_grads(m), n * 4);
    ct_optimizer_step(or);
    ct_optimizer_step(om);
  }
  ct_optimizer_free(om);
  ct_optimizer_free(or);
  ct_model_free(m);

  /* readout pruning off, and float32 for reference */
  CtModel *u = tiny(B, 0.5, 5), *f = tiny(B, 0.5, 5), *h = tiny(B, 0.5, 5);
  g_assert_true(ct_model_set_memory(h, prec, 0, NULL));
  ct_model_set_prune_readout(u, FALSE);
  double lf = ct_test_clip_loss_and_grads(f, images, tokens, B);
  double lu = ct_test_clip_loss_and_grads(u, images, tokens, B);
  double lh = ct_test_clip_loss_and_grads(h, images, tokens, B);
  g_assert_cmpfloat(fabs(lf - lu), <, 1e-5);
  g_assert_cmpfloat(fabs(lf - lh), <, prec == CT_PRECISION_FP32 ? 1e-12 : 2e-2);
  double num = 0, den = 0, numh = 0;
  const float *gf = ct_model_grads(f), *gu = ct_model_grads(u), *gh = ct_model_grads(h);
  for (size_t i = 0; i < n; i++) {
    num += ((double) gf[i] - gu[i]) * ((double) gf[i] - gu[i]);
    numh += ((double) gf[i] - gh[i]) * ((double) gf[i] - gh[i]);
    den += (double) gf[i] * gf[i];
  }
  g_assert_cmpfloat(sqrt(num / den), <, 1e-5);
  g_assert_cmpfloat(sqrt(numh / den), <, prec == CT_PRECISION_FP32 ? 1e-12 : 5e-2);
  ct_model_free(u);
  ct_model_free(f);
  ct_model_free(h);
  ct_model_free(r);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/patch-dropout/count", test_count);
  g_test_add_func("/patch-dropout/refused", test_refused);
  g_test_add_func("/patch-dropout/deterministic", test_deterministic);
  g_test_add_func("/patch-dropout/eval-all", test_eval_all);
  g_test_add_func("/patch-dropout/grads-kept-only", test_grads_kept_only);
  g_test_add_data_func("/patch-dropout/memory/fp32", GINT_TO_POINTER(CT_PRECISION_FP32),
                       test_memory_options);
  g_test_add_data_func("/patch-dropout/memory/bf16", GINT_TO_POINTER(CT_PRECISION_BF16),
                       test_memory_options);
  g_test_add_data_func("/patch-dropout/memory/fp16", GINT_TO_POINTER(CT_PRECISION_FP16),
                       test_memory_options);
  return g_test_run();
}

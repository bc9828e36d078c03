/* pdrop-pass: one training pass of a CLIP case under patch dropout, for
 * tests/torch/patch-dropout.sh to compare with PyTorch.
 *
 *   tests/unit/pdrop-pass CASE P SEED KEY OUT [VARIANT]
 *
 * Loads CASE (the golden format: config.*, param.*, input.*; a ViT image
 * tower), sets patch dropout P with SEED and the key KEY, runs the forward
 * in training mode, the CLIP loss and the backward, and writes OUT:
 * input.kept (I64 [B, K]: the patches cliptrain kept, ascending grid
 * indices), output.image_features, output.text_features,
 * output.logits_per_image, output.loss and grad.<name> for every
 * parameter.  VARIANT: fp32 (default), no-prune (readout pruning off),
 * checkpoint-2 (activation checkpointing in 2 segments), threads-2.
 * Exits 1 on a failure, 2 on bad usage. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static CtSafetensors *
open_case(const char *path, CtConfig *cfg, int *B, float **images, int32_t **tokens,
          GError **error)
{
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return NULL;
  memset(cfg, 0, sizeof *cfg);
  for (const char *const *key = ct_config_keys(); *key; key++) {
    if (g_str_has_prefix(*key, "vision_stage"))
      continue;
    g_autofree char *name = g_strconcat("config.", *key, NULL);
    int64_t v;
    if (!ct_safetensors_read_i64(st, name, &v, 1, error) ||
        !ct_config_set(cfg, *key, (long) v, error))
      goto fail;
  }
  const CtTensorInfo *ti = ct_safetensors_find(st, "input.images");
  if (!ti) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: no input.images", path);
    goto fail;
  }
  *B = (int) ti->shape[0];
  size_t BT = (size_t) *B * cfg->context_length;
  *images = g_new(float, ti->numel);
  int64_t *tok64 = g_new(int64_t, BT);
  gboolean ok = ct_safetensors_read_f32(st, "input.images", *images, ti->numel, error) &&
                ct_safetensors_read_i64(st, "input.tokens", tok64, BT, error);
  *tokens = g_new(int32_t, BT);
  for (size_t i = 0; ok && i < BT; i++)
    (*tokens)[i] = (int32_t) tok64[i];
  g_free(tok64);
  if (ok)
    return st;
fail:
  ct_safetensors_free(st);
  return NULL;
}

/* Forward, loss, backward of M on the batch; the results into OUT. */
static gboolean
pass_and_write(CtModel *m, const CtConfig *cfg, const float *images, const int32_t *tokens, int B,
               const char *out, GError **error)
{
  if (!ct_model_forward(m, images, tokens, B, error))
    return FALSE;

  int E = cfg->embed_dim, K;
  const int *keep = ct_model_kept_patches(m, &K);
  int G = cfg->image_resolution / cfg->vision_patch_size;
  g_autofree int64_t *kept = g_new(int64_t, (size_t) B * K);
  for (size_t i = 0; i < (size_t) B * K; i++)
    kept[i] = keep ? keep[i] : (int64_t) (i % K); /* all, in order */
  g_assert_true(keep || K == G * G);
  g_autofree float *img = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  g_autofree float *txt = g_memdup2(ct_model_text_features(m), sizeof(float) * B * E);
  g_autofree float *logits = g_new(float, (size_t) B * B), *scratch = g_new(float, (size_t) B * B);
  g_autofree float *d_img = g_new(float, (size_t) B * E), *d_txt = g_new(float, (size_t) B * E);
  float d_scale = 0;
  float loss = (float) ct_clip_loss(logits, d_img, d_txt, &d_scale, scratch, img, txt,
                                    *ct_model_logit_scale(m), B, E);
  ct_model_zero_grad(m);
  ct_model_backward(m, d_img, d_txt);
  ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += d_scale;

  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  int64_t sk[2] = { B, K }, sf[2] = { B, E }, sl[2] = { B, B }, s1[1] = { 1 };
  gboolean ok = ct_safetensors_writer_add(w, "input.kept", CT_DTYPE_I64, 2, sk, kept, error) &&
                ct_safetensors_writer_add(w, "output.image_features", CT_DTYPE_F32, 2, sf, img,
                                          error) &&
                ct_safetensors_writer_add(w, "output.text_features", CT_DTYPE_F32, 2, sf, txt,
                                          error) &&
                ct_safetensors_writer_add(w, "output.logits_per_image", CT_DTYPE_F32, 2, sl,
                                          logits, error) &&
                ct_safetensors_writer_add(w, "output.loss", CT_DTYPE_F32, 1, s1, &loss, error);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  for (size_t i = 0; ok && i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    char *name = g_strconcat("grad.", info->name, NULL);
    g_ptr_array_add(names, name);
    ok = ct_safetensors_writer_add(w, name, CT_DTYPE_F32, info->ndim, info->shape,
                                   ct_model_grads(m) + info->offset, error);
  }
  ok = ok && ct_safetensors_writer_write(w, out, error);
  ct_safetensors_writer_free(w);
  g_ptr_array_free(names, TRUE);
  return ok;
}

int
main(int argc, char **argv)
{
  if (argc < 6 || argc > 7) {
    fprintf(stderr, "usage: pdrop-pass CASE P SEED KEY OUT [fp32|no-prune|checkpoint-2|threads-2]\n");
    return 2;
  }
  const char *variant = argc > 6 ? argv[6] : "fp32";
  double p = g_ascii_strtod(argv[2], NULL);
  uint64_t seed = g_ascii_strtoull(argv[3], NULL, 10), key = g_ascii_strtoull(argv[4], NULL, 10);
  GError *error = NULL;
  CtConfig cfg;
  int B = 0;
  float *images = NULL;
  int32_t *tokens = NULL;
  CtSafetensors *st = open_case(argv[1], &cfg, &B, &images, &tokens, &error);
  CtModel *m = st ? ct_model_new(&cfg, B, &error) : NULL;
  if (!m)
    goto fail;
  ct_set_num_threads(g_str_equal(variant, "threads-2") ? 2 : 1);
  ct_model_set_prune_readout(m, !g_str_equal(variant, "no-prune"));
  if (!ct_model_set_memory(m, CT_PRECISION_FP32, g_str_equal(variant, "checkpoint-2") ? 2 : 0,
                           &error) ||
      !ct_model_load_from(m, st, "param.", TRUE, &error) ||
      !ct_model_set_patch_dropout(m, p, seed, &error))
    goto fail;
  ct_model_set_patch_dropout_key(m, key);
  if (!pass_and_write(m, &cfg, images, tokens, B, argv[5], &error))
    goto fail;
  ct_model_free(m);
  ct_safetensors_free(st);
  g_free(images);
  g_free(tokens);
  return 0;
fail:
  ct_model_free(m);
  ct_safetensors_free(st);
  fprintf(stderr, "pdrop-pass: %s\n", error ? error->message : "failed");
  return 1;
}

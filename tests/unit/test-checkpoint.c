/* test-checkpoint: configs read from the weights' shapes (OpenAI's
 * build_model) for state dicts without config metadata, and
 * ct_model_new_from_file. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <glib/gstdio.h>
#include <string.h>

static char *tmpdir;

static CtModel *
model_for(const CtConfig *cfg, uint64_t seed)
{
  GError *error = NULL;
  CtModel *m = ct_model_new(cfg, 1, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, seed);
  return m;
}

static CtConfig
tiny(void)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  return cfg;
}

/* Spoilers of a state dict: the tensor they hit and how. */
typedef enum { KEEP, DROP, FLAT, ROWS } Spoil;

/* Writes M's parameters as a bare state dict (no metadata) to NAME in
 * tmpdir: every name with PREFIX, TENSOR spoiled as SPOIL, plus EXTRA (a
 * tensor of 4 floats) when not NULL.  (transfer full) */
static char *
write_bare(CtModel *m, const char *name, const char *prefix, const char *tensor, Spoil spoil,
           const char *extra)
{
  char *path = g_build_filename(tmpdir, name, NULL);
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *t = ct_model_tensor(m, i);
    g_autofree char *key = g_strconcat(prefix ? prefix : "", t->name, NULL);
    const float *data = ct_model_params(m) + t->offset;
    gboolean hit = tensor && strcmp(t->name, tensor) == 0;
    int64_t flat[1] = { (int64_t) t->numel }, rows[2] = { t->shape[0] - 1, t->shape[1] };
    if (hit && spoil == DROP)
      continue;
    if (hit && spoil == FLAT)
      g_assert_true(ct_safetensors_writer_add(w, key, CT_DTYPE_F32, 1, flat, data, NULL));
    else if (hit && spoil == ROWS)
      g_assert_true(ct_safetensors_writer_add(w, key, CT_DTYPE_F32, 2, rows, data, NULL));
    else
      g_assert_true(ct_safetensors_writer_add(w, key, CT_DTYPE_F32, t->ndim, t->shape, data,
                                              NULL));
  }
  if (extra) {
    int64_t shape[1] = { 4 };
    g_assert_true(ct_safetensors_writer_add(w, extra, CT_DTYPE_F32, 1, shape,
                                            ct_model_params(m), NULL));
  }
  GError *error = NULL;
  g_assert_true(ct_safetensors_writer_write(w, path, &error));
  g_assert_no_error(error);
  ct_safetensors_writer_free(w);
  return path;
}

static CtConfig
from_weights(const char *path, const char *prefix, int vh, int th)
{
  GError *error = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &error);
  g_assert_no_error(error);
  CtConfig got;
  g_assert_true(ct_config_from_weights(&got, st, prefix, vh, th, &error));
  g_assert_no_error(error);
  ct_safetensors_free(st);
  return got;
}

/* The tiny preset, and a config whose shapes differ everywhere. */
static void
test_round_trip(void)
{
  CtConfig cfgs[2] = { tiny(), tiny() };
  CtConfig *c = &cfgs[1];
  c->embed_dim = 48, c->image_resolution = 24, c->vision_layers = 3, c->vision_width = 128;
  c->vision_patch_size = 6, c->vision_heads = 2, c->context_length = 9, c->vocab_size = 530;
  c->transformer_width = 192, c->transformer_heads = 3, c->transformer_layers = 1;
  for (int k = 0; k < 2; k++) {
    CtModel *m = model_for(&cfgs[k], 7);
    g_autofree char *path = write_bare(m, "bare.safetensors", NULL, NULL, KEEP, NULL);
    CtConfig got = from_weights(path, NULL, 0, 0);
    ct_test_assert_same_config(ct_model_config(m), &got);
    ct_model_free(m);
  }
}

/* Heads are not in the shapes: width / 64 unless overridden. */
static void
test_heads(void)
{
  CtConfig cfg = tiny();
  cfg.vision_width = 128, cfg.vision_heads = 4, cfg.transformer_width = 128;
  cfg.transformer_heads = 8;
  CtModel *m = model_for(&cfg, 1);
  g_autofree char *path = write_bare(m, "heads.safetensors", NULL, NULL, KEEP, NULL);
  CtConfig got = from_weights(path, NULL, 0, 0);
  g_assert_cmpint(got.vision_heads, ==, 2);
  g_assert_cmpint(got.transformer_heads, ==, 2);
  got = from_weights(path, NULL, 4, 8);
  ct_test_assert_same_config(&cfg, &got);
  /* the same through ct_model_new_from_file_heads, as the commands'
   * --vision-heads and --text-heads do */
  GError *error = NULL;
  CtModel *h = ct_model_new_from_file_heads(path, 1, 4, 8, &error);
  g_assert_no_error(error);
  ct_test_assert_same_config(&cfg, ct_model_config(h));
  ct_model_free(h);
  /* heads that do not divide the width are refused */
  g_assert_null(ct_model_new_from_file_heads(path, 1, 3, 8, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "vision_heads"));
  g_clear_error(&error);
  ct_model_free(m);
}

static void
test_prefix(void)
{
  CtModel *m = model_for((CtConfig[]){ tiny() }, 2);
  g_autofree char *path = write_bare(m, "prefix.safetensors", "module.", NULL, KEEP, NULL);
  CtConfig got = from_weights(path, "module.", 0, 0);
  ct_test_assert_same_config(ct_model_config(m), &got);
  ct_model_free(m);
}

/* ct_model_new_from_file: bare weights load with the config of their
 * shapes; metadata, when present, decides (here heads the shapes lack). */
static void
test_new_from_file(void)
{
  CtConfig cfg = tiny();
  CtModel *a = model_for(&cfg, 3);
  g_autofree char *bare = write_bare(a, "nf.safetensors", NULL, NULL, KEEP, NULL);
  GError *error = NULL;
  CtModel *b = ct_model_new_from_file(bare, 4, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ct_model_max_batch(b), ==, 4);
  ct_test_assert_same_config(&cfg, ct_model_config(b));
  g_assert_cmpmem(ct_model_params(a), ct_model_n_params(a) * 4, ct_model_params(b),
                  ct_model_n_params(b) * 4);
  ct_model_free(b);
  ct_model_free(a);

  cfg.vision_heads = 2, cfg.transformer_heads = 4;
  a = model_for(&cfg, 5);
  g_autofree char *meta = g_build_filename(tmpdir, "meta.safetensors", NULL);
  g_assert_true(ct_model_save(a, meta, NULL, &error));
  b = ct_model_new_from_file(meta, 1, &error);
  g_assert_no_error(error);
  ct_test_assert_same_config(&cfg, ct_model_config(b));
  ct_model_free(b);
  ct_model_free(a);

  g_autofree char *none = g_build_filename(tmpdir, "none.safetensors", NULL);
  g_assert_null(ct_model_new_from_file(none, 1, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, none));
  g_clear_error(&error);
}

static const struct {
  const char *what, *tensor;
  Spoil spoil;
  const char *extra;
  int code;
  const char *expect;
} bad[] = {
  /* a ResNet's tensors make it read as a ResNet, whose own tensors must be right */
  { "ResNet", NULL, KEEP, "visual.layer1.0.conv1.weight", CT_ERROR_SHAPE,
    "'visual.layer1.0.conv1.weight' has shape [4], not (width, width, 1, 1)" },
  { "attention pool", NULL, KEEP, "visual.attnpool.k_proj.bias", CT_ERROR_MISSING,
    "'visual.layer1.0.conv1.weight' is missing" },
  { "flat conv1", "visual.conv1.weight", FLAT, NULL, CT_ERROR_SHAPE,
    "'visual.conv1.weight' has shape [12288], not (width, 3, patch, patch)" },
  { "no square grid", "visual.positional_embedding", ROWS, NULL, CT_ERROR_SHAPE,
    "'visual.positional_embedding' has shape [4, 64], not (grid * grid + 1, width)" },
  { "missing tensor", "ln_final.weight", DROP, NULL, CT_ERROR_MISSING,
    "'ln_final.weight' is missing" },
  { "no vision blocks", "visual.transformer.resblocks.0.attn.in_proj_weight", DROP, NULL,
    CT_ERROR_CONFIG, "" },
};

static void
test_bad(void)
{
  CtConfig cfg = tiny();
  cfg.vision_layers = 1, cfg.image_resolution = 16;
  CtModel *m = model_for(&cfg, 3);
  for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
    g_autofree char *name = g_strdup_printf("bad%zu.safetensors", k);
    g_autofree char *path = write_bare(m, name, NULL, bad[k].tensor, bad[k].spoil, bad[k].extra);
    GError *error = NULL;
    CtSafetensors *st = ct_safetensors_open(path, &error);
    g_assert_no_error(error);
    CtConfig got;
    g_assert_false(ct_config_from_weights(&got, st, NULL, 0, 0, &error));
    g_test_message("%s: %s", bad[k].what, error ? error->message : "(no error)");
    g_assert_error(error, CT_ERROR, bad[k].code);
    g_assert_true(g_str_has_prefix(error->message, path));
    g_assert_nonnull(strstr(error->message, bad[k].expect));
    g_clear_error(&error);
    ct_safetensors_free(st);
    /* and the same error from ct_model_new_from_file */
    g_assert_null(ct_model_new_from_file(path, 1, &error));
    g_assert_error(error, CT_ERROR, bad[k].code);
    g_clear_error(&error);
  }
  /* a gap in the blocks: counted as one layer, then block 1 is unknown */
  g_autofree char *path = write_bare(m, "gap.safetensors", NULL, NULL, KEEP,
                                     "visual.transformer.resblocks.2.attn.in_proj_weight");
  GError *error = NULL;
  g_assert_null(ct_model_new_from_file(path, 1, &error));
  g_assert_nonnull(error);
  g_assert_nonnull(strstr(error->message, "resblocks.1."));
  g_clear_error(&error);
  ct_model_free(m);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("ct-test-checkpoint-XXXXXX", NULL);
  g_test_add_func("/checkpoint/config-from-weights", test_round_trip);
  g_test_add_func("/checkpoint/heads", test_heads);
  g_test_add_func("/checkpoint/prefix", test_prefix);
  g_test_add_func("/checkpoint/new-from-file", test_new_from_file);
  g_test_add_func("/checkpoint/bad-state-dicts", test_bad);
  int rc = g_test_run();
  ct_test_remove_dir(tmpdir);
  g_free(tmpdir);
  return rc;
}

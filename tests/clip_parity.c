/* clip_parity: forward and backward of CLIP against PyTorch reference cases.
 *
 *   tests/clip_parity [CASE.safetensors ...]
 *
 * Each case file (format: ../shared/golden/README.md) holds a config, the
 * parameters, inputs, and PyTorch's features, logits, loss and every
 * parameter's gradient.  The config is read from the file: a ViT, or a
 * ResNet image tower (config.vision_layers holds 4 stage counts), whose
 * case also holds the BatchNorm running statistics before (buffer.*) and
 * after (output.buffer.*) the training-mode forward.  Without arguments,
 * every case in $CT_TEST_DATA (clip_case_*.safetensors) is run.  A value
 * beyond the golden tolerances fails the test:
 *   features <= 1e-5, logits <= 1e-4, loss <= 1e-5 max(1, |ref|),
 *   gradient G: max |ours - ref| <= 1e-4 max |ref G| + 1e-7,
 *   running statistics <= 1e-4 max(1, max |ref|). */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include <math.h>
#include <string.h>

typedef struct {
  double worst;      /* largest error / tolerance seen */
  GString *failures;
} Report;

static float *
read_f32_alloc(const CtSafetensors *st, const char *name, size_t *n)
{
  const CtTensorInfo *t = ct_safetensors_find(st, name);
  if (!t)
    g_error("%s: tensor '%s' is missing", ct_safetensors_path(st), name);
  float *buf = g_new(float, t->numel ? t->numel : 1);
  GError *error = NULL;
  if (!ct_safetensors_read_f32(st, name, buf, t->numel, &error))
    g_error("%s", error->message);
  *n = t->numel;
  return buf;
}

/* Compares OURS with tensor NAME of the case; abs tolerance ATOL plus
 * RTOL times max |ref|. */
static void
compare(Report *r, const CtSafetensors *st, const char *name, const float *ours, size_t n,
        double atol, double rtol)
{
  size_t rn;
  g_autofree float *ref = read_f32_alloc(st, name, &rn);
  if (rn != n) {
    g_string_append_printf(r->failures, "  %s: %zu values, expected %zu\n", name, n, rn);
    return;
  }
  double maxref = 0, maxerr = 0;
  for (size_t i = 0; i < n; i++)
    maxref = fmax(maxref, fabs(ref[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double) ours[i] - ref[i]);
    if (!(e <= maxerr)) /* catches NaN */
      maxerr = isnan(e) ? INFINITY : e;
  }
  double tol = atol + rtol * maxref;
  double ratio = maxerr / tol;
  r->worst = fmax(r->worst, ratio);
  if (!(ratio <= 1.0))
    g_string_append_printf(r->failures, "  %s: max error %.3g exceeds tolerance %.3g\n", name,
                           maxerr, tol);
}

static void
run_case(gconstpointer data)
{
  const char *path = data;
  GError *error = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &error);
  g_assert_no_error(error);

  CtConfig cfg = { 0 };
  for (const char *const *key = ct_config_keys(); *key; key++) {
    if (g_str_has_prefix(*key, "vision_stage"))
      continue; /* the case stores them as vision_layers [4] */
    g_autofree char *name = g_strconcat("config.", *key, NULL);
    const CtTensorInfo *t = ct_safetensors_find(st, name);
    if (!t)
      g_error("%s: tensor '%s' is missing", path, name);
    if (t->numel == 4 && g_str_equal(*key, "vision_layers")) {
      int64_t v[4];
      g_assert_true(ct_safetensors_read_i64(st, name, v, 4, &error));
      for (int i = 0; i < 4; i++)
        cfg.vision_stages[i] = (int) v[i];
      continue;
    }
    if (t->numel != 1)
      g_error("%s: %s has %zu values", path, name, t->numel);
    int64_t v;
    g_assert_true(ct_safetensors_read_i64(st, name, &v, 1, &error));
    g_assert_true(ct_config_set(&cfg, *key, (long) v, &error));
  }
  gboolean resnet = ct_config_is_resnet(&cfg);
  const CtTensorInfo *ti = ct_safetensors_find(st, "input.images");
  g_assert_nonnull(ti);
  int B = (int) ti->shape[0];
  int T = cfg.context_length, E = cfg.embed_dim;
  g_test_message("%s: batch %d, vision %d x %d (heads %d, patch %d, %d px, stages %d %d %d %d), "
                 "text %d x %d (heads %d, context %d), embed %d",
                 path, B, cfg.vision_layers, cfg.vision_width, cfg.vision_heads,
                 cfg.vision_patch_size, cfg.image_resolution, cfg.vision_stages[0],
                 cfg.vision_stages[1], cfg.vision_stages[2], cfg.vision_stages[3],
                 cfg.transformer_layers, cfg.transformer_width, cfg.transformer_heads, T, E);

  CtModel *m = ct_model_new(&cfg, B, &error);
  g_assert_no_error(error);
  /* a ResNet's running statistics are under buffer.*, not param.* */
  g_assert_true(ct_model_load_from(m, st, "param.", !resnet, &error));
  g_assert_no_error(error);
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *info = ct_model_buffer_tensor(m, i);
    g_autofree char *name = g_strconcat("buffer.", info->name, NULL);
    g_assert_true(ct_safetensors_read_f32(st, name, ct_model_buffers(m) + info->offset,
                                          info->numel, &error));
    g_assert_no_error(error);
  }
  g_assert_true(ct_model_training(m)); /* the case's forward is in training mode */

  size_t n;
  g_autofree float *images = read_f32_alloc(st, "input.images", &n);
  g_autofree int64_t *tok64 = g_new(int64_t, (size_t) B * T);
  g_assert_true(ct_safetensors_read_i64(st, "input.tokens", tok64, (size_t) B * T, &error));
  g_autofree int32_t *tokens = g_new(int32_t, (size_t) B * T);
  for (size_t i = 0; i < (size_t) B * T; i++)
    tokens[i] = (int32_t) tok64[i];

  g_assert_true(ct_model_forward(m, images, tokens, B, &error));
  g_assert_no_error(error);
  const float *img = ct_model_image_features(m), *txt = ct_model_text_features(m);

  g_autofree float *logits = g_new(float, (size_t) B * B);
  g_autofree float *scratch = g_new(float, (size_t) B * B);
  g_autofree float *d_img = g_new(float, (size_t) B * E);
  g_autofree float *d_txt = g_new(float, (size_t) B * E);
  float d_scale = 0;
  double loss = ct_clip_loss(logits, d_img, d_txt, &d_scale, scratch, img, txt,
                             *ct_model_logit_scale(m), B, E);
  ct_model_zero_grad(m);
  ct_model_backward(m, d_img, d_txt);
  ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += d_scale;

  Report r = { 0, g_string_new(NULL) };
  compare(&r, st, "output.image_features", img, (size_t) B * E, 1e-5, 0);
  compare(&r, st, "output.text_features", txt, (size_t) B * E, 1e-5, 0);
  compare(&r, st, "output.logits_per_image", logits, (size_t) B * B, 1e-4, 0);
  float loss_f = (float) loss;
  size_t ln;
  g_autofree float *ref_loss = read_f32_alloc(st, "output.loss", &ln);
  compare(&r, st, "output.loss", &loss_f, 1, 1e-5 * fmax(1.0, fabs(ref_loss[0])), 0);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    g_autofree char *name = g_strconcat("grad.", info->name, NULL);
    compare(&r, st, name, ct_model_grads(m) + info->offset, info->numel, 1e-7, 1e-4);
  }
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *info = ct_model_buffer_tensor(m, i);
    g_autofree char *name = g_strconcat("output.buffer.", info->name, NULL);
    size_t rn;
    g_autofree float *ref = read_f32_alloc(st, name, &rn);
    double mx = 0;
    for (size_t k = 0; k < rn; k++)
      mx = fmax(mx, fabs(ref[k]));
    compare(&r, st, name, ct_model_buffers(m) + info->offset, info->numel, 1e-4 * fmax(1, mx), 0);
  }
  g_test_message("%s: loss %.7f (ref %.7f); worst error / tolerance %.3g over %zu gradients and "
                 "%zu buffers", path, loss, ref_loss[0], r.worst, ct_model_n_tensors(m),
                 ct_model_n_buffer_tensors(m));
  if (r.failures->len) {
    g_test_message("%s: beyond tolerance:\n%s", path, r.failures->str);
    g_test_fail();
  }
  g_string_free(r.failures, TRUE);
  ct_model_free(m);
  ct_safetensors_free(st);
}

static int
cmp_paths(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *) a, *(char *const *) b);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  GPtrArray *cases = g_ptr_array_new_with_free_func(g_free);
  if (argc > 1) {
    for (int i = 1; i < argc; i++)
      g_ptr_array_add(cases, g_strdup(argv[i]));
  } else {
    const char *dir = g_getenv("CT_TEST_DATA");
    if (!dir)
      g_error("no case files given and CT_TEST_DATA is not set");
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d)
      g_error("cannot open CT_TEST_DATA folder %s", dir);
    const char *name;
    while ((name = g_dir_read_name(d)))
      if (g_str_has_prefix(name, "clip_case_") && g_str_has_suffix(name, ".safetensors")) {
        g_ptr_array_add(cases, g_build_filename(dir, name, NULL));
      }
    g_dir_close(d);
    g_ptr_array_sort(cases, cmp_paths);
    if (cases->len == 0)
      g_error("no clip_case_*.safetensors in %s", dir);
  }
  for (guint i = 0; i < cases->len; i++) {
    g_autofree char *base = g_path_get_basename(g_ptr_array_index(cases, i));
    g_autofree char *name = g_strconcat("/parity/", base, NULL);
    g_test_add_data_func(name, g_ptr_array_index(cases, i), run_case);
  }
  int rc = g_test_run();
  g_ptr_array_free(cases, TRUE);
  return rc;
}

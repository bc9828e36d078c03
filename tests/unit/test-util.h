/* test-util.h: helpers the GLib test programs share. */
#ifndef CT_TEST_UTIL_H
#define CT_TEST_UTIL_H

#include <cliptrain/loss.h>
#include <cliptrain/model.h>
#include <cliptrain/rng.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>

/* Remove DIR and the files in it (one level: what the tests write). */
static inline void
ct_test_remove_dir(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(dir);
}

/* A fresh folder made from TMPL (g_dir_make_tmp's, ending in XXXXXX).
 * (transfer full) */
static inline char *
ct_test_make_tmpdir(const char *tmpl)
{
  GError *err = NULL;
  char *dir = g_dir_make_tmp(tmpl, &err);
  g_assert_no_error(err);
  return dir;
}

/* Entries in DIR (recursively), removing them and DIR when REMOVE. */
static inline guint
ct_test_count_entries(const char *dir, gboolean remove)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  guint n = 0;
  const char *name;
  while ((name = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, name, NULL);
    n++;
    if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK))
      n += ct_test_count_entries(p, remove);
    else if (remove)
      g_assert_cmpint(g_unlink(p), ==, 0);
    g_free(p);
  }
  g_dir_close(d);
  if (remove)
    g_assert_cmpint(g_rmdir(dir), ==, 0);
  return n;
}

/* Fails the test for each key of the configs whose values differ. */
static inline void
ct_test_assert_same_config(const CtConfig *want, const CtConfig *got)
{
  for (const char *const *k = ct_config_keys(); *k; k++)
    if (ct_config_get(want, *k) != ct_config_get(got, *k))
      g_test_fail_printf("config %s: %ld, expected %ld", *k, ct_config_get(got, *k),
                         ct_config_get(want, *k));
}

/* N floats from RNG, normal with deviation STD.  (transfer full) */
static inline float *
ct_test_randn(CtRng *rng, size_t n, double std)
{
  float *p = g_new(float, n);
  ct_rng_normal_fill(rng, p, n, std);
  return p;
}

/* sum a[i] b[i], in double. */
static inline double
ct_test_dot(const float *a, const float *b, size_t n)
{
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (double) a[i] * b[i];
  return s;
}

/* A scalar loss of the tensors CTX points to, as a gradient check moves
 * one element of them. */
typedef double (*CtTestLossFn)(void *ctx);

/* Compare ANALYTIC (n) with central finite differences of LOSS over X (n):
 * (L(x + h) - L(x - h)) / 2h per element, within atol + rtol max|numeric|.
 * X is left as it was. */
static inline void
ct_test_check_grad(const char *what, float *x, const float *analytic, size_t n, CtTestLossFn loss,
                   void *ctx, double h, double atol, double rtol)
{
  double *num = g_new(double, n);
  double maxnum = 0;
  for (size_t i = 0; i < n; i++) {
    float keep = x[i];
    x[i] = keep + (float) h;
    double lp = loss(ctx);
    x[i] = keep - (float) h;
    double lm = loss(ctx);
    x[i] = keep;
    num[i] = (lp - lm) / (2 * h);
    maxnum = fmax(maxnum, fabs(num[i]));
  }
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(analytic[i] - num[i]);
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  double tol = atol + rtol * maxnum;
  g_test_message("%s: max |analytic - numeric| = %.3g (tolerance %.3g, max |grad| %.3g)", what,
                 worst, tol, maxnum);
  if (!(worst <= tol))
    g_test_fail_printf("%s: element %zu: analytic %.6g, numeric %.6g", what, at,
                       (double) analytic[at], num[at]);
  g_assert_true(maxnum > 0 || n == 0); /* a check over all-zero gradients proves nothing */
  g_free(num);
}

/* A batch for config C: *IMAGES (B, 3, R, R) standard normal noise and
 * *TOKENS (B, context_length) captions of start token, random ids and end
 * token, caption b LEN0 + (STRIDE * b) % SPAN tokens long; both drawn from
 * SEED.  (transfer full): g_free both. */
static inline void
ct_test_make_batch(const CtConfig *c, int B, uint64_t seed, int len0, int stride, int span,
                   float **images, int32_t **tokens)
{
  CtRng rng;
  ct_rng_init(&rng, seed);
  size_t n = (size_t) B * 3 * c->image_resolution * c->image_resolution;
  *images = g_new(float, n);
  ct_rng_normal_fill(&rng, *images, n, 1);
  *tokens = g_new0(int32_t, (size_t) B * c->context_length);
  for (int b = 0; b < B; b++) {
    int32_t *row = *tokens + (size_t) b * c->context_length;
    int len = len0 + (stride * b) % span;
    row[0] = c->vocab_size - 2;
    for (int t = 1; t < len - 1; t++)
      row[t] = 1 + (int32_t) ct_rng_below(&rng, c->vocab_size - 3);
    row[len - 1] = c->vocab_size - 1;
  }
}

/* One forward and backward of the CLIP loss over B samples; returns the
 * loss.  The gradients (logit_scale's included) are left in M. */
static inline double
ct_test_clip_loss_and_grads(CtModel *m, const float *images, const int32_t *tokens, int B)
{
  int E = ct_model_config(m)->embed_dim;
  float *logits = g_new(float, B * B), *scr = g_new(float, B * B);
  float *di = g_new(float, B * E), *dt = g_new(float, B * E);
  g_assert_true(ct_model_forward(m, images, tokens, B, NULL));
  float ds;
  double loss = ct_clip_loss(logits, di, dt, &ds, scr, ct_model_image_features(m),
                             ct_model_text_features(m), *ct_model_logit_scale(m), B, E);
  ct_model_zero_grad(m);
  ct_model_backward(m, di, dt);
  ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += ds * ct_model_loss_scale(m);
  g_free(logits);
  g_free(scr);
  g_free(di);
  g_free(dt);
  return loss;
}

#endif

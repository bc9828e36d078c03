/* test-util.h: helpers the GLib test programs share. */
#ifndef CT_TEST_UTIL_H
#define CT_TEST_UTIL_H

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

#endif

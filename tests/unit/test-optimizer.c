/* test-optimizer: CtOptimizer (adam, adamw, sgd; decay exclusions, lr
 * groups, freezing, tower locks, state files) and CtSchedule, against
 * values computed here independently. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static char *tmpdir;

static CtModel *
tiny_model(uint64_t seed)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  GError *error = NULL;
  CtModel *m = ct_model_new(&cfg, 1, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, seed);
  return m;
}

static CtOptimizer *
new_opt(CtModel *m, const char *kind)
{
  GError *error = NULL;
  CtOptimizer *opt = ct_optimizer_new(m, kind, &error);
  g_assert_no_error(error);
  g_assert_nonnull(opt);
  return opt;
}

static void
set_hyper(CtOptimizer *opt, const char *name, double v)
{
  GError *error = NULL;
  g_assert_true(ct_optimizer_set(opt, name, v, &error));
  g_assert_no_error(error);
}

/* Deterministic gradients for step S, with exact zeros here and there but
 * none for logit_scale, the one single-element tensor. */
static void
fill_grads(CtModel *m, int s)
{
  float *g = ct_model_grads(m);
  size_t n = ct_model_n_params(m);
  for (size_t i = 0; i < n; i++)
    g[i] = (i % 7 == 3) ? 0.0f : (float) (0.1 * sin(0.37 * (double) i + 1.3 * s));
  g[ct_model_find(m, "logit_scale")->offset] = 0.05f * (float) (s + 1);
}

static float *
param_ptr(CtModel *m, const char *name)
{
  const CtParamInfo *info = ct_model_find(m, name);
  g_assert_nonnull(info);
  return ct_model_params(m) + info->offset;
}

static float *
grad_ptr(CtModel *m, const char *name)
{
  const CtParamInfo *info = ct_model_find(m, name);
  g_assert_nonnull(info);
  return ct_model_grads(m) + info->offset;
}

static void
assert_close(double got, double want, double atol, double rtol)
{
  if (!(fabs(got - want) <= atol + rtol * fabs(want)))
    g_error("got %.10g, want %.10g (diff %.3g)", got, want, fabs(got - want));
}

/* ---------------------------------------------------------------- kinds */

static void
test_kinds(void)
{
  CtModel *m = tiny_model(1);
  GError *error = NULL;
  g_assert_null(ct_optimizer_new(m, "lamb", &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "lamb"));
  g_assert_nonnull(strstr(error->message, "adamw"));
  g_clear_error(&error);
  g_assert_null(ct_optimizer_new(m, NULL, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);

  const char *const *kinds = ct_optimizer_kinds();
  g_assert_cmpstr(kinds[0], ==, "adam");
  g_assert_cmpstr(kinds[1], ==, "adamw");
  g_assert_cmpstr(kinds[2], ==, "sgd");
  g_assert_null(kinds[3]);

  /* defaults: fastai's Adam, open_clip's AdamW, fastai's SGD (mom 0.9) */
  CtOptimizer *adam = new_opt(m, "adam");
  g_assert_cmpstr(ct_optimizer_kind(adam), ==, "adam");
  g_assert_true(ct_optimizer_model(adam) == m);
  g_assert_cmpfloat(ct_optimizer_get(adam, "lr"), ==, 1e-3);
  g_assert_cmpfloat(ct_optimizer_get(adam, "mom"), ==, 0.9);
  g_assert_cmpfloat(ct_optimizer_get(adam, "sqr_mom"), ==, 0.99);
  g_assert_cmpfloat(ct_optimizer_get(adam, "eps"), ==, 1e-5);
  g_assert_cmpfloat(ct_optimizer_get(adam, "wd"), ==, 0.01);
  CtOptimizer *adamw = new_opt(m, "adamw");
  g_assert_cmpfloat(ct_optimizer_get(adamw, "beta1"), ==, 0.9);
  g_assert_cmpfloat(ct_optimizer_get(adamw, "beta2"), ==, 0.98);
  g_assert_cmpfloat(ct_optimizer_get(adamw, "eps"), ==, 1e-6);
  g_assert_cmpfloat(ct_optimizer_get(adamw, "weight_decay"), ==, 0.2);
  CtOptimizer *sgd = new_opt(m, "sgd");
  g_assert_cmpfloat(ct_optimizer_get(sgd, "mom"), ==, 0.9);
  g_assert_cmpfloat(ct_optimizer_get(sgd, "wd"), ==, 0.0);
  g_assert_true(isnan(ct_optimizer_get(sgd, "sqr_mom")));
  g_assert_true(isnan(ct_optimizer_get(sgd, "eps")));
  g_assert_true(isnan(ct_optimizer_get(adam, "momentum")));
  g_assert_cmpuint(g_strv_length((char **) ct_optimizer_hyper_names(sgd)), ==, 3);
  g_assert_cmpuint(g_strv_length((char **) ct_optimizer_hyper_names(adam)), ==, 5);

  /* aliases set the same value */
  set_hyper(adam, "beta1", 0.8);
  g_assert_cmpfloat(ct_optimizer_get(adam, "mom"), ==, 0.8);
  set_hyper(adam, "beta2", 0.95);
  g_assert_cmpfloat(ct_optimizer_get(adam, "sqr_mom"), ==, 0.95);
  set_hyper(adam, "weight_decay", 0.1);
  g_assert_cmpfloat(ct_optimizer_get(adam, "wd"), ==, 0.1);

  /* refused: a name the kind lacks, values out of range */
  g_assert_false(ct_optimizer_set(sgd, "sqr_mom", 0.9, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "sqr_mom"));
  g_clear_error(&error);
  g_assert_false(ct_optimizer_set(adam, "rho", 0.9, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_optimizer_set(adam, "mom", 1.0, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_optimizer_set(adam, "lr", -1e-3, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_optimizer_set(adam, "eps", NAN, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_optimizer_set(adam, "eps", 0.0, &error)); /* 0/0 at a zero gradient */
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_cmpfloat(ct_optimizer_get(adam, "mom"), ==, 0.8); /* unchanged */

  /* buffers by name */
  g_assert_nonnull(ct_optimizer_state(adam, "exp_avg"));
  g_assert_nonnull(ct_optimizer_state(adam, "exp_avg_sq"));
  g_assert_null(ct_optimizer_state(adam, "momentum_buffer"));
  g_assert_nonnull(ct_optimizer_state(sgd, "momentum_buffer"));
  g_assert_null(ct_optimizer_state(sgd, "exp_avg"));

  ct_optimizer_free(adam);
  ct_optimizer_free(adamw);
  ct_optimizer_free(sgd);
  ct_model_free(m);
}

/* ---------------------------------------------------------------- updates */

/* Three steps with lr and mom changing each step, as fit_one_cycle does. */
static const double lrs[3] = { 0.1, 0.05, 0.02 };
static const double moms[3] = { 0.95, 0.9, 0.85 };
/* the gradients of element 0 of text_projection, and its value after
 * each step from p = 1, worked out by hand (see the comments) */
static const float g0[3] = { 0.5f, 0.25f, -0.5f };

/* Run 3 steps of KIND on a tiny model and compare every element with a
 * float64 reference of the update rule written out here.  SQR, EPS, WD are
 * the hyper-parameters the reference uses (the kind's defaults where the
 * test does not set them).  WANT0 are element 0 of text_projection after
 * each step. */
static void
check_kind(const char *kind, gboolean set_sqr_eps_wd, double sqr, double eps, double wd,
           const double want0[3])
{
  CtModel *m = tiny_model(7);
  CtOptimizer *opt = new_opt(m, kind);
  gboolean sgd = strcmp(kind, "sgd") == 0;
  if (set_sqr_eps_wd) {
    if (!sgd) {
      set_hyper(opt, "sqr_mom", sqr);
      set_hyper(opt, "eps", eps);
    }
    set_hyper(opt, "wd", wd);
  }
  size_t n = ct_model_n_params(m);
  float *p = ct_model_params(m);
  param_ptr(m, "text_projection")[0] = 1.0f;
  double *rp = g_new(double, n), *rm = g_new0(double, n), *rv = g_new0(double, n);
  for (size_t i = 0; i < n; i++)
    rp[i] = p[i];
  for (int s = 0; s < 3; s++) {
    fill_grads(m, s);
    grad_ptr(m, "text_projection")[0] = g0[s];
    set_hyper(opt, "lr", lrs[s]);
    set_hyper(opt, "mom", moms[s]);
    ct_optimizer_step(opt);
    g_assert_cmpint(ct_optimizer_step_count(opt), ==, s + 1);
    const float *g = ct_model_grads(m);
    int t = s + 1;
    double lr = lrs[s], mom = moms[s];
    for (size_t ti = 0; ti < ct_model_n_tensors(m); ti++) {
      const CtParamInfo *info = ct_model_tensor(m, ti);
      g_assert_cmpint(ct_optimizer_tensor_steps(opt, ti), ==, t);
      for (size_t i = info->offset; i < info->offset + info->numel; i++) {
        if (info->decay)
          rp[i] *= 1 - lr * wd;
        if (sgd) {
          rm[i] = mom * rm[i] + g[i];
          rp[i] -= lr * rm[i];
        } else {
          rm[i] = mom * rm[i] + (1 - mom) * g[i];
          rv[i] = sqr * rv[i] + (1 - sqr) * (double) g[i] * g[i];
          double mhat = rm[i] / (1 - pow(mom, t)), vhat = rv[i] / (1 - pow(sqr, t));
          rp[i] -= lr * mhat / (sqrt(vhat) + eps);
        }
      }
    }
    for (size_t i = 0; i < n; i++)
      assert_close(p[i], rp[i], 2e-6, 2e-6);
    assert_close(param_ptr(m, "text_projection")[0], want0[s], 1e-6, 0);
    /* the moments too */
    const float *m1 = ct_optimizer_state(opt, sgd ? "momentum_buffer" : "exp_avg");
    for (size_t i = 0; i < n; i++)
      assert_close(m1[i], rm[i], 1e-7, 1e-5);
    if (!sgd) {
      const float *v1 = ct_optimizer_state(opt, "exp_avg_sq");
      for (size_t i = 0; i < n; i++)
        assert_close(v1[i], rv[i], 1e-9, 1e-5);
    }
  }
  g_free(rp);
  g_free(rm);
  g_free(rv);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

static void
test_adam(void)
{
  /* By hand, p = 1, sqr_mom 0.99, eps 1e-5, wd 0.01 (text_projection decays):
   * step 1 (lr .1, mom .95, g .5): p = .999; m = .025, m^ = .5;
   *   v = .0025, v^ = .25; p = .999 - .1 * .5 / (.5 + 1e-5) = .899002
   * steps 2, 3 the same way (lr .05, mom .9, g .25; lr .02, mom .85,
   * g -.5), the debias terms using the current mom: 1 - .9^2, 1 - .85^3. */
  static const double want[3] = { 0.8990020000, 0.8668827442, 0.8708537520 };
  check_kind("adam", TRUE, 0.99, 1e-5, 0.01, want);
}

static void
test_adamw(void)
{
  /* open_clip's defaults, not set: betas (mom, .98), eps 1e-6, wd .2;
   * step 1: p = 1 - .1*.2 = .98, then - .1 * .5 / (.5 + 1e-6) */
  static const double want[3] = { 0.8800002000, 0.8394812375, 0.8402677124 };
  check_kind("adamw", FALSE, 0.98, 1e-6, 0.2, want);
}

static void
test_sgd(void)
{
  /* wd .1: step 1 p = .99 - .1*.5 = .94; buf = .5
   * step 2: p = .94 * (1 - .005) = .9353; buf = .9*.5 + .25 = .7;
   *         p = .9353 - .05*.7 = .9003
   * step 3: p = .9003 * .998 = .8984994; buf = .85*.7 - .5 = .095;
   *         p = .8984994 - .02*.095 = .8965994 */
  static const double want[3] = { 0.94, 0.9003, 0.8965994 };
  check_kind("sgd", TRUE, 0, 0, 0.1, want);
  /* and the default, no decay */
  static const double want_nowd[3] = { 0.95, 0.915, 0.9131 };
  check_kind("sgd", FALSE, 0, 0, 0.0, want_nowd);
}

/* ---------------------------------------------------------------- decay */

static void
test_no_decay(void)
{
  CtModel *m = tiny_model(2);
  CtOptimizer *opt = new_opt(m, "adam");
  /* the default list decays exactly what the model marks for decay */
  size_t n_excluded = 0;
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    g_assert_cmpint(ct_optimizer_decays(opt, i), ==, ct_model_tensor(m, i)->decay);
    n_excluded += !ct_model_tensor(m, i)->decay;
  }
  g_assert_true(ct_optimizer_decays(opt, 1)); /* text_projection */
  g_assert_cmpuint(ct_optimizer_set_no_decay(opt, NULL), ==, n_excluded);

  /* zero gradients: Adam's update is 0 / (0 + eps), so only decay moves p */
  const char *gain = "visual.transformer.resblocks.0.ln_1.weight";
  const char *bias = "transformer.resblocks.1.mlp.c_fc.bias";
  const char *qkv_bias = "visual.transformer.resblocks.1.attn.in_proj_bias";
  const char *weight = "visual.transformer.resblocks.0.mlp.c_fc.weight";
  param_ptr(m, gain)[0] = 1.5f;
  param_ptr(m, bias)[0] = 0.25f;
  param_ptr(m, qkv_bias)[0] = -0.5f;
  param_ptr(m, weight)[0] = 0.75f;
  memset(ct_model_grads(m), 0, ct_model_n_params(m) * sizeof(float));
  set_hyper(opt, "lr", 0.1);
  set_hyper(opt, "wd", 0.5);
  float logit_scale = *ct_model_logit_scale(m);
  ct_optimizer_step(opt);
  g_assert_cmpfloat(param_ptr(m, gain)[0], ==, 1.5f);
  g_assert_cmpfloat(param_ptr(m, bias)[0], ==, 0.25f);
  g_assert_cmpfloat(param_ptr(m, qkv_bias)[0], ==, -0.5f);
  g_assert_cmpfloat(param_ptr(m, weight)[0], ==, 0.75f * 0.95f);
  g_assert_cmpfloat(*ct_model_logit_scale(m), ==, logit_scale);

  /* a recipe's list replaces the default */
  const char *const mine[] = { "*c_fc.weight", NULL };
  g_assert_cmpuint(ct_optimizer_set_no_decay(opt, mine), ==,
                   (size_t) (ct_model_config(m)->vision_layers +
                             ct_model_config(m)->transformer_layers));
  ct_optimizer_step(opt);
  g_assert_cmpfloat(param_ptr(m, weight)[0], ==, 0.75f * 0.95f);
  g_assert_cmpfloat(param_ptr(m, gain)[0], ==, 1.5f * 0.95f);
  g_assert_cmpfloat(param_ptr(m, bias)[0], ==, 0.25f * 0.95f);
  g_assert_cmpfloat(*ct_model_logit_scale(m), ==, logit_scale * 0.95f);

  /* an empty list decays everything; NULL brings the default back */
  const char *const none[] = { NULL };
  g_assert_cmpuint(ct_optimizer_set_no_decay(opt, none), ==, 0);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++)
    g_assert_true(ct_optimizer_decays(opt, i));
  ct_optimizer_set_no_decay(opt, NULL);
  for (size_t i = 0; i < ct_model_n_tensors(m); i++)
    g_assert_cmpint(ct_optimizer_decays(opt, i), ==, ct_model_tensor(m, i)->decay);
  g_assert_cmpuint(g_strv_length((char **) ct_optimizer_default_no_decay()), ==, 11); /* 3 for ResNets */

  ct_optimizer_free(opt);
  ct_model_free(m);
}

/* ---------------------------------------------------------------- lr groups */

static void
test_lr_mult(void)
{
  CtModel *m = tiny_model(3);
  CtOptimizer *opt = new_opt(m, "sgd");
  set_hyper(opt, "mom", 0.0);
  set_hyper(opt, "lr", 0.1);
  size_t n_visual = 0;
  for (size_t i = 0; i < ct_model_n_tensors(m); i++)
    n_visual += g_str_has_prefix(ct_model_tensor(m, i)->name, "visual.");
  g_assert_cmpuint(ct_optimizer_set_lr_mult(opt, "visual.*", 0.5), ==, n_visual);
  g_assert_cmpuint(ct_optimizer_set_lr_mult(opt, "visual.proj", 2.0), ==, 1); /* wins */
  g_assert_cmpuint(ct_optimizer_set_lr_mult(opt, "no.such.*", 3.0), ==, 0);
  g_assert_cmpfloat(ct_optimizer_lr_mult(opt, 0), ==, 1.0);
  memset(ct_model_grads(m), 0, ct_model_n_params(m) * sizeof(float));

  const char *names[] = { "transformer.resblocks.0.mlp.c_fc.weight", "visual.conv1.weight",
                          "visual.proj", "logit_scale" };
  const double mult[] = { 1.0, 0.5, 2.0, 1.0 };
  float before[4];
  for (int k = 0; k < 4; k++) {
    before[k] = param_ptr(m, names[k])[0];
    grad_ptr(m, names[k])[0] = 0.25f;
  }
  ct_optimizer_step(opt);
  for (int k = 0; k < 4; k++)
    assert_close(param_ptr(m, names[k])[0], before[k] - 0.1 * mult[k] * 0.25, 1e-7, 1e-7);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

/* ---------------------------------------------------------------- freezing */

static float *
snapshot(CtModel *m)
{
  return g_memdup2(ct_model_params(m), ct_model_n_params(m) * sizeof(float));
}

/* TRUE when tensor NAME has the same values in the model as in SNAP. */
static gboolean
unchanged(CtModel *m, const float *snap, const char *name)
{
  const CtParamInfo *info = ct_model_find(m, name);
  g_assert_nonnull(info);
  return memcmp(ct_model_params(m) + info->offset, snap + info->offset,
                info->numel * sizeof(float)) == 0;
}

static size_t
numel_where(CtModel *m, gboolean (*pred)(const char *))
{
  size_t n = 0;
  for (size_t i = 0; i < ct_model_n_tensors(m); i++)
    if (pred(ct_model_tensor(m, i)->name))
      n += ct_model_tensor(m, i)->numel;
  return n;
}

static gboolean
is_visual(const char *name)
{
  return g_str_has_prefix(name, "visual.");
}

static void
test_freeze(void)
{
  CtModel *m = tiny_model(4);
  CtOptimizer *opt = new_opt(m, "adamw");
  size_t n = ct_model_n_params(m);
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==, n);
  g_assert_cmpuint(ct_optimizer_freeze(opt, "visual.*"), >, 0);
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==, n - numel_where(m, is_visual));
  float *snap = snapshot(m);
  for (int s = 0; s < 2; s++) {
    fill_grads(m, s);
    ct_optimizer_step(opt);
  }
  const float *ea = ct_optimizer_state(opt, "exp_avg");
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    gboolean vis = is_visual(info->name);
    g_assert_cmpint(ct_optimizer_is_frozen(opt, i), ==, vis);
    g_assert_cmpint(unchanged(m, snap, info->name), ==, vis);
    g_assert_cmpint(ct_optimizer_tensor_steps(opt, i), ==, vis ? 0 : 2);
    if (vis)
      for (size_t j = 0; j < info->numel; j++)
        g_assert_cmpfloat(ea[info->offset + j], ==, 0.0f);
  }
  /* unfreezing: the tensor's own step count starts at 1 (fastai) */
  g_assert_cmpuint(ct_optimizer_unfreeze(opt, "visual.proj"), ==, 1);
  fill_grads(m, 2);
  ct_optimizer_step(opt);
  size_t proj = ct_model_find(m, "visual.proj") - ct_model_tensor(m, 0);
  g_assert_cmpint(ct_optimizer_tensor_steps(opt, proj), ==, 1);
  g_assert_cmpint(ct_optimizer_tensor_steps(opt, 0), ==, 3);
  g_assert_false(unchanged(m, snap, "visual.proj"));
  g_assert_true(unchanged(m, snap, "visual.conv1.weight"));
  g_free(snap);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

/* Freeze state after lock_tower(TOWER, N, NORMS) on a fresh optimizer; the
 * names in TRAINABLE (NULL-terminated) must be trainable, those in FROZEN
 * frozen. */
static void
check_lock(const char *tower, int unlocked, gboolean norms, const char *const *trainable,
           const char *const *frozen, gboolean (*in_tower)(const char *))
{
  CtModel *m = tiny_model(5);
  CtOptimizer *opt = new_opt(m, "adam");
  GError *error = NULL;
  g_assert_true(ct_optimizer_lock_tower(opt, tower, unlocked, norms, &error));
  g_assert_no_error(error);
  float *snap = snapshot(m);
  for (int s = 0; s < 2; s++) {
    fill_grads(m, s);
    ct_optimizer_step(opt);
  }
  for (const char *const *t = trainable; *t; t++) {
    size_t i = ct_model_find(m, *t) - ct_model_tensor(m, 0);
    if (ct_optimizer_is_frozen(opt, i) || unchanged(m, snap, *t))
      g_error("%s tower, %d unlocked: %s should be trainable", tower, unlocked, *t);
  }
  for (const char *const *f = frozen; *f; f++) {
    size_t i = ct_model_find(m, *f) - ct_model_tensor(m, 0);
    if (!ct_optimizer_is_frozen(opt, i) || !unchanged(m, snap, *f))
      g_error("%s tower, %d unlocked: %s should be frozen", tower, unlocked, *f);
  }
  /* nothing outside the tower is frozen */
  size_t frozen_numel = 0;
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    if (!in_tower(info->name))
      g_assert_false(ct_optimizer_is_frozen(opt, i));
    if (ct_optimizer_is_frozen(opt, i))
      frozen_numel += info->numel;
  }
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==, ct_model_n_params(m) - frozen_numel);
  g_free(snap);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

static gboolean
is_text(const char *name)
{
  return strcmp(name, "token_embedding.weight") == 0 ||
         strcmp(name, "positional_embedding") == 0 || g_str_has_prefix(name, "transformer.") ||
         g_str_has_prefix(name, "ln_final.") || strcmp(name, "text_projection") == 0;
}

static void
test_lock_image(void)
{
  /* tiny: 2 vision blocks, 2 text blocks */
  CtModel *m = tiny_model(5);
  g_assert_cmpint(ct_model_config(m)->vision_layers, ==, 2);
  g_assert_cmpint(ct_model_config(m)->transformer_layers, ==, 2);
  CtOptimizer *opt = new_opt(m, "adam");
  g_assert_true(ct_optimizer_lock_tower(opt, "image", 0, FALSE, NULL));
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==,
                   ct_model_n_params(m) - numel_where(m, is_visual));
  ct_optimizer_free(opt);
  ct_model_free(m);

  const char *const text[] = { "token_embedding.weight", "transformer.resblocks.0.ln_1.weight",
                               "text_projection", "logit_scale", NULL };
  const char *const all_visual[] = { "visual.conv1.weight", "visual.class_embedding",
                                     "visual.positional_embedding", "visual.ln_pre.weight",
                                     "visual.transformer.resblocks.0.attn.in_proj_weight",
                                     "visual.transformer.resblocks.1.mlp.c_fc.weight",
                                     "visual.transformer.resblocks.1.ln_2.bias",
                                     "visual.ln_post.weight", "visual.proj", NULL };
  check_lock("image", 0, FALSE, text, all_visual, is_visual);

  /* the last block, ln_post and proj stay trainable (open_clip's 2 groups) */
  const char *const last1[] = { "visual.transformer.resblocks.1.attn.in_proj_weight",
                                "visual.transformer.resblocks.1.attn.in_proj_bias",
                                "visual.transformer.resblocks.1.mlp.c_proj.weight",
                                "visual.transformer.resblocks.1.ln_1.weight",
                                "visual.ln_post.weight", "visual.ln_post.bias", "visual.proj",
                                "text_projection", "transformer.resblocks.0.mlp.c_fc.weight",
                                NULL };
  const char *const rest1[] = { "visual.conv1.weight", "visual.class_embedding",
                                "visual.positional_embedding", "visual.ln_pre.weight",
                                "visual.ln_pre.bias",
                                "visual.transformer.resblocks.0.attn.in_proj_weight",
                                "visual.transformer.resblocks.0.ln_1.weight",
                                "visual.transformer.resblocks.0.mlp.c_proj.bias", NULL };
  check_lock("image", 1, FALSE, last1, rest1, is_visual);

  /* N = L: every block, the stem stays locked; N = L + 1: nothing locked */
  const char *const lastL[] = { "visual.transformer.resblocks.0.attn.in_proj_weight",
                                "visual.transformer.resblocks.1.attn.in_proj_weight",
                                "visual.ln_post.weight", "visual.proj", NULL };
  const char *const stem[] = { "visual.conv1.weight", "visual.class_embedding",
                               "visual.positional_embedding", "visual.ln_pre.weight", NULL };
  check_lock("image", 2, FALSE, lastL, stem, is_visual);
  const char *const none[] = { NULL };
  check_lock("image", 3, FALSE, all_visual, none, is_visual);
  check_lock("image", 100, FALSE, all_visual, none, is_visual);

  /* unlock_norms: every LayerNorm of the tower stays trainable */
  const char *const norms[] = { "visual.ln_pre.weight", "visual.ln_pre.bias",
                                "visual.transformer.resblocks.0.ln_1.weight",
                                "visual.transformer.resblocks.0.ln_2.bias",
                                "visual.ln_post.weight", NULL };
  const char *const not_norms[] = { "visual.conv1.weight", "visual.proj",
                                    "visual.transformer.resblocks.0.attn.in_proj_bias",
                                    "visual.transformer.resblocks.1.mlp.c_fc.weight", NULL };
  check_lock("image", 0, TRUE, norms, not_norms, is_visual);
}

static void
test_lock_text(void)
{
  const char *const image[] = { "visual.conv1.weight", "visual.proj", "logit_scale",
                                "visual.transformer.resblocks.0.ln_1.weight", NULL };
  const char *const all_text[] = { "token_embedding.weight", "positional_embedding",
                                   "transformer.resblocks.0.attn.in_proj_weight",
                                   "transformer.resblocks.1.mlp.c_fc.bias",
                                   "ln_final.weight", "ln_final.bias", "text_projection",
                                   NULL };
  check_lock("text", 0, FALSE, image, all_text, is_text);
  const char *const last1[] = { "transformer.resblocks.1.attn.in_proj_weight",
                                "transformer.resblocks.1.ln_2.weight", "ln_final.weight",
                                "ln_final.bias", "text_projection", "visual.proj", NULL };
  const char *const rest1[] = { "token_embedding.weight", "positional_embedding",
                                "transformer.resblocks.0.attn.in_proj_weight",
                                "transformer.resblocks.0.ln_1.weight", NULL };
  check_lock("text", 1, FALSE, last1, rest1, is_text);
  const char *const none[] = { NULL };
  check_lock("text", 3, FALSE, all_text, none, is_text);

  CtModel *m = tiny_model(5);
  CtOptimizer *opt = new_opt(m, "sgd");
  GError *error = NULL;
  g_assert_false(ct_optimizer_lock_tower(opt, "audio", 0, FALSE, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "audio"));
  g_clear_error(&error);
  g_assert_false(ct_optimizer_lock_tower(opt, "text", -1, FALSE, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==, ct_model_n_params(m));
  /* both towers locked: only logit_scale is left */
  g_assert_true(ct_optimizer_lock_tower(opt, "image", 0, FALSE, NULL));
  g_assert_true(ct_optimizer_lock_tower(opt, "text", 0, FALSE, NULL));
  g_assert_cmpuint(ct_optimizer_n_trainable(opt), ==, 1);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

/* open_clip's unlocked groups, ResNet included, and the groups the model
 * may skip */
static void
test_lock_groups(void)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("rn", &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, 1, NULL);
  g_assert_nonnull(m);
  CtOptimizer *opt = new_opt(m, "adamw");
  GError *error = NULL;
  /* the block-counting form has nothing to count in a ResNet */
  g_assert_false(ct_optimizer_lock_tower(opt, "image", 1, FALSE, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "unlocked_groups"));
  g_clear_error(&error);
  g_assert_cmpint(ct_optimizer_frozen_groups(opt, "image"), ==, 0);
  /* 2 groups unlocked: layer4 and the attention pool */
  g_assert_true(ct_optimizer_lock_groups(opt, "image", 2, FALSE, &error));
  g_assert_no_error(error);
  const struct {
    const char *name;
    gboolean frozen;
  } rn[] = {
    { "visual.conv1.weight", TRUE },          { "visual.bn2.bias", TRUE },
    { "visual.layer1.0.conv1.weight", TRUE }, { "visual.layer3.0.downsample.1.weight", TRUE },
    { "visual.layer4.0.conv2.weight", FALSE }, { "visual.attnpool.c_proj.bias", FALSE },
    { "token_embedding.weight", FALSE },      { "logit_scale", FALSE },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(rn); i++) {
    size_t k = ct_model_find(m, rn[i].name) - ct_model_tensor(m, 0);
    if (ct_optimizer_is_frozen(opt, k) != rn[i].frozen)
      g_error("%s should %s", rn[i].name, rn[i].frozen ? "be locked" : "train");
  }
  g_assert_cmpint(ct_optimizer_frozen_groups(opt, "image"), ==, 4);
  g_assert_cmpint(ct_optimizer_frozen_groups(opt, "text"), ==, 0);
  g_assert_cmpint(ct_optimizer_frozen_groups(opt, "audio"), ==, -1);
  /* a glob that thaws one tensor of a group lowers what may be skipped */
  g_assert_cmpuint(ct_optimizer_unfreeze(opt, "visual.layer2.0.bn1.bias"), ==, 1);
  g_assert_cmpint(ct_optimizer_frozen_groups(opt, "image"), ==, 2);
  g_assert_false(ct_optimizer_lock_groups(opt, "image", -1, FALSE, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  ct_optimizer_free(opt);

  /* ViT: unlocked_groups N is the block form's N - 1; 0 locks it all */
  ct_model_free(m);
  m = tiny_model(5);
  for (int n = 0; n <= 5; n++) {
    CtOptimizer *a = new_opt(m, "adamw"), *b = new_opt(m, "adamw");
    g_assert_true(ct_optimizer_lock_groups(a, "text", n, FALSE, NULL));
    g_assert_true(ct_optimizer_lock_tower(b, "text", n <= 1 ? 0 : n - 1,
                                          FALSE, NULL));
    if (n != 1) /* one group is the projection alone, which blocks cannot say */
      for (size_t i = 0; i < ct_model_n_tensors(m); i++)
        g_assert_cmpint(ct_optimizer_is_frozen(a, i), ==, ct_optimizer_is_frozen(b, i));
    int G = ct_model_n_lock_groups(m, "text");
    g_assert_cmpint(ct_optimizer_frozen_groups(a, "text"), ==, n == 0 ? G : MAX(G - n, 0));
    ct_optimizer_free(a);
    ct_optimizer_free(b);
  }
  ct_model_free(m);
}

/* Layer decay: block k of L takes lr * d^(L - 1 - k), the stem d^L, the
 * last block, the final norm, the projection and logit_scale the full lr;
 * multiplied with lr_mult; an SGD step moves each by that lr. */
static void
test_layer_decay(void)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  cfg.vision_layers = 4;
  CtModel *m = ct_model_new(&cfg, 1, NULL);
  ct_model_init_weights(m, 3);
  CtOptimizer *opt = new_opt(m, "sgd");
  set_hyper(opt, "mom", 0.0);
  set_hyper(opt, "wd", 0.0);
  set_hyper(opt, "lr", 0.1);
  GError *error = NULL;
  g_assert_cmpuint(ct_optimizer_set_lr_mult(opt, "visual.transformer.resblocks.1.*", 2.0), >, 0);
  g_assert_true(ct_optimizer_set_layer_decay(opt, "image", 0.5, &error));
  g_assert_true(ct_optimizer_set_layer_decay(opt, "text", 0.8, &error));
  g_assert_no_error(error);
  const struct {
    const char *name;
    double mult;
  } want[] = {
    { "visual.conv1.weight", pow(0.5, 4) },
    { "visual.class_embedding", pow(0.5, 4) },
    { "visual.ln_pre.bias", pow(0.5, 4) },
    { "visual.transformer.resblocks.0.attn.in_proj_weight", pow(0.5, 3) },
    { "visual.transformer.resblocks.1.mlp.c_fc.weight", 2.0 * pow(0.5, 2) }, /* x lr_mult */
    { "visual.transformer.resblocks.2.ln_1.bias", 0.5 },
    { "visual.transformer.resblocks.3.mlp.c_proj.weight", 1.0 },
    { "visual.ln_post.weight", 1.0 },
    { "visual.proj", 1.0 },
    { "token_embedding.weight", pow(0.8, 2) },
    { "positional_embedding", pow(0.8, 2) },
    { "transformer.resblocks.0.attn.out_proj.weight", 0.8 },
    { "transformer.resblocks.1.attn.out_proj.weight", 1.0 },
    { "ln_final.bias", 1.0 },
    { "text_projection", 1.0 },
    { "logit_scale", 1.0 },
  };
  memset(ct_model_grads(m), 0, ct_model_n_params(m) * sizeof(float));
  float before[G_N_ELEMENTS(want)];
  for (size_t k = 0; k < G_N_ELEMENTS(want); k++) {
    size_t i = ct_model_find(m, want[k].name) - ct_model_tensor(m, 0);
    g_assert_cmpfloat_with_epsilon(ct_optimizer_lr_mult(opt, i), want[k].mult, 1e-15);
    before[k] = param_ptr(m, want[k].name)[0];
    grad_ptr(m, want[k].name)[0] = 0.25f;
  }
  ct_optimizer_step(opt);
  for (size_t k = 0; k < G_N_ELEMENTS(want); k++) {
    double moved = before[k] - param_ptr(m, want[k].name)[0];
    if (fabs(moved - 0.1 * want[k].mult * 0.25) > 1e-7)
      g_error("%s moved by %g, expected %g", want[k].name, moved, 0.1 * want[k].mult * 0.25);
  }
  /* lr_mult set afterwards still multiplies; a new decay replaces the old */
  size_t i = ct_model_find(m, "visual.conv1.weight") - ct_model_tensor(m, 0);
  ct_optimizer_set_lr_mult(opt, "visual.conv1.weight", 3.0);
  g_assert_cmpfloat_with_epsilon(ct_optimizer_lr_mult(opt, i), 3.0 / 16, 1e-15);
  g_assert_true(ct_optimizer_set_layer_decay(opt, "image", 1.0, NULL));
  g_assert_cmpfloat(ct_optimizer_lr_mult(opt, i), ==, 3.0);
  g_assert_cmpfloat(ct_optimizer_layer_scale(opt, i), ==, 1.0);
  for (size_t b = 0; b < 4; b++) {
    double bad[] = { 0.0, -0.5, 1.5, NAN };
    g_assert_false(ct_optimizer_set_layer_decay(opt, "image", bad[b], &error));
    g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
    g_clear_error(&error);
  }
  g_assert_false(ct_optimizer_set_layer_decay(opt, "audio", 0.5, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  ct_optimizer_free(opt);

  /* a ResNet: its 4 stages are the blocks */
  g_assert_true(ct_config_preset("rn", &cfg, NULL));
  ct_model_free(m);
  m = ct_model_new(&cfg, 1, NULL);
  opt = new_opt(m, "adamw");
  g_assert_true(ct_optimizer_set_layer_decay(opt, "image", 0.5, NULL));
  const struct {
    const char *name;
    double mult;
  } rn[] = {
    { "visual.bn1.weight", 1.0 / 16 },        { "visual.layer1.0.conv1.weight", 1.0 / 8 },
    { "visual.layer2.0.bn3.bias", 1.0 / 4 },  { "visual.layer3.0.conv2.weight", 1.0 / 2 },
    { "visual.layer4.0.conv3.weight", 1.0 }, { "visual.attnpool.q_proj.weight", 1.0 },
    { "text_projection", 1.0 },
  };
  for (size_t k = 0; k < G_N_ELEMENTS(rn); k++) {
    size_t t = ct_model_find(m, rn[k].name) - ct_model_tensor(m, 0);
    g_assert_cmpfloat(ct_optimizer_lr_mult(opt, t), ==, rn[k].mult);
  }
  ct_optimizer_free(opt);
  ct_model_free(m);
}

/* ---------------------------------------------------------------- state */

/* Steps S0 .. S1 - 1 of a fixed training: gradients fill_grads(s), lr and
 * mom changing per step. */
static void
run_steps(CtOptimizer *opt, CtModel *m, int s0, int s1)
{
  for (int s = s0; s < s1; s++) {
    fill_grads(m, s);
    set_hyper(opt, "lr", 0.01 / (1 + s));
    set_hyper(opt, "mom", 0.95 - 0.02 * s);
    ct_optimizer_step(opt);
  }
}

static void
check_resume(const char *kind)
{
  g_autofree char *path = g_build_filename(tmpdir, "opt.safetensors", NULL);
  size_t n_bytes;
  /* A: 5 steps straight; B: 3 steps, saved; C: loads B's state, 2 more */
  CtModel *a = tiny_model(6), *b = tiny_model(6), *c = tiny_model(6);
  n_bytes = ct_model_n_params(a) * sizeof(float);
  CtOptimizer *oa = new_opt(a, kind), *ob = new_opt(b, kind), *oc = new_opt(c, kind);
  /* a frozen tensor has no state; it must come back as none */
  for (CtOptimizer **o = (CtOptimizer *[]) { oa, ob, oc, NULL }; *o; o++)
    ct_optimizer_freeze(*o, "visual.conv1.weight");
  run_steps(oa, a, 0, 5);
  run_steps(ob, b, 0, 3);
  GError *error = NULL;
  g_assert_true(ct_optimizer_save(ob, path, &error));
  g_assert_no_error(error);

  /* the file: metadata and per-tensor entries */
  CtSafetensors *st = ct_safetensors_open(path, &error);
  g_assert_no_error(error);
  g_assert_cmpstr(ct_safetensors_metadata(st, "kind"), ==, kind);
  g_assert_cmpstr(ct_safetensors_metadata(st, "step"), ==, "3");
  g_assert_nonnull(ct_safetensors_metadata(st, "lr"));
  gboolean sgd = strcmp(kind, "sgd") == 0;
  const char *first = sgd ? "momentum_buffer.visual.proj" : "exp_avg.visual.proj";
  g_assert_nonnull(ct_safetensors_find(st, first));
  g_assert_cmpint(ct_safetensors_find(st, "step.logit_scale")->dtype, ==, CT_DTYPE_I64);
  g_assert_cmpint(ct_safetensors_find(st, "step.logit_scale")->ndim, ==, 0);
  g_assert_cmpint(ct_safetensors_find(st, "exp_avg_sq.visual.proj") != NULL, ==, !sgd);
  g_assert_null(ct_safetensors_find(st, "step.visual.conv1.weight"));
  ct_safetensors_free(st);

  /* C starts from B's weights and some junk state that the load replaces */
  memcpy(ct_model_params(c), ct_model_params(b), n_bytes);
  run_steps(oc, c, 7, 8);
  memcpy(ct_model_params(c), ct_model_params(b), n_bytes);
  ct_optimizer_unfreeze(oc, "visual.conv1.weight");
  fill_grads(c, 9);
  ct_optimizer_step(oc); /* conv1 now has state the file does not */
  ct_optimizer_freeze(oc, "visual.conv1.weight");
  memcpy(ct_model_params(c), ct_model_params(b), n_bytes);
  set_hyper(oc, "wd", 0.123);
  g_assert_true(ct_optimizer_load(oc, path, &error));
  g_assert_no_error(error);

  /* bit-exact state */
  g_assert_cmpint(ct_optimizer_step_count(oc), ==, 3);
  for (const char *const *h = ct_optimizer_hyper_names(ob); *h; h++)
    g_assert_cmpfloat(ct_optimizer_get(oc, *h), ==, ct_optimizer_get(ob, *h));
  for (size_t i = 0; i < ct_model_n_tensors(b); i++)
    g_assert_cmpint(ct_optimizer_tensor_steps(oc, i), ==, ct_optimizer_tensor_steps(ob, i));
  const char *bufs[] = { "exp_avg", "exp_avg_sq", "momentum_buffer" };
  for (int k = 0; k < 3; k++) {
    float *sb = ct_optimizer_state(ob, bufs[k]), *sc = ct_optimizer_state(oc, bufs[k]);
    g_assert_true((sb == NULL) == (sc == NULL));
    if (sb)
      g_assert_cmpmem(sb, n_bytes, sc, n_bytes);
  }
  /* continuing gives what not stopping gave, bit for bit */
  run_steps(oc, c, 3, 5);
  g_assert_cmpmem(ct_model_params(a), n_bytes, ct_model_params(c), n_bytes);
  g_assert_cmpint(ct_optimizer_step_count(oc), ==, 5);

  ct_optimizer_free(oa);
  ct_optimizer_free(ob);
  ct_optimizer_free(oc);
  ct_model_free(a);
  ct_model_free(b);
  ct_model_free(c);
}

static void
test_save_load(void)
{
  check_resume("adam");
  check_resume("adamw");
  check_resume("sgd");
}

/* Write a state file by hand: adam's buffers for visual.proj with SHAPE,
 * with or without its step, and EXTRA tensor name (NULL for none). */
static void
write_state(const char *path, const char *kind, CtModel *m, const int64_t *shape, int ndim,
            gboolean with_step, const char *extra)
{
  const CtParamInfo *info = ct_model_find(m, "visual.proj");
  float *zeros = g_new0(float, info->numel * 2);
  int64_t one = 1;
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  g_assert_true(ct_safetensors_writer_add(w, "exp_avg.visual.proj", CT_DTYPE_F32, ndim, shape,
                                          zeros, NULL));
  g_assert_true(ct_safetensors_writer_add(w, "exp_avg_sq.visual.proj", CT_DTYPE_F32, ndim,
                                          shape, zeros, NULL));
  if (with_step)
    g_assert_true(
      ct_safetensors_writer_add(w, "step.visual.proj", CT_DTYPE_I64, 0, NULL, &one, NULL));
  if (extra)
    g_assert_true(ct_safetensors_writer_add(w, extra, CT_DTYPE_F32, 0, NULL, zeros, NULL));
  ct_safetensors_writer_set_metadata(w, "format", "cliptrain-optimizer");
  ct_safetensors_writer_set_metadata(w, "kind", kind);
  ct_safetensors_writer_set_metadata(w, "step", "1");
  for (const char *const *h = (const char *const[]) { "lr", "mom", "sqr_mom", "eps", "wd", NULL };
       *h; h++)
    ct_safetensors_writer_set_metadata(w, *h, "0.5");
  GError *error = NULL;
  g_assert_true(ct_safetensors_writer_write(w, path, &error));
  g_assert_no_error(error);
  ct_safetensors_writer_free(w);
  g_free(zeros);
}

static void
expect_load_error(CtOptimizer *opt, const char *path, int code, const char *needle)
{
  const float *ea = ct_optimizer_state(opt, "exp_avg");
  size_t n = ct_model_n_params(ct_optimizer_model(opt)) * sizeof(float);
  g_autofree float *before = ea ? g_memdup2(ea, n) : NULL;
  int64_t step = ct_optimizer_step_count(opt);
  double lr = ct_optimizer_get(opt, "lr");
  GError *error = NULL;
  g_assert_false(ct_optimizer_load(opt, path, &error));
  g_assert_error(error, CT_ERROR, code);
  g_assert_nonnull(strstr(error->message, path));
  if (needle && !strstr(error->message, needle))
    g_error("'%s' does not name '%s'", error->message, needle);
  g_clear_error(&error);
  /* a failed load changes nothing */
  g_assert_cmpint(ct_optimizer_step_count(opt), ==, step);
  g_assert_cmpfloat(ct_optimizer_get(opt, "lr"), ==, lr);
  if (before)
    g_assert_cmpmem(before, n, ea, n);
}

static void
test_load_errors(void)
{
  CtModel *m = tiny_model(8);
  CtOptimizer *adam = new_opt(m, "adam"), *sgd = new_opt(m, "sgd");
  run_steps(adam, m, 0, 2);
  g_autofree char *good = g_build_filename(tmpdir, "adam.safetensors", NULL);
  g_assert_true(ct_optimizer_save(adam, good, NULL));

  /* another kind */
  expect_load_error(sgd, good, CT_ERROR_CONFIG, "adam");
  g_autofree char *adamw_file = g_build_filename(tmpdir, "adamw.safetensors", NULL);
  CtOptimizer *adamw = new_opt(m, "adamw");
  g_assert_true(ct_optimizer_save(adamw, adamw_file, NULL));
  expect_load_error(adam, adamw_file, CT_ERROR_CONFIG, "adamw");
  ct_optimizer_free(adamw);

  /* no such file; a model checkpoint is no optimizer state */
  g_autofree char *missing = g_build_filename(tmpdir, "nope.safetensors", NULL);
  expect_load_error(adam, missing, CT_ERROR_IO, NULL);
  g_autofree char *model_file = g_build_filename(tmpdir, "model.safetensors", NULL);
  g_assert_true(ct_model_save(m, model_file, NULL, NULL));
  expect_load_error(adam, model_file, CT_ERROR_FORMAT, NULL);

  const CtParamInfo *proj = ct_model_find(m, "visual.proj");
  g_autofree char *bad = g_build_filename(tmpdir, "bad.safetensors", NULL);
  /* a well-formed hand-written file loads */
  write_state(bad, "adam", m, proj->shape, 2, TRUE, NULL);
  CtOptimizer *fresh = new_opt(m, "adam");
  GError *error = NULL;
  g_assert_true(ct_optimizer_load(fresh, bad, &error));
  g_assert_no_error(error);
  g_assert_cmpfloat(ct_optimizer_get(fresh, "lr"), ==, 0.5);
  g_assert_cmpint(ct_optimizer_tensor_steps(fresh, proj - ct_model_tensor(m, 0)), ==, 1);
  ct_optimizer_free(fresh);
  /* a buffer of the right size but another shape */
  int64_t flat[1] = { (int64_t) proj->numel };
  write_state(bad, "adam", m, flat, 1, TRUE, NULL);
  expect_load_error(adam, bad, CT_ERROR_SHAPE, "exp_avg.visual.proj");
  /* buffers without their step count */
  write_state(bad, "adam", m, proj->shape, 2, FALSE, NULL);
  expect_load_error(adam, bad, CT_ERROR_MISSING, "step.visual.proj");
  /* a tensor the model lacks, a name that is no state */
  write_state(bad, "adam", m, proj->shape, 2, TRUE, "exp_avg.visual.nothing");
  expect_load_error(adam, bad, CT_ERROR_FORMAT, "exp_avg.visual.nothing");
  write_state(bad, "adam", m, proj->shape, 2, TRUE, "momentum_buffer.visual.proj");
  expect_load_error(adam, bad, CT_ERROR_FORMAT, "momentum_buffer.visual.proj");

  ct_optimizer_free(adam);
  ct_optimizer_free(sgd);
  ct_model_free(m);
}

/* ---------------------------------------------------------------- schedules */

static CtSchedule *
new_sched(const char *name)
{
  GError *error = NULL;
  CtSchedule *s = ct_schedule_new(name, &error);
  g_assert_no_error(error);
  g_assert_nonnull(s);
  return s;
}

static void
sset(CtSchedule *s, const char *param, double v)
{
  GError *error = NULL;
  g_assert_true(ct_schedule_set(s, param, v, &error));
  g_assert_no_error(error);
}

static void
check_at(CtSchedule *s, int64_t step, int64_t total, double want_lr, double want_mom)
{
  double mom = 0;
  double lr = ct_schedule_eval(s, step, total, &mom);
  if (!(fabs(lr - want_lr) <= 1e-12 + 1e-12 * fabs(want_lr)))
    g_error("%s at %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT ": lr %.17g, want %.17g",
            ct_schedule_name(s), step, total, lr, want_lr);
  if (isnan(want_mom))
    g_assert_true(isnan(mom));
  else if (!(fabs(mom - want_mom) <= 1e-12))
    g_error("%s at %" G_GINT64_FORMAT ": mom %.17g, want %.17g", ct_schedule_name(s), step,
            mom, want_mom);
}

/* bfloat16 state: N steps of KIND from the same start and gradients,
 * with fp32 or bf16 moments, on POOL threads; the parameters (copied). */
static float *
run_state(const char *kind, CtPrecision prec, int steps, int pool, const char *save_at)
{
  CtModel *m = tiny_model(3);
  CtOptimizer *opt = new_opt(m, kind);
  GError *error = NULL;
  g_assert_true(ct_optimizer_set_state_precision(opt, prec, &error));
  g_assert_no_error(error);
  g_assert_cmpint(ct_optimizer_state_precision(opt), ==, prec);
  ct_set_num_threads(pool);
  for (int s = 0; s < steps; s++) {
    fill_grads(m, s);
    ct_optimizer_step(opt);
    if (save_at && s == steps / 2) { /* save, then load into a fresh optimizer */
      g_assert_true(ct_optimizer_save(opt, save_at, &error));
      CtOptimizer *o2 = new_opt(m, kind);
      g_assert_true(ct_optimizer_set_state_precision(o2, prec, &error));
      g_assert_true(ct_optimizer_load(o2, save_at, &error));
      g_assert_no_error(error);
      ct_optimizer_free(opt);
      opt = o2;
    }
  }
  ct_set_num_threads(1);
  float *p = g_memdup2(ct_model_params(m), ct_model_n_params(m) * sizeof(float));
  ct_optimizer_free(opt);
  ct_model_free(m);
  return p;
}

static void
test_state_bf16(void)
{
  CtModel *m = tiny_model(3);
  size_t n = ct_model_n_params(m);
  CtOptimizer *opt = new_opt(m, "adamw");
  size_t full = ct_optimizer_state_bytes(opt);
  GError *error = NULL;
  g_assert_true(ct_optimizer_set_state_precision(opt, CT_PRECISION_BF16, &error));
  g_assert_cmpuint(ct_optimizer_state_bytes(opt), ==, full / 2); /* half the memory */
  g_assert_null(ct_optimizer_state(opt, "exp_avg"));
  g_assert_false(ct_optimizer_set_state_precision(opt, CT_PRECISION_FP16, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  fill_grads(m, 0);
  ct_optimizer_step(opt);
  g_assert_false(ct_optimizer_set_state_precision(opt, CT_PRECISION_FP32, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  ct_optimizer_free(opt);
  ct_model_free(m);

  for (int k = 0; k < 3; k++) {
    const char *kind = (const char *const[]) { "adam", "adamw", "sgd" }[k];
    g_autofree float *p0 = run_state(kind, CT_PRECISION_FP32, 20, 1, NULL);
    g_autofree float *p1 = run_state(kind, CT_PRECISION_BF16, 20, 1, NULL);
    g_autofree float *p3 = run_state(kind, CT_PRECISION_BF16, 20, 3, NULL);
    g_autofree char *path = g_build_filename(tmpdir, "bf16.safetensors", NULL);
    g_autofree float *pr = run_state(kind, CT_PRECISION_BF16, 20, 2, path);
    /* the same bits on 1 and 3 threads, and through a save and a load */
    g_assert_cmpmem(p1, n * sizeof(float), p3, n * sizeof(float));
    g_assert_cmpmem(p1, n * sizeof(float), pr, n * sizeof(float));
    /* close to float32 moments, not equal: the moved distance agrees to
     * within a few bfloat16 units */
    CtModel *m0 = tiny_model(3);
    const float *start = ct_model_params(m0);
    double moved = 0, diff = 0;
    int differ = 0;
    for (size_t i = 0; i < n; i++) {
      moved += fabs((double) p0[i] - start[i]);
      diff += fabs((double) p1[i] - p0[i]);
      differ += p1[i] != p0[i];
    }
    ct_model_free(m0);
    g_assert_cmpint(differ, >, 0);
    if (!(diff < 0.02 * moved))
      g_error("%s: bf16 state moved the parameters %g away from fp32's (of %g moved)", kind,
              diff, moved);
  }
}

/* The bfloat16 kernels run 16 lanes, then 4, then one element at a time;
 * every path does the same operations, so an element gets the same bits
 * whichever path takes it.  Two shards cut at odd offsets move elements
 * between the paths (a range's lanes count from its start), and together
 * must step the parameters exactly as one whole optimizer does. */
static void
test_state_bf16_paths(void)
{
  for (int k = 0; k < 2; k++) {
    const char *kind = k ? "sgd" : "adamw";
    CtModel *whole = tiny_model(5), *cut = tiny_model(5);
    size_t n = ct_model_n_params(whole);
    CtOptimizer *ow = new_opt(whole, kind);
    size_t at[] = { 0, 7, n / 2 + 3, n };
    CtOptimizer *oc[3];
    GError *error = NULL;
    g_assert_true(ct_optimizer_set_state_precision(ow, CT_PRECISION_BF16, &error));
    for (int r = 0; r < 3; r++) {
      oc[r] = new_opt(cut, kind);
      g_assert_true(ct_optimizer_set_state_precision(oc[r], CT_PRECISION_BF16, &error));
      g_assert_true(ct_optimizer_set_shard(oc[r], at[r], at[r + 1] - at[r], &error));
      g_assert_no_error(error);
    }
    for (int s = 0; s < 5; s++) {
      fill_grads(whole, s);
      fill_grads(cut, s);
      ct_optimizer_step(ow);
      for (int r = 0; r < 3; r++)
        ct_optimizer_step(oc[r]);
    }
    g_assert_cmpmem(ct_model_params(whole), n * sizeof(float), ct_model_params(cut),
                    n * sizeof(float));
    ct_optimizer_free(ow);
    for (int r = 0; r < 3; r++)
      ct_optimizer_free(oc[r]);
    ct_model_free(whole);
    ct_model_free(cut);
  }
}

/* Stepping ahead (ct_optimizer_step_range, or _from gradients kept
 * elsewhere: the fused step) gives each tensor the bits of
 * ct_optimizer_step(): ranges that cover whole tensors are stepped once, a tensor that the range cuts is left to the step, a
 * second call over the same range steps nothing twice.  And
 * ct_model_release_grads zeroes exactly its range, pages given back. */
static void
test_step_range(void)
{
  for (int k = 0; k < 3; k++) {
    CtModel *a = tiny_model(2), *b = tiny_model(2);
    CtOptimizer *oa = new_opt(a, k == 1 ? "sgd" : "adamw");
    CtOptimizer *ob = new_opt(b, k == 1 ? "sgd" : "adamw");
    GError *error = NULL;
    if (k == 2) {
      g_assert_true(ct_optimizer_set_state_precision(oa, CT_PRECISION_BF16, &error));
      g_assert_true(ct_optimizer_set_state_precision(ob, CT_PRECISION_BF16, &error));
    }
    size_t n = ct_model_n_params(a);
    const CtParamInfo *t3 = ct_model_tensor(b, 3), *t9 = ct_model_tensor(b, 9);
    for (int s = 0; s < 4; s++) {
      fill_grads(a, s);
      fill_grads(b, s);
      ct_optimizer_step(oa);
      /* tensors 3 to 9 whole, read from a copy (a block scratch) while the
       * flat buffer's range is cleared; then again, which steps nothing;
       * then a range that cuts tensor 10 */
      size_t lo = t3->offset, len = t9->offset + t9->numel - t3->offset;
      float *copy = g_memdup2(ct_model_grads(b) + lo, len * sizeof(float));
      memset(ct_model_grads(b) + lo, 0, len * sizeof(float));
      ct_optimizer_step_range_from(ob, lo, len, copy);
      g_free(copy);
      ct_optimizer_step_range(ob, t3->offset, t9->offset + t9->numel - t3->offset);
      ct_optimizer_step_range(ob, t9->offset + t9->numel, ct_model_tensor(b, 10)->numel - 1);
      ct_optimizer_step(ob);
      g_assert_cmpmem(ct_model_params(a), n * sizeof(float), ct_model_params(b),
                      n * sizeof(float));
    }
    g_assert_cmpint(ct_optimizer_step_count(ob), ==, 4);
    g_assert_cmpint(ct_optimizer_tensor_steps(ob, 3), ==, 4);
    g_assert_cmpint(ct_optimizer_tensor_steps(ob, 10), ==, 4);
    ct_optimizer_free(oa);
    ct_optimizer_free(ob);
    ct_model_free(a);
    ct_model_free(b);
  }

  CtModel *m = tiny_model(2);
  size_t n = ct_model_n_params(m);
  float *g = ct_model_grads(m);
  for (size_t i = 0; i < n; i++)
    g[i] = 1.0f;
  size_t lo = 1001, len = 3 * 4096 + 77; /* partial pages at both ends */
  ct_model_release_grads(m, lo, len);
  for (size_t i = 0; i < n; i++)
    if (g[i] != (i >= lo && i < lo + len ? 0.0f : 1.0f))
      g_error("gradient %zu is %g after releasing [%zu, %zu)", i, (double) g[i], lo, lo + len);
  ct_model_release_grads(m, 0, n);
  for (size_t i = 0; i < n; i++)
    g_assert_cmpfloat(g[i], ==, 0.0f);
  g[5] = 2.0f; /* released pages can be written again */
  g_assert_cmpfloat(g[5], ==, 2.0f);
  ct_model_free(m);
}

/* Stochastic rounding is unbiased: a second moment of constant gradients
 * decaying with beta2 = 0.999, where round-to-nearest would stall, follows
 * float32's to within a few tenths of a percent. */
static void
test_state_bf16_small_updates(void)
{
  CtModel *m[2] = { tiny_model(3), tiny_model(3) };
  CtOptimizer *o[2];
  for (int k = 0; k < 2; k++) {
    o[k] = new_opt(m[k], "adam");
    set_hyper(o[k], "sqr_mom", 0.999);
    set_hyper(o[k], "lr", 0.0);
    g_assert_true(ct_optimizer_set_state_precision(o[k], k ? CT_PRECISION_BF16 : CT_PRECISION_FP32,
                                                   NULL));
  }
  g_autofree char *path = g_build_filename(tmpdir, "sq.safetensors", NULL);
  for (int s = 0; s < 300; s++)
    for (int k = 0; k < 2; k++) {
      float *g = ct_model_grads(m[k]);
      for (size_t i = 0; i < ct_model_n_params(m[k]); i++)
        g[i] = s < 100 ? 1.0f : 0.5f; /* v moves from ~0.1 towards 0.25 by 0.1% steps */
      ct_optimizer_step(o[k]);
    }
  /* compare the second moments through saved files (bf16 has no float view) */
  double mean[2] = { 0, 0 };
  for (int k = 0; k < 2; k++) {
    g_assert_true(ct_optimizer_save(o[k], path, NULL));
    CtSafetensors *st = ct_safetensors_open(path, NULL);
    const CtParamInfo *info = ct_model_find(m[k], "visual.proj");
    float *v = g_new(float, info->numel);
    g_assert_true(ct_safetensors_read_f32(st, "exp_avg_sq.visual.proj", v, info->numel, NULL));
    for (size_t i = 0; i < info->numel; i++)
      mean[k] += v[i] / info->numel;
    g_free(v);
    ct_safetensors_free(st);
  }
  if (!(fabs(mean[1] - mean[0]) < 0.003 * mean[0]))
    g_error("bf16 second moment %g, float32 %g", mean[1], mean[0]);
  for (int k = 0; k < 2; k++) {
    ct_optimizer_free(o[k]);
    ct_model_free(m[k]);
  }
}

static void
test_schedule_names(void)
{
  GError *error = NULL;
  g_assert_null(ct_schedule_new("triangle", &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "triangle"));
  g_assert_nonnull(strstr(error->message, "one_cycle"));
  g_clear_error(&error);
  g_assert_cmpuint(g_strv_length((char **) ct_schedule_names()), ==, 5);
  for (const char *const *n = ct_schedule_names(); *n; n++) {
    CtSchedule *s = new_sched(*n);
    g_assert_cmpstr(ct_schedule_name(s), ==, *n);
    g_assert_cmpfloat(ct_schedule_get(s, "lr"), ==, 1e-3);
    g_assert_cmpfloat(ct_schedule_get(s, "lr_max"), ==, 1e-3);
    for (const char *const *p = ct_schedule_params(s); *p; p++)
      g_assert_false(isnan(ct_schedule_get(s, *p)));
    ct_schedule_free(s);
  }
  CtSchedule *s = new_sched("one_cycle");
  g_assert_false(ct_schedule_set(s, "warmup", 10, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "warmup"));
  g_clear_error(&error);
  g_assert_false(ct_schedule_set(s, "pct_start", 1.5, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_schedule_set(s, "div", 0, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_true(isnan(ct_schedule_get(s, "warmup")));
  ct_schedule_free(s);
  s = new_sched("warmup_cosine");
  g_assert_false(ct_schedule_set(s, "warmup", 2.5, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_false(ct_schedule_set(s, "lr", -1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  ct_schedule_free(s);
}

static void
test_schedule_const(void)
{
  CtSchedule *s = new_sched("const");
  sset(s, "lr", 3e-4);
  check_at(s, 0, 100, 3e-4, NAN);
  check_at(s, 99, 100, 3e-4, NAN);
  g_assert_cmpfloat(ct_schedule_eval_pct(s, 0.5, NULL), ==, 3e-4);
  sset(s, "warmup", 4);
  check_at(s, 0, 100, 3e-4 * 1 / 4, NAN);
  check_at(s, 3, 100, 3e-4, NAN);
  check_at(s, 4, 100, 3e-4, NAN);
  g_assert_true(isnan(ct_schedule_eval_pct(s, 0.5, NULL)));
  ct_schedule_free(s);
}

static void
test_schedule_one_cycle(void)
{
  CtSchedule *s = new_sched("one_cycle");
  g_assert_cmpfloat(ct_schedule_get(s, "div"), ==, 25);
  g_assert_cmpfloat(ct_schedule_get(s, "div_final"), ==, 1e5);
  g_assert_cmpfloat(ct_schedule_get(s, "pct_start"), ==, 0.25);
  sset(s, "lr_max", 1e-2);
  const double lr = 1e-2, lo = lr / 25, end = lr / 1e5;
  /* pct 0: the start of phase 1, cos(pi) = -1 */
  check_at(s, 0, 200, lo, 0.95);
  /* pct .125: half way through phase 1, cos(pi/2) = 0 */
  check_at(s, 25, 200, (lo + lr) / 2, (0.95 + 0.85) / 2);
  /* just before the boundary: pos .98 */
  double w = (1 + cos(G_PI * 0.02)) / 2;
  check_at(s, 49, 200, lo + w * (lr - lo), 0.95 + w * (0.85 - 0.95));
  /* pct .25: phase 2 begins at lr_max, mom at its low */
  check_at(s, 50, 200, lr, 0.85);
  /* pct .625: half way through phase 2 */
  check_at(s, 125, 200, (lr + end) / 2, 0.9);
  /* the last batch, pos (199/200 - .25) / .75 */
  double pos = (199.0 / 200 - 0.25) / 0.75;
  w = (1 + cos(G_PI * (1 - pos))) / 2;
  check_at(s, 199, 200, lr + w * (end - lr), 0.85 + w * 0.1);
  /* pct 1: the end values */
  double mom;
  g_assert_cmpfloat_with_epsilon(ct_schedule_eval_pct(s, 1.0, &mom), end, 1e-15);
  g_assert_cmpfloat_with_epsilon(mom, 0.95, 1e-15);
  g_assert_cmpfloat_with_epsilon(ct_schedule_eval_pct(s, 0.25, &mom), lr, 1e-15);
  g_assert_cmpfloat_with_epsilon(mom, 0.85, 1e-15);

  /* other moms and pct_start 0 (no warm-up phase) */
  sset(s, "mom_start", 0.9);
  sset(s, "mom_mid", 0.8);
  sset(s, "mom_end", 0.7);
  sset(s, "pct_start", 0);
  check_at(s, 0, 100, lr, 0.8);
  check_at(s, 50, 100, (lr + end) / 2, 0.75);
  /* pct_start 1: all warm-up, no division by zero at pct 1 */
  sset(s, "pct_start", 1);
  check_at(s, 50, 100, (lo + lr) / 2, 0.85);
  g_assert_cmpfloat_with_epsilon(ct_schedule_eval_pct(s, 1.0, &mom), lr, 1e-15);
  g_assert_cmpfloat_with_epsilon(mom, 0.8, 1e-15);
  ct_schedule_free(s);
}

static void
test_schedule_flat_cos(void)
{
  CtSchedule *s = new_sched("flat_cos");
  g_assert_cmpfloat(ct_schedule_get(s, "pct_start"), ==, 0.75);
  sset(s, "lr", 2e-3);
  const double lr = 2e-3, end = lr / 1e5;
  check_at(s, 0, 200, lr, NAN);
  check_at(s, 149, 200, lr, NAN);
  check_at(s, 150, 200, lr, NAN); /* phase 2 at pos 0 */
  check_at(s, 175, 200, (lr + end) / 2, NAN);
  double pos = (199.0 / 200 - 0.75) / 0.25;
  check_at(s, 199, 200, lr + (1 + cos(G_PI * (1 - pos))) / 2 * (end - lr), NAN);
  double mom = 0;
  g_assert_cmpfloat_with_epsilon(ct_schedule_eval_pct(s, 1.0, &mom), end, 1e-15);
  g_assert_true(isnan(mom));
  /* the fastai/self_supervised CLIP module's training script's pct_start .25 */
  sset(s, "pct_start", 0.25);
  check_at(s, 24, 100, lr, NAN);
  check_at(s, 25, 100, lr, NAN);
  check_at(s, 50, 100, lr + (1 + cos(G_PI * (1 - 1.0 / 3))) / 2 * (end - lr), NAN);
  ct_schedule_free(s);
}

static void
test_schedule_warmup_cosine(void)
{
  CtSchedule *s = new_sched("warmup_cosine");
  sset(s, "lr", 5e-4);
  sset(s, "warmup", 10);
  const double lr = 5e-4;
  check_at(s, 0, 110, lr * 1 / 10, NAN);
  check_at(s, 4, 110, lr * 5 / 10, NAN);
  check_at(s, 9, 110, lr, NAN); /* (9 + 1) / 10 */
  check_at(s, 10, 110, lr, NAN); /* cosine at e = 0 */
  check_at(s, 60, 110, lr / 2, NAN); /* e / es = 1/2 */
  check_at(s, 109, 110, 0.5 * (1 + cos(G_PI * 99 / 100)) * lr, NAN);
  check_at(s, 110, 110, 0, NAN);
  check_at(s, 130, 110, 0, NAN); /* past the end: stays at 0 */
  g_assert_true(isnan(ct_schedule_eval_pct(s, 0.5, NULL)));
  /* no warmup */
  sset(s, "warmup", 0);
  check_at(s, 0, 100, lr, NAN);
  check_at(s, 25, 100, 0.5 * (1 + cos(G_PI / 4)) * lr, NAN);
  ct_schedule_free(s);
}

static void
test_schedule_const_cooldown(void)
{
  CtSchedule *s = new_sched("const_cooldown");
  g_assert_cmpfloat(ct_schedule_get(s, "cooldown_power"), ==, 1);
  g_assert_cmpfloat(ct_schedule_get(s, "lr_end"), ==, 0);
  const double lr = 1e-3, end = 1e-5;
  sset(s, "lr", lr);
  sset(s, "warmup", 10);
  sset(s, "cooldown_steps", 20);
  sset(s, "lr_end", end);
  check_at(s, 0, 100, lr / 10, NAN);
  check_at(s, 9, 100, lr, NAN);
  check_at(s, 10, 100, lr, NAN);
  check_at(s, 79, 100, lr, NAN);
  check_at(s, 80, 100, lr, NAN); /* cooldown at e = 0: decay 1 */
  check_at(s, 90, 100, 0.5 * (lr - end) + end, NAN);
  check_at(s, 99, 100, (1.0 / 20) * (lr - end) + end, NAN);
  check_at(s, 100, 100, end, NAN);
  sset(s, "cooldown_power", 2);
  check_at(s, 90, 100, 0.25 * (lr - end) + end, NAN);
  check_at(s, 95, 100, 0.0625 * (lr - end) + end, NAN);
  /* the warmup takes precedence over a cooldown that overlaps it */
  sset(s, "warmup", 50);
  sset(s, "cooldown_steps", 80);
  check_at(s, 30, 100, lr * 31 / 50, NAN);
  check_at(s, 50, 100, pow(1 - 30.0 / 80, 2) * (lr - end) + end, NAN);
  ct_schedule_free(s);
}

static void
test_schedule_apply(void)
{
  CtModel *m = tiny_model(9);
  CtOptimizer *opt = new_opt(m, "adam");
  CtSchedule *oc = new_sched("one_cycle");
  sset(oc, "lr", 1e-2);
  GError *error = NULL;
  g_assert_true(ct_schedule_apply(oc, opt, 50, 200, &error));
  g_assert_no_error(error);
  g_assert_cmpfloat_with_epsilon(ct_optimizer_get(opt, "lr"), 1e-2, 1e-15);
  g_assert_cmpfloat_with_epsilon(ct_optimizer_get(opt, "mom"), 0.85, 1e-15);
  /* flat_cos leaves mom alone */
  CtSchedule *fc = new_sched("flat_cos");
  g_assert_true(ct_schedule_apply(fc, opt, 0, 200, &error));
  g_assert_cmpfloat(ct_optimizer_get(opt, "lr"), ==, 1e-3);
  g_assert_cmpfloat_with_epsilon(ct_optimizer_get(opt, "mom"), 0.85, 1e-15);
  ct_schedule_free(oc);
  ct_schedule_free(fc);
  ct_optimizer_free(opt);
  ct_model_free(m);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("ct-test-optimizer-XXXXXX", NULL);
  g_test_add_func("/optimizer/kinds", test_kinds);
  g_test_add_func("/optimizer/adam", test_adam);
  g_test_add_func("/optimizer/adamw", test_adamw);
  g_test_add_func("/optimizer/sgd", test_sgd);
  g_test_add_func("/optimizer/no-decay", test_no_decay);
  g_test_add_func("/optimizer/lr-mult", test_lr_mult);
  g_test_add_func("/optimizer/freeze", test_freeze);
  g_test_add_func("/optimizer/lock-image", test_lock_image);
  g_test_add_func("/optimizer/lock-text", test_lock_text);
  g_test_add_func("/optimizer/lock-groups", test_lock_groups);
  g_test_add_func("/optimizer/layer-decay", test_layer_decay);
  g_test_add_func("/optimizer/save-load", test_save_load);
  g_test_add_func("/optimizer/load-errors", test_load_errors);
  g_test_add_func("/optimizer/state-bf16", test_state_bf16);
  g_test_add_func("/optimizer/state-bf16-small-updates", test_state_bf16_small_updates);
  g_test_add_func("/optimizer/state-bf16-paths", test_state_bf16_paths);
  g_test_add_func("/optimizer/step-range", test_step_range);
  g_test_add_func("/schedule/names", test_schedule_names);
  g_test_add_func("/schedule/const", test_schedule_const);
  g_test_add_func("/schedule/one-cycle", test_schedule_one_cycle);
  g_test_add_func("/schedule/flat-cos", test_schedule_flat_cos);
  g_test_add_func("/schedule/warmup-cosine", test_schedule_warmup_cosine);
  g_test_add_func("/schedule/const-cooldown", test_schedule_const_cooldown);
  g_test_add_func("/schedule/apply", test_schedule_apply);
  int rc = g_test_run();
  ct_test_remove_dir(tmpdir);
  g_free(tmpdir);
  return rc;
}

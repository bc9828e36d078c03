/* clip_parity: forward and backward of CLIP against PyTorch reference cases,
 * and the variants of a pass that must agree with it.
 *
 *   tests/unit/clip_parity [--dump-masks FILE] [--save-model FILE] [CASE.safetensors ...]
 *
 * Each case file (format: ../shared/golden/README.md) holds a config, the
 * parameters, inputs, and PyTorch's features, logits, loss and every
 * parameter's gradient.  The config is read from the file: a ViT, or a
 * ResNet image tower (config.vision_layers holds 4 stage counts), whose
 * case also holds the BatchNorm running statistics before (buffer.*) and
 * after (output.buffer.*) the training-mode forward.  Without arguments,
 * every case in $CT_TEST_DATA (clip_case_*.safetensors) is run.
 *
 * For each case, one test a variant (/parity/CASE/VARIANT):
 *   fp32          against the reference, golden tolerances:
 *                 features <= 1e-5, logits <= 1e-4, loss <= 1e-5 max(1, |ref|),
 *                 gradient G: max |ours - ref| <= 1e-4 max |ref G| + 1e-7,
 *                 running statistics <= 1e-4 max(1, max |ref|);
 *                 or, where the case holds f32err.<name> (PyTorch float32's
 *                 own largest error on that tensor over three runs, as
 *                 stored and with inputs moved by two ulps), up to
 *                 TORCH_F32 (4) times that: a training-mode BatchNorm
 *                 over a few values a channel (a 1x1 map at a small
 *                 batch) amplifies float32 rounding past the golden
 *                 tolerances, PyTorch's as much as ours
 *   no-prune      the same with readout pruning off
 *   threads-2     two threads: the same bits as fp32 on one
 *   checkpoint-N  activation checkpointing in N = 1, 2, 3 chunks: the
 *                 same bits as fp32 without it
 *   bf16, fp16    autocast products against the float32 reference: every
 *                 feature within HALF_FEAT, every gradient tensor's
 *                 relative L2 error within HALF_GRAD (derivation below)
 *   eval          (ResNet) eval mode: features against the case's
 *                 output.eval.image_features within 1e-5, buffers unchanged
 * A failing test names the case's configuration and seed and the command
 * that regenerates it (the case's __metadata__, when it has one).  With
 * CT_PARITY_VERBOSE set, every comparison prints its error and tolerance.
 *
 * Half-precision tolerances.  A bf16 (fp16) product rounds each operand
 * to 8 (11) significant bits, a relative error u of 2^-9 (2^-12) each, so
 * every product's result is off by about 2u relative, independently per
 * element; through L blocks of a residual network the errors add in
 * quadrature.  A tensor's relative L2 error then stays near 2u sqrt(L')
 * where L' counts the products between it and the loss (at most about
 * 4 per block plus the heads: under 40 in the sweep's cases), that is
 * 2u * 6.3: 0.025 at bf16, 0.0031 at fp16.  HALF_GRAD takes four times
 * that (0.1, 0.0125) for the rare ReLU unit that half-precision rounding
 * moves across zero; features get the same relative bound as their max
 * error (features have unit norm).  A tensor whose gradient is zero
 * analytically (the attention pool's k_proj.bias) is rounding noise at
 * half precision: every tensor may also be off by HALF_GRAD times the
 * median tensor's RMS times the square root of its size.  The one
 * scalar, logit_scale t, may be off by HALF_GRAD (1 + e^t) absolute: its
 * gradient is the sum over the batch of dL/dlogit times logit, logits of
 * size e^t, which mostly cancels, so a relative error of HALF_GRAD in the
 * logits moves it by about HALF_GRAD e^t whatever is left of it (0.047
 * against a gradient of 0.76 was seen at fp16, with t = 2.3).
 *
 * Where BatchNorm and ReLU meet (the ResNet tower) that derivation does
 * not hold: a training-mode BatchNorm's backward subtracts the gradient's
 * mean and its projection on the normalised input, which cancels most of
 * it, and every ReLU unit that half-precision rounding moves across zero
 * changes the gradient by that unit's whole share.  PyTorch's own CPU
 * autocast (bf16) is 0.24 off in relative L2 on the median tensor of the
 * golden ResNet case and 0.78 on the worst (visual.bn2.weight).  So
 * each case made by tests/torch/gen_clip_case.py holds bf16err.grad.<name>,
 * PyTorch autocast's relative L2 error on that gradient (and its max
 * error on the features), and half precision is held to it twice:
 *  - every tensor within AUTOCAST_TAIL (16) times PyTorch's error on it
 *    or PyTorch's median error over the case's tensors, whichever is
 *    larger, where that is more than HALF_GRAD: one ReLU unit at a large
 *    gradient moving across zero in one run and not in the other makes
 *    single tensors' errors heavy-tailed in both directions (ours 4.4
 *    times PyTorch's at bf16 and 3.5 at fp16 the worst over 40 random
 *    cases; on a stem of 2 channels PyTorch was 1.0-2.4 off in relative
 *    L2 on every tensor but one, bn2.weight, where it was 0.025);
 *  - the median over the case's tensors of ours / PyTorch's at most
 *    AUTOCAST_MEDIAN_BF16 (2.0) at bf16 and AUTOCAST_MEDIAN_FP16 (1.0) at
 *    fp16, whose products round 8 times finer than bf16's (over 400
 *    random cases whose norms see 9 values or more, the largest medians
 *    were 1.64 and 0.60).  A systematic error
 *    in a half-precision kernel moves the median.  Not where a LayerNorm
 *    normalises fewer than LN_FEW (9) values: a normalisation over a few
 *    values amplifies rounding, and half precision saves the layer
 *    norm's input in 16 bits where PyTorch's autocast keeps it in float32
 *    (over 400 random cases the largest bf16 medians were 3.18 at width
 *    4, 2.35 at width 8, 1.64 at width 12 and 1.58 from 16 up).  Nor at fp16 where
 *    the gradients span more than fp16's range: when the largest
 *    overflows at the starting loss scale FP16_LOSS_SCALE (1024) the
 *    scale backs off and the smallest fall below fp16's normal range
 *    (a median of 1.12 was seen at a scale of 256).
 * Where a BatchNorm channel sees fewer than BN_FEW (4) values (a 1x1 map
 * at batch 2 or 3) the image tower's gradients are not judged at half
 * precision at all (the features, the text tower and the running
 * statistics still are): its backward is then mostly cancellation, its
 * gradients reach 1e5, fp16's loss scale must back off until the
 * smallest fall out of its range, and errors of the gradients' own size
 * were seen in both precisions; float32 is judged there as everywhere.
 * The running statistics at half precision may be off by AUTOCAST_TAIL
 * times PyTorch autocast's max error on them too (bf16err.output.buffer.*).
 * A ResNet case without them (the golden files) skips its half variants.
 *
 * Cases made by tests/torch/gen_clip_case.py --masks (tests/torch/parity-sweep.sh)
 * hold masks.flips and masks.worst_margin: how many ResNet ReLU units
 * cliptrain put on the other side of 0 than float64 did, and the largest
 * |pre-activation| among them relative to its layer's largest.  The
 * reference then follows cliptrain's pattern; fp32 also checks that
 * every such unit was within MASK_MARGIN of 0, where float32 rounding
 * can put it.  --dump-masks FILE writes those patterns (one byte a ReLU
 * unit, each ReLU's (B, H, W, C) rows in module order) for the first
 * case; --save-model FILE writes its weights and running statistics as
 * `cliptrain embed` reads them.  --embed FEATS adds /parity/CASE/embed:
 * the features `cliptrain embed` wrote for the case's PNGs (FEATS,
 * tensor "features") against output.embed.image_features within 1e-5. */
#include "config.h"

#include "model/model-private.h"

#include <cliptrain/cliptrain.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HALF_GRAD_BF16 0.1
#define HALF_GRAD_FP16 0.0125
#define TORCH_F32 4.0
#define AUTOCAST_TAIL 16.0
#define BN_FEW 4
#define LN_FEW 9
#define AUTOCAST_MEDIAN_BF16 2.0
#define AUTOCAST_MEDIAN_FP16 1.0
#define FP16_LOSS_SCALE 1024.0f
#define MASK_MARGIN 1e-3

typedef struct {
  double worst;      /* largest error / tolerance seen */
  GString *failures;
} Report;

/* One case: its file and inputs. */
typedef struct {
  char *path;
  CtSafetensors *st;
  CtConfig cfg;
  int B;               /* batch */
  gboolean resnet;
  float *images;       /* (B, 3, R, R) */
  int32_t *tokens;     /* (B, context_length) */
} Case;

/* What one pass produced (copies). */
typedef struct {
  float *img, *txt;    /* (B, E) each */
  float *logits;       /* (B, B) */
  float *grads;        /* (n_grads) */
  float *buffers;      /* (n_buffers) after the pass */
  size_t n_grads, n_buffers;
  double loss;
  float scale;         /* fp16: the loss scale the gradients fit under */
} Pass;

/* A variant of the pass. */
typedef struct {
  const char *name;
  CtPrecision prec;
  int nchunks;         /* activation checkpointing, 0: off */
  gboolean prune;      /* readout pruning */
  int threads;
} Variant;

static const Variant variants[] = {
  { "fp32", CT_PRECISION_FP32, 0, TRUE, 1 },
  { "no-prune", CT_PRECISION_FP32, 0, FALSE, 1 },
  { "threads-2", CT_PRECISION_FP32, 0, TRUE, 2 },
  { "checkpoint-1", CT_PRECISION_FP32, 1, TRUE, 1 },
  { "checkpoint-2", CT_PRECISION_FP32, 2, TRUE, 1 },
  { "checkpoint-3", CT_PRECISION_FP32, 3, TRUE, 1 },
  { "bf16", CT_PRECISION_BF16, 0, TRUE, 1 },
  { "fp16", CT_PRECISION_FP16, 0, TRUE, 1 },
};

static const char *dump_masks, *save_model, *embed_features;

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

static Case *
case_open(const char *path)
{
  GError *error = NULL;
  Case *c = g_new0(Case, 1);
  c->path = g_strdup(path);
  c->st = ct_safetensors_open(path, &error);
  g_assert_no_error(error);
  for (const char *const *key = ct_config_keys(); *key; key++) {
    if (g_str_has_prefix(*key, "vision_stage"))
      continue; /* the case stores them as vision_layers [4] */
    g_autofree char *name = g_strconcat("config.", *key, NULL);
    const CtTensorInfo *t = ct_safetensors_find(c->st, name);
    if (!t)
      g_error("%s: tensor '%s' is missing", path, name);
    if (t->numel == 4 && g_str_equal(*key, "vision_layers")) {
      int64_t v[4];
      g_assert_true(ct_safetensors_read_i64(c->st, name, v, 4, &error));
      for (int i = 0; i < 4; i++)
        c->cfg.vision_stages[i] = (int) v[i];
      continue;
    }
    if (t->numel != 1)
      g_error("%s: %s has %zu values", path, name, t->numel);
    int64_t v;
    g_assert_true(ct_safetensors_read_i64(c->st, name, &v, 1, &error));
    g_assert_true(ct_config_set(&c->cfg, *key, (long) v, &error));
  }
  c->resnet = ct_config_is_resnet(&c->cfg);
  const CtTensorInfo *ti = ct_safetensors_find(c->st, "input.images");
  g_assert_nonnull(ti);
  c->B = (int) ti->shape[0];
  size_t n, BT = (size_t) c->B * c->cfg.context_length;
  c->images = read_f32_alloc(c->st, "input.images", &n);
  g_autofree int64_t *tok64 = g_new(int64_t, BT);
  g_assert_true(ct_safetensors_read_i64(c->st, "input.tokens", tok64, BT, &error));
  c->tokens = g_new(int32_t, BT);
  for (size_t i = 0; i < BT; i++)
    c->tokens[i] = (int32_t) tok64[i];
  return c;
}

static void
case_free(Case *c)
{
  ct_safetensors_free(c->st);
  g_free(c->images);
  g_free(c->tokens);
  g_free(c->path);
  g_free(c);
}

/* "seed S, batch B, --embed-dim ..." and how to regenerate the case, or
 * its path alone for a case without metadata.  (transfer full) */
static char *
case_describe(const Case *c)
{
  const char *what = ct_safetensors_metadata(c->st, "case");
  const char *how = ct_safetensors_metadata(c->st, "regenerate");
  if (!what)
    return g_strdup(c->path);
  return g_strdup_printf("%s (%s; regenerate: %s)", c->path, what, how ? how : "?");
}

/* A model of the case's config with its parameters and running
 * statistics, built for VARIANT (threads set before). */
static CtModel *
case_model(const Case *c, const Variant *v)
{
  GError *error = NULL;
  ct_set_num_threads(v->threads);
  CtModel *m = ct_model_new(&c->cfg, c->B, &error);
  g_assert_no_error(error);
  g_assert_true(ct_model_set_memory(m, v->prec, v->nchunks, &error));
  g_assert_no_error(error);
  ct_model_set_prune_readout(m, v->prune);
  /* a ResNet's running statistics are under buffer.*, not param.* */
  g_assert_true(ct_model_load_from(m, c->st, "param.", !c->resnet, &error));
  g_assert_no_error(error);
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *info = ct_model_buffer_tensor(m, i);
    g_autofree char *name = g_strconcat("buffer.", info->name, NULL);
    g_assert_true(ct_safetensors_read_f32(c->st, name, ct_model_buffers(m) + info->offset,
                                          info->numel, &error));
    g_assert_no_error(error);
  }
  return m;
}

/* Forward (training mode), the loss, backward; results copied to P. */
static void
run_pass(const Case *c, CtModel *m, Pass *p)
{
  GError *error = NULL;
  int B = c->B, E = c->cfg.embed_dim;
  g_assert_true(ct_model_training(m)); /* the case's forward is in training mode */
  size_t nb = ct_model_n_buffer_floats(m);
  g_autofree float *before = g_memdup2(ct_model_buffers(m), sizeof(float) * (nb ? nb : 1));
  g_assert_true(ct_model_forward(m, c->images, c->tokens, B, &error));
  g_assert_no_error(error);
  p->img = g_memdup2(ct_model_image_features(m), sizeof(float) * B * E);
  p->txt = g_memdup2(ct_model_text_features(m), sizeof(float) * B * E);
  p->logits = g_new(float, (size_t) B * B);
  g_autofree float *scratch = g_new(float, (size_t) B * B);
  g_autofree float *d_img = g_new(float, (size_t) B * E);
  g_autofree float *d_txt = g_new(float, (size_t) B * E);
  float d_scale = 0;
  p->loss = ct_clip_loss(p->logits, d_img, d_txt, &d_scale, scratch, p->img, p->txt,
                         *ct_model_logit_scale(m), B, E);
  /* fp16 runs with a loss scale, as the fp16 plugin does: unscaled, a
   * ResNet stem's small gradients fall below fp16's normal range; a
   * scale under which a gradient overflows is halved and the backward run
   * again, as the plugin's scaler does between steps */
  float scale = ct_model_precision(m) == CT_PRECISION_FP16 ? FP16_LOSS_SCALE : 1.0f;
  p->n_grads = ct_model_n_params(m);
  for (;;) {
    ct_model_set_loss_scale(m, scale);
    ct_model_zero_grad(m);
    ct_model_backward(m, d_img, d_txt);
    const float *g = ct_model_grads(m);
    gboolean finite = TRUE;
    for (size_t i = 0; i < p->n_grads && finite; i++)
      finite = isfinite(g[i]);
    if (finite || scale <= 1.0f / 16777216.0f)
      break;
    scale *= 0.5f;
    /* backward needs its forward: again, from the same running statistics */
    memcpy(ct_model_buffers(m), before, sizeof(float) * nb);
    g_assert_true(ct_model_forward(m, c->images, c->tokens, B, &error));
  }
  if (scale != FP16_LOSS_SCALE && ct_model_precision(m) == CT_PRECISION_FP16)
    g_test_message("%s: fp16 loss scale backed off to %g", c->path, scale);
  p->scale = scale;
  p->grads = g_memdup2(ct_model_grads(m), sizeof(float) * p->n_grads);
  for (size_t i = 0; i < p->n_grads && scale != 1.0f; i++)
    p->grads[i] /= scale; /* a power of two: exact */
  p->grads[ct_model_find(m, "logit_scale")->offset] += d_scale;
  p->n_buffers = ct_model_n_buffer_floats(m);
  p->buffers = g_memdup2(ct_model_buffers(m), sizeof(float) * (p->n_buffers ? p->n_buffers : 1));
}

static void
pass_clear(Pass *p)
{
  g_free(p->img);
  g_free(p->txt);
  g_free(p->logits);
  g_free(p->grads);
  g_free(p->buffers);
}

/* The yardstick KIND.NAME that the case stores for tensor NAME (f32err:
 * PyTorch float32's error; bf16err: PyTorch autocast's), in *E; FALSE
 * when the case has none. */
static gboolean
yardstick(const CtSafetensors *st, const char *kind, const char *name, double *e)
{
  g_autofree char *key = g_strconcat(kind, ".", name, NULL);
  float v;
  if (!ct_safetensors_find(st, key))
    return FALSE;
  GError *error = NULL;
  g_assert_true(ct_safetensors_read_f32(st, key, &v, 1, &error));
  *e = v;
  return TRUE;
}

/* Compares OURS with tensor NAME of the case: max |ours - ref| within
 * ATOL + RTOL max |ref|, or, when L2 > 0, ||ours - ref|| within L2 ||ref||
 * (+ ATOL). */
static void
compare(Report *r, const CtSafetensors *st, const char *name, const float *ours, size_t n,
        double atol, double rtol, double l2)
{
  size_t rn;
  g_autofree float *ref = read_f32_alloc(st, name, &rn);
  if (rn != n) {
    g_string_append_printf(r->failures, "  %s: %zu values, expected %zu\n", name, n, rn);
    return;
  }
  double maxref = 0, maxerr = 0, sse = 0, ssr = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double) ours[i] - ref[i]);
    maxref = fmax(maxref, fabs(ref[i]));
    if (!(e <= maxerr)) /* catches NaN */
      maxerr = isnan(e) ? INFINITY : e;
    sse += e * e;
    ssr += (double) ref[i] * ref[i];
  }
  double err = l2 > 0 ? sqrt(sse) : maxerr;
  if (isnan(sse))
    err = INFINITY;
  double tol = l2 > 0 ? atol + l2 * sqrt(ssr) : atol + rtol * maxref;
  /* PyTorch's own float32 error on this tensor, when the case has it */
  double e;
  if (l2 == 0 && yardstick(st, "f32err", name, &e))
    tol = fmax(tol, TORCH_F32 * e);
  if (g_getenv("CT_PARITY_VERBOSE"))
    g_test_message("%s: %s error %.4g, tolerance %.4g (max |ref| %.4g, ||ref|| %.4g)", name,
                   l2 > 0 ? "L2" : "max", err, tol, maxref, sqrt(ssr));
  double ratio = err == 0 ? 0 : err / tol;
  r->worst = fmax(r->worst, ratio);
  if (!(err <= tol))
    g_string_append_printf(r->failures, "  %s: %s error %.3g exceeds tolerance %.3g\n", name,
                           l2 > 0 ? "L2" : "max", err, tol);
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

/* The pass against the case's outputs; HALF: half-precision bounds. */
static void
compare_reference(Report *r, const Case *c, CtModel *m, const Pass *p, CtPrecision prec)
{
  int B = c->B, E = c->cfg.embed_dim;
  const CtSafetensors *st = c->st;
  double l2 = prec == CT_PRECISION_BF16 ? HALF_GRAD_BF16
              : prec == CT_PRECISION_FP16 ? HALF_GRAD_FP16 : 0;
  double autocast = AUTOCAST_TAIL;
  GArray *ratios = g_array_new(FALSE, FALSE, sizeof(double)); /* ours / PyTorch autocast's */
  const char *fnames[2] = { "output.image_features", "output.text_features" };
  const float *fvals[2] = { p->img, p->txt };
  for (int k = 0; k < 2; k++) {
    double feat = l2 > 0 ? l2 : 1e-5, e;
    if (l2 > 0 && yardstick(st, "bf16err", fnames[k], &e))
      feat = fmax(feat, autocast * e);
    compare(r, st, fnames[k], fvals[k], (size_t) B * E, feat, 0, 0);
  }
  if (l2 == 0) {
    compare(r, st, "output.logits_per_image", p->logits, (size_t) B * B, 1e-4, 0, 0);
    float loss_f = (float) p->loss;
    size_t ln;
    g_autofree float *ref_loss = read_f32_alloc(st, "output.loss", &ln);
    compare(r, st, "output.loss", &loss_f, 1, 1e-5 * fmax(1.0, fabs(ref_loss[0])), 0, 0);
  }
  /* at half precision an analytically zero gradient (the pool's
   * k_proj.bias) is rounding noise: each tensor is also allowed L2 times
   * the median tensor's RMS times its own size's square root */
  size_t nt = ct_model_n_tensors(m);
  g_autofree double *rms = g_new(double, nt);
  for (size_t i = 0; i < nt; i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    g_autofree char *name = g_strconcat("grad.", info->name, NULL);
    size_t n;
    g_autofree float *ref = read_f32_alloc(st, name, &n);
    double ss = 0;
    for (size_t k = 0; k < n; k++)
      ss += (double) ref[k] * ref[k];
    rms[i] = sqrt(ss / (double) MAX(n, 1));
  }
  double floor_rms = 0;
  if (nt) {
    g_autofree double *sorted = g_memdup2(rms, sizeof(double) * nt);
    qsort(sorted, nt, sizeof(double), cmp_double);
    floor_rms = sorted[nt / 2];
  }
  /* the fewest values a BatchNorm channel sees (layer4's B * S * S), and
   * the narrowest LayerNorm */
  int few_bn = c->resnet ? c->B * m->rn.S * m->rn.S : INT_MAX;
  int narrow_ln = MIN(c->cfg.transformer_width, c->resnet ? INT_MAX : c->cfg.vision_width);
  size_t unjudged = 0;
  /* the median of PyTorch autocast's errors over the case's tensors */
  double torch_med = 0;
  if (l2 > 0) {
    GArray *es = g_array_new(FALSE, FALSE, sizeof(double));
    for (size_t i = 0; i < nt; i++) {
      g_autofree char *name = g_strconcat("grad.", ct_model_tensor(m, i)->name, NULL);
      double e;
      if (yardstick(st, "bf16err", name, &e))
        g_array_append_val(es, e);
    }
    if (es->len) {
      g_array_sort(es, cmp_double);
      torch_med = g_array_index(es, double, es->len / 2);
    }
    g_array_free(es, TRUE);
  }
  for (size_t i = 0; i < nt; i++) {
    const CtParamInfo *info = ct_model_tensor(m, i);
    g_autofree char *name = g_strconcat("grad.", info->name, NULL);
    if (l2 > 0 && few_bn < BN_FEW && g_str_has_prefix(info->name, "visual.")) {
      unjudged++;
      continue;
    }
    double tl2 = l2, e;
    if (l2 > 0 && yardstick(st, "bf16err", name, &e)) {
      tl2 = fmax(tl2, autocast * fmax(e, torch_med));
      if (e > 0) {
        double se = 0, sr = 0;
        size_t rn;
        g_autofree float *ref = read_f32_alloc(st, name, &rn);
        for (size_t k = 0; k < rn; k++) {
          double d = (double) p->grads[info->offset + k] - ref[k];
          se += d * d;
          sr += (double) ref[k] * ref[k];
        }
        double ratio = sqrt(se / fmax(sr, 1e-300)) / e;
        g_array_append_val(ratios, ratio);
      }
    }
    double atol = l2 > 0 ? tl2 * floor_rms * sqrt((double) info->numel) : 1e-7;
    if (l2 > 0 && info->numel == 1) /* logit_scale, see the header */
      atol = fmax(atol, l2 * (1 + exp(*ct_model_logit_scale(m))));
    compare(r, st, name, p->grads + info->offset, info->numel, atol, 1e-4, tl2);
  }
  if (ratios->len) {
    g_array_sort(ratios, cmp_double);
    double med = g_array_index(ratios, double, ratios->len / 2);
    double most = prec == CT_PRECISION_BF16 ? AUTOCAST_MEDIAN_BF16 : AUTOCAST_MEDIAN_FP16;
    g_test_message("%s [%s]: median gradient error / PyTorch autocast bf16's %.3g over %u "
                   "tensors (at most %.1f)", c->path, ct_precision_name(prec), med, ratios->len,
                   most);
    if (narrow_ln < LN_FEW)
      g_test_message("%s [%s]: the median is not held to %.1f here: a LayerNorm normalises %d "
                     "values", c->path, ct_precision_name(prec), most, narrow_ln);
    else if (prec == CT_PRECISION_FP16 && p->scale < FP16_LOSS_SCALE)
      g_test_message("%s [fp16]: the median is not held to %.1f here: the gradients span more "
                     "than fp16's range (the loss scale backed off to %g)", c->path, most,
                     p->scale);
    else if (!(med <= most))
      g_string_append_printf(r->failures, "  median gradient error / PyTorch autocast bf16's: "
                             "%.3g exceeds %.1f\n", med, most);
  }
  g_array_free(ratios, TRUE);
  if (unjudged)
    g_test_message("%s [%s]: %zu image-tower gradients not judged: a BatchNorm channel sees %d "
                   "values", c->path, ct_precision_name(prec), unjudged, few_bn);
  for (size_t i = 0; i < ct_model_n_buffer_tensors(m); i++) {
    const CtParamInfo *info = ct_model_buffer_tensor(m, i);
    g_autofree char *name = g_strconcat("output.buffer.", info->name, NULL);
    size_t rn;
    g_autofree float *ref = read_f32_alloc(st, name, &rn);
    double mx = 0;
    for (size_t k = 0; k < rn; k++)
      mx = fmax(mx, fabs(ref[k]));
    double btol = (l2 > 0 ? l2 : 1e-4) * fmax(1, mx), e;
    if (l2 > 0 && yardstick(st, "bf16err", name, &e))
      btol = fmax(btol, autocast * e);
    compare(r, st, name, p->buffers + info->offset, info->numel, btol, 0, 0);
  }
  const CtTensorInfo *flips = ct_safetensors_find(st, "masks.flips");
  if (flips && prec == CT_PRECISION_FP32) {
    int64_t nf;
    float margin;
    GError *error = NULL;
    g_assert_true(ct_safetensors_read_i64(st, "masks.flips", &nf, 1, &error));
    g_assert_true(ct_safetensors_read_f32(st, "masks.worst_margin", &margin, 1, &error));
    g_test_message("%s: %" G_GINT64_FORMAT " ReLU units on the other side of 0 than float64's, "
                   "the farthest %.3g of its layer's largest", c->path, nf, margin);
    if (!(margin <= MASK_MARGIN))
      g_string_append_printf(r->failures, "  ReLU patterns: a unit %.3g (relative) from 0 is on "
                             "the other side than float64's (beyond %.0e)\n", margin, MASK_MARGIN);
  }
}

static void
same_bits(Report *r, const char *what, const float *a, const float *b, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      g_string_append_printf(r->failures, "  %s: value %zu is %.9g, %.9g in fp32 one-thread\n",
                             what, i, a[i], b[i]);
      return;
    }
}

static void
compare_bits(Report *r, const Case *c, const Pass *p, const Pass *ref)
{
  size_t BE = (size_t) c->B * c->cfg.embed_dim;
  same_bits(r, "image features", p->img, ref->img, BE);
  same_bits(r, "text features", p->txt, ref->txt, BE);
  float l[2] = { (float) p->loss, (float) ref->loss };
  same_bits(r, "loss", &l[0], &l[1], 1);
  same_bits(r, "gradients", p->grads, ref->grads, p->n_grads);
  same_bits(r, "running statistics", p->buffers, ref->buffers, p->n_buffers);
}

static void
finish(Report *r, const Case *c, const char *variant)
{
  g_test_message("%s [%s]: worst error / tolerance %.3g", c->path, variant, r->worst);
  if (r->failures->len) {
    g_autofree char *d = case_describe(c);
    g_test_message("%s [%s]: beyond tolerance:\n%s", d, variant, r->failures->str);
    g_test_fail();
  }
  g_string_free(r->failures, TRUE);
}

typedef struct {
  char *path;
  const Variant *v; /* NULL: eval mode */
} TestData;

static void
run_variant(gconstpointer data)
{
  const TestData *td = data;
  Case *c = case_open(td->path);
  const Variant *v = td->v, *base = &variants[0];
  if (v->prec != CT_PRECISION_FP32 && c->resnet &&
      !ct_safetensors_find(c->st, "bf16err.grad.visual.conv1.weight")) {
    g_test_skip("a ResNet case without PyTorch autocast's errors (bf16err.*), the yardstick "
                "of half precision; tests/torch/parity-sweep.sh's cases have them");
    case_free(c);
    return;
  }
  Report r = { 0, g_string_new(NULL) };
  CtModel *m = case_model(c, v);
  Pass p = { 0 };
  run_pass(c, m, &p);
  gboolean bits = v->prec == CT_PRECISION_FP32 && v->prune && v != base;
  if (bits) {
    CtModel *m0 = case_model(c, base);
    Pass p0 = { 0 };
    run_pass(c, m0, &p0);
    compare_bits(&r, c, &p, &p0);
    pass_clear(&p0);
    ct_model_free(m0);
  } else {
    compare_reference(&r, c, m, &p, v->prec);
  }
  if (v == base)
    g_test_message("%s: loss %.7f, batch %d, %zu gradients, %zu buffers", c->path, p.loss, c->B,
                   ct_model_n_tensors(m), ct_model_n_buffer_tensors(m));
  finish(&r, c, v->name);
  pass_clear(&p);
  ct_model_free(m);
  ct_set_num_threads(1);
  case_free(c);
}

/* A ResNet in eval mode: the running statistics normalise, none moves. */
static void
run_eval(gconstpointer data)
{
  const TestData *td = data;
  Case *c = case_open(td->path);
  Report r = { 0, g_string_new(NULL) };
  GError *error = NULL;
  CtModel *m = case_model(c, &variants[0]);
  size_t nb = ct_model_n_buffer_floats(m);
  g_autofree float *before = g_memdup2(ct_model_buffers(m), sizeof(float) * nb);
  ct_model_set_training(m, FALSE);
  g_assert_true(ct_model_encode_image(m, c->images, c->B, &error));
  g_assert_no_error(error);
  compare(&r, c->st, "output.eval.image_features", ct_model_image_features(m),
          (size_t) c->B * c->cfg.embed_dim, 1e-5, 0, 0);
  same_bits(&r, "running statistics after an eval pass", ct_model_buffers(m), before, nb);
  finish(&r, c, "eval");
  ct_model_free(m);
  case_free(c);
}

/* --embed: what `cliptrain embed` gave for the case's PNGs. */
static void
run_embed(gconstpointer data)
{
  const TestData *td = data;
  Case *c = case_open(td->path);
  Report r = { 0, g_string_new(NULL) };
  GError *error = NULL;
  CtSafetensors *st = ct_safetensors_open(embed_features, &error);
  g_assert_no_error(error);
  size_t n;
  g_autofree float *feats = read_f32_alloc(st, "features", &n);
  compare(&r, c->st, "output.embed.image_features", feats, n, 1e-5, 0, 0);
  finish(&r, c, "embed");
  ct_safetensors_free(st);
  case_free(c);
}

/* Appends to BYTES the pattern of relu(bn(c)) (C channels, N rows): the
 * model keeps c and the statistics, and recomputes the ReLU's output. */
static void
append_pattern(GByteArray *bytes, const float *c, const float *stats, int C,
               const CtBnParams *p, size_t N)
{
  float *r = g_new(float, N * C);
  ct_batchnorm_relu_apply(r, stats, stats + C, c, p->w, p->b, NULL, 1, (int) N, C);
  for (size_t i = 0; i < N * C; i++)
    g_byte_array_append(bytes, (const guint8[]) { r[i] > 0 }, 1);
  g_free(r);
}

/* --dump-masks: each ResNet ReLU's pattern after a training forward. */
static void
write_masks(const char *path, const char *out)
{
  Case *c = case_open(path);
  if (!c->resnet)
    g_error("%s: --dump-masks needs a ResNet case", path);
  CtModel *m = case_model(c, &variants[0]);
  GError *error = NULL;
  g_assert_true(ct_model_forward(m, c->images, c->tokens, c->B, &error));
  CtResNet *rn = &m->rn;
  size_t R2 = rn->scv1.Ho, stem = (size_t) c->B * R2 * R2;
  GByteArray *bytes = g_byte_array_new();
  /* module order: the stem's relu1-3, then each block's relu1-3 */
  const CtResNetParams *sp = &rn->sp[0];
  int W = rn->W;
  append_pattern(bytes, rn->s1c, rn->sstats, W / 2, &sp->bn1, stem);
  append_pattern(bytes, rn->s2c, rn->sstats + W, W / 2, &sp->bn2, stem);
  append_pattern(bytes, rn->s3c, rn->sstats + 2 * W, W, &sp->bn3, stem);
  /* the block outputs that the forward did not keep are recomputed as
   * backward recomputes them, stage by stage from the last (each stage's
   * into the stages above it) */
  GByteArray **blk = g_new0(GByteArray *, rn->nblocks);
  for (int k = 3; k >= 0; k--) {
    ct_resnet_recompute_outputs(m, k);
    for (int i = rn->stage0[k]; i < rn->stage0[k + 1]; i++) {
      const CtBottleneck *b = &rn->blocks[i];
      size_t N = (size_t) c->B * b->H * b->W, No = (size_t) c->B * b->Ho * b->Wo;
      blk[i] = g_byte_array_new();
      append_pattern(blk[i], b->c1, b->stats, b->P, &b->p.bn1, N);
      append_pattern(blk[i], b->c2, b->stats + 2 * b->P, b->P, &b->p.bn2, N);
      for (size_t j = 0; j < No * 4 * b->P; j++)
        g_byte_array_append(blk[i], (const guint8[]) { b->y[j] > 0 }, 1);
    }
  }
  for (int i = 0; i < rn->nblocks; i++) {
    g_byte_array_append(bytes, blk[i]->data, blk[i]->len);
    g_byte_array_unref(blk[i]);
  }
  g_free(blk);
  if (!g_file_set_contents(out, (const char *) bytes->data, bytes->len, &error))
    g_error("%s", error->message);
  g_byte_array_unref(bytes);
  ct_model_free(m);
  case_free(c);
}

/* --save-model: the case's weights and running statistics. */
static void
write_model(const char *path, const char *out)
{
  Case *c = case_open(path);
  CtModel *m = case_model(c, &variants[0]);
  GError *error = NULL;
  if (!ct_model_save(m, out, NULL, &error))
    g_error("%s", error->message);
  ct_model_free(m);
  case_free(c);
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
  for (int i = 1; i < argc; i++) {
    const char **opt = g_str_equal(argv[i], "--dump-masks") ? &dump_masks
                       : g_str_equal(argv[i], "--save-model") ? &save_model
                       : g_str_equal(argv[i], "--embed") ? &embed_features : NULL;
    if (opt && i + 1 < argc) {
      *opt = argv[++i];
      continue;
    }
    g_ptr_array_add(cases, g_strdup(argv[i]));
  }
  if (cases->len == 0) {
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
  if (dump_masks || save_model) {
    if (dump_masks)
      write_masks(g_ptr_array_index(cases, 0), dump_masks);
    if (save_model)
      write_model(g_ptr_array_index(cases, 0), save_model);
    g_ptr_array_free(cases, TRUE);
    return 0;
  }
  GPtrArray *data = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < cases->len; i++) {
    char *path = g_ptr_array_index(cases, i);
    g_autofree char *base = g_path_get_basename(path);
    GError *error = NULL;
    CtSafetensors *st = ct_safetensors_open(path, &error);
    g_assert_no_error(error);
    for (size_t k = 0; k < G_N_ELEMENTS(variants); k++) {
      TestData *td = g_new(TestData, 1);
      *td = (TestData) { path, &variants[k] };
      g_ptr_array_add(data, td);
      g_autofree char *name = g_strdup_printf("/parity/%s/%s", base, variants[k].name);
      g_test_add_data_func(name, td, run_variant);
    }
    if (ct_safetensors_find(st, "output.eval.image_features")) {
      TestData *td = g_new(TestData, 1);
      *td = (TestData) { path, NULL };
      g_ptr_array_add(data, td);
      g_autofree char *name = g_strdup_printf("/parity/%s/eval", base);
      g_test_add_data_func(name, td, run_eval);
    }
    if (embed_features) {
      TestData *td = g_new(TestData, 1);
      *td = (TestData) { path, NULL };
      g_ptr_array_add(data, td);
      g_autofree char *name = g_strdup_printf("/parity/%s/embed", base);
      g_test_add_data_func(name, td, run_embed);
    }
    ct_safetensors_free(st);
  }
  int rc = g_test_run();
  g_ptr_array_free(data, TRUE);
  g_ptr_array_free(cases, TRUE);
  return rc;
}

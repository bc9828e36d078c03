/* conv_rates: every convolution of a ResNet preset timed on its own, as a
 * training step runs it, against the sgemm rate measured in the same run.
 *
 *   bench/conv_rates [--preset rn50] [--batch 16] [--threads 2] [--reps 3]
 *                    [--layouts]
 *
 * Prints a Markdown table, one row per distinct convolution shape (with
 * how many times the tower has it): the forward (im2col and the product),
 * the backward (the input gradient, none for the stem's first, and the
 * weight gradient), milliseconds and % of the 2048^3 sgemm rate on the
 * same threads; then the totals.  Where a row's rate is low, that is what
 * stands between the tower's convolutions and the sgemm rate.  Built with
 * `make bench/conv_rates` over libctcore, whose kernels it calls with the
 * model's own convolution descriptors (CtConv of the stem and of every
 * Bottleneck).
 *
 * --layouts: instead, for each shape, the matrix products of a training
 * step alone (forward, input gradient, weight gradient; no im2col) as
 * cliptrain's rows layout (NHWC: one product over a chunk of samples,
 * rows = positions) runs them, against the products an NCHW layout would
 * run (one a sample: out (OC, HW) = W (OC, CKK) x col (CKK, HW), and its
 * two gradients), on the same operands' sizes: the measurement behind
 * the layout's choice. */
#include "config.h"

#include "base/gemm.h"
#include "kernels/ops.h"
#include "model/model-private.h"

#include <cliptrain/cliptrain.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  char name[48];      /* its first module, e.g. "visual.layer1.0.conv2" */
  const CtConv *cv;
  int count;          /* convolutions of this shape in the tower */
  gboolean din;       /* backward computes the input gradient */
} Row;

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static gboolean
same_shape(const CtConv *a, const CtConv *b)
{
  return a->C == b->C && a->H == b->H && a->W == b->W && a->OC == b->OC && a->K == b->K &&
         a->stride == b->stride && a->pad == b->pad && a->nchw == b->nchw;
}

static void
add_row(GArray *rows, const char *name, const CtConv *cv, gboolean din)
{
  for (guint i = 0; i < rows->len; i++) {
    Row *r = &g_array_index(rows, Row, i);
    if (same_shape(r->cv, cv) && r->din == din) {
      r->count++;
      return;
    }
  }
  Row r = { .cv = cv, .count = 1, .din = din };
  g_strlcpy(r.name, name, sizeof r.name);
  g_array_append_val(rows, r);
}

/* Median seconds of REPS forward and backward passes of CV over B. */
static void
time_conv(const Row *r, int B, int reps, double *fwd, double *bwd)
{
  const CtConv *cv = r->cv;
  size_t in_n = (size_t) B * cv->C * cv->H * cv->W;        /* (B*H*W, C) */
  size_t out_n = (size_t) B * cv->Ho * cv->Wo * cv->OC;   /* (B*Ho*Wo, OC) */
  size_t w_n = (size_t) cv->OC * cv->C * cv->K * cv->K;   /* (OC, C, K, K) */
  size_t col_n = MAX(ct_conv_col_floats(cv, B, CT_PRECISION_FP32), 1);
  size_t wr_n = MAX(ct_conv_wr_floats(cv, CT_PRECISION_FP32), 1);
  float *in = g_new(float, in_n), *din = g_new0(float, in_n), *out = g_new(float, out_n);
  float *dout = g_new(float, out_n), *w = g_new(float, w_n), *dw = g_new0(float, w_n);
  float *col = g_new(float, col_n), *dcol = g_new(float, col_n), *wr = g_new(float, wr_n);
  CtRng rng;
  ct_rng_init(&rng, 7);
  ct_rng_normal_fill(&rng, in, in_n, 1.0);
  ct_rng_normal_fill(&rng, w, w_n, 0.05);
  double *tf = g_new(double, reps), *tb = g_new(double, reps);
  for (int i = -1; i < reps; i++) { /* one warm-up */
    gint64 t0 = g_get_monotonic_time();
    ct_conv2d_forward(CT_PRECISION_FP32, out, col, wr, in, w, cv, B);
    gint64 t1 = g_get_monotonic_time();
    memcpy(dout, out, sizeof(float) * out_n);
    gint64 t2 = g_get_monotonic_time();
    ct_conv2d_backward(CT_PRECISION_FP32, r->din ? din : NULL, dw, col, dcol, wr, dout, in, w,
                       cv, B);
    gint64 t3 = g_get_monotonic_time();
    if (i >= 0) {
      tf[i] = (t1 - t0) / 1e6;
      tb[i] = (t3 - t2) / 1e6;
    }
  }
  qsort(tf, reps, sizeof *tf, cmp_double);
  qsort(tb, reps, sizeof *tb, cmp_double);
  *fwd = tf[reps / 2];
  *bwd = tb[reps / 2];
  g_free(tf), g_free(tb);
  g_free(in), g_free(din), g_free(out), g_free(dout), g_free(w), g_free(dw);
  g_free(col), g_free(dcol), g_free(wr);
}

/* Seconds of ONE product set (the forward's and both gradients'), the
 * median of REPS after a warm-up; NCHW: per sample, else per chunk as
 * ct_conv2d_forward and _backward cut the batch. */
static double
time_products(const Row *r, int B, int reps, int nchw)
{
  const CtConv *cv = r->cv;
  int ckk = cv->C * cv->K * cv->K, HW = cv->Ho * cv->Wo, OC = cv->OC;
  int chunk = nchw ? 1 : ct_conv_chunk(cv, B);
  size_t rows = (size_t) chunk * HW;
  float *col = g_new0(float, rows * ckk), *dcol = g_new0(float, rows * ckk); /* (rows, ckk) */
  float *out = g_new0(float, rows * OC), *w = g_new0(float, (size_t) OC * ckk); /* (OC, ckk) */
  float *dw = g_new0(float, (size_t) OC * ckk);
  double *t = g_new(double, reps);
  for (int i = -1; i < reps; i++) {
    gint64 t0 = g_get_monotonic_time();
    for (int b0 = 0; b0 < B; b0 += chunk) {
      int n = (int) (MIN(chunk, B - b0) * (size_t) HW);
      if (nchw) { /* out (OC, HW) = w (OC, ckk) col (ckk, HW), and back */
        ct_sgemm(FALSE, FALSE, OC, n, ckk, 1, w, ckk, col, n, 0, out, n);
        if (r->din) /* dcol (ckk, HW) = w^T dout */
          ct_sgemm(TRUE, FALSE, ckk, n, OC, 1, w, ckk, out, n, 0, dcol, n);
        ct_sgemm(FALSE, TRUE, OC, ckk, n, 1, out, n, col, n, 1, dw, ckk); /* dw += dout col^T */
      } else { /* out (rows, OC) = col (rows, ckk) w^T, and back */
        ct_sgemm(FALSE, TRUE, n, OC, ckk, 1, col, ckk, w, ckk, 0, out, OC);
        if (r->din) /* dcol (rows, ckk) = dout w */
          ct_sgemm(FALSE, FALSE, n, ckk, OC, 1, out, OC, w, ckk, 0, dcol, ckk);
        ct_sgemm(TRUE, FALSE, OC, ckk, n, 1, out, OC, col, ckk, 1, dw, ckk); /* dw += dout^T col */
      }
    }
    if (i >= 0)
      t[i] = (g_get_monotonic_time() - t0) / 1e6;
  }
  qsort(t, reps, sizeof *t, cmp_double);
  double s = t[reps / 2];
  g_free(t), g_free(col), g_free(dcol), g_free(out), g_free(w), g_free(dw);
  return s;
}

static void
print_layouts(GArray *rows, int B, int reps, double rate)
{
  printf("| convolution | × | C → OC | map | k | rows layout ms | %% | NCHW ms | %% |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  double tr = 0, tn = 0, flop_all = 0;
  for (guint i = 0; i < rows->len; i++) {
    const Row *r = &g_array_index(rows, Row, i);
    const CtConv *cv = r->cv;
    double flop = 2.0 * B * cv->Ho * cv->Wo * (double) cv->OC * cv->C * cv->K * cv->K;
    flop *= r->din ? 3 : 2;
    double a = time_products(r, B, reps, 0), b = time_products(r, B, reps, 1);
    tr += r->count * a;
    tn += r->count * b;
    flop_all += r->count * flop;
    printf("| %s | %d | %d → %d | %dx%d | %d | %.1f | %.0f | %.1f | %.0f |\n", r->name, r->count,
           cv->C, cv->OC, cv->H, cv->W, cv->K, a * 1e3, 100 * flop / a / rate, b * 1e3,
           100 * flop / b / rate);
  }
  printf("\nproducts a step: rows layout %.0f ms (%.0f%% of sgemm), NCHW %.0f ms (%.0f%%)\n",
         tr * 1e3, 100 * flop_all / tr / rate, tn * 1e3, 100 * flop_all / tn / rate);
}

int
main(int argc, char **argv)
{
  const char *preset = "rn50";
  int B = 16, threads = 2, reps = 3, layouts = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--layouts"))
      layouts = 1;
    else if (v && !strcmp(a, "--preset"))
      preset = v, i++;
    else if (v && !strcmp(a, "--batch"))
      B = atoi(v), i++;
    else if (v && !strcmp(a, "--threads"))
      threads = atoi(v), i++;
    else if (v && !strcmp(a, "--reps"))
      reps = atoi(v), i++;
    else {
      fprintf(stderr, "usage: conv_rates [--preset NAME] [--batch N] [--threads N] [--reps N] "
                      "[--layouts]\n");
      return 2;
    }
  }
  if (B < 1 || threads < 1 || reps < 1) {
    fprintf(stderr, "conv_rates: --batch, --threads and --reps must be at least 1\n");
    return 2;
  }
  GError *error = NULL;
  CtConfig cfg;
  CtModel *m = NULL;
  if (ct_config_preset(preset, &cfg, &error))
    m = ct_model_new(&cfg, 1, &error);
  if (!m) {
    fprintf(stderr, "conv_rates: %s\n", error->message);
    g_error_free(error);
    return 2;
  }
  const CtResNet *rn = &m->rn;
  if (rn->nblocks == 0) {
    fprintf(stderr, "conv_rates: preset %s has no ResNet tower\n", preset);
    ct_model_free(m);
    return 2;
  }
  ct_set_num_threads(threads);
  GArray *rows = g_array_new(FALSE, FALSE, sizeof(Row));
  add_row(rows, "visual.conv1", &rn->scv1, FALSE); /* images: no input gradient */
  add_row(rows, "visual.conv2", &rn->scv2, TRUE);
  add_row(rows, "visual.conv3", &rn->scv3, TRUE);
  for (int i = 0, st = 0; i < rn->nblocks; i++) {
    while (i >= rn->stage0[st + 1])
      st++;
    const CtBottleneck *b = &rn->blocks[i];
    char name[48];
    const char *what[4] = { "conv1", "conv2", "conv3", "downsample.0" };
    const CtConv *cv[4] = { &b->cv1, &b->cv2, &b->cv3, &b->cvd };
    for (int j = 0; j < (b->ds ? 4 : 3); j++) {
      g_snprintf(name, sizeof name, "visual.layer%d.%d.%s", st + 1, i - rn->stage0[st],
                 what[j]);
      add_row(rows, name, cv[j], TRUE);
    }
  }
  double rate = ct_sgemm_rate(1.0);
  printf("%s, batch %d, %d threads; sgemm 2048 on the same threads: %.1f GFLOP/s\n\n", preset,
         B, threads, rate / 1e9);
  if (layouts) {
    print_layouts(rows, B, reps, rate);
    g_array_free(rows, TRUE);
    ct_model_free(m);
    return 0;
  }
  printf("| convolution | × | C → OC | map | k, stride | fwd ms | fwd %% | bwd ms | bwd %% "
         "| ms a step | %% of the convolutions' time |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  double *step = g_new(double, rows->len), total = 0, flop_all = 0;
  double *fwd = g_new(double, rows->len), *bwd = g_new(double, rows->len);
  for (guint i = 0; i < rows->len; i++) {
    const Row *r = &g_array_index(rows, Row, i);
    time_conv(r, B, reps, &fwd[i], &bwd[i]);
    step[i] = r->count * (fwd[i] + bwd[i]);
    total += step[i];
  }
  for (guint i = 0; i < rows->len; i++) {
    const Row *r = &g_array_index(rows, Row, i);
    const CtConv *cv = r->cv;
    double flop = 2.0 * B * cv->Ho * cv->Wo * (double) cv->OC * cv->C * cv->K * cv->K;
    double flop_b = r->din ? 2 * flop : flop;
    flop_all += r->count * (flop + flop_b);
    printf("| %s | %d | %d → %d | %dx%d | %d, %d | %.1f | %.0f | %.1f | %.0f | %.1f | %.1f |\n",
           r->name, r->count, cv->C, cv->OC, cv->H, cv->W, cv->K, cv->stride, fwd[i] * 1e3,
           100 * flop / fwd[i] / rate, bwd[i] * 1e3, 100 * flop_b / bwd[i] / rate,
           step[i] * 1e3, 100 * step[i] / total);
  }
  printf("\nall %d kinds: %.0f ms a step for %.1f GFLOP, %.0f%% of the sgemm rate\n", rows->len,
         total * 1e3, flop_all / 1e9, 100 * flop_all / total / rate);
  g_free(step), g_free(fwd), g_free(bwd);
  g_array_free(rows, TRUE);
  ct_model_free(m);
  return 0;
}

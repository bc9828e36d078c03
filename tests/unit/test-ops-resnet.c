/* test-ops-resnet: the ResNet kernels (conv2d, average pooling, batch
 * norm, ReLU, the attention pool) against naive references and central
 * finite differences, as tests/unit/test-ops.c checks the others.
 *
 * For an op y = f(x, w) the scalar L = sum(y * R), R fixed and random;
 * backward runs with dout = R and each gradient element is compared with
 * (L(x + h) - L(x - h)) / 2h: |analytic - numeric| <= atol + rtol max|numeric|.
 * The same kernels must give the same bits with 1 and 2 pool threads. */
#include "config.h"

#include "kernels/ops.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <math.h>
#include <string.h>

static CtRng rng;

/* ------------------------------------------------------------ conv2d */

typedef struct {
  CtConv cv;
  int B;
  CtPrecision prec;
  float *x, *w, *y, *r, *col, *dcol, *wr;
} ConvCtx;

static double
conv_loss(void *p)
{
  ConvCtx *c = p;
  ct_conv2d_forward(c->prec, c->y, c->col, c->wr, c->x, c->w, &c->cv, c->B);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->cv.Ho * c->cv.Wo * c->cv.OC);
}

/* The convolution by its definition, in double, over every output and
 * tap: Y (NULL to skip) its output; DX (rows, NHWC) and DW (OC, C, K, K)
 * (NULL to skip) both gradients for dout = c->r (rows input only). */
static void
naive_conv_pass(double *y, double *dx, double *dw, const ConvCtx *c)
{
  const CtConv *cv = &c->cv;
  if (dx) {
    memset(dx, 0, sizeof(double) * c->B * cv->H * cv->W * cv->C);
    memset(dw, 0, sizeof(double) * cv->OC * cv->C * cv->K * cv->K);
  }
  for (int b = 0; b < c->B; b++)
    for (int oy = 0; oy < cv->Ho; oy++)
      for (int ox = 0; ox < cv->Wo; ox++)
        for (int o = 0; o < cv->OC; o++) {
          size_t yi = (((size_t) b * cv->Ho + oy) * cv->Wo + ox) * cv->OC + o;
          double s = 0, g = dx ? c->r[yi] : 0;
          for (int ci = 0; ci < cv->C; ci++)
            for (int ky = 0; ky < cv->K; ky++)
              for (int kx = 0; kx < cv->K; kx++) {
                int iy = oy * cv->stride - cv->pad + ky, ix = ox * cv->stride - cv->pad + kx;
                if (iy < 0 || iy >= cv->H || ix < 0 || ix >= cv->W)
                  continue;
                size_t xi = cv->nchw ? (((size_t) b * cv->C + ci) * cv->H + iy) * cv->W + ix
                                     : (((size_t) b * cv->H + iy) * cv->W + ix) * cv->C + ci;
                size_t wi = (((size_t) o * cv->C + ci) * cv->K + ky) * cv->K + kx;
                s += (double) c->x[xi] * c->w[wi];
                if (dx) {
                  dx[xi] += g * c->w[wi];
                  dw[wi] += g * c->x[xi];
                }
              }
          if (y)
            y[yi] = s;
        }
}

static void
check_conv(int B, int C, int H, int W, int OC, int K, int stride, int pad, int nchw)
{
  ConvCtx c = { .B = B, .prec = CT_PRECISION_FP32 };
  ct_conv_init(&c.cv, C, H, W, OC, K, stride, pad, nchw);
  size_t nx = (size_t) B * C * H * W, nw = (size_t) OC * C * K * K;
  size_t ny = (size_t) B * c.cv.Ho * c.cv.Wo * OC;
  size_t ncol = MAX(ct_conv_col_floats(&c.cv, B, CT_PRECISION_FP32), 1);
  c.x = ct_test_randn(&rng, nx, 1);
  c.w = ct_test_randn(&rng, nw, 0.3);
  c.r = ct_test_randn(&rng, ny, 1);
  c.y = g_new(float, ny);
  c.col = g_new(float, ncol);
  c.dcol = g_new(float, ncol);
  c.wr = g_new(float, MAX(ct_conv_wr_floats(&c.cv, c.prec), 1));
  conv_loss(&c);
  g_autofree double *ref = g_new(double, ny);
  naive_conv_pass(ref, NULL, NULL, &c);
  double err = 0;
  for (size_t i = 0; i < ny; i++)
    err = fmax(err, fabs(ref[i] - c.y[i]));
  g_autofree char *what = g_strdup_printf("conv %dx%d stride %d pad %d (%d->%d, %dx%d%s)", K, K,
                                          stride, pad, C, OC, H, W, nchw ? ", nchw" : "");
  g_test_message("%s: forward max error %.3g", what, err);
  g_assert_cmpfloat(err, <, 1e-4);
  float *dx = g_new0(float, nx), *dw = g_new0(float, nw);
  float *dout = g_memdup2(c.r, sizeof(float) * ny);
  ct_conv2d_backward(c.prec, nchw ? NULL : dx, dw, c.col, c.dcol, c.wr, dout, c.x, c.w, &c.cv, B);
  g_autofree char *wd = g_strconcat(what, " dw", NULL);
  ct_test_check_grad(wd, c.w, dw, nw, conv_loss, &c, 1e-2, 1e-3, 5e-4);
  if (!nchw) {
    g_autofree char *xd = g_strconcat(what, " dx", NULL);
    ct_test_check_grad(xd, c.x, dx, nx, conv_loss, &c, 1e-2, 1e-3, 5e-4);
  }
  g_free(c.x), g_free(c.w), g_free(c.r), g_free(c.y), g_free(c.col), g_free(c.dcol), g_free(c.wr);
  g_free(dx), g_free(dw), g_free(dout);
}

static void
test_conv(void)
{
  check_conv(2, 3, 7, 6, 4, 3, 1, 1, 0);  /* 3x3 same padding */
  check_conv(2, 3, 8, 8, 5, 3, 2, 1, 0);  /* the stem's stride 2 */
  check_conv(2, 3, 8, 8, 5, 3, 2, 1, 1);  /* ... on (B, C, H, W) images */
  check_conv(3, 6, 5, 5, 7, 1, 1, 0, 0);  /* 1x1: a linear layer */
  check_conv(2, 4, 7, 9, 3, 1, 2, 0, 0);  /* 1x1 strided */
  check_conv(1, 2, 9, 7, 3, 5, 3, 2, 0);  /* 5x5, stride 3, pad 2 */
  check_conv(2, 3, 6, 6, 2, 2, 2, 0, 0);  /* even kernel, no padding */
  check_conv(2, 2, 5, 5, 3, 3, 1, 0, 1);  /* valid 3x3 on images */
  /* same padding, stride 1, OC <= C: din as the flipped convolution of
   * dout (the first 3x3 case above, 3 -> 4, takes col2im) */
  check_conv(2, 5, 6, 7, 3, 3, 1, 1, 0);  /* more channels in than out */
  check_conv(2, 4, 6, 5, 4, 3, 1, 1, 0);  /* as many */
  check_conv(2, 3, 7, 6, 2, 5, 1, 2, 0);  /* 5x5 */
  check_conv(1, 3, 4, 5, 2, 3, 1, 0, 0);  /* 3x3 valid: not "same", col2im */
}

/* A batch larger than one im2col chunk gives the same values as the
 * naive convolution, forward and backward (the chunk loops are covered). */
static void
test_conv_chunks(void)
{
  CtConv cv;
  ct_conv_init(&cv, 64, 96, 96, 2, 3, 1, 1, 0);
  g_assert_cmpint(ct_conv_chunk(&cv, 3), <, 3);
  ConvCtx c = { .B = 3, .prec = CT_PRECISION_FP32, .cv = cv };
  size_t nx = (size_t) c.B * 64 * 96 * 96, nw = (size_t) 2 * 64 * 9, ny = (size_t) c.B * 96 * 96 * 2;
  c.x = ct_test_randn(&rng, nx, 1);
  c.w = ct_test_randn(&rng, nw, 0.1);
  c.y = g_new(float, ny);
  c.col = g_new(float, ct_conv_col_floats(&cv, c.B, c.prec));
  c.wr = g_new(float, ct_conv_wr_floats(&cv, c.prec));
  ct_conv2d_forward(c.prec, c.y, c.col, c.wr, c.x, c.w, &cv, c.B);
  g_autofree double *ref = g_new(double, ny);
  naive_conv_pass(ref, NULL, NULL, &c);
  double err = 0;
  for (size_t i = 0; i < ny; i++)
    err = fmax(err, fabs(ref[i] - c.y[i]));
  g_assert_cmpfloat(err, <, 1e-4);
  /* backward, chunk by chunk, against the definition */
  c.r = ct_test_randn(&rng, ny, 1);
  c.dcol = g_new(float, ct_conv_col_floats(&cv, c.B, c.prec));
  float *dx = g_new0(float, nx), *dw = g_new0(float, nw), *d = g_memdup2(c.r, sizeof(float) * ny);
  ct_conv2d_backward(c.prec, dx, dw, c.col, c.dcol, c.wr, d, c.x, c.w, &cv, c.B);
  g_autofree double *rdx = g_new(double, nx), *rdw = g_new(double, nw);
  naive_conv_pass(NULL, rdx, rdw, &c);
  double ex = 0, ew = 0;
  for (size_t i = 0; i < nx; i++)
    ex = fmax(ex, fabs(rdx[i] - dx[i]));
  for (size_t i = 0; i < nw; i++)
    ew = fmax(ew, fabs(rdw[i] - dw[i]) / (1 + fabs(rdw[i])));
  g_assert_cmpfloat(ex, <, 1e-4);
  g_assert_cmpfloat(ew, <, 1e-4);
  g_free(dx), g_free(dw), g_free(d), g_free(c.r), g_free(c.dcol);
  g_free(c.x), g_free(c.w), g_free(c.y), g_free(c.col), g_free(c.wr);
}

/* ------------------------------------------------------------ avgpool */

typedef struct {
  int B, H, W, C, s;
  float *x, *y, *r;
} PoolCtx;

static double
pool_loss(void *p)
{
  PoolCtx *c = p;
  ct_avgpool_forward(c->y, c->x, c->B, c->H, c->W, c->C, c->s);
  return ct_test_dot(c->y, c->r, (size_t) c->B * (c->H / c->s) * (c->W / c->s) * c->C);
}

static void
check_pool(int B, int H, int W, int C, int s)
{
  PoolCtx c = { B, H, W, C, s, NULL, NULL, NULL };
  size_t nx = (size_t) B * H * W * C, ny = (size_t) B * (H / s) * (W / s) * C;
  c.x = ct_test_randn(&rng, nx, 1);
  c.y = g_new(float, ny);
  c.r = ct_test_randn(&rng, ny, 1);
  pool_loss(&c);
  /* one output by hand: sample B-1, the last cell, channel C-1 */
  int Ho = H / s, Wo = W / s;
  double ref = 0;
  for (int ky = 0; ky < s; ky++)
    for (int kx = 0; kx < s; kx++)
      ref += c.x[(((size_t) (B - 1) * H + (Ho - 1) * s + ky) * W + (Wo - 1) * s + kx) * C + C - 1];
  g_assert_cmpfloat_with_epsilon(c.y[ny - 1], ref / (s * s), 1e-6);
  float *dx = g_new0(float, nx);
  ct_avgpool_backward(dx, c.r, B, H, W, C, s);
  ct_test_check_grad("avgpool dx", c.x, dx, nx, pool_loss, &c, 1e-2, 1e-4, 1e-3);
  g_free(c.x), g_free(c.y), g_free(c.r), g_free(dx);
}

static void
test_avgpool(void)
{
  check_pool(2, 4, 6, 3, 2);
  check_pool(2, 7, 5, 2, 2); /* odd sizes: the remainder is dropped */
  check_pool(1, 6, 6, 3, 3);
}

/* ------------------------------------------------------------ batchnorm */

typedef struct {
  int N, C, training;
  float *x, *w, *b, *y, *r, *mean, *rstd, *rm, *rv;
} BnCtx;

static double
bn_loss(void *p)
{
  BnCtx *c = p;
  /* running statistics are left alone (NULL) in training mode */
  ct_batchnorm_forward(c->y, c->mean, c->rstd, c->training ? NULL : c->rm,
                       c->training ? NULL : c->rv, c->x, c->w, c->b, c->N, c->C, c->training);
  return ct_test_dot(c->y, c->r, (size_t) c->N * c->C);
}

static void
check_bn(int training)
{
  BnCtx c = { .N = 12, .C = 5, .training = training };
  size_t n = (size_t) c.N * c.C;
  c.x = ct_test_randn(&rng, n, 2);
  for (size_t i = 0; i < n; i++)
    c.x[i] += 0.5f * (float) (i % c.C); /* channel means apart from 0 */
  c.w = ct_test_randn(&rng, c.C, 1);
  c.b = ct_test_randn(&rng, c.C, 1);
  c.y = g_new(float, n);
  c.r = ct_test_randn(&rng, n, 1);
  c.mean = g_new(float, c.C);
  c.rstd = g_new(float, c.C);
  c.rm = ct_test_randn(&rng, c.C, 1);
  c.rv = g_new(float, c.C);
  for (int i = 0; i < c.C; i++)
    c.rv[i] = 0.5f + i;
  bn_loss(&c);
  float *dx = g_new0(float, n), *dw = g_new0(float, c.C), *db = g_new0(float, c.C);
  ct_batchnorm_backward(dx, dw, db, c.r, c.x, c.mean, c.rstd, c.w, c.N, c.C, c.training);
  const char *mode = training ? "training" : "eval";
  g_autofree char *a = g_strdup_printf("batchnorm (%s) dx", mode);
  g_autofree char *b = g_strdup_printf("batchnorm (%s) dw", mode);
  g_autofree char *d = g_strdup_printf("batchnorm (%s) db", mode);
  ct_test_check_grad(a, c.x, dx, n, bn_loss, &c, 1e-2, 1e-3, 5e-4);
  ct_test_check_grad(b, c.w, dw, c.C, bn_loss, &c, 1e-2, 1e-3, 5e-4);
  ct_test_check_grad(d, c.b, db, c.C, bn_loss, &c, 1e-2, 1e-3, 5e-4);
  g_free(c.x), g_free(c.w), g_free(c.b), g_free(c.y), g_free(c.r), g_free(c.mean);
  g_free(c.rstd), g_free(c.rm), g_free(c.rv), g_free(dx), g_free(dw), g_free(db);
}

static void
test_batchnorm_train(void)
{
  check_bn(1);
}

static void
test_batchnorm_eval(void)
{
  check_bn(0);
}

/* Training mode: normalised per channel with the biased variance, and the
 * running statistics move by momentum 0.1 towards the batch mean and the
 * UNBIASED variance. */
static void
test_batchnorm_stats(void)
{
  int N = 10, C = 3;
  float *x = ct_test_randn(&rng, (size_t) N * C, 3), *y = g_new(float, (size_t) N * C);
  float w[3] = { 1, 1, 1 }, b[3] = { 0, 0, 0 }, mean[3], rstd[3];
  float rm[3] = { 0.5f, -1.0f, 2.0f }, rv[3] = { 1.0f, 2.0f, 0.25f };
  float rm0[3], rv0[3];
  memcpy(rm0, rm, sizeof rm);
  memcpy(rv0, rv, sizeof rv);
  ct_batchnorm_forward(y, mean, rstd, rm, rv, x, w, b, N, C, 1);
  for (int c = 0; c < C; c++) {
    double s = 0, q = 0, ys = 0, yq = 0;
    for (int n = 0; n < N; n++)
      s += x[n * C + c];
    s /= N;
    for (int n = 0; n < N; n++) {
      q += (x[n * C + c] - s) * (x[n * C + c] - s);
      ys += y[n * C + c];
      yq += (double) y[n * C + c] * y[n * C + c];
    }
    g_assert_cmpfloat_with_epsilon(mean[c], s, 1e-5);
    g_assert_cmpfloat_with_epsilon(ys / N, 0.0, 1e-5);
    g_assert_cmpfloat_with_epsilon(yq / N, q / N / (q / N + 1e-5), 1e-5);
    g_assert_cmpfloat_with_epsilon(rm[c], 0.9 * rm0[c] + 0.1 * s, 1e-5);
    g_assert_cmpfloat_with_epsilon(rv[c], 0.9 * rv0[c] + 0.1 * q / (N - 1), 1e-5);
  }
  /* eval mode reads the running statistics and leaves them */
  float rm1[3], rv1[3];
  memcpy(rm1, rm, sizeof rm);
  memcpy(rv1, rv, sizeof rv);
  ct_batchnorm_forward(y, mean, rstd, rm, rv, x, w, b, N, C, 0);
  g_assert_cmpmem(rm, sizeof rm, rm1, sizeof rm1);
  g_assert_cmpmem(rv, sizeof rv, rv1, sizeof rv1);
  g_assert_cmpfloat_with_epsilon(y[1], (x[1] - rm[1]) / sqrt(rv[1] + 1e-5), 1e-5);
  g_free(x), g_free(y);
}

/* ------------------------------------------------------------ relu */

typedef struct {
  size_t n;
  float *x, *y, *r;
} ReluCtx;

static double
relu_loss(void *p)
{
  ReluCtx *c = p;
  ct_relu_forward(c->y, c->x, c->n);
  return ct_test_dot(c->y, c->r, c->n);
}

static void
test_relu(void)
{
  ReluCtx c = { 40, NULL, NULL, NULL };
  c.x = ct_test_randn(&rng, c.n, 1);
  for (size_t i = 0; i < c.n; i++) /* keep away from the kink for FD */
    if (fabsf(c.x[i]) < 0.05f)
      c.x[i] = 0.1f;
  c.y = g_new(float, c.n);
  c.r = ct_test_randn(&rng, c.n, 1);
  relu_loss(&c);
  float *d = g_memdup2(c.r, sizeof(float) * c.n);
  ct_relu_backward(d, c.y, c.n);
  ct_test_check_grad("relu dx", c.x, d, c.n, relu_loss, &c, 1e-2, 1e-5, 1e-4);
  g_free(c.x), g_free(c.y), g_free(c.r), g_free(d);
}

/* ReLU's mask kept as bits gives ct_relu_backward's bits: zeros, negative
 * zeros, negatives, a denormal and a length that is no multiple of 8 (or
 * of a thread's share), at 1 and 2 threads. */
static void
test_relu_bits(void)
{
  size_t n = 70003;
  float *y = ct_test_randn(&rng, n, 1), *g = ct_test_randn(&rng, n, 1);
  for (size_t i = 0; i < n; i += 7)
    y[i] = 0.0f;
  for (size_t i = 3; i < n; i += 11)
    y[i] = -0.0f;
  y[5] = 1e-40f; /* denormal: its bit is set, as y > 0 says */
  uint8_t *bits = g_malloc((n + 7) / 8);
  float *ref = g_memdup2(g, sizeof(float) * n), *d = g_new(float, n);
  ct_relu_backward(ref, y, n);
  for (int t = 1; t <= 2; t++) {
    ct_set_num_threads(t);
    memset(bits, 0xa5, (n + 7) / 8);
    ct_relu_mask_bits(bits, y, n);
    memcpy(d, g, sizeof(float) * n);
    ct_relu_backward_bits(d, bits, n);
    g_assert_cmpmem(d, sizeof(float) * n, ref, sizeof(float) * n);
  }
  g_assert_true(bits[0] & (1u << 5));
  ct_set_num_threads(2);
  g_free(y), g_free(g), g_free(bits), g_free(ref), g_free(d);
}

/* ------------------------------------------------------------ fused BN + ReLU */

/* BatchNorm with the residual and the ReLU fused into it gives the bits of
 * the three kernels one after the other, and its backward with ReLU's
 * mask those of ct_relu_backward then ct_batchnorm_backward; C 70 covers
 * whole vectors and a tail, at 1 and 2 threads. */
static void
test_bn_relu_fused(void)
{
  int N = 37, C = 70;
  size_t n = (size_t) N * C;
  float *x = ct_test_randn(&rng, n, 2), *res = ct_test_randn(&rng, n, 1);
  float *w = ct_test_randn(&rng, C, 1), *b = ct_test_randn(&rng, C, 1);
  float *g = ct_test_randn(&rng, n, 1);
  float mean[70], rstd[70], m2[70], r2[70];
  for (int t = 1; t <= 2; t++) {
    ct_set_num_threads(t);
    for (int training = 0; training < 2; training++) {
      float rm[70] = { 0 }, rv[70], rm2[70] = { 0 }, rv2[70];
      for (int c = 0; c < C; c++)
        rv[c] = rv2[c] = 1.0f + 0.1f * c;
      float *ya = g_new(float, n), *yb = g_new(float, n);
      /* unfused: bn, add, relu */
      ct_batchnorm_forward(ya, mean, rstd, rm, rv, x, w, b, N, C, training);
      ct_add_inplace(ya, res, n);
      ct_relu_forward(ya, ya, n);
      /* fused, OUT = RES */
      memcpy(yb, res, sizeof(float) * n);
      ct_batchnorm_relu_forward(yb, m2, r2, rm2, rv2, x, w, b, yb, 1, N, C, training);
      g_assert_cmpmem(ya, sizeof(float) * n, yb, sizeof(float) * n);
      g_assert_cmpmem(mean, sizeof mean, m2, sizeof m2);
      g_assert_cmpmem(rstd, sizeof rstd, r2, sizeof r2);
      g_assert_cmpmem(rm, sizeof rm, rm2, sizeof rm2);
      g_assert_cmpmem(rv, sizeof rv, rv2, sizeof rv2);
      /* the ReLU alone: backward with the mask against relu_backward then bn */
      float *rmr = training ? NULL : rm, *rvr = training ? NULL : rv; /* eval reads them */
      ct_batchnorm_forward(ya, mean, rstd, rmr, rvr, x, w, b, N, C, training);
      ct_relu_forward(ya, ya, n);
      ct_batchnorm_relu_forward(yb, m2, r2, rmr, rvr, x, w, b, NULL, 1, N, C, training);
      g_assert_cmpmem(ya, sizeof(float) * n, yb, sizeof(float) * n);
      float *d = g_memdup2(g, sizeof(float) * n);
      float *dxa = g_new0(float, n), *dxb = g_new0(float, n);
      float dwa[70] = { 0 }, dba[70] = { 0 }, dwb[70] = { 0 }, dbb[70] = { 0 };
      ct_relu_backward(d, ya, n);
      ct_batchnorm_backward(dxa, dwa, dba, d, x, mean, rstd, w, N, C, training);
      ct_batchnorm_relu_backward(dxb, dwb, dbb, g, x, mean, rstd, w, b, 1, N, C, training);
      g_assert_cmpmem(dxa, sizeof(float) * n, dxb, sizeof(float) * n);
      g_assert_cmpmem(dwa, sizeof dwa, dwb, sizeof dwb);
      g_assert_cmpmem(dba, sizeof dba, dbb, sizeof dbb);
      g_free(ya), g_free(yb), g_free(d), g_free(dxa), g_free(dxb);
    }
  }
  ct_set_num_threads(2);
  g_free(x), g_free(res), g_free(w), g_free(b), g_free(g);
}

/* ------------------------------------------------------------ attention pool */

typedef struct {
  int B, HW, C, H, E;
  float *x, *pos, *qw, *qb, *kw, *kb, *vw, *vb, *cw, *cb;
  float *X, *q0, *q, *k, *v, *att, *o, *y, *r;
} ApCtx;

/* The whole AttentionPool2d from the kernels, as resnet.c composes them. */
static double
ap_loss(void *p)
{
  ApCtx *c = p;
  int T = c->HW + 1;
  ct_poolattn_tokens_forward(c->X, c->x, c->pos, c->B, c->HW, c->C);
  for (int b = 0; b < c->B; b++)
    memcpy(c->q0 + (size_t) b * c->C, c->X + (size_t) b * T * c->C, sizeof(float) * c->C);
  ct_linear_forward(c->q, c->q0, c->qw, c->qb, c->B, c->C, c->C);
  ct_linear_forward(c->k, c->X, c->kw, c->kb, c->B * T, c->C, c->C);
  ct_linear_forward(c->v, c->X, c->vw, c->vb, c->B * T, c->C, c->C);
  ct_poolattn_forward(c->o, c->att, c->q, c->k, c->v, c->B, T, c->C, c->H, CT_PRECISION_FP32);
  ct_linear_forward(c->y, c->o, c->cw, c->cb, c->B, c->C, c->E);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->E);
}

static void
test_attnpool(void)
{
  ApCtx c = { .B = 2, .HW = 4, .C = 8, .H = 2, .E = 5 };
  int T = c.HW + 1, C = c.C;
  size_t nx = (size_t) c.B * c.HW * C, nX = (size_t) c.B * T * C;
  c.x = ct_test_randn(&rng, nx, 1);
  c.pos = ct_test_randn(&rng, (size_t) T * C, 0.3);
  c.qw = ct_test_randn(&rng, (size_t) C * C, 0.4), c.qb = ct_test_randn(&rng, C, 0.1);
  c.kw = ct_test_randn(&rng, (size_t) C * C, 0.4), c.kb = ct_test_randn(&rng, C, 0.1);
  c.vw = ct_test_randn(&rng, (size_t) C * C, 0.4), c.vb = ct_test_randn(&rng, C, 0.1);
  c.cw = ct_test_randn(&rng, (size_t) c.E * C, 0.4), c.cb = ct_test_randn(&rng, c.E, 0.1);
  c.X = g_new(float, nX), c.k = g_new(float, nX), c.v = g_new(float, nX);
  c.q0 = g_new(float, (size_t) c.B * C), c.q = g_new(float, (size_t) c.B * C);
  c.o = g_new(float, (size_t) c.B * C), c.y = g_new(float, (size_t) c.B * c.E);
  c.att = g_new(float, (size_t) c.B * c.H * T);
  c.r = ct_test_randn(&rng, (size_t) c.B * c.E, 1);
  ap_loss(&c);
  /* backward, as resnet.c does it */
  float *dcw = g_new0(float, (size_t) c.E * C), *dcb = g_new0(float, c.E);
  float *dqw = g_new0(float, (size_t) C * C), *dqb = g_new0(float, C);
  float *dkw = g_new0(float, (size_t) C * C), *dkb = g_new0(float, C);
  float *dvw = g_new0(float, (size_t) C * C), *dvb = g_new0(float, C);
  float *dpos = g_new0(float, (size_t) T * C), *dx = g_new0(float, nx);
  float *dO = g_new0(float, (size_t) c.B * C), *dq = g_new0(float, (size_t) c.B * C);
  float *dk = g_new0(float, nX), *dv = g_new0(float, nX), *dX = g_new0(float, nX);
  float *dq0 = g_new0(float, (size_t) c.B * C);
  ct_linear_backward(dO, dcw, dcb, c.r, c.o, c.cw, c.B, C, c.E);
  ct_poolattn_backward(dq, dk, dv, dO, c.q, c.k, c.v, c.att, c.B, T, C, c.H, CT_PRECISION_FP32);
  ct_linear_backward(dX, dkw, dkb, dk, c.X, c.kw, c.B * T, C, C);
  ct_linear_backward(dX, dvw, dvb, dv, c.X, c.vw, c.B * T, C, C);
  ct_linear_backward(dq0, dqw, dqb, dq, c.q0, c.qw, c.B, C, C);
  for (int b = 0; b < c.B; b++)
    for (int i = 0; i < C; i++)
      dX[(size_t) b * T * C + i] += dq0[(size_t) b * C + i];
  ct_poolattn_tokens_backward(dx, dpos, dX, c.B, c.HW, C);
  ct_test_check_grad("attnpool dx", c.x, dx, nx, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dpos", c.pos, dpos, (size_t) T * C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dq_w", c.qw, dqw, (size_t) C * C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dk_w", c.kw, dkw, (size_t) C * C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dv_w", c.vw, dvw, (size_t) C * C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dq_b", c.qb, dqb, C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  ct_test_check_grad("attnpool dc_w", c.cw, dcw, (size_t) c.E * C, ap_loss, &c, 1e-2, 1e-3, 1e-3);
  g_free(c.x), g_free(c.pos), g_free(c.qw), g_free(c.qb), g_free(c.kw), g_free(c.kb);
  g_free(c.vw), g_free(c.vb), g_free(c.cw), g_free(c.cb), g_free(c.X), g_free(c.k);
  g_free(c.v), g_free(c.q0), g_free(c.q), g_free(c.o), g_free(c.y), g_free(c.att), g_free(c.r);
  g_free(dcw), g_free(dcb), g_free(dqw), g_free(dqb), g_free(dkw), g_free(dkb), g_free(dvw);
  g_free(dvb), g_free(dpos), g_free(dx), g_free(dO), g_free(dq), g_free(dk), g_free(dv);
  g_free(dX), g_free(dq0);
}

/* ------------------------------------------------------------ threads */

/* Pool-run kernels give the same bits on 1 and 2 threads. */
static void
test_thread_invariance(void)
{
  int N = 4 * 9 * 9, C = 40, B = 4;
  float *x = ct_test_randn(&rng, (size_t) N * C, 1), *w = ct_test_randn(&rng, C, 1);
  float *b = ct_test_randn(&rng, C, 1);
  float *out[2], *din[2], *dw[2], *pool[2], *dpool[2], *conv[2], *dconv[2], *dcw[2];
  float *g = ct_test_randn(&rng, (size_t) N * C, 1);
  float *cw = ct_test_randn(&rng, (size_t) 6 * C * 9, 0.1);
  CtConv cv;
  ct_conv_init(&cv, C, 9, 9, 6, 3, 2, 1, 0);
  size_t ny = (size_t) B * cv.Ho * cv.Wo * 6;
  float *gy = ct_test_randn(&rng, ny, 1);
  size_t ncol = ct_conv_col_floats(&cv, B, CT_PRECISION_FP32);
  float *col = g_new(float, ncol), *dcol = g_new(float, ncol);
  float *wr = g_new(float, ct_conv_wr_floats(&cv, CT_PRECISION_FP32));
  for (int t = 0; t < 2; t++) {
    ct_set_num_threads(t + 1);
    float mean[40], rstd[40], rm[40] = { 0 }, rv[40] = { 0 };
    out[t] = g_new(float, (size_t) N * C);
    din[t] = g_new0(float, (size_t) N * C);
    dw[t] = g_new0(float, C);
    ct_batchnorm_forward(out[t], mean, rstd, rm, rv, x, w, b, N, C, 1);
    ct_batchnorm_backward(din[t], dw[t], NULL, g, x, mean, rstd, w, N, C, 1);
    pool[t] = g_new(float, (size_t) N / 9 * C);
    dpool[t] = g_new0(float, (size_t) N * C);
    ct_avgpool_forward(pool[t], x, B, 9, 9, C, 3);
    ct_avgpool_backward(dpool[t], pool[t], B, 9, 9, C, 3);
    conv[t] = g_new(float, ny);
    dconv[t] = g_new0(float, (size_t) N * C);
    ct_conv2d_forward(CT_PRECISION_FP32, conv[t], col, wr, x, cw, &cv, B);
    float *d = g_memdup2(gy, sizeof(float) * ny);
    dcw[t] = g_new0(float, (size_t) 6 * C * 9);
    ct_conv2d_backward(CT_PRECISION_FP32, dconv[t], dcw[t], col, dcol, wr, d, x, cw, &cv, B);
    g_free(d);
  }
  ct_set_num_threads(2);
  g_assert_cmpmem(out[0], sizeof(float) * N * C, out[1], sizeof(float) * N * C);
  g_assert_cmpmem(din[0], sizeof(float) * N * C, din[1], sizeof(float) * N * C);
  g_assert_cmpmem(dw[0], sizeof(float) * C, dw[1], sizeof(float) * C);
  g_assert_cmpmem(pool[0], sizeof(float) * N / 9 * C, pool[1], sizeof(float) * N / 9 * C);
  g_assert_cmpmem(dpool[0], sizeof(float) * N * C, dpool[1], sizeof(float) * N * C);
  g_assert_cmpmem(conv[0], sizeof(float) * ny, conv[1], sizeof(float) * ny);
  g_assert_cmpmem(dconv[0], sizeof(float) * N * C, dconv[1], sizeof(float) * N * C);
  g_assert_cmpmem(dcw[0], sizeof(float) * 6 * C * 9, dcw[1], sizeof(float) * 6 * C * 9);
  /* a same-padded stride-1 convolution (backward's flipped convolution) */
  CtConv cs;
  ct_conv_init(&cs, C, 9, 9, 6, 3, 1, 1, 0);
  size_t ns = (size_t) N * 6, nsc = ct_conv_col_floats(&cs, B, CT_PRECISION_FP32);
  float *gs = ct_test_randn(&rng, ns, 1), *scol = g_new(float, nsc), *sdcol = g_new(float, nsc);
  float *swr = g_new(float, ct_conv_wr_floats(&cs, CT_PRECISION_FP32));
  float *sdx[2], *sdw[2];
  for (int t = 0; t < 2; t++) {
    ct_set_num_threads(t + 1);
    float *d = g_memdup2(gs, sizeof(float) * ns);
    sdx[t] = g_new0(float, (size_t) N * C);
    sdw[t] = g_new0(float, (size_t) 6 * C * 9);
    ct_conv2d_backward(CT_PRECISION_FP32, sdx[t], sdw[t], scol, sdcol, swr, d, x, cw, &cs, B);
    g_free(d);
  }
  ct_set_num_threads(2);
  g_assert_cmpmem(sdx[0], sizeof(float) * N * C, sdx[1], sizeof(float) * N * C);
  g_assert_cmpmem(sdw[0], sizeof(float) * 6 * C * 9, sdw[1], sizeof(float) * 6 * C * 9);
  for (int t = 0; t < 2; t++)
    g_free(sdx[t]), g_free(sdw[t]);
  g_free(gs), g_free(scol), g_free(sdcol), g_free(swr);
  for (int t = 0; t < 2; t++)
    g_free(out[t]), g_free(din[t]), g_free(dw[t]), g_free(pool[t]), g_free(dpool[t]),
      g_free(conv[t]), g_free(dconv[t]), g_free(dcw[t]);
  g_free(x), g_free(w), g_free(b), g_free(g), g_free(cw), g_free(gy), g_free(col), g_free(dcol);
  g_free(wr);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ct_rng_init(&rng, 4321);
  g_test_add_func("/ops-resnet/conv2d", test_conv);
  g_test_add_func("/ops-resnet/conv2d-chunks", test_conv_chunks);
  g_test_add_func("/ops-resnet/avgpool", test_avgpool);
  g_test_add_func("/ops-resnet/batchnorm-training", test_batchnorm_train);
  g_test_add_func("/ops-resnet/batchnorm-eval", test_batchnorm_eval);
  g_test_add_func("/ops-resnet/batchnorm-statistics", test_batchnorm_stats);
  g_test_add_func("/ops-resnet/relu", test_relu);
  g_test_add_func("/ops-resnet/relu-bits", test_relu_bits);
  g_test_add_func("/ops-resnet/batchnorm-relu-fused", test_bn_relu_fused);
  g_test_add_func("/ops-resnet/attention-pool", test_attnpool);
  g_test_add_func("/ops-resnet/thread-invariance", test_thread_invariance);
  return g_test_run();
}

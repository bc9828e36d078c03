/* conv.c: 2-d convolution (nn.Conv2d without bias, any kernel, stride
 * and padding) as im2col and cblas_sgemm, forward and backward, at a
 * precision.
 *
 * Activations are rows, (B, H, W, C): a (B*H*W, C) matrix, so that a 1x1
 * convolution is a linear layer and a whole batch is one product.  The
 * images entering the stem are (B, C, H, W) (cv->nchw).  The im2col matrix
 * has a row per output position and columns (ky, kx, c), so that each
 * kernel tap copies C contiguous floats of a row; the weight (OC, C, K, K)
 * is permuted to (OC, K, K, C) into scratch for the product, out = col @
 * wp^T, and the weight gradient comes back through the same permutation.
 * Batches are cut into chunks
 * of samples whose im2col fits CT_CONV_COL_BUDGET floats; the chunking
 * depends on the shapes only, so results do not depend on anything else
 * (thread count, checkpointing).  col2im gathers into each input pixel in
 * a fixed order, so it runs on the pool deterministically; both copy and
 * add whole rows of C channels, which the compiler vectorises. */
#include "config.h"

#include "base/gemm.h"
#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/profile-private.h"

#include <string.h>

void
ct_conv_init(CtConv *cv, int C, int H, int W, int OC, int K, int stride, int pad, int nchw)
{
  *cv = (CtConv) { .C = C, .H = H, .W = W, .OC = OC, .K = K, .stride = stride, .pad = pad,
                   .nchw = nchw };
  cv->Ho = (H + 2 * pad - K) / stride + 1;
  cv->Wo = (W + 2 * pad - K) / stride + 1;
}

/* TRUE when the input rows are the im2col matrix already. */
static int
is_pointwise(const CtConv *cv)
{
  return cv->K == 1 && cv->stride == 1 && cv->pad == 0 && !cv->nchw;
}

/* TRUE when backward computes din as a convolution of dout (stride 1,
 * "same" padding, K > 1): din = conv(dout, w flipped, pad K-1-pad), an
 * im2col of dout and one product of depth K*K*OC, in place of a product
 * of depth OC into a K*K times larger dcol, its clearing and col2im's
 * scattered adds.  Only where OC <= C, so that dout's im2col fits the
 * buffers sized for the input's (rn50's stem conv3, 32 -> 64 channels,
 * gained nothing from it and would have doubled them). */
static int
is_same_stride1(const CtConv *cv)
{
  return cv->K > 1 && cv->stride == 1 && 2 * cv->pad == cv->K - 1 && !cv->nchw &&
         cv->OC <= cv->C;
}

int
ct_conv_chunk(const CtConv *cv, int B)
{
  size_t per = (size_t) cv->Ho * cv->Wo * cv->C * cv->K * cv->K;
  size_t n = CT_CONV_COL_BUDGET / (per ? per : 1);
  return (int) MAX(1, MIN((size_t) B, n));
}

size_t
ct_conv_wr_floats(const CtConv *cv, CtPrecision prec)
{
  size_t wn = (size_t) cv->OC * cv->C * cv->K * cv->K;
  if (cv->K > 1)
    return 2 * wn; /* the permuted weight, and its gradient */
  return prec == CT_PRECISION_FP32 ? 0 : wn;
}

size_t
ct_conv_col_floats(const CtConv *cv, int B, CtPrecision prec)
{
  if (is_pointwise(cv) && prec == CT_PRECISION_FP32)
    return 0;
  return (size_t) ct_conv_chunk(cv, B) * cv->Ho * cv->Wo * cv->C * cv->K * cv->K;
}

typedef struct {
  const CtConv *cv;
  float *col;        /* (nb*Ho*Wo, C*K*K) */
  const float *in;   /* the chunk's first sample */
  float *din;        /* the chunk's first sample (col2im) */
  const float *dcol;
} ColCtx;

static void
im2col_rows(void *vctx, size_t r0, size_t r1, int thread)
{
  (void) thread;
  const ColCtx *x = vctx;
  const CtConv *cv = x->cv;
  int K = cv->K, C = cv->C, HoWo = cv->Ho * cv->Wo;
  size_t ckk = (size_t) C * K * K, in_n = (size_t) C * cv->H * cv->W, HW = (size_t) cv->H * cv->W;
  for (size_t r = r0; r < r1; r++) {
    int b = (int) (r / HoWo), o = (int) (r % HoWo), oy = o / cv->Wo, ox = o % cv->Wo;
    const float *in = x->in + b * in_n;
    float *t = x->col + r * ckk; /* (K, K, C) */
    for (int ky = 0; ky < K; ky++) {
      int y = oy * cv->stride - cv->pad + ky;
      for (int kx = 0; kx < K; kx++, t += C) {
        int xx = ox * cv->stride - cv->pad + kx;
        if (y < 0 || y >= cv->H || xx < 0 || xx >= cv->W)
          memset(t, 0, sizeof(float) * C);
        else if (cv->nchw)
          for (int c = 0; c < C; c++)
            t[c] = in[c * HW + (size_t) y * cv->W + xx];
        else
          memcpy(t, in + ((size_t) y * cv->W + xx) * C, sizeof(float) * C);
      }
    }
  }
}

/* din (rows of input pixels, NHWC) += the im2col gradient, gathered per
 * input pixel in the order (ky, kx): item = one input row (b, y). */
static void
col2im_rows(void *vctx, size_t i0, size_t i1, int thread)
{
  (void) thread;
  const ColCtx *x = vctx;
  const CtConv *cv = x->cv;
  int K = cv->K, s = cv->stride, C = cv->C;
  size_t ckk = (size_t) C * K * K, HoWo = (size_t) cv->Ho * cv->Wo;
  for (size_t i = i0; i < i1; i++) {
    int b = (int) (i / cv->H), y = (int) (i % cv->H);
    for (int xx = 0; xx < cv->W; xx++) {
      float *restrict d = x->din + (((size_t) b * cv->H + y) * cv->W + xx) * C;
      for (int ky = 0; ky < K; ky++) {
        int ty = y + cv->pad - ky;
        if (ty < 0 || ty % s || ty / s >= cv->Ho)
          continue;
        for (int kx = 0; kx < K; kx++) {
          int tx = xx + cv->pad - kx;
          if (tx < 0 || tx % s || tx / s >= cv->Wo)
            continue;
          size_t row = b * HoWo + (size_t) (ty / s) * cv->Wo + tx / s;
          const float *restrict g = x->dcol + row * ckk + (size_t) (ky * K + kx) * C;
          for (int c = 0; c < C; c++)
            d[c] += g[c];
        }
      }
    }
  }
}

static void
im2col(const CtConv *cv, float *col, const float *in, int nb)
{
  ColCtx x = { .cv = cv, .col = col, .in = in };
  size_t rows = (size_t) nb * cv->Ho * cv->Wo;
  ct_parallel_for(rows, 64, im2col_rows, &x);
}

/* COL = the chunk's im2col (a copy of its rows when pointwise), rounded
 * at half precision. */
static void
fill_col(CtPrecision prec, const CtConv *cv, float *col, const float *in, int nb)
{
  CT_PROF_BEGIN(CT_PROF_IM2COL);
  size_t n = (size_t) nb * cv->Ho * cv->Wo * cv->C * cv->K * cv->K;
  if (is_pointwise(cv))
    memcpy(col, in, sizeof(float) * n);
  else
    im2col(cv, col, in, nb);
  ct_round(prec, col, n);
  CT_PROF_END();
}

/* The weight as the product wants it: (OC, K, K, C) permuted into WR when
 * K > 1, rounded at half precision (into WR); the weight itself else. */
static const float *
prepare_weight(CtProfKind kind, CtPrecision prec, float *wr, const float *w, const CtConv *cv)
{
  size_t wn = (size_t) cv->OC * cv->C * cv->K * cv->K;
  if (prec == CT_PRECISION_FP32 && cv->K == 1)
    return w;
  CT_PROF_BEGIN(kind);
  if (cv->K > 1) {
    int C = cv->C, KK = cv->K * cv->K;
    for (int o = 0; o < cv->OC; o++)
      for (int c = 0; c < C; c++)
        for (int t = 0; t < KK; t++)
          wr[((size_t) o * KK + t) * C + c] = w[((size_t) o * C + c) * KK + t];
    ct_round(prec, wr, wn);
  } else {
    ct_round_copy(prec, wr, w, wn);
  }
  CT_PROF_END();
  return wr;
}

/* The weight of din's convolution (is_same_stride1): wt (C, K, K, OC),
 * wt[c, ky, kx, o] = w[o, c, K-1-ky, K-1-kx], rounded at half precision. */
static const float *
prepare_weight_t(CtPrecision prec, float *wt, const float *w, const CtConv *cv)
{
  CT_PROF_BEGIN(CT_PROF_CONV_BWD_DATA);
  int C = cv->C, OC = cv->OC, K = cv->K, KK = K * K;
  for (int o = 0; o < OC; o++)
    for (int c = 0; c < C; c++)
      for (int t = 0; t < KK; t++)
        wt[((size_t) c * KK + (KK - 1 - t)) * OC + o] = w[((size_t) o * C + c) * KK + t];
  ct_round(prec, wt, (size_t) OC * C * KK);
  CT_PROF_END();
  return wt;
}

/* dw (OC, C, K, K) += the permuted gradient dwp (OC, K, K, C). */
static void
unpermute_grad(float *dw, const float *dwp, const CtConv *cv)
{
  CT_PROF_BEGIN(CT_PROF_CONV_BWD_WEIGHTS);
  int C = cv->C, KK = cv->K * cv->K;
  for (int o = 0; o < cv->OC; o++)
    for (int c = 0; c < C; c++)
      for (int t = 0; t < KK; t++)
        dw[((size_t) o * C + c) * KK + t] += dwp[((size_t) o * KK + t) * C + c];
  CT_PROF_END();
}

void
ct_conv2d_forward(CtPrecision prec, float *out, float *col, float *wr, const float *in,
                  const float *w, const CtConv *cv, int B)
{
  int ckk = cv->C * cv->K * cv->K, HoWo = cv->Ho * cv->Wo;
  const float *wp = prepare_weight(CT_PROF_CONV_FWD, prec, wr, w, cv);
  if (is_pointwise(cv) && prec == CT_PRECISION_FP32) {
    PROF(CT_PROF_CONV_FWD, ct_linear_forward(out, in, wp, NULL, B * HoWo, ckk, cv->OC));
    return;
  }
  int chunk = ct_conv_chunk(cv, B);
  size_t in_n = (size_t) cv->C * cv->H * cv->W;
  for (int b0 = 0; b0 < B; b0 += chunk) {
    int nb = MIN(chunk, B - b0);
    int rows = nb * HoWo;
    fill_col(prec, cv, col, in + b0 * in_n, nb);
    PROF(CT_PROF_CONV_FWD,
         ct_linear_forward(out + (size_t) b0 * HoWo * cv->OC, col, wp, NULL, rows, ckk, cv->OC));
  }
  PROF(CT_PROF_CONV_FWD, ct_round(prec, out, (size_t) B * HoWo * cv->OC));
}

/* dcol = dout @ w and dw += dout^T @ col for one chunk of ROWS rows:
 * side by side in one call (two products of one thread each run at a
 * thread's full rate), or, when profiling, one after the other so that
 * each is timed in its own kind; the bits are the same. */
static void
products_backward(float *dcol, float *dw, const float *d, const float *col, const float *wp,
                  int rows, int ckk, int OC)
{
  if (dcol && dw && !ct_prof_on) {
    ct_linear_backward(dcol, dw, NULL, d, col, wp, rows, ckk, OC);
    return;
  }
  if (dw)
    PROF(CT_PROF_CONV_BWD_WEIGHTS, ct_linear_backward(NULL, dw, NULL, d, col, wp, rows, ckk, OC));
  if (dcol)
    PROF(CT_PROF_CONV_BWD_DATA, ct_linear_backward(dcol, NULL, NULL, d, NULL, wp, rows, ckk, OC));
}

static void
col2im(const CtConv *cv, float *din, const float *dcol, int nb)
{
  CT_PROF_BEGIN(CT_PROF_IM2COL);
  ColCtx x = { .cv = cv, .din = din, .dcol = dcol };
  ct_parallel_for((size_t) nb * cv->H, 4, col2im_rows, &x);
  CT_PROF_END();
}

/* Backward of a same-padded stride-1 convolution (is_same_stride1) with
 * both gradients: per chunk, col = im2col(in) for dwp += d^T col, and
 * dcol = im2col(d) through the flipped convolution (C = OC channels in,
 * C out, pad K-1-pad) for din += dcol wt^T, the two products side by
 * side.  DWP (OC, K, K, C) as in ct_conv2d_backward; WT: prepare_weight_t. */
static void
backward_same(CtPrecision prec, float *din, float *dwp, float *col, float *dcol,
              const float *wt, const float *dout, const float *in, const CtConv *cv, int B)
{
  int KK = cv->K * cv->K, ckk = cv->C * KK, okk = cv->OC * KK, HoWo = cv->Ho * cv->Wo;
  CtConv flip;
  ct_conv_init(&flip, cv->OC, cv->Ho, cv->Wo, cv->C, cv->K, 1, cv->K - 1 - cv->pad, 0);
  int chunk = ct_conv_chunk(cv, B);
  size_t in_n = (size_t) cv->C * cv->H * cv->W, out_n = (size_t) HoWo * cv->OC;
  for (int b0 = 0; b0 < B; b0 += chunk) {
    int nb = MIN(chunk, B - b0);
    int rows = nb * HoWo; /* = nb*H*W: "same" padding */
    const float *d = dout + b0 * out_n;
    float *dx = din + b0 * in_n;
    fill_col(prec, cv, col, in + b0 * in_n, nb);
    fill_col(prec, &flip, dcol, d, nb);
    CtGemm g[2] = {
      { TRUE, FALSE, cv->OC, ckk, rows, 1.0f, d, cv->OC, col, ckk, 1.0f, dwp, ckk, NULL },
      { FALSE, TRUE, rows, cv->C, okk, 1.0f, dcol, okk, wt, okk, 1.0f, dx, cv->C, NULL },
    };
    if (!ct_prof_on) {
      ct_sgemm_many(g, 2);
    } else { /* one after the other, each timed in its own kind */
      PROF(CT_PROF_CONV_BWD_WEIGHTS, ct_sgemm_many(&g[0], 1));
      PROF(CT_PROF_CONV_BWD_DATA, ct_sgemm_many(&g[1], 1));
    }
    PROF(CT_PROF_CONV_BWD_DATA, ct_round(prec, dx, (size_t) rows * cv->C));
  }
}

void
ct_conv2d_backward(CtPrecision prec, float *din, float *dw, float *col, float *dcol, float *wr,
                   float *dout, const float *in, const float *w, const CtConv *cv, int B)
{
  int ckk = cv->C * cv->K * cv->K, HoWo = cv->Ho * cv->Wo;
  if (prec != CT_PRECISION_FP32)
    PROF(CT_PROF_CONV_BWD_DATA, ct_round(prec, dout, (size_t) B * HoWo * cv->OC));
  if (din && dw && is_same_stride1(cv)) {
    /* wr holds the flipped weight, then the permuted gradient */
    float *dwp = wr + (size_t) cv->OC * ckk;
    PROF(CT_PROF_CONV_BWD_WEIGHTS, memset(dwp, 0, sizeof(float) * cv->OC * ckk));
    backward_same(prec, din, dwp, col, dcol, prepare_weight_t(prec, wr, w, cv), dout, in, cv, B);
    unpermute_grad(dw, dwp, cv);
    return;
  }
  const float *wp = prepare_weight(CT_PROF_CONV_BWD_DATA, prec, wr, w, cv);
  if (is_pointwise(cv) && prec == CT_PRECISION_FP32) {
    /* the input rows are the im2col matrix, din's rows the dcol rows */
    products_backward(din, dw, dout, in, wp, B * HoWo, ckk, cv->OC);
    return;
  }
  /* K > 1: the weight gradient gathers in (OC, K, K, C) after the
   * permuted weight, and goes back to dw's order at the end */
  float *dwp = dw;
  if (dw && cv->K > 1) {
    dwp = wr + (size_t) cv->OC * ckk;
    PROF(CT_PROF_CONV_BWD_WEIGHTS, memset(dwp, 0, sizeof(float) * cv->OC * ckk));
  }
  int chunk = ct_conv_chunk(cv, B);
  size_t in_n = (size_t) cv->C * cv->H * cv->W;
  for (int b0 = 0; b0 < B; b0 += chunk) {
    int nb = MIN(chunk, B - b0);
    size_t rows = (size_t) nb * HoWo;
    const float *d = dout + (size_t) b0 * HoWo * cv->OC;
    if (dw)
      fill_col(prec, cv, col, in + b0 * in_n, nb);
    if (din)
      PROF(CT_PROF_CONV_BWD_DATA, memset(dcol, 0, sizeof(float) * rows * ckk));
    products_backward(din ? dcol : NULL, dwp, d, col, wp, (int) rows, ckk, cv->OC);
    if (!din)
      continue;
    PROF(CT_PROF_CONV_BWD_DATA, ct_round(prec, dcol, rows * ckk));
    if (is_pointwise(cv)) /* din rows are the dcol rows */
      PROF(CT_PROF_IM2COL, ct_add_inplace(din + b0 * in_n, dcol, rows * ckk));
    else
      col2im(cv, din + b0 * in_n, dcol, nb);
  }
  if (dw && cv->K > 1)
    unpermute_grad(dw, dwp, cv);
}

/* test-ops: every kernel's backward against central finite differences.
 *
 * For an op y = f(x, w, ...) we take the scalar L = sum(y * R) with a fixed
 * random R, run the backward kernel with dout = R, and compare each
 * gradient element with (L(x + h) - L(x - h)) / 2h.  The error allowed is
 * per op: |analytic - numeric| <= atol + rtol * max|numeric|. */
#include "config.h"

#include "kernels/ops.h"
#include "base/parallel.h"
#include "base/vmath.h"

#include <cliptrain/cliptrain.h>

#include "test-util.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

static CtRng rng;

/* ------------------------------------------------------------ linear */

typedef struct {
  int N, C, OC;
  float *x, *w, *b, *y, *r;
} LinearCtx;

static double
linear_loss(void *p)
{
  LinearCtx *c = p;
  ct_linear_forward(c->y, c->x, c->w, c->b, c->N, c->C, c->OC);
  return ct_test_dot(c->y, c->r, (size_t) c->N * c->OC);
}

static void
test_linear(void)
{
  LinearCtx c = { .N = 5, .C = 7, .OC = 6 };
  c.x = ct_test_randn(&rng, 35, 1);
  c.w = ct_test_randn(&rng, 42, 0.5);
  c.b = ct_test_randn(&rng, 6, 0.5);
  c.y = g_new(float, 30);
  c.r = ct_test_randn(&rng, 30, 1);
  float *dx = g_new0(float, 35), *dw = g_new0(float, 42), *db = g_new0(float, 6);
  ct_linear_backward(dx, dw, db, c.r, c.x, c.w, c.N, c.C, c.OC);
  ct_test_check_grad("linear dx", c.x, dx, 35, linear_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("linear dw", c.w, dw, 42, linear_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("linear db", c.b, db, 6, linear_loss, &c, 1e-2, 1e-4, 1e-3);
  /* backward accumulates: a second call doubles the gradients */
  float dw0 = dw[3];
  ct_linear_backward(NULL, dw, NULL, c.r, c.x, c.w, c.N, c.C, c.OC);
  g_assert_cmpfloat_with_epsilon(dw[3], 2 * dw0, 1e-5);
  g_free(c.x), g_free(c.w), g_free(c.b), g_free(c.y), g_free(c.r);
  g_free(dx), g_free(dw), g_free(db);
}

/* ------------------------------------------------------------ matmul */

typedef struct {
  int N, C, E;
  float *x, *w, *y, *r;
} MatmulCtx;

static double
matmul_loss(void *p)
{
  MatmulCtx *c = p;
  ct_matmul_forward(c->y, c->x, c->w, c->N, c->C, c->E);
  return ct_test_dot(c->y, c->r, (size_t) c->N * c->E);
}

static void
test_matmul(void)
{
  MatmulCtx c = { .N = 4, .C = 6, .E = 5 };
  c.x = ct_test_randn(&rng, 24, 1);
  c.w = ct_test_randn(&rng, 30, 0.5);
  c.y = g_new(float, 20);
  c.r = ct_test_randn(&rng, 20, 1);
  float *dx = g_new0(float, 24), *dw = g_new0(float, 30);
  ct_matmul_backward(dx, dw, c.r, c.x, c.w, c.N, c.C, c.E);
  ct_test_check_grad("matmul dx", c.x, dx, 24, matmul_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("matmul dw", c.w, dw, 30, matmul_loss, &c, 1e-2, 1e-4, 1e-3);
  g_free(c.x), g_free(c.w), g_free(c.y), g_free(c.r), g_free(dx), g_free(dw);
}

/* ------------------------------------------------------------ layer norm */

typedef struct {
  int N, C;
  float *x, *w, *b, *y, *mean, *rstd, *r;
} LnCtx;

static double
ln_loss(void *p)
{
  LnCtx *c = p;
  ct_layernorm_forward(c->y, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->C);
  return ct_test_dot(c->y, c->r, (size_t) c->N * c->C);
}

static void
test_layernorm(void)
{
  LnCtx c = { .N = 4, .C = 9 };
  c.x = ct_test_randn(&rng, 36, 2);
  c.w = ct_test_randn(&rng, 9, 1);
  c.b = ct_test_randn(&rng, 9, 1);
  c.y = g_new(float, 36);
  c.mean = g_new(float, 4);
  c.rstd = g_new(float, 4);
  c.r = ct_test_randn(&rng, 36, 1);
  ln_loss(&c);
  /* the output rows have zero mean and unit variance before the affine */
  float *dx = g_new0(float, 36), *dw = g_new0(float, 9), *db = g_new0(float, 9);
  ct_layernorm_backward(dx, dw, db, c.r, c.x, c.mean, c.rstd, c.w, c.N, c.C);
  ct_test_check_grad("layernorm dx", c.x, dx, 36, ln_loss, &c, 1e-3, 1e-3, 5e-3);
  ct_test_check_grad("layernorm dw", c.w, dw, 9, ln_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("layernorm db", c.b, db, 9, ln_loss, &c, 1e-2, 1e-4, 1e-3);
  g_free(c.x), g_free(c.w), g_free(c.b), g_free(c.y), g_free(c.mean), g_free(c.rstd);
  g_free(c.r), g_free(dx), g_free(dw), g_free(db);
}

/* The layer norm's sums, written out lane by lane as kernels/layernorm.c
 * documents them: element c in lane c % 16, lanes summed pairwise (i and
 * i + 8, then + 4, + 2, + 1).  The kernels must give these bits on every
 * CPU path and at every thread count. */
static float
lane_sum_ref(const float *v, int C, float fill)
{
  float l[16];
  for (int i = 0; i < 16; i++)
    l[i] = 0.0f;
  for (int c = 0; c < (C + 15) / 16 * 16; c++)
    l[c % 16] += c < C ? v[c] : fill;
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; i++)
      l[i] += l[i + w];
  return l[0];
}

static void
test_layernorm_lanes(void)
{
  static const int widths[] = { 9, 40, 768 };
  for (gsize k = 0; k < G_N_ELEMENTS(widths); k++) {
    int N = 37, C = widths[k];
    size_t NC = (size_t) N * C;
    g_autofree float *x = ct_test_randn(&rng, NC, 3), *w = ct_test_randn(&rng, C, 1);
    g_autofree float *b = ct_test_randn(&rng, C, 1), *dy = ct_test_randn(&rng, NC, 1);
    g_autofree float *y = g_new(float, NC), *mean = g_new(float, N), *rstd = g_new(float, N);
    g_autofree float *dx = g_new0(float, NC), *dw = g_new0(float, C), *db = g_new0(float, C);
    g_autofree float *t = g_new(float, C), *u = g_new(float, C);
    for (int n = 0; n < N; n++) /* rows far from zero mean, as a residual stream is */
      for (int c = 0; c < C; c++)
        x[(size_t) n * C + c] += (float) n;
    for (int threads = 1; threads <= 3; threads += 2) {
      ct_set_num_threads(threads);
      ct_layernorm_forward(y, mean, rstd, x, w, b, N, C);
      memset(dx, 0, sizeof(float) * NC);
      memset(dw, 0, sizeof(float) * C);
      memset(db, 0, sizeof(float) * C);
      ct_layernorm_backward(dx, dw, db, dy, x, mean, rstd, w, N, C);
      for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t) n * C, *dyr = dy + (size_t) n * C;
        float m = lane_sum_ref(xr, C, 0.0f) / (float) C;
        for (int c = 0; c < C; c++)
          t[c] = (xr[c] - m) * (xr[c] - m);
        float r = 1.0f / sqrtf(lane_sum_ref(t, C, 0.0f) / (float) C + 1e-5f);
        g_assert_cmpmem(&m, sizeof m, mean + n, sizeof m);
        g_assert_cmpmem(&r, sizeof r, rstd + n, sizeof r);
        for (int c = 0; c < C; c++) {
          float yc = (xr[c] - m) * r * w[c] + b[c];
          g_assert_cmpmem(&yc, sizeof yc, y + (size_t) n * C + c, sizeof yc);
          t[c] = dyr[c] * w[c];
          u[c] = t[c] * ((xr[c] - m) * r);
        }
        float m1 = lane_sum_ref(t, C, 0.0f) / (float) C, m2 = lane_sum_ref(u, C, 0.0f) / (float) C;
        for (int c = 0; c < C; c++) {
          float d = 0.0f + r * (dyr[c] * w[c] - m1 - (xr[c] - m) * r * m2);
          g_assert_cmpmem(&d, sizeof d, dx + (size_t) n * C + c, sizeof d);
        }
      }
      for (int c = 0; c < C; c++) { /* each column in row order */
        float sw = 0.0f, sb = 0.0f;
        for (int n = 0; n < N; n++) {
          size_t i = (size_t) n * C + c;
          sw += dy[i] * ((x[i] - mean[n]) * rstd[n]);
          sb += dy[i];
        }
        g_assert_cmpmem(&sw, sizeof sw, dw + c, sizeof sw);
        g_assert_cmpmem(&sb, sizeof sb, db + c, sizeof sb);
      }
    }
    ct_set_num_threads(1);
  }
}

/* Attention's softmax rows against a scalar rewrite of kernels/softmax.c's
 * documented order (lane_sum_ref above), bit for bit, on each exp path. */
static void
test_softmax_lanes(void)
{
  static const int lens[] = { 5, 16, 50, 77 };
  int top = ct_vmath_level();
  for (int level = 0; level <= top; level++) {
    ct_vmath_force(level);
    for (gsize k = 0; k < G_N_ELEMENTS(lens); k++) {
      int T = lens[k];
      int ns[] = { 1, T / 2 + 1, T };
      for (int z = 0; z < 3; z++) {
        int n = ns[z];
        g_autofree float *row = ct_test_randn(&rng, T, 4), *ref = g_memdup2(row, sizeof(float) * T);
        g_autofree float *d = ct_test_randn(&rng, T, 1), *dref = g_memdup2(d, sizeof(float) * T);
        ct_softmax_row(row, n, T);
        float mx = ref[0];
        for (int c = 1; c < n; c++)
          mx = MAX(mx, ref[c]);
        for (int c = 0; c < n; c++)
          ref[c] = ct_exp_scalar(ref[c] - mx);
        float inv = 1.0f / lane_sum_ref(ref, n, 0.0f);
        for (int c = 0; c < T; c++)
          ref[c] = c < n ? ref[c] * inv : 0.0f;
        g_assert_cmpmem(ref, sizeof(float) * T, row, sizeof(float) * T);
        ct_softmax_row_backward(d, row, T);
        g_autofree float *pd = g_new(float, T);
        for (int c = 0; c < T; c++)
          pd[c] = row[c] * dref[c];
        float dot = lane_sum_ref(pd, T, 0.0f);
        for (int c = 0; c < T; c++)
          dref[c] = row[c] * (dref[c] - dot);
        g_assert_cmpmem(dref, sizeof(float) * T, d, sizeof(float) * T);
      }
    }
  }
  ct_vmath_force(-1);
}

/* ------------------------------------------------------------ QuickGELU */

typedef struct {
  size_t n;
  float *x, *y, *r;
} GeluCtx;

static double
gelu_loss(void *p)
{
  GeluCtx *c = p;
  ct_quickgelu_forward(c->y, c->x, c->n);
  return ct_test_dot(c->y, c->r, c->n);
}

static void
test_quickgelu(void)
{
  GeluCtx c = { .n = 40 };
  c.x = ct_test_randn(&rng, 40, 3);
  c.y = g_new(float, 40);
  c.r = ct_test_randn(&rng, 40, 1);
  float *dx = g_new(float, 40);
  ct_quickgelu_backward(dx, c.r, c.x, c.n);
  ct_test_check_grad("quickgelu dx", c.x, dx, 40, gelu_loss, &c, 1e-3, 1e-3, 1e-3);
  /* QuickGELU(1) = 1 * sigmoid(1.702) */
  float one = 1, y;
  ct_quickgelu_forward(&y, &one, 1);
  g_assert_cmpfloat_with_epsilon(y, 1.0 / (1.0 + exp(-1.702)), 1e-6);
  g_free(c.x), g_free(c.y), g_free(c.r), g_free(dx);
}

/* ------------------------------------------------------------ attention */

typedef struct {
  int B, T, C, H, causal;
  float *qkv, *y, *att, *r;
} AttCtx;

static double
att_loss(void *p)
{
  AttCtx *c = p;
  ct_attention_forward(c->y, c->att, c->qkv, c->B, c->T, c->C, c->H, c->causal,
                       CT_PRECISION_FP32);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->T * c->C);
}

static void
check_attention(int causal)
{
  AttCtx c = { .B = 2, .T = 5, .C = 8, .H = 2, .causal = causal };
  size_t nq = (size_t) c.B * c.T * 3 * c.C, ny = (size_t) c.B * c.T * c.C;
  c.qkv = ct_test_randn(&rng, nq, 1);
  c.y = g_new(float, ny);
  c.att = g_new(float, (size_t) c.B * c.H * c.T * c.T);
  c.r = ct_test_randn(&rng, ny, 1);
  att_loss(&c);
  /* rows of the probabilities sum to 1; with the mask, the future is 0 */
  for (int i = 0; i < c.T; i++) {
    double s = 0;
    for (int j = 0; j < c.T; j++) {
      s += c.att[i * c.T + j];
      if (causal && j > i)
        g_assert_cmpfloat(c.att[i * c.T + j], ==, 0.0f);
    }
    g_assert_cmpfloat_with_epsilon(s, 1.0, 1e-5);
  }
  float *dqkv = g_new0(float, nq), *scratch = g_new(float, (size_t) c.T * c.T);
  ct_attention_backward(dqkv, scratch, c.r, c.qkv, c.att, c.B, c.T, c.C, c.H,
                        CT_PRECISION_FP32);
  ct_test_check_grad(causal ? "causal attention dqkv" : "attention dqkv", c.qkv, dqkv, nq,
                     att_loss, &c, 1e-3, 1e-3, 5e-3);
  g_free(c.qkv), g_free(c.y), g_free(c.att), g_free(c.r), g_free(dqkv), g_free(scratch);
}

static void
test_attention(void)
{
  check_attention(0);
}

static void
test_attention_causal(void)
{
  check_attention(1);
}

/* One query row a sequence (the last block under readout pruning). */
typedef struct {
  int B, T, C, H, causal;
  const int *sel;
  float *qkv, *y, *att, *r;
} RowAttCtx;

static double
row_att_loss(void *p)
{
  RowAttCtx *c = p;
  ct_attention_rows_forward(c->y, c->att, c->qkv, c->sel, c->B, c->T, c->C, c->H, c->causal,
                            CT_PRECISION_FP32);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->C);
}

static void
check_attention_rows(int causal)
{
  static const int sel[3] = { 0, 4, 2 };
  RowAttCtx c = { .B = 3, .T = 5, .C = 8, .H = 2, .causal = causal, .sel = sel };
  int B = c.B, T = c.T, C = c.C, H = c.H;
  size_t nq = (size_t) B * T * 3 * C;
  c.qkv = ct_test_randn(&rng, nq, 1);
  c.y = g_new(float, (size_t) B * C);
  c.att = g_new(float, (size_t) B * H * T);
  c.r = ct_test_randn(&rng, (size_t) B * C, 1);
  row_att_loss(&c);
  /* the selected rows of the whole attention */
  float *y = g_new(float, (size_t) B * T * C), *att = g_new(float, (size_t) B * H * T * T);
  ct_attention_forward(y, att, c.qkv, B, T, C, H, causal, CT_PRECISION_FP32);
  for (int b = 0; b < B; b++) {
    for (int e = 0; e < C; e++)
      g_assert_cmpfloat_with_epsilon(c.y[b * C + e], y[((size_t) b * T + sel[b]) * C + e], 1e-6);
    for (int h = 0; h < H; h++)
      for (int j = 0; j < T; j++)
        g_assert_cmpfloat_with_epsilon(c.att[((size_t) b * H + h) * T + j],
                                       att[(((size_t) b * H + h) * T + sel[b]) * T + j], 1e-6);
  }
  float *dqkv = g_new0(float, nq), *scratch = g_new(float, (size_t) T);
  ct_attention_rows_backward(dqkv, scratch, c.r, c.qkv, c.att, sel, B, T, C, H,
                             CT_PRECISION_FP32);
  ct_test_check_grad(causal ? "causal row attention dqkv" : "row attention dqkv", c.qkv, dqkv, nq,
                     row_att_loss, &c, 1e-3, 1e-3, 5e-3);
  /* only the selected rows' queries get a gradient */
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++)
      if (t != sel[b])
        for (int e = 0; e < C; e++)
          g_assert_cmpfloat(dqkv[((size_t) b * T + t) * 3 * C + e], ==, 0.0f);
  g_free(c.qkv), g_free(c.y), g_free(c.att), g_free(c.r), g_free(dqkv), g_free(scratch);
  g_free(y), g_free(att);
}

static void
test_attention_rows(void)
{
  check_attention_rows(0);
  check_attention_rows(1);
}

/* ------------------------------------------------------------ embeddings */

typedef struct {
  int B, T, C, V;
  int32_t *tok;
  float *wte, *wpe, *y, *r;
} EmbCtx;

static double
emb_loss(void *p)
{
  EmbCtx *c = p;
  ct_token_embed_forward(c->y, c->tok, c->wte, c->wpe, c->B, c->T, c->C);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->T * c->C);
}

static void
test_token_embed(void)
{
  EmbCtx c = { .B = 2, .T = 4, .C = 3, .V = 6 };
  int32_t tok[8] = { 5, 1, 1, 0, 2, 5, 3, 1 }; /* repeated ids accumulate */
  c.tok = tok;
  c.wte = ct_test_randn(&rng, 18, 1);
  c.wpe = ct_test_randn(&rng, 12, 1);
  c.y = g_new(float, 24);
  c.r = ct_test_randn(&rng, 24, 1);
  float *dwte = g_new0(float, 18), *dwpe = g_new0(float, 12);
  ct_token_embed_backward(dwte, dwpe, c.r, c.tok, c.B, c.T, c.C);
  ct_test_check_grad("token embedding dwte", c.wte, dwte, 18, emb_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("positional embedding dwpe", c.wpe, dwpe, 12, emb_loss, &c, 1e-2, 1e-4, 1e-3);
  g_free(c.wte), g_free(c.wpe), g_free(c.y), g_free(c.r), g_free(dwte), g_free(dwpe);
}

/* Patch embedding: patchify + conv1 as a linear + class token + pos. */
typedef struct {
  int B, R, P, W;
  float *img, *patches, *conv, *pout, *cls, *pos, *y, *r;
} PatchCtx;

static double
patch_loss(void *p)
{
  PatchCtx *c = p;
  int G = c->R / c->P, GG = G * G;
  ct_patchify(c->patches, c->img, c->B, c->R, c->P);
  ct_linear_forward(c->pout, c->patches, c->conv, NULL, c->B * GG, 3 * c->P * c->P, c->W);
  ct_patch_assemble_forward(c->y, c->pout, c->cls, c->pos, c->B, GG, c->W);
  return ct_test_dot(c->y, c->r, (size_t) c->B * (GG + 1) * c->W);
}

static void
test_patch_embed(void)
{
  PatchCtx c = { .B = 2, .R = 6, .P = 3, .W = 4 };
  int G = 2, GG = 4, K = 27;
  c.img = ct_test_randn(&rng, 2 * 3 * 36, 1);
  c.patches = g_new(float, 2 * GG * K);
  c.conv = ct_test_randn(&rng, 4 * K, 0.3);
  c.pout = g_new(float, 2 * GG * 4);
  c.cls = ct_test_randn(&rng, 4, 1);
  c.pos = ct_test_randn(&rng, (GG + 1) * 4, 1);
  c.y = g_new(float, 2 * (GG + 1) * 4);
  c.r = ct_test_randn(&rng, 2 * (GG + 1) * 4, 1);
  patch_loss(&c);
  /* patch (b=1, gy=1, gx=0), channel 2, ky=1, kx=2 is pixel (1, 2, 4, 2) */
  g_assert_cmpfloat(c.patches[((1 * G + 1) * G + 0) * K + (2 * 3 + 1) * 3 + 2], ==,
                    c.img[((1 * 3 + 2) * 6 + 4) * 6 + 2]);
  float *dconv = g_new0(float, 4 * K), *dcls = g_new0(float, 4);
  float *dpos = g_new0(float, (GG + 1) * 4), *dpout = g_new(float, 2 * GG * 4);
  ct_patch_assemble_backward(dpout, dcls, dpos, c.r, c.B, GG, c.W);
  ct_linear_backward(NULL, dconv, NULL, dpout, c.patches, c.conv, c.B * GG, K, c.W);
  ct_test_check_grad("patch conv1 dw", c.conv, dconv, 4 * K, patch_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("class embedding", c.cls, dcls, 4, patch_loss, &c, 1e-2, 1e-4, 1e-3);
  ct_test_check_grad("vision positional embedding", c.pos, dpos, (GG + 1) * 4, patch_loss, &c,
                     1e-2, 1e-4, 1e-3);
  g_free(c.img), g_free(c.patches), g_free(c.conv), g_free(c.pout), g_free(c.cls);
  g_free(c.pos), g_free(c.y), g_free(c.r), g_free(dconv), g_free(dcls), g_free(dpos);
  g_free(dpout);
}

/* ------------------------------------------------------------ rows, L2 norm */

typedef struct {
  int B, T, C;
  int *idx;
  float *x, *y, *r;
} RowsCtx;

static double
rows_loss(void *p)
{
  RowsCtx *c = p;
  ct_rows_gather(c->y, c->x, c->idx, c->B, c->T, c->C);
  return ct_test_dot(c->y, c->r, (size_t) c->B * c->C);
}

static void
test_rows(void)
{
  int32_t tok[12] = { 7, 3, 9, 0, 7, 9, 9, 1, 2, 3, 4, 5 };
  int idx[3];
  ct_tokens_argmax(idx, tok, 3, 4);
  g_assert_cmpint(idx[0], ==, 2);
  g_assert_cmpint(idx[1], ==, 1); /* the first of equal maxima, as torch.argmax */
  g_assert_cmpint(idx[2], ==, 3);
  RowsCtx c = { .B = 3, .T = 4, .C = 5, .idx = idx };
  c.x = ct_test_randn(&rng, 60, 1);
  c.y = g_new(float, 15);
  c.r = ct_test_randn(&rng, 15, 1);
  float *dx = g_new0(float, 60);
  ct_rows_scatter_add(dx, c.r, idx, 3, 4, 5);
  ct_test_check_grad("row gather dx", c.x, dx, 60, rows_loss, &c, 1e-2, 1e-4, 1e-3);
  /* gather-add: the gathered rows added to what the output held */
  float acc[15];
  for (int i = 0; i < 15; i++)
    acc[i] = (float) i;
  ct_rows_gather_add(acc, c.x, idx, 3, 4, 5);
  for (int b = 0; b < 3; b++)
    for (int e = 0; e < 5; e++)
      g_assert_cmpfloat(acc[b * 5 + e], ==, (float) (b * 5 + e) + c.x[(b * 4 + idx[b]) * 5 + e]);
  g_free(c.x), g_free(c.y), g_free(c.r), g_free(dx);
}

typedef struct {
  int N, E;
  float *x, *y, *norm, *r;
} NormCtx;

static double
norm_loss(void *p)
{
  NormCtx *c = p;
  ct_l2norm_forward(c->y, c->norm, c->x, c->N, c->E);
  return ct_test_dot(c->y, c->r, (size_t) c->N * c->E);
}

static void
test_l2norm(void)
{
  NormCtx c = { .N = 3, .E = 7 };
  c.x = ct_test_randn(&rng, 21, 1);
  c.y = g_new(float, 21);
  c.norm = g_new(float, 3);
  c.r = ct_test_randn(&rng, 21, 1);
  norm_loss(&c);
  g_assert_cmpfloat_with_epsilon(ct_test_dot(c.y, c.y, 7), 1.0, 1e-6);
  float *dx = g_new0(float, 21);
  ct_l2norm_backward(dx, c.r, c.y, c.norm, c.N, c.E);
  ct_test_check_grad("l2 normalisation dx", c.x, dx, 21, norm_loss, &c, 1e-3, 1e-3, 2e-3);
  g_free(c.x), g_free(c.y), g_free(c.norm), g_free(c.r), g_free(dx);
}

/* ------------------------------------------------------------ CLIP loss */

typedef struct {
  int B, E;
  float *img, *txt, scale, *logits;
} LossCtx;

static double
clip_loss_only(void *p)
{
  LossCtx *c = p;
  return ct_clip_loss(c->logits, NULL, NULL, NULL, NULL, c->img, c->txt, c->scale, c->B, c->E);
}

static void
test_clip_loss(void)
{
  LossCtx c = { .B = 5, .E = 6 };
  c.img = ct_test_randn(&rng, 30, 0.4);
  c.txt = ct_test_randn(&rng, 30, 0.4);
  c.scale = 1.3f;
  c.logits = g_new(float, 25);
  float *dimg = g_new(float, 30), *dtxt = g_new(float, 30), *scratch = g_new(float, 25);
  float dscale;
  double loss = ct_clip_loss(c.logits, dimg, dtxt, &dscale, scratch, c.img, c.txt, c.scale,
                             c.B, c.E);
  /* loss by hand, in double, from the definition */
  double s = exp(c.scale), ref = 0;
  for (int i = 0; i < c.B; i++) {
    double row[5], col[5];
    for (int j = 0; j < c.B; j++) {
      row[j] = s * ct_test_dot(c.img + i * c.E, c.txt + j * c.E, c.E);
      col[j] = s * ct_test_dot(c.img + j * c.E, c.txt + i * c.E, c.E);
    }
    double sr = 0, scol = 0;
    for (int j = 0; j < c.B; j++)
      sr += exp(row[j]), scol += exp(col[j]);
    ref += (log(sr) - row[i]) + (log(scol) - col[i]);
  }
  ref /= 2.0 * c.B;
  g_assert_cmpfloat_with_epsilon(loss, ref, 1e-6);
  ct_test_check_grad("clip loss d_img", c.img, dimg, 30, clip_loss_only, &c, 1e-3, 1e-4, 2e-3);
  ct_test_check_grad("clip loss d_txt", c.txt, dtxt, 30, clip_loss_only, &c, 1e-3, 1e-4, 2e-3);
  ct_test_check_grad("clip loss d_logit_scale", &c.scale, &dscale, 1, clip_loss_only, &c, 1e-3,
                     1e-4, 2e-3);
  g_free(c.img), g_free(c.txt), g_free(c.logits), g_free(dimg), g_free(dtxt), g_free(scratch);
}

/* ------------------------------------------------------------ whole model */

typedef struct {
  CtModel *m;
  float *images;
  int32_t *tokens;
  int B;
  float *logits;
} ModelCtx;

static double
model_loss(void *p)
{
  ModelCtx *c = p;
  g_assert_true(ct_model_forward(c->m, c->images, c->tokens, c->B, NULL));
  const CtConfig *cfg = ct_model_config(c->m);
  return ct_clip_loss(c->logits, NULL, NULL, NULL, NULL, ct_model_image_features(c->m),
                      ct_model_text_features(c->m), *ct_model_logit_scale(c->m), c->B,
                      cfg->embed_dim);
}

/* End to end: a few elements of every parameter tensor of a tiny model. */
static void
test_model_fd(void)
{
  CtConfig cfg = { .embed_dim = 6, .image_resolution = 8, .vision_layers = 1,
                   .vision_width = 8, .vision_patch_size = 4, .vision_heads = 2,
                   .context_length = 5, .vocab_size = 11, .transformer_width = 8,
                   .transformer_heads = 2, .transformer_layers = 1 };
  int B = 3;
  GError *error = NULL;
  CtModel *m = ct_model_new(&cfg, B, &error);
  g_assert_no_error(error);
  ct_model_init_weights(m, 7);
  /* perturb gains and biases so no layer is an identity */
  float *p = ct_model_params(m);
  for (size_t i = 0; i < ct_model_n_params(m); i++)
    p[i] += 0.1f * (float) (ct_rng_uniform(&rng) - 0.5);
  ModelCtx c = { m, ct_test_randn(&rng, (size_t) B * 3 * 64, 1), NULL, B, g_new(float, B * B) };
  int32_t tok[15] = { 9, 3, 10, 0, 0, 9, 1, 2, 4, 10, 9, 10, 0, 0, 0 };
  c.tokens = tok;
  model_loss(&c);
  float *dimg = g_new(float, B * 6), *dtxt = g_new(float, B * 6), *scr = g_new(float, B * B);
  float ds;
  ct_clip_loss(c.logits, dimg, dtxt, &ds, scr, ct_model_image_features(m),
               ct_model_text_features(m), *ct_model_logit_scale(m), B, 6);
  ct_model_zero_grad(m);
  ct_model_backward(m, dimg, dtxt);
  ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += ds;
  for (size_t t = 0; t < ct_model_n_tensors(m); t++) {
    const CtParamInfo *info = ct_model_tensor(m, t);
    /* check up to 6 elements per tensor; token rows never used have zero
     * gradient, so take rows that tokens reference */
    size_t n = MIN(info->numel, 6);
    size_t start = g_str_equal(info->name, "token_embedding.weight") ? 9 * 8 : 0;
    char what[160];
    g_snprintf(what, sizeof what, "model %s", info->name);
    float an[6];
    memcpy(an, ct_model_grads(m) + info->offset + start, n * sizeof(float));
    /* h = 3e-3: the float32 forward's rounding puts about 5e-4 of noise
     * into a numeric gradient at h = 1e-3 (seen failing on 4 of 20 seeds
     * of the perturbation), and the token embedding's curvature moves it
     * at h = 1e-2; at 3e-3 30 seeds of 30 pass */
    ct_test_check_grad(what, p + info->offset + start, an, n, model_loss, &c, 3e-3, 2e-4, 2e-2);
  }
  g_free(c.images), g_free(c.logits), g_free(dimg), g_free(dtxt), g_free(scr);
  ct_model_free(m);
}

/* vmath.h's exp: close to libm's, exact at the edges, and QuickGELU gives
 * the same bits on every vector path this CPU has, its derivative too when
 * it comes from the forward's pass (ct_quickgelu_forward_slope). */
static void
test_vector_paths(void)
{
  double worst = 0;
  for (int i = 0; i <= 200000; i++) {
    float x = -87.0f + 175.0f * (float) i / 200000.0f;
    double ref = exp((double) x), got = ct_exp_scalar(x);
    worst = MAX(worst, fabs(got - ref) / ref);
  }
  g_test_message("exp: worst relative error %.2e over [-87, 88]", worst);
  g_assert_cmpfloat(worst, <, 5e-7);
  g_assert_cmpfloat(ct_exp_scalar(-100.0f), ==, 0.0f);
  g_assert_true(isinf(ct_exp_scalar(100.0f)));
  g_assert_true(isnan(ct_exp_scalar(NAN)));
  g_assert_cmpfloat(ct_exp_scalar(0.0f), ==, 1.0f);

  enum { N = 100003 }; /* not a multiple of the vector widths */
  g_autofree float *x = ct_test_randn(&rng, N, 4), *dy = ct_test_randn(&rng, N, 1);
  x[0] = 200.0f, x[1] = -200.0f, x[2] = 0.0f, x[3] = -60.0f, x[4] = 60.0f;
  g_autofree float *ref = g_new(float, N), *dref = g_new(float, N);
  g_autofree float *got = g_new(float, N), *dgot = g_new(float, N);
  g_autofree float *slope = g_new(float, N);
  int top = ct_vmath_level();
  ct_vmath_force(0);
  ct_quickgelu_forward(ref, x, N);
  ct_quickgelu_backward(dref, dy, x, N);
  for (int level = 0; level <= top; level++) {
    ct_vmath_force(level);
    ct_quickgelu_forward(got, x, N);
    ct_quickgelu_backward(dgot, dy, x, N);
    g_assert_cmpmem(ref, sizeof(float) * N, got, sizeof(float) * N);
    g_assert_cmpmem(dref, sizeof(float) * N, dgot, sizeof(float) * N);
    /* backward's one pass for both (transformer.c): the same bits */
    ct_quickgelu_forward_slope(got, slope, x, N);
    memcpy(dgot, dy, sizeof(float) * N);
    ct_mul_inplace(dgot, slope, N);
    g_assert_cmpmem(ref, sizeof(float) * N, got, sizeof(float) * N);
    g_assert_cmpmem(dref, sizeof(float) * N, dgot, sizeof(float) * N);
  }
  ct_vmath_force(-1);
  if (top < 2)
    g_test_message("this CPU has vector level %d only: higher paths not compared", top);
  g_assert_cmpfloat(ref[0], ==, 200.0f);
  g_assert_cmpfloat(ref[1], ==, -0.0f);
}

/* ct_sgemm cuts a product into blocks of rows of C between the pool's
 * threads, where OpenBLAS computes each element the same way whole or cut
 * (gemm.c says how), so 2 and 3 threads give the bits of one thread (one
 * cblas_sgemm call), for every transpose, with BETA accumulating, at the
 * shapes of vitb32's products, at odd ones and at ones too small to cut.  tests/cli/blas-kernels.sh runs this under each
 * OpenBLAS core type the CPU can use. */
static void
test_sgemm_threads(void)
{
  static const int shapes[][3] = {
    { 800, 3072, 768 }, { 768, 3072, 800 }, { 1232, 512, 2048 }, { 1000, 100, 300 },
    { 997, 131, 129 }, { 200, 3001, 50 }, { 129, 130, 131 }, { 64, 64, 513 },
  };
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++)
    for (int t = 0; t < 4; t++) {
      int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
      gboolean ta = t & 1, tb = (t >> 1) & 1;
      g_autofree float *a = ct_test_randn(&rng, (size_t) M * K, 1);
      g_autofree float *b = ct_test_randn(&rng, (size_t) K * N, 1);
      g_autofree float *c0 = ct_test_randn(&rng, (size_t) M * N, 1);
      g_autofree float *ref = g_memdup2(c0, sizeof(float) * M * N);
      g_autofree float *got = g_new(float, (size_t) M * N);
      int lda = ta ? M : K, ldb = tb ? K : N;
      ct_set_num_threads(1);
      ct_sgemm(ta, tb, M, N, K, 0.5f, a, lda, b, ldb, 1.0f, ref, N);
      for (int threads = 2; threads <= 3; threads++) {
        ct_set_num_threads(threads);
        memcpy(got, c0, sizeof(float) * M * N);
        ct_sgemm(ta, tb, M, N, K, 0.5f, a, lda, b, ldb, 1.0f, got, N);
        g_assert_cmpmem(ref, sizeof(float) * M * N, got, sizeof(float) * M * N);
      }
      /* and it is a product: one element against a double dot product */
      int i = M / 3, j = N / 2;
      double d = 0;
      for (int k = 0; k < K; k++)
        d += (double) (ta ? a[(size_t) k * M + i] : a[(size_t) i * K + k]) *
             (tb ? b[(size_t) j * K + k] : b[(size_t) k * N + j]);
      g_assert_cmpfloat(fabs(ref[(size_t) i * N + j] - (c0[(size_t) i * N + j] + 0.5 * d)), <,
                        1e-3 * sqrt(K));
    }
  ct_set_num_threads(1);
}

/* Pool threads are pinned one a CPU when the process may use enough CPUs
 * (parallel.c), and a thread started later (a data loader's) gets all of
 * them back.  Each case runs in a child process: the plan is made once. */
static int
cpus_of_this_thread(void)
{
  cpu_set_t set;
  g_assert_cmpint(pthread_getaffinity_np(pthread_self(), sizeof set, &set), ==, 0);
  return CPU_COUNT(&set);
}

static void *
unpinned_thread(void *arg)
{
  ct_parallel_unpin_self();
  *(int *) arg = cpus_of_this_thread();
  return NULL;
}

static void
test_pinning_child(void)
{
  if (!g_test_subprocess()) {
    g_test_skip("run by /ops/pinning, in a child process per case");
    return;
  }
  int allowed = cpus_of_this_thread();
  ct_set_num_threads(2);
  const char *expect = g_getenv("CT_TEST_EXPECT_PINNED");
  g_assert_cmpint(cpus_of_this_thread(), ==, g_str_equal(expect, "1") ? 1 : allowed);
  pthread_t t;
  int later = 0;
  g_assert_cmpint(pthread_create(&t, NULL, unpinned_thread, &later), ==, 0);
  pthread_join(t, NULL);
  g_assert_cmpint(later, ==, allowed);
  ct_set_num_threads(1);
  g_assert_cmpint(cpus_of_this_thread(), ==, allowed);
}

static void
test_pinning(void)
{
  cpu_set_t set;
  g_assert_cmpint(pthread_getaffinity_np(pthread_self(), sizeof set, &set), ==, 0);
  if (CPU_COUNT(&set) < 2) {
    g_test_skip("this process may use one CPU only: nothing to pin");
    return;
  }
  static const struct {
    const char *env[4]; /* NAME=VALUE, NULL-terminated */
    gboolean pinned;
  } cases[] = {
    { { NULL }, TRUE },
    { { "CT_PIN_THREADS=0", NULL }, FALSE },
    /* the ranks of a node would need 2 x 64 CPUs */
    { { "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=64", NULL }, FALSE },
    { { "OMPI_COMM_WORLD_LOCAL_RANK=0", "OMPI_COMM_WORLD_LOCAL_SIZE=1", NULL }, TRUE },
    /* started by a launcher that does not say where on the node */
    { { "PMI_RANK=0", NULL }, FALSE },
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *vars[] = { "CT_PIN_THREADS", "OMPI_COMM_WORLD_LOCAL_RANK",
                           "OMPI_COMM_WORLD_LOCAL_SIZE", "PMI_RANK", "PMIX_RANK",
                           "OMPI_COMM_WORLD_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS" };
    for (gsize v = 0; v < G_N_ELEMENTS(vars); v++)
      g_unsetenv(vars[v]);
    for (int e = 0; cases[i].env[e]; e++) {
      g_auto(GStrv) kv = g_strsplit(cases[i].env[e], "=", 2);
      g_setenv(kv[0], kv[1], TRUE);
    }
    g_setenv("CT_TEST_EXPECT_PINNED", cases[i].pinned ? "1" : "0", TRUE);
    g_test_trap_subprocess("/ops/pinning/child", 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
  }
  g_unsetenv("CT_TEST_EXPECT_PINNED");
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ct_rng_init(&rng, 1234);
  g_test_add_func("/ops/vector-paths", test_vector_paths);
  g_test_add_func("/ops/sgemm-threads", test_sgemm_threads);
  g_test_add_func("/ops/pinning", test_pinning);
  g_test_add_func("/ops/pinning/child", test_pinning_child);
  g_test_add_func("/ops/linear", test_linear);
  g_test_add_func("/ops/matmul", test_matmul);
  g_test_add_func("/ops/layernorm", test_layernorm);
  g_test_add_func("/ops/layernorm-lanes", test_layernorm_lanes);
  g_test_add_func("/ops/softmax-lanes", test_softmax_lanes);
  g_test_add_func("/ops/quickgelu", test_quickgelu);
  g_test_add_func("/ops/attention", test_attention);
  g_test_add_func("/ops/attention-causal", test_attention_causal);
  g_test_add_func("/ops/attention-rows", test_attention_rows);
  g_test_add_func("/ops/token-embedding", test_token_embed);
  g_test_add_func("/ops/patch-embedding", test_patch_embed);
  g_test_add_func("/ops/rows", test_rows);
  g_test_add_func("/ops/l2norm", test_l2norm);
  g_test_add_func("/ops/clip-loss", test_clip_loss);
  g_test_add_func("/ops/model-finite-differences", test_model_fd);
  return g_test_run();
}

/* resnet-layout.c: the ModifiedResNet tower's shapes, its tensors under
 * OpenAI's state-dict names with OpenAI's initialisation, and its share of
 * the activation arena.
 *
 * Initialisation (CLIP.initialize_parameters): the attention pool's q, k,
 * v and c_proj weights N(0, C^-0.5), its positional embedding
 * N(0, C^-0.5) (AttentionPool2d's randn / C^0.5), every Bottleneck's
 * bn3.weight 0, other BatchNorm gains 1 and biases 0; the rest as
 * PyTorch's module defaults: convolution weights kaiming_uniform(a =
 * sqrt(5)), that is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the pool's
 * linear biases U(-1/sqrt(C), 1/sqrt(C)).  Running means start at 0 and
 * running variances at 1. */
#include "config.h"

#include "model/model-private.h"

#include <math.h>

void
ct_resnet_setup(CtModel *m)
{
  const CtConfig *c = &m->cfg;
  CtResNet *rn = &m->rn;
  *rn = (CtResNet) { .W = c->vision_width, .R = c->image_resolution, .E = c->embed_dim,
                     .H = c->vision_heads };
  int W = rn->W, R = rn->R;
  ct_conv_init(&rn->scv1, 3, R, R, W / 2, 3, 2, 1, 1);
  int R2 = rn->scv1.Ho;
  ct_conv_init(&rn->scv2, W / 2, R2, R2, W / 2, 3, 1, 1, 0);
  ct_conv_init(&rn->scv3, W / 2, R2, R2, W, 3, 1, 1, 0);
  for (int st = 0; st < 4; st++) {
    rn->stage0[st] = rn->nblocks;
    rn->nblocks += c->vision_stages[st];
  }
  rn->stage0[4] = rn->nblocks;
  rn->blocks = g_new0(CtBottleneck, rn->nblocks);
  int inplanes = W, H = R2 / 2, i = 0;
  for (int st = 0; st < 4; st++) {
    int P = W << st;
    for (int j = 0; j < c->vision_stages[st]; j++, i++) {
      CtBottleneck *b = &rn->blocks[i];
      int s = j == 0 && st > 0 ? 2 : 1;
      *b = (CtBottleneck) { .Cin = inplanes, .P = P, .s = s, .H = H, .W = H, .Ho = H / s,
                            .Wo = H / s, .ds = s > 1 || inplanes != 4 * P };
      ct_conv_init(&b->cv1, inplanes, H, H, P, 1, 1, 0, 0);
      ct_conv_init(&b->cv2, P, H, H, P, 3, 1, 1, 0);
      ct_conv_init(&b->cv3, P, b->Ho, b->Wo, 4 * P, 1, 1, 0, 0);
      ct_conv_init(&b->cvd, inplanes, b->Ho, b->Wo, 4 * P, 1, 1, 0, 0);
      inplanes = 4 * P;
      H = b->Ho;
    }
  }
  rn->S = H;
  rn->C = 32 * W;
  rn->T = H * H + 1;
}

void
ct_resnet_cleanup(CtModel *m)
{
  g_clear_pointer(&m->rn.blocks, g_free);
}

#define NORMAL(std) ((CtInitSpec) { CT_INIT_NORMAL, (std) })
#define UNIFORM(b) ((CtInitSpec) { CT_INIT_UNIFORM, (b) })
#define ZERO ((CtInitSpec) { CT_INIT_ZERO, 0 })
#define ONE ((CtInitSpec) { CT_INIT_ONE, 0 })

static void
add_conv(CtLayout *lo, float **p, float **g, const char *name, int oc, int ic, int k)
{
  ct_layout_param(lo, p, g, UNIFORM(1.0 / sqrt((double) ic * k * k)), TRUE, name, 4, oc, ic, k,
                  k);
}

/* PREFIX.weight, .bias (parameters), .running_mean, .running_var (buffers). */
static void
add_bn(CtLayout *lo, CtBnParams *p, CtBnParams *g, CtBnBuffers *buf, const char *prefix, int C,
       gboolean zero_gain)
{
  g_autofree char *w = g_strconcat(prefix, ".weight", NULL);
  g_autofree char *b = g_strconcat(prefix, ".bias", NULL);
  g_autofree char *rm = g_strconcat(prefix, ".running_mean", NULL);
  g_autofree char *rv = g_strconcat(prefix, ".running_var", NULL);
  ct_layout_param(lo, &p->w, &g->w, zero_gain ? ZERO : ONE, FALSE, w, 1, C, 0, 0, 0);
  ct_layout_param(lo, &p->b, &g->b, ZERO, FALSE, b, 1, C, 0, 0, 0);
  ct_layout_buffer(lo, &buf->mean, rm, C);
  ct_layout_buffer(lo, &buf->var, rv, C);
}

void
ct_resnet_layout(CtLayout *lo, CtModel *m)
{
  CtResNet *rn = &m->rn;
  int W = rn->W, C = rn->C, E = rn->E;
  char name[256];
  add_conv(lo, &rn->sp[0].conv1_w, &rn->sp[1].conv1_w, "visual.conv1.weight", W / 2, 3, 3);
  add_bn(lo, &rn->sp[0].bn1, &rn->sp[1].bn1, &rn->sb1, "visual.bn1", W / 2, FALSE);
  add_conv(lo, &rn->sp[0].conv2_w, &rn->sp[1].conv2_w, "visual.conv2.weight", W / 2, W / 2, 3);
  add_bn(lo, &rn->sp[0].bn2, &rn->sp[1].bn2, &rn->sb2, "visual.bn2", W / 2, FALSE);
  add_conv(lo, &rn->sp[0].conv3_w, &rn->sp[1].conv3_w, "visual.conv3.weight", W, W / 2, 3);
  add_bn(lo, &rn->sp[0].bn3, &rn->sp[1].bn3, &rn->sb3, "visual.bn3", W, FALSE);
  int i = 0;
  for (int st = 0; st < 4; st++)
    for (int j = 0; j < m->cfg.vision_stages[st]; j++, i++) {
      CtBottleneck *b = &rn->blocks[i];
      int P = b->P;
#define N(suffix) (g_snprintf(name, sizeof name, "visual.layer%d.%d.%s", st + 1, j, suffix), name)
      add_conv(lo, &b->p.conv1_w, &b->g.conv1_w, N("conv1.weight"), P, b->Cin, 1);
      add_bn(lo, &b->p.bn1, &b->g.bn1, &b->b1, N("bn1"), P, FALSE);
      add_conv(lo, &b->p.conv2_w, &b->g.conv2_w, N("conv2.weight"), P, P, 3);
      add_bn(lo, &b->p.bn2, &b->g.bn2, &b->b2, N("bn2"), P, FALSE);
      add_conv(lo, &b->p.conv3_w, &b->g.conv3_w, N("conv3.weight"), 4 * P, P, 1);
      add_bn(lo, &b->p.bn3, &b->g.bn3, &b->b3, N("bn3"), 4 * P, TRUE);
      if (b->ds) { /* downsample.-1 is the AvgPool2d, without tensors */
        add_conv(lo, &b->p.ds_w, &b->g.ds_w, N("downsample.0.weight"), 4 * P, b->Cin, 1);
        add_bn(lo, &b->p.ds_bn, &b->g.ds_bn, &b->bd, N("downsample.1"), 4 * P, FALSE);
      }
#undef N
    }
  double std = pow((double) C, -0.5), bias = 1.0 / sqrt((double) C);
  CtResNetParams *p = &rn->sp[0], *g = &rn->sp[1];
  ct_layout_param(lo, &p->pos, &g->pos, NORMAL(std), FALSE, "visual.attnpool.positional_embedding",
                  2, rn->T, C, 0, 0);
  ct_layout_param(lo, &p->k_w, &g->k_w, NORMAL(std), TRUE, "visual.attnpool.k_proj.weight", 2, C,
                  C, 0, 0);
  ct_layout_param(lo, &p->k_b, &g->k_b, UNIFORM(bias), FALSE, "visual.attnpool.k_proj.bias", 1,
                  C, 0, 0, 0);
  ct_layout_param(lo, &p->q_w, &g->q_w, NORMAL(std), TRUE, "visual.attnpool.q_proj.weight", 2, C,
                  C, 0, 0);
  ct_layout_param(lo, &p->q_b, &g->q_b, UNIFORM(bias), FALSE, "visual.attnpool.q_proj.bias", 1,
                  C, 0, 0, 0);
  ct_layout_param(lo, &p->v_w, &g->v_w, NORMAL(std), TRUE, "visual.attnpool.v_proj.weight", 2, C,
                  C, 0, 0);
  ct_layout_param(lo, &p->v_b, &g->v_b, UNIFORM(bias), FALSE, "visual.attnpool.v_proj.bias", 1,
                  C, 0, 0, 0);
  ct_layout_param(lo, &p->c_w, &g->c_w, NORMAL(std), TRUE, "visual.attnpool.c_proj.weight", 2, E,
                  C, 0, 0);
  ct_layout_param(lo, &p->c_b, &g->c_b, UNIFORM(bias), FALSE, "visual.attnpool.c_proj.bias", 1,
                  E, 0, 0, 0);
}

/* ---------------------------------------------------------------- arena */

/* Floats of block b's 16-bit codes (CtBottleneck.h) for B images. */
static size_t
packed_floats(const CtBottleneck *b, int B)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo, P = b->P;
  size_t n = 2 * N * P + (b->s > 1 ? No * P : 0) + No * 4 * P;
  if (b->ds)
    n += (b->s > 1 ? No * b->Cin : 0) + No * 4 * P;
  return (n + 1) / 2;
}

/* Floats of the work area that block b's float32 tensors take (as
 * carve_block takes them) for B images. */
static size_t
work_floats(const CtBottleneck *b, int B, int xcoded)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo, P = b->P;
  CtArena t = { NULL, 0 };
  ct_arena_take(&t, N * P); /* c1 */
  ct_arena_take(&t, N * P); /* c2 */
  if (b->s > 1)
    ct_arena_take(&t, No * P);
  ct_arena_take(&t, No * 4 * P);
  if (b->ds && b->s > 1)
    ct_arena_take(&t, No * b->Cin);
  if (b->ds)
    ct_arena_take(&t, No * 4 * P);
  if (xcoded)
    ct_arena_take(&t, N * b->Cin);
  return t.used;
}

/* Block b's activations for B images from A; Y is where its output goes
 * when OWN_Y is FALSE (Y may be NULL then, while A only sizes), from A
 * too when TRUE.  R1 and r2 are RBUF, which all blocks share.  HALF: the
 * tensors kept as 16-bit codes live in the shared float32 work area WORK
 * (NULL while A only sizes), and an output of its own in YB while it is
 * float32 (b->xh set by the caller). */
static void
carve_block(CtArena *a, int half, float *work, float *rbuf, CtBottleneck *b, int B, float *y,
            int own_y, float *yb)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo, P = b->P;
  CtArena wa = { work, 0 };
  CtArena *t = half ? &wa : a; /* where the codable tensors go */
  b->c1 = ct_arena_take(t, N * P);
  b->r1 = rbuf;
  b->c2 = ct_arena_take(t, N * P);
  b->r2 = rbuf;
  b->p2 = b->s > 1 ? ct_arena_take(t, No * P) : b->r2;
  b->c3 = ct_arena_take(t, No * 4 * P);
  b->px = b->ds && b->s > 1 ? ct_arena_take(t, No * b->Cin) : b->x;
  b->cd = b->ds ? ct_arena_take(t, No * 4 * P) : NULL;
  b->xb = b->xh ? ct_arena_take(t, N * b->Cin) : b->x;
  b->h = half ? (uint16_t *) (void *) ct_arena_take(a, packed_floats(b, B)) : NULL;
  b->yh = NULL;
  b->ym = NULL;
  if (!own_y) {
    b->y = y;
  } else if (half) {
    b->y = yb;
    b->yh = (uint16_t *) (void *) ct_arena_take(a, (No * 4 * P + 1) / 2);
    b->ym = (uint8_t *) (void *) ct_arena_take(a, (No * 4 * P + 31) / 32);
  } else {
    b->y = ct_arena_take(a, No * 4 * P);
  }
  b->stats = ct_arena_take(a, 2 * 10 * P);
}

/* The stage block I belongs to. */
static int
stage_of(const CtResNet *rn, int i)
{
  int k = 0;
  while (k < 3 && i >= rn->stage0[k + 1])
    k++;
  return k;
}

/* TRUE when block I's output is recomputed in backward rather than kept
 * (no checkpointing, not its stage's last, its stage not marked
 * keep_y). */
static gboolean
recomputed(const CtResNet *rn, int i)
{
  int k = stage_of(rn, i);
  return rn->nseg == 1 && i + 1 < rn->stage0[k + 1] && !rn->keep_y[k];
}

/* Blocks [i0, i1) of a segment, from A; their input and last output are
 * set already. */
static void
carve_segment(CtArena *a, int half, float *work, float *rbuf, CtResNet *rn, int i0, int i1,
              int B, float *out)
{
  rn->blocks[i0].xh = NULL; /* a segment's input is kept in float32 */
  for (int i = i0; i < i1; i++) {
    CtBottleneck *b = &rn->blocks[i];
    /* the float32 homes of the outputs kept as codes, in turn: g[2], and
     * the one of g[0] and g[1] that holds no gradient while backward
     * recomputes the segment (after the L - i1 blocks above it) */
    float *yb = i % 2 ? rn->g[(rn->nblocks - i1 + 1) % 2] : rn->g[2];
    float *y = i + 1 == i1 ? out : NULL;
    if (i + 1 < i1 && recomputed(rn, i))
      y = yb; /* the same turns as the outputs kept as codes, whose float32
               * home the next block may read while this one writes */
    for (int k = 0; k < 4; k++)
      if (i == rn->stage0[k])
        rn->stage_at[k] = a->base ? a->base + a->used : NULL;
    carve_block(a, half, work, rbuf, b, B, y, i + 1 < i1 && !recomputed(rn, i), yb);
    b->yf = b->y;
    b->yr = NULL;
    if (i + 1 < i1) {
      rn->blocks[i + 1].x = b->y;
      rn->blocks[i + 1].xh = b->yh;
    }
  }
}

static size_t
map_floats(const CtBottleneck *b, int B)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo;
  return MAX(MAX(N * b->P, N * b->Cin), No * 4 * b->P);
}

/* The floats block b's backward puts in its second scratch buffer (T2 of
 * block_backward): gradients w.r.t. r2 or p2, and the downsample's input
 * gradient before its pooling. */
static size_t
scratch_floats(const CtBottleneck *b, int B)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo;
  return MAX(N * b->P, b->ds && b->s > 1 ? No * b->Cin : 0);
}

/* The attention pool's tensors, right after the blocks. */
static void
carve_pool(CtArena *a, CtResNet *rn, int B)
{
  size_t BT = (size_t) B * rn->T, C = rn->C;
  rn->X = ct_arena_take(a, BT * C);
  rn->q0 = ct_arena_take(a, B * C);
  rn->q = ct_arena_take(a, B * C);
  rn->k = ct_arena_take(a, BT * C);
  rn->v = ct_arena_take(a, BT * C);
  rn->att = ct_arena_take(a, BT * rn->H);
  rn->o = ct_arena_take(a, B * C);
}

/* Stage K's recomputed outputs (all but its last), one slice each, from
 * FROM on: their yr (NULL while FROM is, when this only sizes); returns
 * the floats they take. */
static size_t
place_outputs(CtResNet *rn, int k, int B, float *from)
{
  CtArena t = { from, 0 };
  for (int i = rn->stage0[k]; i + 1 < rn->stage0[k + 1]; i++) {
    CtBottleneck *b = &rn->blocks[i];
    b->yr = ct_arena_take(&t, (size_t) B * b->Ho * b->Wo * 4 * b->P);
  }
  return t.used;
}

/* Backward recomputes stage K's outputs into the span from stage K+1's
 * first block (the pool's first tensor for the last stage) to the pool's
 * last tensor: the activations of the stages above and of the pool, which
 * backward has finished with when it reaches stage K (without
 * checkpointing the blocks and the pool are carved in that order, one
 * after the other).  Stage K keeps its outputs (keep_y) where they do not
 * fit there.  Decided from the last stage down, on a sizing carve: a
 * stage that keeps its outputs only widens the spans of the stages below
 * it.  Without checkpointing only (with it every keep_y is TRUE, and
 * recomputed() FALSE anyway). */
static void
plan_recomputed(CtResNet *rn, int B, int half)
{
  for (int k = 0; k < 4; k++)
    rn->keep_y[k] = FALSE;
  for (int i = 0; i < rn->nblocks; i++)
    rn->blocks[i].xh = NULL; /* carve_segment sets them again */
  for (int k = 3; k >= 0; k--) {
    CtArena t = { NULL, 0 };
    size_t from = 0;
    for (int i = 0; i < rn->nblocks; i++) {
      if (i == rn->stage0[k + 1])
        from = t.used;
      carve_block(&t, half, NULL, NULL, &rn->blocks[i], B, NULL,
                  i + 1 < rn->nblocks && !recomputed(rn, i), NULL);
    }
    if (k == 3)
      from = t.used;
    carve_pool(&t, rn, B);
    rn->keep_y[k] = place_outputs(rn, k, B, NULL) > t.used - from;
  }
}

/* The yr of every recomputed output (plan_recomputed's spans). */
static void
place_recomputed(CtResNet *rn, int B)
{
  for (int k = 0; k < 4; k++) {
    if (rn->keep_y[k])
      continue;
    float *from = k < 3 ? rn->stage_at[k + 1] : rn->X;
    g_assert(from + place_outputs(rn, k, B, from) <= rn->o + (size_t) B * rn->C);
  }
}

void
ct_resnet_carve(CtArena *a, CtModel *m)
{
  CtResNet *rn = &m->rn;
  int B = m->max_batch, W = rn->W, C = rn->C, T = rn->T;
  CtPrecision prec = m->prec;
  size_t R2 = rn->scv1.Ho, stem = (size_t) B * R2 * R2;
  rn->img = ct_arena_take(a, (size_t) B * 3 * rn->R * rn->R);
  int half = prec != CT_PRECISION_FP32;
  /* the stem's BN inputs: float32 in the arena, or (bf16/fp16) 16-bit
   * codes here and float32 views into the work area, set below */
  if (half) {
    rn->sh = (uint16_t *) (void *) ct_arena_take(a, stem * W); /* 2 W codes a pixel */
  } else {
    rn->sh = NULL;
    rn->s1c = ct_arena_take(a, stem * (W / 2));
    rn->s2c = ct_arena_take(a, stem * (W / 2));
    rn->s3c = ct_arena_take(a, stem * W);
  }
  rn->sstats = ct_arena_take(a, 2 * 2 * (size_t) W);
  rn->stem_out = ct_arena_take(a, (size_t) B * (R2 / 2) * (R2 / 2) * W);
  rn->out = ct_arena_take(a, (size_t) B * rn->S * rn->S * C);

  /* segments: without checkpointing one, holding every block */
  int L = rn->nblocks;
  int n = m->nchunks == 0 ? 1 : MIN(m->nchunks, L);
  rn->seglen = (L + n - 1) / n;
  rn->nseg = (L + rn->seglen - 1) / rn->seglen;
  rn->held_seg = -1;
  if (rn->nseg == 1)
    plan_recomputed(rn, B, half);
  else
    for (int k = 0; k < 4; k++)
      rn->keep_y[k] = TRUE;
  rn->blocks[0].x = rn->stem_out;
  for (int k = 1; k < rn->nseg; k++) { /* kept segment inputs */
    CtBottleneck *b = &rn->blocks[k * rn->seglen];
    b->x = ct_arena_take(a, (size_t) B * b->H * b->W * b->Cin);
  }
  /* the backward's gradient buffers: g[0], g[1] and g[2] as large as the
   * largest map, g[3] as the largest that it holds (scratch_floats, and
   * the stem's recomputed s1r and s2r) */
  size_t maps = stem * W, g3 = stem * (W / 2);
  for (int i = 0; i < L; i++) {
    maps = MAX(maps, map_floats(&rn->blocks[i], B));
    g3 = MAX(g3, scratch_floats(&rn->blocks[i], B));
  }
  for (int j = 0; j < 3; j++)
    rn->g[j] = ct_arena_take(a, maps);
  rn->g[3] = ct_arena_take(a, g3);
  /* bf16/fp16: the work area, as large as the largest block's tensors
   * or the stem's three BN inputs */
  float *work = NULL;
  if (half) {
    size_t wn = 2 * stem * W;
    for (int i = 0; i < L; i++)
      wn = MAX(wn, work_floats(&rn->blocks[i], B, i % rn->seglen != 0 && !recomputed(rn, i - 1)));
    work = ct_arena_take(a, wn);
    if (work) { /* NULL while the arena only sizes */
      rn->s1c = work;
      rn->s2c = work + stem * (W / 2);
      rn->s3c = work + stem * W;
    }
  }
  rn->work = work;
  /* r1 and r2 of every block: never kept, backward recomputes them */
  size_t rn_floats = 0;
  for (int i = 0; i < L; i++) {
    const CtBottleneck *b = &rn->blocks[i];
    rn_floats = MAX(rn_floats, (size_t) B * b->H * b->W * b->P);
  }
  float *rbuf = ct_arena_take(a, rn_floats);
  if (rn->nseg == 1) {
    carve_segment(a, half, work, rbuf, rn, 0, L, B, rn->out);
  } else {
    /* one region that each segment's activations take in turn */
    size_t region = 0;
    for (int k = 0; k < rn->nseg; k++) {
      int i0 = k * rn->seglen, i1 = MIN(L, i0 + rn->seglen);
      CtArena sz = { NULL, 0 };
      carve_segment(&sz, half, work, rbuf, rn, i0, i1, B, rn->out);
      region = MAX(region, sz.used);
    }
    float *base = ct_arena_take(a, region);
    for (int k = 0; k < rn->nseg; k++) {
      int i0 = k * rn->seglen, i1 = MIN(L, i0 + rn->seglen);
      float *out = i1 < L ? rn->blocks[i1].x : rn->out;
      CtArena sub = { base, 0 };
      carve_segment(&sub, half, work, rbuf, rn, i0, i1, B, out);
    }
  }

  carve_pool(a, rn, B);
  if (a->base)
    place_recomputed(rn, B);
  size_t BT = (size_t) B * T;

  /* work space */
  size_t col = MAX(ct_conv_col_floats(&rn->scv1, B, prec),
                   MAX(ct_conv_col_floats(&rn->scv2, B, prec),
                       ct_conv_col_floats(&rn->scv3, B, prec)));
  /* wr: the rounded weights of the pool's products at bf16/fp16, and the
   * convolutions' own needs */
  size_t wr = prec != CT_PRECISION_FP32 ? MAX((size_t) C * C, (size_t) rn->E * C) : 0;
  const CtConv *scv[3] = { &rn->scv1, &rn->scv2, &rn->scv3 };
  for (int j = 0; j < 3; j++)
    wr = MAX(wr, ct_conv_wr_floats(scv[j], prec));
  for (int i = 0; i < L; i++) {
    const CtBottleneck *b = &rn->blocks[i];
    const CtConv *cv[4] = { &b->cv1, &b->cv2, &b->cv3, &b->cvd };
    for (int j = 0; j < 4; j++) {
      col = MAX(col, ct_conv_col_floats(cv[j], B, prec));
      wr = MAX(wr, ct_conv_wr_floats(cv[j], prec));
    }
  }
  rn->col = ct_arena_take(a, col);
  rn->dcol = ct_arena_take(a, col);
  rn->wr = wr ? ct_arena_take(a, wr) : NULL;
  /* the stem's ReLU outputs are never kept: s1r and s2r live in g[3],
   * s3r in g[0] (free in the forward; the stem's backward recomputes s1r
   * and s2r only) */
  rn->s1r = rn->s2r = rn->g[3];
  rn->s3r = rn->g[0];
  rn->dX = ct_arena_take(a, BT * C);
  rn->dk = ct_arena_take(a, BT * C);
  rn->dv = ct_arena_take(a, BT * C);
  rn->dq = ct_arena_take(a, (size_t) B * C);
  rn->dq0 = ct_arena_take(a, (size_t) B * C);
  rn->dO = ct_arena_take(a, (size_t) B * C);
}

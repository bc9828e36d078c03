/* resnet.c: the ModifiedResNet image tower (OpenAI's clip/model.py),
 * forward and backward.
 *
 *   stem: 3 x (3x3 conv, BN, ReLU), the first with stride 2; avgpool 2
 *   layer1..layer4: Bottlenecks: 1x1 conv, BN, ReLU; 3x3 conv, BN, ReLU;
 *     avgpool s; 1x1 conv, BN; plus the shortcut (identity, or avgpool s,
 *     1x1 conv, BN); ReLU
 *   attnpool: tokens [mean ; map] + pos, token 0's query against all
 *     tokens, c_proj; then L2 normalisation.
 *
 * Each BatchNorm runs in one pass with what follows it: the ReLU, and in
 * a block's last one the shortcut added before the ReLU (the downsample's
 * BN adds bn3's output); its backward applies the ReLU's mask itself.
 * BatchNorm runs in the model's mode (ct_model_set_training).  With
 * activation checkpointing the blocks are cut into segments; only each
 * segment's input is kept and backward recomputes the segment's forward
 * (same kernels, same inputs, same batch statistics, running statistics
 * left alone), so gradients are bit-identical.  The stem and the pool
 * always keep their activations.  At bf16/fp16 the convolutions' and the
 * pool's products see rounded operands; BN, ReLU and pooling stay
 * float32.  The tensors that backward reads after a rounding (the
 * convolutions' outputs and inputs, in the blocks and the stem) are kept
 * as 16-bit codes; so are the block outputs but a segment's last, once
 * the next block has added them as its residual in float32 (backward
 * reads them as a convolution input and through ReLU's mask, kept as
 * bits). */
#include "config.h"

#include "model/model-private.h"
#include "kernels/ops.h"
#include "base/profile-private.h"

#include <string.h>

/* out = relu(BN(in) + res) (res NULL: nothing added; the ReLU when RELU)
 * in mode TR (the pass's, or eval for a group whose statistics are
 * frozen); UPDATE: move the running statistics (training mode, not a
 * recomputation). */
static void
bn_fwd(int tr, int update, float *out, float *stats, int C, const CtBnBuffers *buf,
       const CtBnParams *p, const float *in, const float *res, int relu, size_t N)
{
  ct_batchnorm_relu_forward(out, stats, stats + C, !tr || update ? buf->mean : NULL,
                            !tr || update ? buf->var : NULL, in, p->w, p->b, res, relu, (int) N,
                            C, tr);
}

/* out = relu(BN(in)) again, bit for bit, from the statistics the forward
 * saved (STATS: mean then rstd, C each). */
static void
relu_again(float *out, const float *stats, int C, const CtBnParams *p, const float *in, size_t N)
{
  ct_batchnorm_relu_apply(out, stats, stats + C, in, p->w, p->b, NULL, 1, (int) N, C);
}

/* din = the gradient through BN (and the ReLU after it when RELU). */
static void
bn_bwd(const CtResNet *rn, float *din, const CtBnParams *g, const float *dout, const float *in,
       const float *stats, const CtBnParams *p, int relu, size_t N, int C)
{
  memset(din, 0, sizeof(float) * N * C);
  ct_batchnorm_relu_backward(din, g->w, g->b, dout, in, stats, stats + C, p->w, p->b, relu,
                             (int) N, C, rn->training);
}

static void
conv_fwd(CtModel *m, float *out, const float *in, const float *w, const CtConv *cv, int B)
{
  CtResNet *rn = &m->rn;
  ct_conv2d_forward(m->prec, out, rn->col, rn->wr, in, w, cv, B);
}

/* din (zeroed here unless ACC) and dw from dout (clobbered at half). */
static void
conv_bwd(CtModel *m, float *din, int acc, float *dw, float *dout, const float *in,
         const float *w, const CtConv *cv, int B)
{
  CtResNet *rn = &m->rn;
  if (din && !acc)
    memset(din, 0, sizeof(float) * B * cv->H * cv->W * cv->C);
  ct_conv2d_backward(m->prec, din, dw, rn->col, rn->dcol, rn->wr, dout, in, w, cv, B);
}

/* ---------------------------------------------------------------- frozen groups */

/* From the image tower's frozen lock groups (groups.c: 0 the stem, 1..4
 * layer1..4, 5 the pool): the blocks that run no backward, and those
 * whose BatchNorm runs in eval mode (freeze_bn_stats). */
static void
frozen_extent(CtModel *m)
{
  CtResNet *rn = &m->rn;
  int n = m->frozen_groups[0], stages = CLAMP(n - 1, 0, 4), blocks = 0;
  for (int s = 0; s < stages; s++)
    blocks += m->cfg.vision_stages[s];
  rn->frozen_groups = n;
  rn->frozen_blocks = blocks;
  rn->bn_eval_blocks = m->freeze_bn_stats ? blocks : 0;
  rn->bn_eval_stem = m->freeze_bn_stats && n >= 1;
}

/* ---------------------------------------------------------------- forward */

static void
block_forward(CtModel *m, CtBottleneck *b, int B, int update, int tr)
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo;
  int P = b->P;
  conv_fwd(m, b->c1, b->x, b->p.conv1_w, &b->cv1, B);
  bn_fwd(tr, update, b->r1, b->stats, P, &b->b1, &b->p.bn1, b->c1, NULL, 1, N);
  conv_fwd(m, b->c2, b->r1, b->p.conv2_w, &b->cv2, B);
  bn_fwd(tr, update, b->r2, b->stats + 2 * P, P, &b->b2, &b->p.bn2, b->c2, NULL, 1, N);
  if (b->s > 1)
    ct_avgpool_forward(b->p2, b->r2, B, b->H, b->W, P, b->s);
  conv_fwd(m, b->c3, b->p2, b->p.conv3_w, &b->cv3, B);
  if (b->ds) {
    /* y = bn3(c3), then y = relu(bn_ds(cd) + y) */
    bn_fwd(tr, update, b->y, b->stats + 4 * P, 4 * P, &b->b3, &b->p.bn3, b->c3, NULL, 0, No);
    if (b->s > 1)
      ct_avgpool_forward(b->px, b->x, B, b->H, b->W, b->Cin, b->s);
    conv_fwd(m, b->cd, b->px, b->p.ds_w, &b->cvd, B);
    bn_fwd(tr, update, b->y, b->stats + 12 * P, 4 * P, &b->bd, &b->p.ds_bn, b->cd, b->y, 1, No);
  } else {
    bn_fwd(tr, update, b->y, b->stats + 4 * P, 4 * P, &b->b3, &b->p.bn3, b->c3, b->x, 1, No);
  }
}

/* bf16/fp16: block b's tensors kept as 16-bit codes, in their order in
 * b->h: each float32 view into the work area and its count (0: none). */
typedef struct {
  float *x;
  size_t n;
} CtCoded;

enum { CODED_C1, CODED_C2, CODED_P2, CODED_C3, CODED_PX, CODED_CD, N_CODED };

static void
coded_tensors(const CtBottleneck *b, int B, CtCoded t[N_CODED])
{
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo, P = b->P;
  t[CODED_C1] = (CtCoded) { b->c1, N * P };
  t[CODED_C2] = (CtCoded) { b->c2, N * P };
  t[CODED_P2] = (CtCoded) { b->p2, b->s > 1 ? No * P : 0 };
  t[CODED_C3] = (CtCoded) { b->c3, No * 4 * P };
  t[CODED_PX] = (CtCoded) { b->px, b->ds && b->s > 1 ? No * b->Cin : 0 };
  t[CODED_CD] = (CtCoded) { b->cd, b->ds ? No * 4 * P : 0 };
}

/* The codes of b's coded tensor WHICH (CODED_*). */
static uint16_t *
codes_of(const CtBottleneck *b, int B, int which)
{
  CtCoded t[N_CODED];
  coded_tensors(b, B, t);
  uint16_t *h = b->h;
  for (int i = 0; i < which; i++)
    h += t[i].n;
  return h;
}

/* bf16/fp16: block b's tensors from the work area into their 16-bit codes
 * (PACK), or back. */
static void
move_block(CtModel *m, CtBottleneck *b, int B, int pack)
{
  if (!b->h)
    return;
  CtCoded t[N_CODED];
  coded_tensors(b, B, t);
  uint16_t *h = b->h;
  for (int i = 0; i < N_CODED; i++) {
    if (t[i].n)
      ct_lowp_move16(m->prec, h, t[i].x, t[i].n, pack);
    h += t[i].n;
  }
  if (!pack && b->xh) /* the input, which the block below keeps as codes */
    ct_lowp_move16(m->prec, b->xh, b->xb, (size_t) B * b->H * b->W * b->Cin, 0);
}

/* bf16/fp16: block b's output into its codes and ReLU's mask, once the
 * next block has read it (no-op when the output is kept in float32). */
static void
pack_output(CtModel *m, CtBottleneck *b, int B)
{
  if (!b->yh)
    return;
  size_t n = (size_t) B * b->Ho * b->Wo * 4 * b->P;
  ct_lowp_move16(m->prec, b->yh, b->y, n, 1);
  ct_relu_mask_bits(b->ym, b->y, n);
}

/* bf16/fp16: the stem's BN inputs from the work area into their 16-bit
 * codes (PACK), or back. */
static void
move_stem(CtModel *m, int B, int pack)
{
  CtResNet *rn = &m->rn;
  if (!rn->sh)
    return;
  size_t R2 = rn->scv1.Ho, stem = (size_t) B * R2 * R2, W = rn->W;
  uint16_t *h = rn->sh;
  ct_lowp_move16(m->prec, h, rn->s1c, stem * (W / 2), pack);
  h += stem * (W / 2);
  ct_lowp_move16(m->prec, h, rn->s2c, stem * (W / 2), pack);
  h += stem * (W / 2);
  ct_lowp_move16(m->prec, h, rn->s3c, stem * W, pack);
}

/* Block I's output at Y: where the next block reads it as its input. */
static void
set_output(CtResNet *rn, int i, float *y)
{
  rn->blocks[i].y = y;
  rn->blocks[i + 1].x = rn->blocks[i + 1].xb = y;
}

/* Stage K's outputs that were not kept, recomputed from what the blocks
 * keep, with the forward's kernel and statistics (the same bits), into
 * the stages above it, which backward has finished with. */
void
ct_resnet_recompute_outputs(CtModel *m, int k)
{
  CtResNet *rn = &m->rn;
  for (int i = rn->stage0[k]; i + 1 < rn->stage0[k + 1]; i++) {
    CtBottleneck *b = &rn->blocks[i];
    if (!b->yr)
      return;
    size_t No = (size_t) rn->B * b->Ho * b->Wo;
    int P = b->P;
    /* the BN inputs as float32: the block's own at float32; at bf16/fp16
     * decoded from its codes, c3 into yr itself (BatchNorm runs in place)
     * and cd into the work area, free until backward moves a block in */
    const float *c3 = b->c3, *cd = b->cd;
    if (b->h) {
      ct_lowp_move16(m->prec, codes_of(b, rn->B, CODED_C3), b->yr, No * 4 * P, 0);
      c3 = b->yr;
      if (b->ds) {
        ct_lowp_move16(m->prec, codes_of(b, rn->B, CODED_CD), rn->work, No * 4 * P, 0);
        cd = rn->work;
      }
    }
    if (b->ds) { /* y = relu(bn_ds(cd) + bn3(c3)), as block_forward */
      ct_batchnorm_relu_apply(b->yr, b->stats + 4 * P, b->stats + 8 * P, c3, b->p.bn3.w,
                              b->p.bn3.b, NULL, 0, (int) No, 4 * P);
      ct_batchnorm_relu_apply(b->yr, b->stats + 12 * P, b->stats + 16 * P, cd, b->p.ds_bn.w,
                              b->p.ds_bn.b, b->yr, 1, (int) No, 4 * P);
    } else {
      ct_batchnorm_relu_apply(b->yr, b->stats + 4 * P, b->stats + 8 * P, c3, b->p.bn3.w,
                              b->p.bn3.b, b->x, 1, (int) No, 4 * P);
    }
    set_output(rn, i, b->yr);
  }
}

static void
run_segment(CtModel *m, int k, int update)
{
  CtResNet *rn = &m->rn;
  int i0 = k * rn->seglen, i1 = MIN(rn->nblocks, i0 + rn->seglen);
  for (int i = i0; i < i1; i++) {
    block_forward(m, &rn->blocks[i], rn->B, update, rn->training && i >= rn->bn_eval_blocks);
    move_block(m, &rn->blocks[i], rn->B, 1);
    if (i > i0) /* block i has read the output below it */
      pack_output(m, &rn->blocks[i - 1], rn->B);
  }
  rn->held_seg = k;
  rn->held_gen = rn->gen;
}

void
ct_resnet_forward(CtModel *m, const float *images, int B)
{
  CtResNet *rn = &m->rn;
  const CtResNetParams *p = &rn->sp[0];
  int W = rn->W, C = rn->C, T = rn->T, HW = rn->S * rn->S, E = rn->E;
  size_t R2 = rn->scv1.Ho, stem = (size_t) B * R2 * R2;
  CtPrecision prec = m->prec;
  rn->B = B;
  rn->gen++;
  rn->training = m->training;
  m->va.B = B;
  frozen_extent(m);
  int str = rn->training && !rn->bn_eval_stem; /* the stem's BN mode */

  /* stem */
  memcpy(rn->img, images, sizeof(float) * B * 3 * rn->R * rn->R);
  conv_fwd(m, rn->s1c, rn->img, p->conv1_w, &rn->scv1, B);
  bn_fwd(str, 1, rn->s1r, rn->sstats, W / 2, &rn->sb1, &p->bn1, rn->s1c, NULL, 1, stem);
  conv_fwd(m, rn->s2c, rn->s1r, p->conv2_w, &rn->scv2, B);
  bn_fwd(str, 1, rn->s2r, rn->sstats + W, W / 2, &rn->sb2, &p->bn2, rn->s2c, NULL, 1, stem);
  conv_fwd(m, rn->s3c, rn->s2r, p->conv3_w, &rn->scv3, B);
  bn_fwd(str, 1, rn->s3r, rn->sstats + 2 * W, W, &rn->sb3, &p->bn3, rn->s3c, NULL, 1, stem);
  ct_avgpool_forward(rn->stem_out, rn->s3r, B, (int) R2, (int) R2, W, 2);
  move_stem(m, B, 1); /* the blocks take the work area next */

  /* layer1 .. layer4; the outputs that backward recomputes live in
   * their forward homes again */
  for (int i = 0; i + 1 < rn->nblocks; i++)
    if (rn->blocks[i].yr)
      set_output(rn, i, rn->blocks[i].yf);
  for (int k = 0; k < rn->nseg; k++)
    run_segment(m, k, 1);

  /* attention pool, one profiled region */
  CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
  ct_poolattn_tokens_forward(rn->X, rn->out, p->pos, B, HW, C);
  for (int b = 0; b < B; b++)
    memcpy(rn->q0 + (size_t) b * C, rn->X + (size_t) b * T * C, sizeof(float) * C);
  ct_linear_forward_p(prec, rn->wr, rn->q, rn->q0, p->q_w, p->q_b, B, C, C);
  ct_linear_forward_p(prec, rn->wr, rn->k, rn->X, p->k_w, p->k_b, B * T, C, C);
  ct_linear_forward_p(prec, rn->wr, rn->v, rn->X, p->v_w, p->v_b, B * T, C, C);
  ct_poolattn_forward(rn->o, rn->att, rn->q, rn->k, rn->v, B, T, C, rn->H, prec);
  ct_linear_forward_p(prec, rn->wr, m->va.feat, rn->o, p->c_w, p->c_b, B, C, E);
  CT_PROF_END();
  ct_l2norm_forward(m->va.featn, m->va.norm, m->va.feat, B, E);
}

/* ---------------------------------------------------------------- backward */

/* DY: (B*Ho*Wo, 4P) gradient w.r.t. the block's output, clobbered; DX:
 * (B*H*W, Cin) receives the gradient w.r.t. its input, or NULL when no
 * block below runs backward (frozen); T1, T2: scratch. */
static void
block_backward(CtModel *m, CtBottleneck *b, int B, float *dy, float *dx, float *t1, float *t2)
{
  CtResNet *rn = &m->rn;
  size_t N = (size_t) B * b->H * b->W, No = (size_t) B * b->Ho * b->Wo;
  int P = b->P;
  /* the gradients go to the flat buffer or to the model's block scratch:
   * every view shifts by the same distance, the tensors being contiguous */
  size_t grads_n = ct_bottleneck_grads_n(b);
  float *at = ct_model_block_grads(m, b->g.conv1_w, grads_n);
  ptrdiff_t d = at - b->g.conv1_w;
  const CtBottleneckParams *h = &b->g;
  CtBottleneckParams gs = { h->conv1_w + d, { h->bn1.w + d, h->bn1.b + d },
                            h->conv2_w + d, { h->bn2.w + d, h->bn2.b + d },
                            h->conv3_w + d, { h->bn3.w + d, h->bn3.b + d },
                            h->ds_w ? h->ds_w + d : NULL,
                            { h->ds_w ? h->ds_bn.w + d : NULL, h->ds_w ? h->ds_bn.b + d : NULL } };
  CtBottleneckParams *g = &gs;
  if (b->yh)
    ct_relu_backward_bits(dy, b->ym, No * 4 * P);
  else
    ct_relu_backward(dy, b->y, No * 4 * P);
  /* the input as backward reads it: float32 or decoded from codes */
  const float *x = b->xb, *px = b->ds && b->s > 1 ? b->px : x;
  /* main branch, backwards (the ReLUs after bn2 and bn1 inside their backward) */
  bn_bwd(rn, t1, &g->bn3, dy, b->c3, b->stats + 4 * P, &b->p.bn3, 0, No, 4 * P);
  if (b->s == 1) /* p2 is r2 */
    relu_again(b->r2, b->stats + 2 * P, P, &b->p.bn2, b->c2, N);
  conv_bwd(m, t2, 0, g->conv3_w, t1, b->p2, b->p.conv3_w, &b->cv3, B);
  float *dr2 = t2, *free1 = t1;
  if (b->s > 1) {
    memset(t1, 0, sizeof(float) * N * P);
    ct_avgpool_backward(t1, t2, B, b->H, b->W, P, b->s);
    dr2 = t1;
    free1 = t2;
  }
  bn_bwd(rn, free1, &g->bn2, dr2, b->c2, b->stats + 2 * P, &b->p.bn2, 1, N, P);
  relu_again(b->r1, b->stats, P, &b->p.bn1, b->c1, N);
  conv_bwd(m, dr2, 0, g->conv2_w, free1, b->r1, b->p.conv2_w, &b->cv2, B);
  bn_bwd(rn, free1, &g->bn1, dr2, b->c1, b->stats, &b->p.bn1, 1, N, P);
  conv_bwd(m, dx, 0, g->conv1_w, free1, x, b->p.conv1_w, &b->cv1, B);
  /* shortcut */
  if (b->ds) {
    bn_bwd(rn, t1, &g->ds_bn, dy, b->cd, b->stats + 12 * P, &b->p.ds_bn, 0, No, 4 * P);
    if (!dx) {
      conv_bwd(m, NULL, 0, g->ds_w, t1, px, b->p.ds_w, &b->cvd, B);
    } else if (b->s > 1) {
      conv_bwd(m, t2, 0, g->ds_w, t1, px, b->p.ds_w, &b->cvd, B);
      ct_avgpool_backward(dx, t2, B, b->H, b->W, b->Cin, b->s);
    } else {
      conv_bwd(m, dx, 1, g->ds_w, t1, px, b->p.ds_w, &b->cvd, B);
    }
  } else if (dx) {
    ct_add_inplace(dx, dy, No * 4 * P);
  }
  ct_model_block_done(m, b->g.conv1_w, at, grads_n);
}

size_t
ct_resnet_pool_grads_n(const CtResNet *rn)
{
  /* the pool's tensors are contiguous, the positional embedding to
   * c_proj's bias */
  const CtResNetParams *g = &rn->sp[1];
  return (size_t) (g->c_b + rn->E - g->pos);
}

size_t
ct_bottleneck_grads_n(const CtBottleneck *b)
{
  /* a block's tensors are contiguous, conv1.weight to its last BN bias */
  const float *last = b->ds ? b->g.ds_bn.b : b->g.bn3.b;
  return (size_t) (last + 4 * b->P - b->g.conv1_w);
}

void
ct_resnet_backward(CtModel *m, const float *dfeat)
{
  CtResNet *rn = &m->rn;
  CtScratch *sc = &m->sc;
  const CtResNetParams *p = &rn->sp[0];
  CtResNetParams *g = &rn->sp[1];
  int B = rn->B, W = rn->W, C = rn->C, T = rn->T, HW = rn->S * rn->S, E = rn->E;
  size_t R2 = rn->scv1.Ho, stem = (size_t) B * R2 * R2;
  CtPrecision prec = m->prec;
  int n_frozen = rn->frozen_groups; /* as the forward saw them */
  if (n_frozen >= 6)
    return; /* the whole tower is frozen */

  ct_zero(sc->dfeat, (size_t) B * E);
  ct_l2norm_backward(sc->dfeat, dfeat, m->va.featn, m->va.norm, B, E);
  ct_scale(sc->dfeat, m->loss_scale, (size_t) B * E); /* loss scaling */

  /* attention pool, one profiled region; its gradients, like a block's,
   * go to the block scratch when it is on, so that stepping them inside
   * backward leaves no pages of the flat buffer to fault in each step
   * (they were a third of the pool's time on rn50) */
  float *dy = rn->g[0], *dx = rn->g[1];
  {
    CT_PROF_BEGIN(CT_PROF_ATTNPOOL);
    size_t pool_n = ct_resnet_pool_grads_n(rn);
    const CtResNetParams *h = &rn->sp[1];
    float *at = ct_model_block_grads(m, h->pos, pool_n);
    ptrdiff_t d = at - h->pos;
    CtResNetParams gs = *h;
    gs.pos += d;
    gs.k_w += d;
    gs.k_b += d;
    gs.q_w += d;
    gs.q_b += d;
    gs.v_w += d;
    gs.v_b += d;
    gs.c_w += d;
    gs.c_b += d;
    g = &gs;
    memset(rn->dO, 0, sizeof(float) * B * C);
    ct_linear_backward_p(prec, rn->wr, rn->dO, g->c_w, g->c_b, sc->dfeat, rn->o, p->c_w, B, C, E);
    memset(rn->dq, 0, sizeof(float) * B * C);
    memset(rn->dk, 0, sizeof(float) * B * T * C);
    memset(rn->dv, 0, sizeof(float) * B * T * C);
    ct_poolattn_backward(rn->dq, rn->dk, rn->dv, rn->dO, rn->q, rn->k, rn->v, rn->att, B, T, C,
                         rn->H, prec);
    memset(rn->dX, 0, sizeof(float) * B * T * C);
    ct_linear_backward_p(prec, rn->wr, rn->dX, g->k_w, g->k_b, rn->dk, rn->X, p->k_w, B * T, C, C);
    memset(rn->dk, 0, sizeof(float) * B * T * C); /* free now: v's input gradient */
    ct_linear_backward_p(prec, rn->wr, rn->dk, g->v_w, g->v_b, rn->dv, rn->X, p->v_w, B * T, C, C);
    ct_add_inplace(rn->dX, rn->dk, (size_t) B * T * C);
    memset(rn->dq0, 0, sizeof(float) * B * C);
    ct_linear_backward_p(prec, rn->wr, rn->dq0, g->q_w, g->q_b, rn->dq, rn->q0, p->q_w, B, C, C);
    for (int b = 0; b < B; b++)
      ct_add_inplace(rn->dX + (size_t) b * T * C, rn->dq0 + (size_t) b * C, C);
    memset(dy, 0, sizeof(float) * B * HW * C);
    ct_poolattn_tokens_backward(dy, g->pos, rn->dX, B, HW, C);
    g = &rn->sp[1];
    ct_model_block_done(m, h->pos, at, pool_n);
    CT_PROF_END();
  }

  /* layer4 .. layer1, segment by segment, down to the frozen blocks */
  for (int k = rn->nseg - 1; k >= 0; k--) {
    int i0 = k * rn->seglen, i1 = MIN(rn->nblocks, i0 + rn->seglen);
    if (i1 <= rn->frozen_blocks)
      break; /* frozen from here down: no recomputation either */
    if (rn->held_seg != k || rn->held_gen != rn->gen)
      run_segment(m, k, 0); /* checkpointing: recompute it */
    for (int i = i1 - 1; i >= MAX(i0, rn->frozen_blocks); i--) {
      /* the lowest block that runs: no input gradient when nothing below
       * wants it */
      gboolean last = i == rn->frozen_blocks && n_frozen >= 1;
      for (int st = 0; st < 4; st++)
        if (i + 1 == rn->stage0[st + 1] && !rn->keep_y[st])
          ct_resnet_recompute_outputs(m, st);
      move_block(m, &rn->blocks[i], B, 0);
      block_backward(m, &rn->blocks[i], B, dy, last ? NULL : dx, rn->g[2], rn->g[3]);
      float *t = dy;
      dy = dx;
      dx = t;
    }
  }

  if (n_frozen >= 1)
    return; /* the stem is frozen */
  /* stem, backwards; dy: gradient w.r.t. stem_out */
  float *t1 = dx, *t2 = rn->g[2];
  move_stem(m, B, 0);
  memset(t1, 0, sizeof(float) * stem * W);
  ct_avgpool_backward(t1, dy, B, (int) R2, (int) R2, W, 2);
  bn_bwd(rn, t2, &g->bn3, t1, rn->s3c, rn->sstats + 2 * W, &p->bn3, 1, stem, W);
  relu_again(rn->s2r, rn->sstats + W, W / 2, &p->bn2, rn->s2c, stem);
  conv_bwd(m, t1, 0, g->conv3_w, t2, rn->s2r, p->conv3_w, &rn->scv3, B);
  bn_bwd(rn, t2, &g->bn2, t1, rn->s2c, rn->sstats + W, &p->bn2, 1, stem, W / 2);
  relu_again(rn->s1r, rn->sstats, W / 2, &p->bn1, rn->s1c, stem);
  conv_bwd(m, t1, 0, g->conv2_w, t2, rn->s1r, p->conv2_w, &rn->scv2, B);
  bn_bwd(rn, t2, &g->bn1, t1, rn->s1c, rn->sstats, &p->bn1, 1, stem, W / 2);
  conv_bwd(m, NULL, 0, g->conv1_w, t2, rn->img, p->conv1_w, &rn->scv1, B);
}

/* transformer.c: forward and backward of a stack of residual attention
 * blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x)), mlp = c_fc, QuickGELU,
 * c_proj; at a precision, with optional activation checkpointing.
 *
 * The blocks run segment by segment.  A segment's forward writes each
 * block's activations into a slot of the stack's store: straight into
 * the slot at float32, or through float32 work buffers packed to 16 bits
 * at half precision.  Backward reads the slots back; when the store holds
 * another segment (checkpointing) it first recomputes this one from its
 * saved input.  Recomputation repeats the same operations on the same
 * inputs, so its activations, and the gradients, are bit-identical.
 *
 * Readout pruning (s->sel): the tower reads one row per sequence of the
 * last block's output, so that block computes keys and values for every
 * row but its attention output, out_proj, residual and MLP for the
 * selected rows only; its output is then (B, C), and so is the gradient
 * entering backward. */
#include "config.h"

#include "model/model-private.h"
#include "kernels/ops.h"

/* ---------------------------------------------------------------- slots */

/* Where a block's tensors lie in a slot: statistics first (float32), then
 * the tensors of CtLayerActs in order, ES bytes an element. */
typedef struct {
  float *mean1, *rstd1, *mean2, *rstd2; /* (max_B*T) */
  char *x, *ln1, *qkv, *att, *atty, *xmid, *ln2, *fc;
  size_t end;                           /* bytes used */
} SlotMap;

static SlotMap
slot_map(const CtStack *s, char *slot, int half)
{
  size_t BT = (size_t) s->max_B * s->T, C = s->C, es = half ? 2 : 4;
  size_t natt = (size_t) s->max_B * s->H * s->T * s->T;
  SlotMap m = { 0 };
  size_t off = 0;
#define STAT(f) (m.f = (float *) (void *) (slot + off), off += sizeof(float) * BT)
#define TENSOR(f, n) (m.f = slot + off, off += es * (n))
  STAT(mean1);
  STAT(rstd1);
  STAT(mean2);
  STAT(rstd2);
  TENSOR(x, BT * C);
  /* at float32, ln_1 and ln_2 are recomputed in backward from x and xmid
   * with the saved statistics, bit for bit, rather than saved (2C a
   * token); at half precision x and xmid are stored rounded, so the
   * rounded layer norm outputs that the products saw are kept */
  if (half)
    TENSOR(ln1, BT * C);
  TENSOR(qkv, 3 * BT * C);
  TENSOR(att, natt);
  TENSOR(atty, BT * C);
  TENSOR(xmid, BT * C);
  if (half)
    TENSOR(ln2, BT * C);
  TENSOR(fc, 4 * BT * C);
#undef STAT
#undef TENSOR
  m.end = (off + 63) & ~(size_t) 63;
  return m;
}

size_t
ct_stack_slot_bytes(const CtStack *s, int half)
{
  return slot_map(s, NULL, half).end;
}

static CtPrecision
prec_of(const CtStack *s)
{
  return s->owner->prec;
}

static char *
slot_at(const CtStack *s, int j)
{
  return s->store->base + (size_t) j * s->store->slot_bytes;
}

static float *
seg_input(const CtStack *s, int k)
{
  return s->seg_in + (size_t) k * s->max_B * s->T * s->C;
}

/* Block j of a segment in float32: the slot itself at float32, the work
 * buffers at half precision (statistics always in the slot).  X is the
 * block's input. */
static CtLayerActs
acts_view(const CtStack *s, CtScratch *sc, int j, float *x)
{
  int half = prec_of(s) != CT_PRECISION_FP32;
  SlotMap m = slot_map(s, slot_at(s, j), half);
  CtLayerActs a = half ? sc->work
                       : (CtLayerActs) { .ln1 = sc->ln,
                                         .qkv = (float *) (void *) m.qkv,
                                         .att = (float *) (void *) m.att,
                                         .atty = (float *) (void *) m.atty,
                                         .xmid = (float *) (void *) m.xmid,
                                         .ln2 = sc->ln,
                                         .fc = (float *) (void *) m.fc };
  a.x = x;
  a.gelu = sc->gelu; /* never saved: backward recomputes it from fc */
  a.mean1 = m.mean1;
  a.rstd1 = m.rstd1;
  a.mean2 = m.mean2;
  a.rstd2 = m.rstd2;
  return a;
}

/* Half precision: store work block A (B sequences) into slot j (PACK), or
 * load it back.  The input x of the segment's first block is not stored:
 * it is the segment input, kept in float32. */
static void
move_block(const CtStack *s, int j, const CtLayerActs *a, int B, const int *sel, gboolean pack)
{
  CtPrecision p = prec_of(s);
  SlotMap m = slot_map(s, slot_at(s, j), 1);
  size_t N = (size_t) B * s->Tr, C = s->C;
  size_t M = sel ? (size_t) B : N; /* rows past the attention */
  size_t natt = (size_t) B * s->H * s->Tr * (sel ? 1 : s->Tr);
  struct {
    char *slot;
    float *work;
    size_t n;
  } t[] = {
    { m.x, a->x, j > 0 ? N * C : 0 },
    { m.ln1, a->ln1, N * C },
    { m.qkv, a->qkv, 3 * N * C },
    { m.att, a->att, natt },
    { m.atty, a->atty, M * C },
    { m.xmid, a->xmid, M * C },
    { m.ln2, a->ln2, M * C },
    { m.fc, a->fc, 4 * M * C },
  };
  for (gsize i = 0; i < G_N_ELEMENTS(t); i++) {
    uint16_t *h = (uint16_t *) (void *) t[i].slot;
    ct_lowp_move16(p, h, t[i].work, t[i].n, pack);
  }
}

/* ---------------------------------------------------------------- blocks */

/* A's tensors past the attention (atty, xmid, ln2, fc, gelu; the second
 * statistics) hold M rows: N, or B with SEL, where XOUT is (B, C). */
static void
block_forward(const CtStack *s, CtScratch *sc, const CtBlock *p, const CtLayerActs *a,
              float *xout, int B, const int *sel)
{
  CtPrecision pr = prec_of(s);
  int T = s->Tr, C = s->C, N = B * T, M = sel ? B : N;
  ct_layernorm_forward(a->ln1, a->mean1, a->rstd1, a->x, p->ln1_w, p->ln1_b, N, C);
  ct_linear_forward_p(pr, sc->wr, a->qkv, a->ln1, p->in_w, p->in_b, N, C, 3 * C);
  if (sel)
    ct_attention_rows_forward(a->atty, a->att, a->qkv, sel, B, T, C, s->H, s->causal, pr);
  else
    ct_attention_forward(a->atty, a->att, a->qkv, B, T, C, s->H, s->causal, pr);
  ct_linear_forward_p(pr, sc->wr, a->xmid, a->atty, p->out_w, p->out_b, M, C, C);
  if (sel)
    ct_rows_gather_add(a->xmid, a->x, sel, B, T, C);
  else
    ct_add_inplace(a->xmid, a->x, (size_t) N * C);

  ct_layernorm_forward(a->ln2, a->mean2, a->rstd2, a->xmid, p->ln2_w, p->ln2_b, M, C);
  ct_linear_forward_p(pr, sc->wr, a->fc, a->ln2, p->fc_w, p->fc_b, M, C, 4 * C);
  ct_quickgelu_forward(a->gelu, a->fc, (size_t) M * 4 * C);
  ct_lowp_round(pr, a->gelu, a->gelu, (size_t) M * 4 * C);
  ct_linear_forward_p(pr, sc->wr, xout, a->gelu, p->proj_w, p->proj_b, M, 4 * C, C);
  ct_add_inplace(xout, a->xmid, (size_t) M * C);
}

/* sc->dx: (M, C) gradient w.r.t. the block's output in (M as in
 * block_forward), (N, C) w.r.t. its input out.  P: the block's
 * parameters; HOME: its gradient views into the flat buffer. */
static void
block_backward(const CtStack *s, CtScratch *sc, const CtBlock *p, const CtBlock *home,
               const CtLayerActs *a, int B, const int *sel)
{
  CtPrecision pr = prec_of(s);
  int T = s->Tr, C = s->C, N = B * T, M = sel ? B : N;
  size_t nc = (size_t) N * C, mc = (size_t) M * C;
  float *dx = sc->dx;
  /* the gradients go to the flat buffer or to the model's block scratch:
   * every view shifts by the same distance, the tensors being contiguous */
  size_t grads_n = ct_block_grads_n(home, C);
  float *at = ct_model_block_grads(s->owner, home->in_w, grads_n);
  ptrdiff_t d = at - home->in_w;
  CtBlock shifted = { home->in_w + d,  home->in_b + d,  home->out_w + d,  home->out_b + d,
                      home->ln1_w + d, home->ln1_b + d, home->fc_w + d,   home->fc_b + d,
                      home->proj_w + d, home->proj_b + d, home->ln2_w + d, home->ln2_b + d };
  const CtBlock *g = &shifted;
  /* at half precision the products see a rounded copy of the residual
   * gradient, which itself stays float32 */
  float *dy = dx;
  if (pr != CT_PRECISION_FP32) {
    ct_lowp_round(pr, sc->dr, dx, mc);
    dy = sc->dr;
  }

  /* mlp branch: xout = xmid + c_proj(gelu(c_fc(ln_2(xmid)))); the GELU
   * output is recomputed from fc (cheap) rather than saved (4C a token),
   * its derivative in the same pass */
  ct_quickgelu_forward_slope(a->gelu, sc->slope, a->fc, 4 * mc);
  ct_lowp_round(pr, a->gelu, a->gelu, 4 * mc);
  ct_zero(sc->dfc, 4 * mc);
  ct_linear_backward_p(pr, sc->wr, sc->dfc, g->proj_w, g->proj_b, dy, a->gelu, p->proj_w, M, 4 * C,
                       C);
  ct_quickgelu_backward_slope(sc->dfc, sc->slope, 4 * mc);
  ct_zero(sc->dA, mc);
  if (pr == CT_PRECISION_FP32) /* not saved at float32: the same bits again */
    ct_layernorm_forward(a->ln2, a->mean2, a->rstd2, a->xmid, p->ln2_w, p->ln2_b, M, C);
  ct_linear_backward_p(pr, sc->wr, sc->dA, g->fc_w, g->fc_b, sc->dfc, a->ln2, p->fc_w, M, C, 4 * C);
  ct_layernorm_backward(dx, g->ln2_w, g->ln2_b, sc->dA, a->xmid, a->mean2, a->rstd2, p->ln2_w, M,
                        C);

  /* attention branch: xmid = x + out_proj(attn(in_proj(ln_1(x)))) */
  if (pr != CT_PRECISION_FP32)
    ct_lowp_round(pr, sc->dr, dx, mc);
  ct_zero(sc->dA, mc);
  ct_linear_backward_p(pr, sc->wr, sc->dA, g->out_w, g->out_b, dy, a->atty, p->out_w, M, C, C);
  ct_zero(sc->dqkv, 3 * nc);
  if (sel) {
    ct_attention_rows_backward(sc->dqkv, sc->datt, sc->dA, a->qkv, a->att, sel, B, T, C, s->H, pr);
    /* the residual gradient, (B, C), back to its rows of (N, C); dfc is
     * free by now */
    ct_copy(sc->dfc, dx, mc);
    ct_zero(dx, nc);
    ct_rows_scatter_add(dx, sc->dfc, sel, B, T, C);
  } else {
    ct_attention_backward(sc->dqkv, sc->datt, sc->dA, a->qkv, a->att, B, T, C, s->H, pr);
  }
  ct_zero(sc->dA, nc);
  if (pr == CT_PRECISION_FP32)
    ct_layernorm_forward(a->ln1, a->mean1, a->rstd1, a->x, p->ln1_w, p->ln1_b, N, C);
  ct_linear_backward_p(pr, sc->wr, sc->dA, g->in_w, g->in_b, sc->dqkv, a->ln1, p->in_w, N, C,
                       3 * C);
  ct_layernorm_backward(dx, g->ln1_w, g->ln1_b, sc->dA, a->x, a->mean1, a->rstd1, p->ln1_w, N, C);
  ct_model_block_done(s->owner, home->in_w, at, grads_n);
}

/* ---------------------------------------------------------------- segments */

static int
seg_len(const CtStack *s, int k)
{
  int l0 = k * s->seglen;
  return MIN(s->seglen, s->L - l0);
}

/* The selected rows for block L of the stack: s->sel for the last. */
static const int *
block_sel(const CtStack *s, int l)
{
  return l == s->L - 1 ? s->sel : NULL;
}

/* Segment K's blocks from its input, saving their activations into the
 * store; the output goes to the next segment's input or to s->out. */
static void
run_segment(CtStack *s, CtScratch *sc, int k, int B)
{
  int half = prec_of(s) != CT_PRECISION_FP32;
  int l0 = k * s->seglen, n = seg_len(s, k);
  float *out = k + 1 < s->nseg ? seg_input(s, k + 1) : s->out;
  float *cur = seg_input(s, k);
  for (int j = 0; j < n; j++) {
    CtLayerActs a = acts_view(s, sc, j, cur);
    float *next;
    if (j + 1 == n)
      next = out;
    else if (half)
      next = cur == sc->xa ? sc->xb : sc->xa;
    else
      next = (float *) (void *) slot_map(s, slot_at(s, j + 1), 0).x;
    const int *sel = block_sel(s, l0 + j);
    block_forward(s, sc, &s->p[l0 + j], &a, next, B, sel);
    if (half)
      move_block(s, j, &a, B, sel, TRUE);
    cur = next;
  }
  s->store->holder = s;
  s->store->seg = k;
  s->store->gen = s->gen;
}

void
ct_stack_forward(CtStack *s, CtScratch *sc, int B)
{
  s->gen++;
  for (int k = 0; k < s->nseg; k++)
    run_segment(s, sc, k, B);
}

void
ct_stack_backward(CtStack *s, CtScratch *sc, int B)
{
  int half = prec_of(s) != CT_PRECISION_FP32;
  for (int k = s->nseg - 1; k >= 0; k--) {
    int l0 = k * s->seglen, j_stop = MAX(s->n_frozen - l0, 0);
    if (j_stop >= seg_len(s, k))
      break; /* this segment and those below it are frozen: no recomputation */
    const CtActStore *st = s->store;
    if (st->holder != s || st->seg != k || st->gen != s->gen)
      run_segment(s, sc, k, B); /* checkpointing: recompute the segment */
    for (int j = seg_len(s, k) - 1; j >= j_stop; j--) {
      float *x = j == 0 ? seg_input(s, k)
                 : half ? sc->xa
                        : (float *) (void *) slot_map(s, slot_at(s, j), 0).x;
      CtLayerActs a = acts_view(s, sc, j, x);
      const int *sel = block_sel(s, l0 + j);
      if (half)
        move_block(s, j, &a, B, sel, FALSE);
      if (half && j == 0 && k > 0) {
        /* without checkpointing this block's input would have been saved
         * in 16 bits: see the same rounded values, for identical results */
        ct_lowp_round(prec_of(s), sc->xa, x, (size_t) B * s->Tr * s->C);
        a.x = sc->xa;
      }
      block_backward(s, sc, &s->p[l0 + j], &s->g[l0 + j], &a, B, sel);
    }
  }
}

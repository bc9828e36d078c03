/* towers.c: the image tower (ViT) and the text tower, forward and backward.
 *
 * Image: conv1 -> [class ; patches] + pos -> ln_pre -> blocks ->
 *        ln_post(class token) @ proj -> L2 normalise.
 *        Under patch dropout (patch-dropout.c) "patches" are the kept ones.
 * Text:  token_embedding + pos -> causal blocks -> ln_final(end-of-text
 *        row) @ text_projection -> L2 normalise.
 * ln_final is applied to the end-of-text rows only: layer norm acts on each
 * row alone, so this equals OpenAI's ln_final over every row followed by
 * the row selection, values and gradients alike.
 *
 * With readout pruning (on by default) each stack's last block computes
 * its output for the read rows only (CtStack.sel), which the stack then
 * returns as (B, C). */
#include "config.h"

#include "model/model-private.h"
#include "kernels/ops.h"

#include <string.h>

/* rows: (B, C) the row IDX[b] of each sequence of S's output. */
static void
read_rows(float *rows, const CtStack *s, const int *idx, int B, int C)
{
  if (s->sel) /* already (B, C) */
    ct_rows_copy(rows, s->out, B, C);
  else
    ct_rows_gather(rows, s->out, idx, B, s->Tr, C);
}

/* dx: the gradient w.r.t. S's output, from drow: (B, C) that of the rows
 * read_rows read: (B, C) with s->sel, else (B*Tr, C) zero but for them. */
static void
rows_grad(float *dx, const CtStack *s, const float *drow, const int *idx, int B, int C)
{
  if (s->sel) {
    ct_rows_copy(dx, drow, B, C);
    return;
  }
  ct_zero(dx, (size_t) B * s->Tr * C);
  ct_rows_scatter_add(dx, drow, idx, B, s->Tr, C);
}

/* A tower's head backward, into sc->drow: (B, C) the gradient w.r.t. the
 * rows read, from dfeat: (B, E) that w.r.t. the L2-normalised features
 * featn (norm: their norms), through the loss scale, the projection PROJ:
 * (C, E) of LN, and the layer norm (MEAN, RSTD, LN_W) of ROWS.  DPROJ,
 * DLN_W, DLN_B receive the parameters' gradients.  PROJ_ONLY (the layer
 * norm and everything below it frozen): DPROJ alone. */
static void
head_backward(CtModel *m, const float *dfeat, const float *featn, const float *norm,
              const float *ln, const float *proj, float *dproj, const float *rows,
              const float *mean, const float *rstd, const float *ln_w, float *dln_w,
              float *dln_b, int B, int C, int E, gboolean proj_only)
{
  CtScratch *sc = &m->sc;
  ct_zero(sc->dfeat, (size_t) B * E);
  ct_l2norm_backward(sc->dfeat, dfeat, featn, norm, B, E);
  ct_scale(sc->dfeat, m->loss_scale, (size_t) B * E); /* loss scaling */
  if (proj_only) {
    ct_matmul_backward_p(m->prec, sc->wr, NULL, dproj, sc->dfeat, ln, proj, B, C, E);
    return;
  }
  ct_zero(sc->dln, (size_t) B * C);
  ct_matmul_backward_p(m->prec, sc->wr, sc->dln, dproj, sc->dfeat, ln, proj, B, C, E);
  ct_zero(sc->drow, (size_t) B * C);
  ct_layernorm_backward(sc->drow, dln_w, dln_b, sc->dln, rows, mean, rstd, ln_w, B, C);
}

/* How far a transformer tower of L blocks runs backward with its N lowest
 * lock groups frozen (groups.c): FALSE when it runs none at all (N =
 * L + 2); else *PROJ_ONLY when only the projection's gradient is wanted
 * (N = L + 1), and the stack's frozen blocks, and *STEM when the stem
 * takes gradients (N = 0). */
static gboolean
tower_extent(int n, int L, CtStack *s, gboolean *proj_only, gboolean *stem)
{
  *proj_only = n >= L + 1;
  *stem = n == 0;
  s->n_frozen = CLAMP(n - 1, 0, L);
  return n < L + 2;
}

void
ct_vision_forward(CtModel *m, const float *images, int B)
{
  const CtConfig *c = &m->cfg;
  CtVisionActs *a = &m->va;
  const CtVisionParams *p = &m->vp;
  int P = c->vision_patch_size, R = c->image_resolution, W = c->vision_width;
  int E = c->embed_dim;
  int G = R / P, GG = G * G;
  a->B = B;

  /* patch dropout: the patch embedding acts on each patch alone, so only
   * the K kept patches are gathered and embedded; the blocks run on 1+K */
  int K;
  a->keep = ct_patch_dropout_draw(m, B, GG, &K);
  a->K = K;
  int T = K + 1;
  ct_patchify_kept(a->patches, images, a->keep, B, R, P, K);
  ct_linear_forward_p(m->prec, m->sc.wr, a->patch_out, a->patches, p->conv1_w, NULL, B * K,
                      3 * P * P, W);
  ct_patch_assemble_kept_forward(a->x0, a->patch_out, p->cls, p->pos, a->keep, B, K, W);
  ct_layernorm_forward(a->stack.seg_in, a->ln_pre_mean, a->ln_pre_rstd, a->x0, p->ln_pre_w,
                       p->ln_pre_b, B * T, W);
  a->stack.Tr = T;
  a->stack.sel = m->prune_readout ? a->cls_idx : NULL;
  ct_stack_forward(&a->stack, &m->sc, B);
  read_rows(a->rows, &a->stack, a->cls_idx, B, W);
  ct_layernorm_forward(a->ln_post, a->ln_post_mean, a->ln_post_rstd, a->rows, p->ln_post_w,
                       p->ln_post_b, B, W);
  ct_matmul_forward_p(m->prec, m->sc.wr, a->feat, a->ln_post, p->proj, B, W, E);
  ct_l2norm_forward(a->featn, a->norm, a->feat, B, E);
}

void
ct_vision_backward(CtModel *m, const float *dfeat)
{
  const CtConfig *c = &m->cfg;
  CtVisionActs *a = &m->va;
  const CtVisionParams *p = &m->vp;
  CtVisionParams *g = &m->vg;
  CtScratch *sc = &m->sc;
  int B = a->B;
  int P = c->vision_patch_size, W = c->vision_width;
  int E = c->embed_dim;
  int K = a->K, T = K + 1; /* the patches the forward kept */

  gboolean proj_only, stem;
  if (!tower_extent(m->frozen_groups[0], c->vision_layers, &a->stack, &proj_only, &stem))
    return;
  head_backward(m, dfeat, a->featn, a->norm, a->ln_post, p->proj, g->proj, a->rows,
                a->ln_post_mean, a->ln_post_rstd, p->ln_post_w, g->ln_post_w, g->ln_post_b,
                B, W, E, proj_only);
  if (proj_only)
    return;
  rows_grad(sc->dx, &a->stack, sc->drow, a->cls_idx, B, W);
  ct_stack_backward(&a->stack, sc, B);
  if (!stem)
    return;
  /* dx now holds d ln_pre output; dA receives d x0 */
  ct_zero(sc->dA, (size_t) B * T * W);
  ct_layernorm_backward(sc->dA, g->ln_pre_w, g->ln_pre_b, sc->dx, a->x0, a->ln_pre_mean,
                        a->ln_pre_rstd, p->ln_pre_w, B * T, W);
  float *dpatch = sc->dqkv; /* (B*K, W), free at this point */
  ct_patch_assemble_kept_backward(dpatch, g->cls, g->pos, sc->dA, a->keep, B, K, W);
  ct_linear_backward_p(m->prec, sc->wr, NULL, g->conv1_w, NULL, dpatch, a->patches, p->conv1_w,
                       B * K, 3 * P * P, W);
}

void
ct_text_forward(CtModel *m, const int32_t *tokens, int B)
{
  const CtConfig *c = &m->cfg;
  CtTextActs *a = &m->ta;
  const CtTextParams *p = &m->tp;
  int T = c->context_length, C = c->transformer_width, E = c->embed_dim;
  a->B = B;

  ct_tokens_argmax(a->eot, tokens, B, T);
  /* exact trimming: under the causal mask the end-of-text rows depend on
   * earlier positions only, so the tower runs up to the longest caption */
  int Tr = T;
  if (m->trim_text) {
    Tr = 1;
    for (int b = 0; b < B; b++)
      Tr = MAX(Tr, a->eot[b] + 1);
  }
  for (int b = 0; b < B; b++) /* a->tokens: (B, Tr), the rows' first Tr ids */
    memcpy(a->tokens + (size_t) b * Tr, tokens + (size_t) b * T, sizeof(int32_t) * Tr);
  a->stack.Tr = Tr;
  a->stack.sel = m->prune_readout ? a->eot : NULL;
  ct_token_embed_forward(a->stack.seg_in, a->tokens, p->wte, p->wpe, B, Tr, C);
  ct_stack_forward(&a->stack, &m->sc, B);
  read_rows(a->rows, &a->stack, a->eot, B, C);
  ct_layernorm_forward(a->ln_f, a->ln_f_mean, a->ln_f_rstd, a->rows, p->ln_f_w, p->ln_f_b, B, C);
  ct_matmul_forward_p(m->prec, m->sc.wr, a->feat, a->ln_f, p->proj, B, C, E);
  ct_l2norm_forward(a->featn, a->norm, a->feat, B, E);
}

void
ct_text_backward(CtModel *m, const float *dfeat)
{
  const CtConfig *c = &m->cfg;
  CtTextActs *a = &m->ta;
  const CtTextParams *p = &m->tp;
  CtTextParams *g = &m->tg;
  CtScratch *sc = &m->sc;
  int B = a->B;
  int T = a->stack.Tr, C = c->transformer_width, E = c->embed_dim;

  gboolean proj_only, stem;
  if (!tower_extent(m->frozen_groups[1], c->transformer_layers, &a->stack, &proj_only, &stem))
    return;
  head_backward(m, dfeat, a->featn, a->norm, a->ln_f, p->proj, g->proj, a->rows, a->ln_f_mean,
                a->ln_f_rstd, p->ln_f_w, g->ln_f_w, g->ln_f_b, B, C, E, proj_only);
  if (proj_only)
    return;
  rows_grad(sc->dx, &a->stack, sc->drow, a->eot, B, C);
  ct_stack_backward(&a->stack, sc, B);
  if (stem)
    ct_token_embed_backward(g->wte, g->wpe, sc->dx, a->tokens, B, T, C);
}

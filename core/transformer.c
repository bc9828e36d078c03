/* transformer.c: forward and backward of a stack of residual attention
 * blocks: x + attn(ln_1(x)), then x + mlp(ln_2(x)), mlp = c_fc, QuickGELU,
 * c_proj. */
#include "config.h"

#include "model-private.h"
#include "ops.h"

#include <string.h>

/* Layer l's slice of a per-layer buffer whose slices hold PER floats. */
#define LAYER(buf, l, per) ((buf) + (size_t) (l) * (per))

void
ct_stack_forward(CtStack *s, int B)
{
  int T = s->T, C = s->C, H = s->H;
  int N = B * T;
  size_t nc = (size_t) s->max_B * T * C; /* per-layer slice of (B*T, C) buffers */
  size_t nr = (size_t) s->max_B * T;     /* per-layer slice of (B*T) buffers */
  size_t natt = (size_t) s->max_B * H * T * T;
  for (int l = 0; l < s->L; l++) {
    const CtBlock *p = &s->p[l];
    float *x = LAYER(s->x, l, nc);
    float *ln1 = LAYER(s->ln1, l, nc);
    float *qkv = LAYER(s->qkv, l, 3 * nc);
    float *att = LAYER(s->att, l, natt);
    float *atty = LAYER(s->atty, l, nc);
    float *xmid = LAYER(s->xmid, l, nc);
    float *ln2 = LAYER(s->ln2, l, nc);
    float *fc = LAYER(s->fc, l, 4 * nc);
    float *gelu = LAYER(s->gelu, l, 4 * nc);
    float *xout = LAYER(s->x, l + 1, nc);

    ct_layernorm_forward(ln1, LAYER(s->ln1_mean, l, nr), LAYER(s->ln1_rstd, l, nr), x,
                         p->ln1_w, p->ln1_b, N, C);
    ct_linear_forward(qkv, ln1, p->in_w, p->in_b, N, C, 3 * C);
    ct_attention_forward(atty, att, qkv, B, T, C, H, s->causal);
    ct_linear_forward(xmid, atty, p->out_w, p->out_b, N, C, C);
    ct_add_inplace(xmid, x, (size_t) N * C);

    ct_layernorm_forward(ln2, LAYER(s->ln2_mean, l, nr), LAYER(s->ln2_rstd, l, nr), xmid,
                         p->ln2_w, p->ln2_b, N, C);
    ct_linear_forward(fc, ln2, p->fc_w, p->fc_b, N, C, 4 * C);
    ct_quickgelu_forward(gelu, fc, (size_t) N * 4 * C);
    ct_linear_forward(xout, gelu, p->proj_w, p->proj_b, N, 4 * C, C);
    ct_add_inplace(xout, xmid, (size_t) N * C);
  }
}

void
ct_stack_backward(CtStack *s, CtScratch *sc, int B)
{
  int T = s->T, C = s->C, H = s->H;
  int N = B * T;
  size_t nc = (size_t) s->max_B * T * C;
  size_t nr = (size_t) s->max_B * T;
  size_t natt = (size_t) s->max_B * H * T * T;
  float *dx = sc->dx; /* (N, C) gradient of the residual stream, updated in place */
  for (int l = s->L - 1; l >= 0; l--) {
    const CtBlock *p = &s->p[l];
    CtBlock *g = &s->g[l];
    const float *x = LAYER(s->x, l, nc);

    /* mlp branch: xout = xmid + c_proj(gelu(c_fc(ln_2(xmid)))) */
    memset(sc->dfc, 0, sizeof(float) * (size_t) N * 4 * C);
    ct_linear_backward(sc->dfc, g->proj_w, g->proj_b, dx, LAYER(s->gelu, l, 4 * nc), p->proj_w,
                       N, 4 * C, C);
    ct_quickgelu_backward(sc->dfc, sc->dfc, LAYER(s->fc, l, 4 * nc), (size_t) N * 4 * C);
    memset(sc->dA, 0, sizeof(float) * (size_t) N * C);
    ct_linear_backward(sc->dA, g->fc_w, g->fc_b, sc->dfc, LAYER(s->ln2, l, nc), p->fc_w, N, C,
                       4 * C);
    ct_layernorm_backward(dx, g->ln2_w, g->ln2_b, sc->dA, LAYER(s->xmid, l, nc),
                          LAYER(s->ln2_mean, l, nr), LAYER(s->ln2_rstd, l, nr), p->ln2_w, N, C);

    /* attention branch: xmid = x + out_proj(attn(in_proj(ln_1(x)))) */
    memset(sc->dA, 0, sizeof(float) * (size_t) N * C);
    ct_linear_backward(sc->dA, g->out_w, g->out_b, dx, LAYER(s->atty, l, nc), p->out_w, N, C,
                       C);
    memset(sc->dqkv, 0, sizeof(float) * (size_t) N * 3 * C);
    ct_attention_backward(sc->dqkv, sc->datt, sc->dA, LAYER(s->qkv, l, 3 * nc),
                          LAYER(s->att, l, natt), B, T, C, H);
    memset(sc->dA, 0, sizeof(float) * (size_t) N * C);
    ct_linear_backward(sc->dA, g->in_w, g->in_b, sc->dqkv, LAYER(s->ln1, l, nc), p->in_w, N, C,
                       3 * C);
    ct_layernorm_backward(dx, g->ln1_w, g->ln1_b, sc->dA, x, LAYER(s->ln1_mean, l, nr),
                          LAYER(s->ln1_rstd, l, nr), p->ln1_w, N, C);
    if (s->owner->hook) {
      /* a block's tensors are contiguous, from in_proj_weight to ln_2.bias */
      size_t off = (size_t) (g->in_w - s->owner->grads);
      size_t n = (size_t) (g->ln2_b + C - g->in_w);
      s->owner->hook(s->owner->hook_data, off, n);
    }
  }
}

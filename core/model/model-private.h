/* model-private.h: the CtModel layout shared by model.c, transformer.c,
 * towers.c and weights.c.  Not installed. */
#ifndef CT_MODEL_PRIVATE_H
#define CT_MODEL_PRIVATE_H

#include <cliptrain/model.h>

#include "model/resnet-private.h"

/* One residual attention block's tensors (views into params or grads). */
typedef struct {
  float *in_w, *in_b;     /* (3C, C), (3C)  attn.in_proj_weight / bias */
  float *out_w, *out_b;   /* (C, C), (C)    attn.out_proj */
  float *ln1_w, *ln1_b;   /* (C)            ln_1 */
  float *fc_w, *fc_b;     /* (4C, C), (4C)  mlp.c_fc */
  float *proj_w, *proj_b; /* (C, 4C), (C)   mlp.c_proj */
  float *ln2_w, *ln2_b;   /* (C)            ln_2 */
} CtBlock;

/* One block's activations in float32, for B sequences of T tokens
 * (N = B*T rows): what backward needs.  Views, owned elsewhere. */
typedef struct {
  float *x;              /* (N, C) the block's input, the residual stream */
  float *ln1;            /* (N, C) */
  float *mean1, *rstd1;  /* (N) */
  float *qkv;            /* (N, 3C) */
  float *att;            /* (B, H, T, T) softmax probabilities */
  float *atty;           /* (N, C) attention output before out_proj */
  float *xmid;           /* (N, C) residual after attention */
  float *ln2;            /* (N, C) */
  float *mean2, *rstd2;  /* (N) */
  float *fc;             /* (N, 4C) c_fc output, before QuickGELU */
  float *gelu;           /* (N, 4C) QuickGELU output: scratch, recomputed in backward */
} CtLayerActs;

struct CtStack;

/* Slots for the saved activations of one segment's blocks, one slot a
 * block.  A slot holds the statistics (float32) then the tensors of
 * CtLayerActs, in float32 or, at half precision, as 16-bit codes.  With
 * activation checkpointing both towers share one store. */
typedef struct {
  char *base;                  /* (nslots, slot_bytes) */
  size_t slot_bytes;
  int nslots;
  const struct CtStack *holder; /* whose segment the slots hold now, or NULL */
  int seg;
  uint64_t gen;
} CtActStore;

/* A stack of L blocks over sequences of T tokens of width C, for up to
 * max_B sequences, split into nseg segments of seglen blocks (the last
 * may be shorter).  Without checkpointing nseg is 1 and the store holds
 * every block; with it, only the segment inputs are kept and backward
 * recomputes each segment into the store. */
typedef struct CtStack {
  int L, T, C, H, causal, max_B;
  int Tr;                      /* tokens of the current pass, <= T (text trimming) */
  CtBlock *p, *g;              /* (L) parameter and gradient views */
  struct CtModel *owner;       /* precision, hook, block scratch */
  int nseg, seglen;
  float *seg_in;               /* (nseg, max_B*T, C) segment inputs; [0] is the stack's input */
  float *out;                  /* (max_B*T, C) the last block's output; (B, C) with sel */
  const int *sel;              /* (B) readout pruning: the one row per sequence that the
                                * tower reads from out, or NULL for every row */
  CtActStore *store;
  uint64_t gen;                /* forward passes so far */
  int n_frozen;                /* backward stops above blocks [0, n_frozen): they take no
                                * gradient, and no segment of theirs alone is recomputed */
} CtStack;

/* Backward work space, shared by both towers; sized for the larger.
 * BTC = max_B * max(T * C) over the towers. */
typedef struct {
  float *dx;   /* (BTC) gradient of the residual stream */
  float *dA;   /* (BTC) */
  float *dqkv; /* (3 BTC) */
  float *dfc;  /* (4 BTC) */
  float *datt; /* (CT_MAX_THREADS, Tmax, Tmax) per pool thread */
  float *dfeat; /* (max_B, E) */
  float *drow;  /* (max_B, Cmax) */
  float *dln;   /* (max_B, Cmax) */
  float *gelu;  /* (4 BTC) the current block's QuickGELU output */
  float *slope; /* (4 BTC) its derivative, from the same pass in backward */
  float *ln;    /* (BTC) the current block's ln_1 or ln_2 output at float32:
                 * not saved, recomputed in backward */
  /* half precision only (NULL at float32): */
  float *wr;    /* (largest weight) a weight rounded for a product */
  float *dr;    /* (BTC) a rounded copy of the residual gradient */
  float *xa, *xb; /* (BTC) float32 residual stream, alternating */
  CtLayerActs work; /* one block's activations in float32 */
} CtScratch;

typedef struct {
  /* parameters (views into params, mirrored in the gradient copy) */
  float *conv1_w;              /* (W, 3, P, P) */
  float *cls;                  /* (W) */
  float *pos;                  /* (GG+1, W) */
  float *ln_pre_w, *ln_pre_b;  /* (W) */
  float *ln_post_w, *ln_post_b; /* (W) */
  float *proj;                 /* (W, E) */
  CtBlock *blocks;             /* (L) */
} CtVisionParams;

typedef struct {
  float *wte;                  /* (V, C) token_embedding.weight */
  float *wpe;                  /* (ctx, C) positional_embedding */
  float *ln_f_w, *ln_f_b;      /* (C) ln_final */
  float *proj;                 /* (C, E) text_projection */
  CtBlock *blocks;             /* (L) */
} CtTextParams;

typedef struct {
  int B;                       /* batch of the last forward */
  int K;                       /* patches each image kept in the last forward: GG, or
                                * fewer under patch dropout */
  const int *keep;             /* (B, K) their grid indices, ascending, or NULL for all */
  float *patches;              /* (max_B*K, 3*P*P) */
  float *patch_out;            /* (max_B*K, W) conv1 output */
  float *x0;                   /* (max_B, 1+K, W) before ln_pre */
  float *ln_pre_mean, *ln_pre_rstd; /* (max_B*T) */
  CtStack stack;               /* seg_in[0] is ln_pre's output */
  int *cls_idx;                /* (max_B) all zero: the class token */
  float *rows;                 /* (max_B, W) class-token rows */
  float *ln_post;              /* (max_B, W) */
  float *ln_post_mean, *ln_post_rstd; /* (max_B) */
  float *feat;                 /* (max_B, E) before normalisation */
  float *featn;                /* (max_B, E) normalised */
  float *norm;                 /* (max_B) */
} CtVisionActs;

typedef struct {
  int B;
  int32_t *tokens;             /* (max_B, Tr) the last input, trimmed */
  int *eot;                    /* (max_B) end-of-text positions */
  CtStack stack;               /* seg_in[0] is the embedding */
  float *rows;                 /* (max_B, C) end-of-text rows */
  float *ln_f;                 /* (max_B, C) */
  float *ln_f_mean, *ln_f_rstd; /* (max_B) */
  float *feat;                 /* (max_B, E) */
  float *featn;                /* (max_B, E) */
  float *norm;                 /* (max_B) */
} CtTextActs;

typedef enum { CT_INIT_ZERO, CT_INIT_ONE, CT_INIT_NORMAL, CT_INIT_UNIFORM, CT_INIT_CONST } CtInitKind;

typedef struct {
  CtInitKind kind;
  double a; /* std for NORMAL, bound for UNIFORM, value for CONST */
} CtInitSpec;

/* The activation arena: carve() runs twice, first with base NULL to size
 * it, then on the allocation. */
typedef struct {
  float *base; /* NULL while sizing */
  size_t used; /* floats */
} CtArena;

/* (n) floats from A, 64-byte aligned; NULL while sizing. */
float *ct_arena_take(CtArena *a, size_t n);

/* Registering tensors in state-dict order (model.c). */
typedef struct CtLayout CtLayout;
/* A parameter: *p and *g become its views into the parameters and the
 * gradients. */
void ct_layout_param(CtLayout *lo, float **p, float **g, CtInitSpec init, gboolean decay,
                     const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* A buffer of (n) floats (running statistics): *p becomes its view into
 * the buffers.  Initialised to 1 when NAME ends in "running_var", else 0. */
void ct_layout_buffer(CtLayout *lo, float **p, const char *name, int64_t n);

struct CtModel {
  CtConfig cfg;
  int max_batch;
  size_t n_params;
  float *params;               /* (n_params) one allocation */
  float *grads;                /* (n_params) same layout */
  GArray *infos;               /* of CtParamInfo, state-dict order */
  GArray *inits;               /* of CtInitSpec, parallel to infos */
  GHashTable *by_name;         /* name -> index + 1 */
  CtVisionParams vp, vg;       /* parameter and gradient views */
  CtTextParams tp, tg;
  float *logit_scale, *dlogit_scale; /* (1) */
  uint32_t extras;             /* CtModelExtras */
  float *logit_bias, *dlogit_bias; /* (1) with CT_MODEL_LOGIT_BIAS, else NULL */
  float *arena;                /* activations and scratch, one allocation */
  size_t arena_floats;
  CtPrecision prec;            /* of products and saved activations */
  int nchunks;                 /* activation checkpointing: 0 off */
  float loss_scale;            /* backward scales d loss / d features by it */
  gboolean trim_text;          /* run the text tower up to the longest caption */
  gboolean prune_readout;      /* last blocks for the read rows only (CtStack.sel) */
  CtActStore stores[2];        /* vision, text; one shared store when checkpointing */
  CtVisionActs va;
  CtTextActs ta;
  CtScratch sc;
  CtBackwardHook hook;
  void *hook_data;
  gboolean grads_released;     /* pages handed back by ct_model_release_grads since the last
                                * ct_model_zero_grad */
  float *block_grads;          /* (block_grads_n) one residual block's gradients, or NULL:
                                * ct_model_set_block_grads_scratch */
  size_t block_grads_n;        /* the largest block's gradient count */
  float *ready_grads;          /* during the backward hook: the block's final gradients */
  gboolean training;           /* BatchNorm mode (TRUE by default) */
  size_t n_buffers;
  float *buffers;              /* (n_buffers) BatchNorm running statistics */
  GArray *buf_infos;           /* of CtParamInfo, offsets into buffers */
  CtResNet rn;                 /* the image tower when cfg is a ResNet */
  /* patch dropout (patch-dropout.c): in training mode each image keeps
   * ct_patch_dropout_count() of its patches, drawn from (seed, key, sample) */
  double pdrop;                /* the probability, 0 <= pdrop < 1; 0: off */
  uint64_t pdrop_seed, pdrop_key;
  int *pdrop_keep;             /* (max_B, GG) the kept indices of the last draw, or NULL
                                * for a ResNet */
  int frozen_groups[2];        /* image, text: lock groups from the bottom that run no
                                * backward (ct_model_set_frozen_groups) */
  gboolean freeze_bn_stats;    /* BatchNorm of the frozen groups in eval mode */
};

/* groups.c */
/* 0 for "image", 1 for "text", -1 for anything else. */
int ct_tower_index(const char *tower);

/* A transformer block's gradient count: its tensors are contiguous, from
 * in_proj_weight to ln_2.bias, at width C. */
static inline size_t
ct_block_grads_n(const CtBlock *g, int C)
{
  return (size_t) (g->ln2_b + C - g->in_w);
}

/* Called by a residual block's backward before it writes its N gradients,
 * whose place in M's flat gradient buffer is G; returns where to write
 * them instead (the block shifts its gradient views by the difference):
 * - with the block scratch on (ct_model_set_block_grads_scratch), the
 *   scratch, cleared on the pool;
 * - otherwise G itself.  Once pages have been released there, their
 *   products would fault each page twice (a read of the zero page, since
 *   C is accumulated into, then a copy on write); the range is populated
 *   in one call instead.  Best effort: nothing happens where the kernel
 *   lacks MADV_POPULATE_WRITE (Linux 5.14). */
float *ct_model_block_grads(struct CtModel *m, float *g, size_t n);
/* After that block's backward: its N gradients, placed at G in the flat
 * buffer, are final at AT (ct_model_block_grads's answer); calls the
 * backward hook. */
void ct_model_block_done(struct CtModel *m, const float *g, float *at, size_t n);

/* transformer.c */
/* Bytes of one slot of S's store; HALF: 16-bit tensors. */
size_t ct_stack_slot_bytes(const CtStack *s, int half);
/* seg_in[0] -> out for B sequences. */
void ct_stack_forward(CtStack *s, CtScratch *sc, int B);
/* sc->dx: (B*T, C) in, (B, C) with s->sel: gradient w.r.t. out; out:
 * (B*T, C) gradient w.r.t. seg_in[0], or, with s->n_frozen > 0, w.r.t.
 * block n_frozen's input (no block below it runs). */
void ct_stack_backward(CtStack *s, CtScratch *sc, int B);

/* towers.c */
void ct_vision_forward(CtModel *m, const float *images, int B);
void ct_vision_backward(CtModel *m, const float *dfeat);
void ct_text_forward(CtModel *m, const int32_t *tokens, int B);
void ct_text_backward(CtModel *m, const float *dfeat);

/* patch-dropout.c */
/* Patches kept of GG at probability PROB: max(1, floor(GG * (1 - PROB))). */
int ct_patch_dropout_count(int GG, double prob);
/* The patches the next image forward of B images keeps: NULL (all GG) in
 * eval mode or with patch dropout off; otherwise m->pdrop_keep, filled
 * with (B, *K) ascending grid indices. */
const int *ct_patch_dropout_draw(CtModel *m, int B, int GG, int *K);

/* resnet-layout.c */
/* Shapes of M's ResNet tower from its config (allocates rn.blocks). */
void ct_resnet_setup(CtModel *m);
void ct_resnet_cleanup(CtModel *m);
/* Its parameters and buffers in OpenAI's state-dict order. */
void ct_resnet_layout(CtLayout *lo, CtModel *m);
/* Its activations and work space, for max_batch, the precision and the
 * checkpointing. */
void ct_resnet_carve(CtArena *a, CtModel *m);

/* resnet.c: features into m->va.feat / featn / norm */
void ct_resnet_forward(CtModel *m, const float *images, int B);
void ct_resnet_backward(CtModel *m, const float *dfeat);
/* Before backward reaches stage K (0..3): the stage's block outputs that
 * the forward did not keep (CtBottleneck.yr), recomputed, and y pointed
 * at them.  This overwrites the activations of the stages above K. */
void ct_resnet_recompute_outputs(CtModel *m, int k);
/* A Bottleneck's gradient count: its tensors are contiguous, from
 * conv1.weight to its last BatchNorm's bias. */
size_t ct_bottleneck_grads_n(const CtBottleneck *b);
/* The attention pool's gradients, from its positional embedding to
 * c_proj's bias (placed as a block's: ct_model_block_grads). */
size_t ct_resnet_pool_grads_n(const CtResNet *rn);

#endif

/* model-private.h: the CtModel layout shared by model.c, transformer.c,
 * towers.c and checkpoint.c.  Not installed. */
#ifndef CT_MODEL_PRIVATE_H
#define CT_MODEL_PRIVATE_H

#include <cliptrain/model.h>

/* One residual attention block's tensors (views into params or grads). */
typedef struct {
  float *in_w, *in_b;     /* (3C, C), (3C)  attn.in_proj_weight / bias */
  float *out_w, *out_b;   /* (C, C), (C)    attn.out_proj */
  float *ln1_w, *ln1_b;   /* (C)            ln_1 */
  float *fc_w, *fc_b;     /* (4C, C), (4C)  mlp.c_fc */
  float *proj_w, *proj_b; /* (C, 4C), (C)   mlp.c_proj */
  float *ln2_w, *ln2_b;   /* (C)            ln_2 */
} CtBlock;

/* A stack of L blocks over sequences of T tokens of width C, with the
 * activations backward needs, each sized for max_B sequences.  Layer l's
 * slice of a per-layer buffer starts at l * (its per-layer size). */
typedef struct {
  int L, T, C, H, causal, max_B;
  CtBlock *p, *g;            /* (L) parameter and gradient views */
  const struct CtModel *owner; /* for the backward hook */
  float *x;                  /* (L+1, max_B*T, C) residual stream; x[0] is the input */
  float *ln1;                /* (L, max_B*T, C) */
  float *ln1_mean, *ln1_rstd; /* (L, max_B*T) */
  float *qkv;                /* (L, max_B*T, 3C) */
  float *att;                /* (L, max_B, H, T, T) softmax probabilities */
  float *atty;               /* (L, max_B*T, C) attention output before out_proj */
  float *xmid;               /* (L, max_B*T, C) residual after attention */
  float *ln2;                /* (L, max_B*T, C) */
  float *ln2_mean, *ln2_rstd; /* (L, max_B*T) */
  float *fc;                 /* (L, max_B*T, 4C) c_fc output, before QuickGELU */
  float *gelu;               /* (L, max_B*T, 4C) */
} CtStack;

/* Backward work space, shared by both towers; sized for the larger. */
typedef struct {
  float *dx;   /* (max_B*Tmax, Cmax) gradient of the residual stream */
  float *dA;   /* (max_B*Tmax, Cmax) */
  float *dqkv; /* (max_B*Tmax, 3*Cmax) */
  float *dfc;  /* (max_B*Tmax, 4*Cmax) */
  float *datt; /* (Tmax, Tmax) */
  float *dfeat; /* (max_B, E) */
  float *drow;  /* (max_B, Cmax) */
  float *dln;   /* (max_B, Cmax) */
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
  float *patches;              /* (max_B*GG, 3*P*P) */
  float *patch_out;            /* (max_B*GG, W) conv1 output */
  float *x0;                   /* (max_B, T, W) before ln_pre */
  float *ln_pre_mean, *ln_pre_rstd; /* (max_B*T) */
  CtStack stack;               /* x[0] is ln_pre's output */
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
  int32_t *tokens;             /* (max_B, ctx) copy of the last input */
  int *eot;                    /* (max_B) end-of-text positions */
  CtStack stack;               /* x[0] is the embedding */
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
  float *arena;                /* activations and scratch, one allocation */
  size_t arena_floats;
  CtVisionActs va;
  CtTextActs ta;
  CtScratch sc;
  CtBackwardHook hook;
  void *hook_data;
};

/* transformer.c */
void ct_stack_forward(CtStack *s, int B);
/* dx: (B*T, C) in: gradient w.r.t. x[L]; out: gradient w.r.t. x[0]. */
void ct_stack_backward(CtStack *s, CtScratch *sc, int B);

/* towers.c */
void ct_vision_forward(CtModel *m, const float *images, int B);
void ct_vision_backward(CtModel *m, const float *dfeat);
void ct_text_forward(CtModel *m, const int32_t *tokens, int B);
void ct_text_backward(CtModel *m, const float *dfeat);

#endif

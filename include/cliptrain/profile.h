/* profile.h: where a training step's time goes.
 *
 * When enabled, the model's passes, the loss and the optimizer step add
 * their wall time to one counter per kind of work.  Off by default; the
 * cost when off is one branch per kernel call.  Not thread-safe: time one
 * model from one thread. */
#ifndef CLIPTRAIN_PROFILE_H
#define CLIPTRAIN_PROFILE_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

typedef enum {
  CT_PROF_GEMM,        /* linear layers, projections, patch embedding */
  CT_PROF_ATTENTION,   /* q·kᵀ, softmax, p·v and their backward */
  CT_PROF_LAYERNORM,
  CT_PROF_GELU,
  CT_PROF_EMBED,       /* token, positional and patch embeddings, row selection */
  CT_PROF_ELEMENTWISE, /* residual adds, clears, L2 norm, half-precision packing */
  CT_PROF_LOSS,
  CT_PROF_OPTIMIZER,
  /* the ResNet tower's own kinds */
  CT_PROF_CONV_FWD,         /* convolution products, forward */
  CT_PROF_CONV_BWD_DATA,    /* convolution products, input gradient */
  CT_PROF_CONV_BWD_WEIGHTS, /* convolution products, weight gradient */
  CT_PROF_IM2COL,           /* im2col and col2im */
  CT_PROF_BATCHNORM,        /* BatchNorm, with the ReLU fused into it */
  CT_PROF_RELU,             /* ReLU not fused into a BatchNorm */
  CT_PROF_POOL,             /* average pooling */
  CT_PROF_ATTNPOOL,         /* the attention pool: tokens, projections, attention */
  CT_PROF_N
} CtProfKind;

CT_API void ct_profile_enable(gboolean on);
CT_API gboolean ct_profile_enabled(void);
CT_API void ct_profile_reset(void);
/* Seconds spent in KIND since the last reset. */
CT_API double ct_profile_seconds(CtProfKind kind);
/* "gemm", "attention", ... (transfer none); NULL for an invalid kind. */
CT_API const char *ct_profile_name(CtProfKind kind);

G_END_DECLS

#endif

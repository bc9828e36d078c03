/* ops.h: the numeric kernels, each a forward/backward pair.
 *
 * Conventions (after llm.c): outputs first, then inputs, then sizes.
 * Activations are row-major float32; N is the number of rows (batch times
 * tokens), C the width.  Weights use PyTorch's layouts.  Backward kernels
 * ADD into their gradient outputs (+=) unless a comment says otherwise, so
 * that residual branches and shared weights just work; a NULL gradient
 * output is skipped.  Every matrix product goes through cblas_sgemm.
 * Nothing here allocates. */
#ifndef CT_OPS_H
#define CT_OPS_H

#include "precision.h"

#include <stddef.h>
#include <stdint.h>

/* ---- linear: out = in @ w^T + b (nn.Linear) ---- */
/* out: (N, OC); in: (N, C); w: (OC, C); b: (OC) or NULL */
void ct_linear_forward(float *out, const float *in, const float *w, const float *b,
                       int N, int C, int OC);
/* din: (N, C) += dout @ w;  dw: (OC, C) += dout^T @ in;  db: (OC) += sum dout */
void ct_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int N, int C, int OC);

/* ---- matmul with a (C, E) matrix, as CLIP's proj: out = in @ w ---- */
/* out: (N, E); in: (N, C); w: (C, E) */
void ct_matmul_forward(float *out, const float *in, const float *w, int N, int C, int E);
/* din: (N, C) += dout @ w^T;  dw: (C, E) += in^T @ dout */
void ct_matmul_backward(float *din, float *dw, const float *dout, const float *in,
                        const float *w, int N, int C, int E);

/* ---- the same products at a precision (op_lowp.c) ----
 * At CT_PRECISION_FP32 these are the kernels above.  At bf16/fp16 they
 * round like autocast: the input IN (in place: it is what backward will
 * see), the weight (through WR, a scratch as large as w), the result; in
 * backward, DOUT (in place: pass a copy when it must stay float32), DIN
 * (which must be zero on entry, and is rounded on exit) and the weight.
 * Weight gradients accumulate in float32. */
/* wr: (OC, C) scratch */
void ct_linear_forward_p(CtPrecision prec, float *wr, float *out, float *in, const float *w,
                         const float *b, int N, int C, int OC);
void ct_linear_backward_p(CtPrecision prec, float *wr, float *din, float *dw, float *db,
                          float *dout, const float *in, const float *w, int N, int C, int OC);
/* wr: (C, E) scratch */
void ct_matmul_forward_p(CtPrecision prec, float *wr, float *out, float *in, const float *w,
                         int N, int C, int E);
void ct_matmul_backward_p(CtPrecision prec, float *wr, float *din, float *dw, float *dout,
                          const float *in, const float *w, int N, int C, int E);

/* ---- layer norm over the last dim, eps 1e-5 ---- */
/* out: (N, C); mean, rstd: (N), saved for backward; in: (N, C); w, b: (C) */
void ct_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *w, const float *b, int N, int C);
/* din: (N, C); dw, db: (C) */
void ct_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                           const float *in, const float *mean, const float *rstd,
                           const float *w, int N, int C);

/* ---- QuickGELU: x * sigmoid(1.702 x) ---- */
/* out, in: (n) */
void ct_quickgelu_forward(float *out, const float *in, size_t n);
/* din: (n) is SET to dout * f'(in), not accumulated; din may alias dout. */
void ct_quickgelu_backward(float *din, const float *dout, const float *in, size_t n);

/* ---- element-wise ---- */
/* acc: (n) += x: (n) */
void ct_add_inplace(float *acc, const float *x, size_t n);

/* ---- multi-head self-attention core (after in_proj, before out_proj) ----
 * qkv: (B, T, 3C) packed as nn.MultiheadAttention's in_proj: q | k | v.
 * Head h uses columns h*D .. h*D+D-1 of each, D = C / H.  Scores are
 * scaled by 1/sqrt(D); with CAUSAL, key j > query i is masked out. */
/* out: (B, T, C); att: (B, H, T, T) softmax probabilities, saved.
 * At bf16/fp16 (PREC) the scores, the probabilities and OUT are rounded
 * (qkv must be rounded already); the softmax itself is float32. */
void ct_attention_forward(float *out, float *att, const float *qkv,
                          int B, int T, int C, int H, int causal, CtPrecision prec);
/* dqkv: (B, T, 3C) +=; scratch: (ct_parallel_threads(), T, T); dout: (B, T, C).  At bf16/fp16
 * the score gradients are rounded (dout must be rounded already; round
 * dqkv afterwards). */
void ct_attention_backward(float *dqkv, float *scratch, const float *dout,
                           const float *qkv, const float *att, int B, int T, int C, int H,
                           CtPrecision prec);

/* ---- token embedding plus positional embedding ---- */
/* out: (B, T, C); tokens: (B, T) in [0, V); wte: (V, C); wpe: (T_max >= T, C) */
void ct_token_embed_forward(float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C);
/* dwte: (V, C) +=; dwpe: (T, C) +=; dout: (B, T, C) */
void ct_token_embed_backward(float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C);

/* ---- patch embedding: conv with stride = kernel = P, no bias ---- */
/* patches: (B*G*G, 3*P*P) with columns ordered (c, ky, kx) as conv1.weight;
 * images: (B, 3, R, R); G = R / P */
void ct_patchify(float *patches, const float *images, int B, int R, int P);
/* out: (B, 1+GG, C): row 0 = cls + pos[0], row 1+i = patch_out[b*GG+i] + pos[1+i];
 * patch_out: (B*GG, C); cls: (C); pos: (1+GG, C) */
void ct_patch_assemble_forward(float *out, const float *patch_out, const float *cls,
                               const float *pos, int B, int GG, int C);
/* dpatch_out: (B*GG, C) is SET; dcls: (C) +=; dpos: (1+GG, C) +=; dout: (B, 1+GG, C) */
void ct_patch_assemble_backward(float *dpatch_out, float *dcls, float *dpos,
                                const float *dout, int B, int GG, int C);

/* ---- row selection (class token, end-of-text token) ---- */
/* out: (B, C) = in[b, idx[b], :]; in: (B, T, C); idx: (B) */
void ct_rows_gather(float *out, const float *in, const int *idx, int B, int T, int C);
/* din: (B, T, C) += scatter of dout: (B, C) */
void ct_rows_scatter_add(float *din, const float *dout, const int *idx, int B, int T, int C);
/* idx: (B) = position of the largest id in each row of tokens: (B, T); the
 * first one on ties, as torch.argmax. */
void ct_tokens_argmax(int *idx, const int32_t *tokens, int B, int T);

/* ---- L2 normalisation of rows ---- */
/* out: (N, E); norm: (N) saved; in: (N, E) */
void ct_l2norm_forward(float *out, float *norm, const float *in, int N, int E);
/* din: (N, E) +=; out, norm from forward */
void ct_l2norm_backward(float *din, const float *dout, const float *out, const float *norm,
                        int N, int E);

#endif

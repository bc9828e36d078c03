/* ops.h: the numeric kernels, each a forward/backward pair.
 *
 * Conventions (after llm.c): outputs first, then inputs, then sizes.
 * Activations are row-major float32; N is the number of rows (batch times
 * tokens), C the width.  Weights use PyTorch's layouts.  Backward kernels
 * ADD into their gradient outputs (+=) unless a comment says otherwise, so
 * that residual branches and shared weights just work; a NULL gradient
 * output is skipped.  Every matrix product goes through cblas_sgemm.
 * Nothing here allocates.
 *
 * Profiling: each kernel adds its own wall time to one counter of
 * profile.h, named in brackets in its heading (a kernel that another
 * calls counts in the caller's: base/profile-private.h), so that the
 * model calls kernels as plain statements. */
#ifndef CT_OPS_H
#define CT_OPS_H

#include "base/precision.h"

#include <stddef.h>
#include <stdint.h>

/* ---- linear: out = in @ w^T + b (nn.Linear) [gemm] ---- */
/* out: (N, OC); in: (N, C); w: (OC, C); b: (OC) or NULL */
void ct_linear_forward(float *out, const float *in, const float *w, const float *b,
                       int N, int C, int OC);
/* din: (N, C) += dout @ w;  dw: (OC, C) += dout^T @ in;  db: (OC) += sum dout */
void ct_linear_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *w, int N, int C, int OC);

/* ---- matmul with a (C, E) matrix, as CLIP's proj: out = in @ w [gemm] ---- */
/* out: (N, E); in: (N, C); w: (C, E) */
void ct_matmul_forward(float *out, const float *in, const float *w, int N, int C, int E);
/* din: (N, C) += dout @ w^T;  dw: (C, E) += in^T @ dout */
void ct_matmul_backward(float *din, float *dw, const float *dout, const float *in,
                        const float *w, int N, int C, int E);

/* ---- the same products at a precision (lowp.c) [gemm] ----
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

/* ---- precision.h's rounding and packing as kernels of the model's
 * (lowp.c) [elementwise]; the kernels here call precision.h's, inside
 * their own time ---- */
/* dst: (n) = src: (n) rounded to PREC: ct_round_copy, or ct_round when
 * dst equals src (nothing at float32) */
void ct_lowp_round(CtPrecision prec, float *dst, const float *src, size_t n);
/* h: (n) = the 16-bit codes of x: (n) in PREC (PACK: ct_pack16), or x =
 * their values (ct_unpack16) */
void ct_lowp_move16(CtPrecision prec, uint16_t *h, float *x, size_t n, int pack);

/* ---- layer norm over the last dim, eps 1e-5 [layernorm] ---- */
/* out: (N, C); mean, rstd: (N), saved for backward; in: (N, C); w, b: (C) */
void ct_layernorm_forward(float *out, float *mean, float *rstd, const float *in,
                          const float *w, const float *b, int N, int C);
/* din: (N, C); dw, db: (C) */
void ct_layernorm_backward(float *din, float *dw, float *db, const float *dout,
                           const float *in, const float *mean, const float *rstd,
                           const float *w, int N, int C);

/* ---- QuickGELU: x * sigmoid(1.702 x) [gelu] ---- */
/* out, in: (n) */
void ct_quickgelu_forward(float *out, const float *in, size_t n);
/* din: (n) is SET to dout * f'(in), not accumulated; din may alias dout. */
void ct_quickgelu_backward(float *din, const float *dout, const float *in, size_t n);
/* out: (n) f(in), and slope: (n) f'(in), from one exp an element: backward
 * then multiplies by the slope (ct_quickgelu_backward_slope), to the bits
 * of ct_quickgelu_backward. */
void ct_quickgelu_forward_slope(float *out, float *slope, const float *in, size_t n);
/* d: (n) *= slope: (n), as ct_mul_inplace (counted as gelu). */
void ct_quickgelu_backward_slope(float *d, const float *slope, size_t n);

/* ---- element-wise (elementwise.c) [elementwise] ---- */
/* acc: (n) += x: (n) */
void ct_add_inplace(float *acc, const float *x, size_t n);
/* acc: (n) *= x: (n) */
void ct_mul_inplace(float *acc, const float *x, size_t n);
/* x: (n) = 0, on the pool in 64 KiB tasks (a memset on one thread was
 * the step's largest pass that did not scale with threads). */
void ct_zero(float *x, size_t n);
/* dst: (n) = src: (n), not overlapping */
void ct_copy(float *dst, const float *src, size_t n);
/* x: (n) *= s; nothing when s is 1 */
void ct_scale(float *x, float s, size_t n);

/* ---- multi-head self-attention core (after in_proj, before out_proj) ----
 * qkv: (B, T, 3C) packed as nn.MultiheadAttention's in_proj: q | k | v.
 * Head h uses columns h*D .. h*D+D-1 of each, D = C / H.  Scores are
 * scaled by 1/sqrt(D); with CAUSAL, key j > query i is masked out.
 * [attention] */
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

/* ---- the same for one query row per sequence ----
 * sel: (B) the query row of each sequence; keys and values are every
 * row's.  out: (B, C) that row's output; att: (B, H, T) its
 * probabilities, saved.  Each row gets ct_attention_forward's operations
 * for it, rounding included. */
void ct_attention_rows_forward(float *out, float *att, const float *qkv, const int *sel, int B,
                               int T, int C, int H, int causal, CtPrecision prec);
/* dqkv: (B, T, 3C) += (q only at the selected rows); scratch:
 * (ct_parallel_threads(), T); dout: (B, C). */
void ct_attention_rows_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                                const float *att, const int *sel, int B, int T, int C, int H,
                                CtPrecision prec);

/* ---- one row's softmax (softmax.c), inside attention: not timed ----
 * row: (T); its first N scores become probabilities, the rest 0.  The
 * sums run in 16 float lanes (element c in lane c % 16, the lanes summed
 * pairwise: i and i + 8, then + 4, + 2, + 1), the same bits on every CPU. */
void ct_softmax_row(float *row, int n, int T);
/* d: (T) in as dL/dp, out as dL/dscores = p * (d - sum(p * d)), the sum in
 * the same lanes; p: (T) the probabilities. */
void ct_softmax_row_backward(float *d, const float *p, int T);

/* ---- token embedding plus positional embedding [embed] ---- */
/* out: (B, T, C); tokens: (B, T) in [0, V); wte: (V, C); wpe: (T_max >= T, C) */
void ct_token_embed_forward(float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C);
/* dwte: (V, C) +=; dwpe: (T, C) +=; dout: (B, T, C) */
void ct_token_embed_backward(float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, int B, int T, int C);

/* ---- patch embedding: conv with stride = kernel = P, no bias [embed] ---- */
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
/* Patch dropout: the same for the K patches of each image that KEEP: (B, K)
 * grid indices in [0, GG) names (all GG in order when KEEP is NULL).
 * patches: (B*K, 3*P*P); out: (B, 1+K, C), row 1+j = patch_out[b*K+j] +
 * pos[1 + keep[b*K+j]]; dpatch_out: (B*K, C) is SET; dpos receives the
 * kept positions' (and the class position's) gradients only. */
void ct_patchify_kept(float *patches, const float *images, const int *keep, int B, int R, int P,
                      int K);
void ct_patch_assemble_kept_forward(float *out, const float *patch_out, const float *cls,
                                    const float *pos, const int *keep, int B, int K, int C);
void ct_patch_assemble_kept_backward(float *dpatch_out, float *dcls, float *dpos,
                                     const float *dout, const int *keep, int B, int K, int C);

/* ---- row selection (class token, end-of-text token) [embed] ---- */
/* out: (B, C) = in[b, idx[b], :]; in: (B, T, C); idx: (B) */
void ct_rows_gather(float *out, const float *in, const int *idx, int B, int T, int C);
/* out: (B, C) = in: (B, C), rows selected already (readout pruning) */
void ct_rows_copy(float *out, const float *in, int B, int C);
/* out: (B, C) += in[b, idx[b], :]: the pruned block's residual add
 * [elementwise] */
void ct_rows_gather_add(float *out, const float *in, const int *idx, int B, int T, int C);
/* din: (B, T, C) += scatter of dout: (B, C) */
void ct_rows_scatter_add(float *din, const float *dout, const int *idx, int B, int T, int C);
/* idx: (B) = position of the largest id in each row of tokens: (B, T); the
 * first one on ties, as torch.argmax. */
void ct_tokens_argmax(int *idx, const int32_t *tokens, int B, int T);

/* ---- L2 normalisation of rows [elementwise] ---- */
/* out: (N, E); norm: (N) saved; in: (N, E) */
void ct_l2norm_forward(float *out, float *norm, const float *in, int N, int E);
/* din: (N, E) +=; out, norm from forward */
void ct_l2norm_backward(float *din, const float *dout, const float *out, const float *norm,
                        int N, int E);

/* ---- ResNet kernels (conv.c, pool.c, batchnorm.c, relu.c,
 * attnpool.c).  Feature maps are rows: (B, H, W, C) stored as a
 * (B*H*W, C) matrix, so that a 1x1 convolution is a linear layer. ---- */

/* A convolution's shapes: input (B, H, W, C) rows, or (B, C, H, W) when
 * nchw (the images); weight (OC, C, K, K) as nn.Conv2d's, no bias;
 * output (B, Ho, Wo, OC) rows.  ct_conv2d_forward and _backward:
 * [conv_fwd], [conv_bwd_data], [conv_bwd_weights], [im2col] */
typedef struct {
  int C, H, W, OC, K, stride, pad, nchw;
  int Ho, Wo;
} CtConv;

/* im2col works on chunks of samples of at most this many floats (or one
 * sample when a sample is larger). */
#define CT_CONV_COL_BUDGET ((size_t) 1 << 22)

void ct_conv_init(CtConv *cv, int C, int H, int W, int OC, int K, int stride, int pad,
                  int nchw);
/* Samples an im2col chunk holds, for a batch of B. */
int ct_conv_chunk(const CtConv *cv, int B);
/* Floats of the im2col scratch (and of the same-sized dcol scratch) for a
 * batch of B at PREC; 0 when none is needed. */
size_t ct_conv_col_floats(const CtConv *cv, int B, CtPrecision prec);
/* Floats of the weight scratch wr: the weight permuted to (OC, K, K, C)
 * and its gradient when K > 1, the rounded weight at bf16/fp16; 0 when
 * none is needed. */
size_t ct_conv_wr_floats(const CtConv *cv, CtPrecision prec);
/* out: (B*Ho*Wo, OC) = conv(in); col: ct_conv_col_floats() scratch;
 * wr: ct_conv_wr_floats() scratch (NULL when 0);
 * in: (B*H*W, C) or (B, C, H, W); w: (OC, C, K, K).  At bf16/fp16 the
 * operands and the result are rounded (lowp.c's rule); IN is not
 * changed (the rounding happens in the im2col copy). */
void ct_conv2d_forward(CtPrecision prec, float *out, float *col, float *wr, const float *in,
                       const float *w, const CtConv *cv, int B);
/* din: (B*H*W, C) +=, NULL to skip (must be NULL for an nchw input);
 * dw: (OC, C, K, K) +=, NULL to skip; col, dcol: scratch as above;
 * dout: (B*Ho*Wo, OC), rounded in place at bf16/fp16. */
void ct_conv2d_backward(CtPrecision prec, float *din, float *dw, float *col, float *dcol,
                        float *wr, float *dout, const float *in, const float *w,
                        const CtConv *cv, int B);

/* ---- average pooling, kernel = stride = s (nn.AvgPool2d(s)) [pool] ---- */
/* out: (B, H/s, W/s, C) rows; in: (B, H, W, C) rows; remainders dropped */
void ct_avgpool_forward(float *out, const float *in, int B, int H, int W, int C, int s);
/* din: (B, H, W, C) +=; dout: (B, H/s, W/s, C) */
void ct_avgpool_backward(float *din, const float *dout, int B, int H, int W, int C, int s);

/* ---- BatchNorm2d over rows (N, C), eps 1e-5, momentum 0.1 [batchnorm] ----
 * out: (N, C); mean, rstd: (C) saved for backward (the batch's when
 * TRAINING, else the running ones'); run_mean, run_var: (C) running
 * statistics: read in eval mode, updated in training mode (unbiased
 * variance), or NULL in training mode to leave them (recomputation);
 * in: (N, C); w, b: (C). */
void ct_batchnorm_forward(float *out, float *mean, float *rstd, float *run_mean,
                          float *run_var, const float *in, const float *w, const float *b,
                          int N, int C, int training);
/* din: (N, C) +=; dw, db: (C) +=; any may be NULL; the rest as saved by
 * forward in the same mode. */
void ct_batchnorm_backward(float *din, float *dw, float *db, const float *dout,
                           const float *in, const float *mean, const float *rstd,
                           const float *w, int N, int C, int training);
/* The same with what follows it in one pass: out = relu(bn(in) + res),
 * res: (N, C) or NULL (nothing added), the ReLU only when RELU; OUT may
 * be RES. */
void ct_batchnorm_relu_forward(float *out, float *mean, float *rstd, float *run_mean,
                               float *run_var, const float *in, const float *w, const float *b,
                               const float *res, int relu, int N, int C, int training);
/* out = [relu](bn(in) [+ res]) with the statistics MEAN and RSTD a
 * forward saved: the bits of that forward's output, for recomputing it
 * in backward; RES as in ct_batchnorm_relu_forward. */
void ct_batchnorm_relu_apply(float *out, const float *mean, const float *rstd, const float *in,
                             const float *w, const float *b, const float *res, int relu, int N,
                             int C);
/* The backward of ct_batchnorm_relu_forward without res: with RELU, DOUT
 * is masked where bn(in) <= 0, recomputed from in, the statistics, w and b
 * (the forward's operations, so the same mask); b may be NULL without
 * RELU. */
void ct_batchnorm_relu_backward(float *din, float *dw, float *db, const float *dout,
                                const float *in, const float *mean, const float *rstd,
                                const float *w, const float *b, int relu, int N, int C,
                                int training);

/* ---- ReLU [relu] ---- */
/* out, in: (n); out may equal in */
void ct_relu_forward(float *out, const float *in, size_t n);
/* d: (n) in place: d = d where out > 0, else 0 (out: the forward output) */
void ct_relu_backward(float *d, const float *out, size_t n);
/* ReLU's mask kept as bits: bits: ((n + 7) / 8 bytes), bit i % 8 of byte
 * i / 8 = out[i] > 0 (out: (n)); then d: (n) in place = d where the bit is
 * set, else 0, the same bits as ct_relu_backward on OUT. */
void ct_relu_mask_bits(uint8_t *bits, const float *out, size_t n);
void ct_relu_backward_bits(float *d, const uint8_t *bits, size_t n);

/* ---- AttentionPool2d's attention: one query per image ----
 * q: (B, C) token 0's query; k, v: (B, T, C); H heads of D = C / H;
 * out: (B, C); att: (B, H, T) probabilities, saved.  T <= 1024.
 * [attnpool], the tokens ct_poolattn_tokens_* as well */
void ct_poolattn_forward(float *out, float *att, const float *q, const float *k, const float *v,
                         int B, int T, int C, int H, CtPrecision prec);
/* dq: (B, C) +=; dk, dv: (B, T, C) +=; dout: (B, C) */
void ct_poolattn_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                          const float *k, const float *v, const float *att, int B, int T,
                          int C, int H, CtPrecision prec);
/* X: (B, HW+1, C) = [mean over HW of x ; x] + pos; x: (B, HW, C); pos: (HW+1, C) */
void ct_poolattn_tokens_forward(float *X, const float *x, const float *pos, int B, int HW,
                                int C);
/* dx: (B, HW, C) +=; dpos: (HW+1, C) +=; dX: (B, HW+1, C) */
void ct_poolattn_tokens_backward(float *dx, float *dpos, const float *dX, int B, int HW, int C);

#endif

/* resnet-private.h: the ModifiedResNet image tower's layout (OpenAI's
 * clip/model.py): parameter views, running-statistics buffers, and the
 * activations of a pass.  Feature maps are rows (B, H, W, C), see ops.h.
 * Not installed. */
#ifndef CT_RESNET_PRIVATE_H
#define CT_RESNET_PRIVATE_H

#include "kernels/ops.h"

/* A BatchNorm2d's gain and bias (parameter or gradient views), (C) each. */
typedef struct {
  float *w, *b;
} CtBnParams;

/* A BatchNorm2d's running statistics (buffer views), (C) each. */
typedef struct {
  float *mean, *var;
} CtBnBuffers;

/* One Bottleneck's tensors, in state-dict order (views). */
typedef struct {
  float *conv1_w;    /* (P, Cin, 1, 1) */
  CtBnParams bn1;    /* (P) */
  float *conv2_w;    /* (P, P, 3, 3) */
  CtBnParams bn2;    /* (P) */
  float *conv3_w;    /* (4P, P, 1, 1) */
  CtBnParams bn3;    /* (4P) */
  float *ds_w;       /* (4P, Cin, 1, 1) downsample.0, NULL without a downsample */
  CtBnParams ds_bn;  /* (4P) downsample.1 */
} CtBottleneckParams;

/* One Bottleneck: input (B, H, W, Cin), output (B, H/s, W/s, 4P). */
typedef struct {
  int Cin, P, s, H, W, Ho, Wo, ds; /* ds: has a downsample branch */
  CtConv cv1, cv2, cv3, cvd;
  CtBottleneckParams p, g;
  CtBnBuffers b1, b2, b3, bd;
  /* activations for B images (views into the arena); with activation
   * checkpointing the blocks of different segments share them, except
   * each segment's input x */
  float *x;          /* (B*H*W, Cin) input: the previous block's y */
  float *c1, *r1;    /* (B*H*W, P) conv1 output; relu(bn1(c1)) */
  float *c2, *r2;    /* (B*H*W, P) conv2 output; relu(bn2(c2)) */
  float *p2;         /* (B*Ho*Wo, P) avgpool(r2); r2 itself when s == 1 */
  float *c3;         /* (B*Ho*Wo, 4P) conv3 output */
  float *px;         /* (B*Ho*Wo, Cin) avgpool(x); x itself when s == 1 */
  float *cd;         /* (B*Ho*Wo, 4P) downsample conv output, or NULL */
  float *y;          /* (B*Ho*Wo, 4P) relu(bn3(c3) + shortcut) */
  float *stats;      /* (2 * (P + P + 4P + 4P)) mean and rstd of bn1, bn2, bn3, downsample */
  /* at bf16/fp16: c1 .. cd above (not x, y) are views into one float32
   * work area that all blocks share, and the block keeps them here as
   * 16-bit codes: c1, r1, c2, then r2 (s == 1) or p2 (s > 1), c3, px (a
   * downsample with s > 1), cd.  Each of them is rounded before any use
   * in backward (a convolution's output, or its input), so keeping the
   * codes loses nothing; NULL at float32 */
  uint16_t *h;
  /* at bf16/fp16, a block whose output is not kept in float32 (all but a
   * segment's last): y lives in a float32 buffer (g[2] or g[0|1], free in
   * the forward) until the next block has read it, then the block keeps it
   * as 16-bit codes and ReLU's mask as bits.  The forward's residual add
   * reads the float32 y; backward reads y only as the next block's
   * convolution input (rounded there: the codes lose nothing) and through
   * the mask.  NULL when y is kept */
  /* without checkpointing, an output that is not its stage's last may be
   * recomputed in backward instead of kept (at any precision, in float32):
   * y then lives in g[1] or g[2] (free in the forward) until the next
   * block has read it, and backward recomputes it into yr, in the
   * activations of the stages above, which are dead by then
   * (ct_resnet_recompute_outputs); yf is the forward's home.  yr NULL: y
   * is kept */
  float *yf, *yr;
  uint16_t *yh;      /* (B*Ho*Wo*4P) */
  uint8_t *ym;       /* (B*Ho*Wo*4P bits) y > 0 */
  uint16_t *xh;      /* x's codes: the block below's yh, or NULL */
  float *xb;         /* x in backward: decoded from xh into the work area, or x */
} CtBottleneck;

/* The stem's and the attention pool's tensors (views). */
typedef struct {
  float *conv1_w;           /* (W/2, 3, 3, 3) */
  CtBnParams bn1;           /* (W/2) */
  float *conv2_w;           /* (W/2, W/2, 3, 3) */
  CtBnParams bn2;           /* (W/2) */
  float *conv3_w;           /* (W, W/2, 3, 3) */
  CtBnParams bn3;           /* (W) */
  float *pos;               /* (T, C) attnpool.positional_embedding */
  float *k_w, *k_b;         /* (C, C), (C) */
  float *q_w, *q_b;
  float *v_w, *v_b;
  float *c_w, *c_b;         /* (E, C), (E) c_proj */
} CtResNetParams;

/* The tower: stem, blocks, attention pool. */
typedef struct {
  int W, R, E, H;             /* stem width, resolution, output dim, pool heads */
  int C, S, T;                /* pool width 32 W, final grid R/32, tokens S*S+1 */
  int nblocks;
  CtBottleneck *blocks;       /* (nblocks) layer1.0 .. layer4.N */
  /* stage k's blocks are [stage0[k], stage0[k + 1]); keep_y[k]: its block
   * outputs are all kept (FALSE: recomputed in backward, see yr) */
  int stage0[5];
  gboolean keep_y[4];
  float *stage_at[4];         /* where stage k's first block starts in the arena */
  /* stem and pool parameters: [0] values, [1] gradients */
  CtResNetParams sp[2];
  CtBnBuffers sb1, sb2, sb3;  /* the stem's running statistics */
  CtConv scv1, scv2, scv3;    /* stem convolutions: R -> R/2 (stride 2), R/2, R/2 */
  /* checkpointing: segments of seglen blocks (nseg 1 without) */
  int nseg, seglen;
  int held_seg;               /* the segment whose activations the shared region holds */
  uint64_t gen, held_gen;     /* forward passes; the pass held_seg belongs to */
  int training;               /* the BatchNorm mode of the last forward */
  int frozen_groups;          /* the tower's frozen lock groups at the last forward */
  int frozen_blocks;          /* blocks [0, frozen_blocks) run no backward (frozen groups) */
  int bn_eval_blocks;         /* blocks [0, bn_eval_blocks) run BatchNorm in eval mode */
  int bn_eval_stem;           /* the stem's BatchNorm in eval mode (freeze_bn_stats) */
  /* activations (views into the arena) */
  int B;
  float *img;                 /* (B, 3, R, R) the images, for conv1's weight gradient */
  float *s1c, *s1r;           /* (B*R/2*R/2, W/2) stem conv1 output, relu(bn1) */
  float *s2c, *s2r;           /* (B*R/2*R/2, W/2) */
  float *s3c, *s3r;           /* (B*R/2*R/2, W) */
  float *sstats;              /* (2 * (W/2 + W/2 + W)) stem BN mean and rstd */
  /* at bf16/fp16: s1c, s2c, s3c (each rounded: a convolution's output)
   * are views into the work area, and the stem keeps them here as 16-bit
   * codes, in that order; NULL at float32 */
  uint16_t *sh;
  float *stem_out;            /* (B*R/4*R/4, W) avgpool(s3r): layer1.0's input */
  float *out;                 /* (B*S*S, 4*8W = C) layer4's output */
  float *X;                   /* (B, T, C) pool tokens: [mean ; out] + pos */
  float *q0;                  /* (B, C) token 0 of each image */
  float *q;                   /* (B, C) */
  float *k, *v;               /* (B*T, C) */
  float *att;                 /* (B, H, T) */
  float *o;                   /* (B, C) attention output, before c_proj */
  /* work space */
  float *col, *dcol;          /* (largest im2col) */
  float *work;                /* bf16/fp16: one block's float32 tensors (CtBottleneck.h),
                               * or the stem's s1c, s2c, s3c */
  float *wr;                  /* (largest ct_conv_wr_floats, and the pool's rounded
                               * weights at bf16/fp16) */
  float *g[4];                /* gradients in backward: [0..2] (largest map),
                               * [3] (the largest T2 of block_backward, or
                               * (B*R/2*R/2, W/2)) */
  float *dX, *dk, *dv;        /* (B*T, C) */
  float *dq, *dq0, *dO;       /* (B, C) */
} CtResNet;

#endif

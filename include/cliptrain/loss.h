/* loss.h: CLIP's symmetric contrastive loss, and SigLIP's sigmoid loss. */
#ifndef CLIPTRAIN_LOSS_H
#define CLIPTRAIN_LOSS_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

/* The CLIP loss over B image and B text features (rows L2-normalised):
 *   logits = exp(logit_scale) * img @ txt^T          (B, B), logits_per_image
 *   loss   = (CE(logits, diag) + CE(logits^T, diag)) / 2, each a mean over rows
 *
 * logits:  (B, B) output, always written.
 * d_img, d_txt: (B, E) gradients of the loss, SET (not accumulated); NULL
 *          to skip.  d_logit_scale: (1) SET, NULL to skip.
 * scratch: (B, B) work space, needed when any gradient is asked for.
 * img, txt: (B, E).
 * Returns the loss.  Allocates nothing; every product is a cblas_sgemm. */
CT_API double ct_clip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
                           float *scratch, const float *img, const float *txt,
                           float logit_scale, int B, int E);

/* One direction of the loss for B query rows against G key rows, the
 * rows' own keys at OFFSET .. OFFSET + B - 1 (DistributedCLIPTrainer: a
 * rank's rows against the gathered batch):
 *   logits = exp(logit_scale) * q @ k^T                 (B, G)
 *   loss   = WEIGHT * sum_i (logsumexp_j logits_ij - logits_i,OFFSET+i)
 * With G = B, OFFSET 0 and WEIGHT 1 / (2B), the two directions (images
 * against texts, texts against images) add up to ct_clip_loss().
 *
 * logits, scratch: (B, G).  d_q: (B, E) and d_k: (G, E) gradients, SET;
 * d_logit_scale: (1) SET; each may be NULL.  B may be 0 (then the loss is
 * 0 and d_k is zeroed).  Returns the (weighted) loss.  Allocates nothing. */
CT_API double ct_clip_loss_rows(float *logits, float *d_q, float *d_k, float *d_logit_scale,
                                float *scratch, const float *q, const float *k, int offset,
                                float logit_scale, double weight, int B, int G, int E);

/* SigLIP's sigmoid loss (Zhai et al. 2023) for B image rows against G text
 * rows, image i's own caption being text OFFSET + i:
 *   z_ij  = exp(logit_scale) * <img_i, txt_j> + logit_bias       (B, G)
 *   y_ij  = +1 where j = OFFSET + i, -1 elsewhere
 *   loss  = -WEIGHT * sum_ij log sigmoid(y_ij z_ij)
 * With G = B, OFFSET 0 and WEIGHT 1 / B it is open_clip's SigLipLoss on one
 * process; a rank of N gives its own images against the gathered texts of
 * every rank, weighted 1 / (global batch).
 *
 * logits: (CT_SIGLIP_CHUNK_ROWS(CHUNK), G) work space: the loss runs
 *         CHUNK image rows at a time, rounded up to a multiple of
 *         CT_SIGLIP_BLOCK (the rows of one matrix product), and holds no
 *         more logits than that; the results are bit-identical for any
 *         CHUNK >= 1.
 * d_img: (B, E), d_txt: (G, E): gradients of the loss, SET; d_txt is what
 *         these rows' terms say of every text.  d_logit_scale,
 *         d_logit_bias: (1) SET.  Each may be NULL.
 * img: (B, E), txt: (G, E).  B may be 0 (the loss and d_txt are then 0).
 * Returns the (weighted) loss.  Allocates nothing; every product is a
 * cblas_sgemm (ct_sgemm). */
#define CT_SIGLIP_BLOCK 16
#define CT_SIGLIP_CHUNK_ROWS(chunk) \
  ((((chunk) + CT_SIGLIP_BLOCK - 1) / CT_SIGLIP_BLOCK) * CT_SIGLIP_BLOCK)
CT_API double ct_siglip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
                             float *d_logit_bias, const float *img, const float *txt,
                             int offset, float logit_scale, float logit_bias, double weight,
                             int B, int G, int E, int chunk);

G_END_DECLS

#endif

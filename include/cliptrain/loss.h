/* loss.h: CLIP's symmetric contrastive loss. */
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

G_END_DECLS

#endif

/* siglip-loss.c: SigLIP's sigmoid loss (Zhai et al. 2023) and its
 * gradients, one block of image rows at a time.
 *
 * Each image row's products are sgemm calls of their own, of one shape
 * whatever the block size (a row against every text; a row's gradient; a
 * rank-1 update of the texts' gradient), and the sums over rows run in row
 * order, in double: the results are bit-identical for any CHUNK.  (One
 * sgemm over a block of rows would round differently for blocks of other
 * heights: OpenBLAS tiles rows, and switches kernels for small products.)
 * The block only bounds the memory, CHUNK x G logits. */
#include "config.h"

#include <cliptrain/loss.h>

#include "base/profile-private.h"

#include <math.h>
#include <string.h>

/* -log sigmoid(m) and sigmoid(-m) from one exp, without overflow:
 *   -log sigmoid(m) = max(-m, 0) + log1p(e^-|m|)
 *   sigmoid(-m) = e^-m / (1 + e^-m) for m >= 0, 1 / (1 + e^m) below */
static double
neg_log_sigmoid(double m, double *sig_neg)
{
  double e = exp(-fabs(m));
  *sig_neg = m >= 0 ? e / (1.0 + e) : 1.0 / (1.0 + e);
  return fmax(-m, 0.0) + log1p(e);
}

static double
siglip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
            float *d_logit_bias, const float *img, const float *txt, int offset,
            float logit_scale, float logit_bias, double weight, int B, int G, int E, int chunk)
{
  float s = expf(logit_scale);
  gboolean grad = d_img || d_txt || d_logit_scale || d_logit_bias;
  double loss = 0.0, dt = 0.0, db = 0.0;
  if (d_txt)
    memset(d_txt, 0, sizeof(float) * (size_t) G * E);
  for (int r0 = 0; r0 < B; r0 += chunk) {
    int c = MIN(chunk, B - r0);
    for (int r = 0; r < c; r++) /* (1, G) s <img_i, txt_j>, one row per product */
      ct_sgemm(FALSE, TRUE, 1, G, E, s, img + (size_t) (r0 + r) * E, E, txt, E, 0.0f,
               logits + (size_t) r * G, G);
    for (int r = 0; r < c; r++) {
      float *row = logits + (size_t) r * G; /* (G) s <img, txt>, then d loss / d logits */
      int pos = offset + r0 + r;
      double row_loss = 0.0, row_dt = 0.0, row_db = 0.0;
      for (int j = 0; j < G; j++) {
        double y = j == pos ? 1.0 : -1.0;
        double z = (double) (row[j] + logit_bias);
        double sig_neg;
        row_loss += neg_log_sigmoid(y * z, &sig_neg);
        /* d (-log sigmoid(y z)) / d z = -y sigmoid(-y z) */
        float dl = (float) (weight * -y * sig_neg);
        row_dt += (double) dl * row[j]; /* d z / d t = s <img, txt> */
        row_db += dl;
        row[j] = dl;
      }
      loss += row_loss;
      dt += row_dt;
      db += row_db;
    }
    if (!grad)
      continue;
    for (int r = 0; r < c; r++) {
      const float *dl = logits + (size_t) r * G; /* (G) */
      const float *im = img + (size_t) (r0 + r) * E;
      if (d_img) /* (1, E) = s dl (1, G) @ txt (G, E) */
        ct_sgemm(FALSE, FALSE, 1, E, G, s, dl, G, txt, E, 0.0f, d_img + (size_t) (r0 + r) * E,
                 E);
      if (d_txt) /* (G, E) += s dl^T (G, 1) @ img_i (1, E), rows in order */
        ct_sgemm(FALSE, FALSE, G, E, 1, s, dl, 1, im, E, 1.0f, d_txt, E);
    }
  }
  if (d_logit_scale)
    *d_logit_scale = (float) dt;
  if (d_logit_bias)
    *d_logit_bias = (float) db;
  return loss * weight;
}

double
ct_siglip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
               float *d_logit_bias, const float *img, const float *txt, int offset,
               float logit_scale, float logit_bias, double weight, int B, int G, int E,
               int chunk)
{
  g_return_val_if_fail(chunk > 0 && B >= 0 && G > 0 && offset >= 0 && offset + B <= G, NAN);
  double loss;
  PROF(CT_PROF_LOSS, loss = siglip_loss(logits, d_img, d_txt, d_logit_scale, d_logit_bias, img,
                                        txt, offset, logit_scale, logit_bias, weight, B, G, E,
                                        chunk));
  return loss;
}

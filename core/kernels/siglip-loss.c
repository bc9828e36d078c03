/* siglip-loss.c: SigLIP's sigmoid loss (Zhai et al. 2023) and its
 * gradients, one block of image rows at a time.
 *
 * The products run over fixed blocks of CT_SIGLIP_BLOCK image rows that
 * start at multiples of it (the rows against every text; the rows'
 * gradient; their update of the texts' gradient, blocks in order), and the
 * sums over rows run in row order, in double: every product has the same
 * operands and shape whatever CHUNK, so the results are bit-identical for
 * any CHUNK.  (A product over a chunk's rows would round differently for
 * chunks of other heights: OpenBLAS tiles rows, and switches kernels for
 * small products.)  A chunk is a whole number of blocks, and bounds the
 * memory: CT_SIGLIP_CHUNK_ROWS(chunk) x G logits. */
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

/* The loss terms of H rows of logits (H, G), each row's sums in double
 * added to the totals in row order; the rows become d loss / d logits. */
static void
block_terms(float *logits, int h, int first, int offset, float logit_bias, double weight, int G,
            double *loss, double *dt, double *db)
{
  for (int r = 0; r < h; r++) {
    float *row = logits + (size_t) r * G; /* (G) s <img, txt>, then d loss / d logits */
    int pos = offset + first + r;
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
    *loss += row_loss;
    *dt += row_dt;
    *db += row_db;
  }
}

static double
siglip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
            float *d_logit_bias, const float *img, const float *txt, int offset,
            float logit_scale, float logit_bias, double weight, int B, int G, int E, int chunk)
{
  float s = expf(logit_scale);
  gboolean grad = d_img || d_txt || d_logit_scale || d_logit_bias;
  double loss = 0.0, dt = 0.0, db = 0.0;
  int rows = CT_SIGLIP_CHUNK_ROWS(chunk); /* a multiple of the block */
  if (d_txt)
    memset(d_txt, 0, sizeof(float) * (size_t) G * E);
  for (int r0 = 0; r0 < B; r0 += rows) {
    int c = MIN(rows, B - r0);
    /* blocks start at multiples of CT_SIGLIP_BLOCK whatever the chunk */
    for (int q = 0; q < c; q += CT_SIGLIP_BLOCK) {
      int h = MIN(CT_SIGLIP_BLOCK, c - q);
      float *lg = logits + (size_t) q * G; /* (h, G) s <img_i, txt_j> */
      ct_sgemm(FALSE, TRUE, h, G, E, s, img + (size_t) (r0 + q) * E, E, txt, E, 0.0f, lg, G);
      block_terms(lg, h, r0 + q, offset, logit_bias, weight, G, &loss, &dt, &db);
    }
    if (!grad)
      continue;
    for (int q = 0; q < c; q += CT_SIGLIP_BLOCK) {
      int h = MIN(CT_SIGLIP_BLOCK, c - q);
      const float *dl = logits + (size_t) q * G;      /* (h, G) */
      const float *im = img + (size_t) (r0 + q) * E;  /* (h, E) */
      if (d_img) /* (h, E) = s dl (h, G) @ txt (G, E) */
        ct_sgemm(FALSE, FALSE, h, E, G, s, dl, G, txt, E, 0.0f, d_img + (size_t) (r0 + q) * E,
                 E);
      if (d_txt) /* (G, E) += s dl^T (G, h) @ img (h, E), blocks in order */
        ct_sgemm(TRUE, FALSE, G, E, h, s, dl, G, im, E, 1.0f, d_txt, E);
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

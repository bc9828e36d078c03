/* loss.c: the CLIP contrastive loss and its gradients. */
#include "config.h"

#include <cliptrain/loss.h>

#include "base/profile-private.h"

#include <math.h>
#include <string.h>

static double
clip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale, float *scratch,
          const float *img, const float *txt, float logit_scale, int B, int E);

double
ct_clip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale,
             float *scratch, const float *img, const float *txt,
             float logit_scale, int B, int E)
{
  double loss;
  PROF(CT_PROF_LOSS, loss = clip_loss(logits, d_img, d_txt, d_logit_scale, scratch, img, txt,
                                      logit_scale, B, E));
  return loss;
}

static double
clip_loss(float *logits, float *d_img, float *d_txt, float *d_logit_scale, float *scratch,
          const float *img, const float *txt, float logit_scale, int B, int E)
{
  float s = expf(logit_scale);
  ct_sgemm(FALSE, TRUE, B, B, E, s, img, E, txt, E, 0.0f,
              logits, B);
  int want_grad = d_img || d_txt || d_logit_scale;
  float *dl = scratch; /* (B, B) d loss / d logits */
  double loss = 0.0;
  float w = 0.5f / (float) B;

  /* rows: image -> text */
  for (int i = 0; i < B; i++) {
    const float *row = logits + (size_t) i * B;
    double mx = row[0];
    for (int j = 1; j < B; j++)
      mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < B; j++)
      sum += exp(row[j] - mx);
    double lse = mx + log(sum);
    loss += lse - row[i];
    if (want_grad)
      for (int j = 0; j < B; j++)
        dl[(size_t) i * B + j] = w * ((float) exp(row[j] - lse) - (i == j));
  }
  /* columns: text -> image */
  for (int j = 0; j < B; j++) {
    double mx = logits[j];
    for (int i = 1; i < B; i++)
      mx = logits[(size_t) i * B + j] > mx ? logits[(size_t) i * B + j] : mx;
    double sum = 0.0;
    for (int i = 0; i < B; i++)
      sum += exp(logits[(size_t) i * B + j] - mx);
    double lse = mx + log(sum);
    loss += lse - logits[(size_t) j * B + j];
    if (want_grad)
      for (int i = 0; i < B; i++)
        dl[(size_t) i * B + j] += w * ((float) exp(logits[(size_t) i * B + j] - lse) - (i == j));
  }
  loss /= 2.0 * B;
  if (!want_grad)
    return loss;

  if (d_logit_scale) {
    /* logits = e^s G, so d logits / d s = logits */
    double g = 0.0;
    for (size_t k = 0; k < (size_t) B * B; k++)
      g += (double) dl[k] * logits[k];
    *d_logit_scale = (float) g;
  }
  if (d_img)
    ct_sgemm(FALSE, FALSE, B, E, B, s, dl, B, txt, E, 0.0f,
                d_img, E);
  if (d_txt)
    ct_sgemm(TRUE, FALSE, B, E, B, s, dl, B, img, E, 0.0f,
                d_txt, E);
  return loss;
}

static double
rows_loss(float *logits, float *d_q, float *d_k, float *d_logit_scale, float *scratch,
          const float *q, const float *k, int offset, float logit_scale, double weight, int B,
          int G, int E)
{
  float s = expf(logit_scale);
  ct_sgemm(FALSE, TRUE, B, G, E, s, q, E, k, E, 0.0f, logits, G);
  gboolean want_grad = d_q || d_k || d_logit_scale;
  float *dl = scratch; /* (B, G) d loss / d logits */
  double loss = 0.0;
  for (int i = 0; i < B; i++) {
    const float *row = logits + (size_t) i * G;
    double mx = row[0];
    for (int j = 1; j < G; j++)
      mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < G; j++)
      sum += exp(row[j] - mx);
    double lse = mx + log(sum);
    loss += lse - row[offset + i];
    if (want_grad)
      for (int j = 0; j < G; j++)
        dl[(size_t) i * G + j] = (float) weight * ((float) exp(row[j] - lse) - (j == offset + i));
  }
  if (d_logit_scale) { /* logits = e^s G, so d logits / d s = logits */
    double g = 0.0;
    for (size_t x = 0; x < (size_t) B * G; x++)
      g += (double) dl[x] * logits[x];
    *d_logit_scale = (float) g;
  }
  if (d_q)
    ct_sgemm(FALSE, FALSE, B, E, G, s, dl, G, k, E, 0.0f, d_q, E);
  if (d_k)
    ct_sgemm(TRUE, FALSE, G, E, B, s, dl, G, q, E, 0.0f, d_k, E);
  return loss * weight;
}

double
ct_clip_loss_rows(float *logits, float *d_q, float *d_k, float *d_logit_scale, float *scratch,
                  const float *q, const float *k, int offset, float logit_scale, double weight,
                  int B, int G, int E)
{
  if (B == 0) { /* no rows: no loss, and no gradient for the keys */
    if (d_k)
      memset(d_k, 0, sizeof(float) * (size_t) G * E);
    if (d_logit_scale)
      *d_logit_scale = 0.0f;
    return 0.0;
  }
  double loss;
  PROF(CT_PROF_LOSS, loss = rows_loss(logits, d_q, d_k, d_logit_scale, scratch, q, k, offset,
                                      logit_scale, weight, B, G, E));
  return loss;
}

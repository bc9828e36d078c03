/* classes.c: zero-shot class vectors and class ranks, as the zero_shot
 * metric, `cliptrain eval` and `cliptrain zeroshot --data` compute them. */
#include "config.h"

#include <cliptrain/model.h>

#include <math.h>
#include <string.h>

static void
normalise(float *x, int n)
{
  double ss = 0;
  for (int i = 0; i < n; i++)
    ss += (double) x[i] * x[i];
  float inv = ss > 0 ? (float) (1 / sqrt(ss)) : 0.0f;
  for (int i = 0; i < n; i++)
    x[i] *= inv;
}

gboolean
ct_model_class_vectors(CtModel *m, const int32_t *prompts, int n_classes, int n_templates,
                       float *out, GError **error)
{
  const CtConfig *c = ct_model_config(m);
  int P = n_classes * n_templates, T = c->context_length, E = c->embed_dim;
  int mb = ct_model_max_batch(m);
  float *tmp = g_new(float, E); /* (E) one prompt's features */
  memset(out, 0, sizeof(float) * (size_t) n_classes * E);
  gboolean ok = TRUE;
  for (int p0 = 0; p0 < P && ok; p0 += mb) {
    int b = MIN(mb, P - p0);
    if (!(ok = ct_model_encode_text(m, prompts + (size_t) p0 * T, b, error)))
      break;
    const float *f = ct_model_text_features(m);
    for (int i = 0; i < b; i++) {
      memcpy(tmp, f + (size_t) i * E, sizeof(float) * E);
      normalise(tmp, E);
      float *dst = out + (size_t) ((p0 + i) / n_templates) * E;
      for (int e = 0; e < E; e++)
        dst[e] += tmp[e];
    }
  }
  for (int k = 0; k < n_classes && ok; k++)
    normalise(out + (size_t) k * E, E);
  g_free(tmp);
  return ok;
}

int
ct_class_rank(const float *logits, int n_classes, int truth)
{
  int r = 0;
  for (int k = 0; k < n_classes; k++)
    r += k < truth ? logits[k] >= logits[truth] : logits[k] > logits[truth];
  return r;
}

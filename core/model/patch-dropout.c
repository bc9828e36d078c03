/* patch-dropout.c: FLIP's patch dropout for the ViT image tower, as
 * open_clip's PatchDropout: in training mode each image keeps
 * K = max(1, floor(GG * (1 - p))) of its GG patch tokens, chosen at
 * random, and the class token; eval mode keeps them all.
 *
 * The draw for sample b of the forward keyed KEY (the learner's training
 * step) is a function of (seed, key, b) only, a counter-based stream: no
 * generator state to save, so a resumed run draws what an unstopped one
 * does, and a forward repeated under the same key (gradient accumulation
 * recomputing a micro-batch) keeps the same patches.
 *
 * The kept indices are ascending.  open_clip keeps them in the order of
 * its random ranking; the order does not matter: after the positional
 * embedding (added per patch) the blocks are permutation-equivariant over
 * the rows (no mask in the image tower) and the tower reads the class
 * token, row 0, which stays first.  Sorted indices make the gather walk
 * the image in order and the draw easy to compare. */
#include "config.h"

#include "model/model-private.h"
#include <cliptrain/rng.h>

#define PDROP_TAG 0x70646f7270ull /* "pdrop": apart from the weights' streams */

int
ct_patch_dropout_count(int GG, double prob)
{
  int k = (int) (GG * (1.0 - prob)); /* open_clip: int(num_tokens * keep_prob) */
  return MAX(1, MIN(k, GG));
}

/* KEEP: (K) a uniform K-subset of [0, GG), ascending: selection sampling
 * (Knuth's algorithm S), one draw a candidate. */
static void
draw_one(int *keep, CtRng *rng, int GG, int K)
{
  int n = 0;
  for (int i = 0; i < GG && n < K; i++)
    if (ct_rng_below(rng, (uint64_t) (GG - i)) < (uint64_t) (K - n))
      keep[n++] = i;
}

const int *
ct_patch_dropout_draw(CtModel *m, int B, int GG, int *K)
{
  *K = GG;
  if (!m->training || m->pdrop <= 0 || !m->pdrop_keep)
    return NULL;
  int k = ct_patch_dropout_count(GG, m->pdrop);
  if (k >= GG)
    return NULL;
  CtRng r;
  ct_rng_init_stream(&r, m->pdrop_seed ^ PDROP_TAG, m->pdrop_key);
  uint64_t batch_seed = ct_rng_next(&r);
  for (int b = 0; b < B; b++) {
    ct_rng_init_stream(&r, batch_seed, (uint64_t) b);
    draw_one(m->pdrop_keep + (size_t) b * k, &r, GG, k);
  }
  *K = k;
  return m->pdrop_keep;
}

gboolean
ct_model_set_patch_dropout(CtModel *m, double prob, uint64_t seed, GError **error)
{
  g_return_val_if_fail(m != NULL, FALSE);
  if (!(prob >= 0 && prob < 1)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "patch dropout %g is out of range: expected 0 <= p < 1", prob);
    return FALSE;
  }
  if (prob > 0 && ct_config_is_resnet(&m->cfg)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "patch dropout %g needs a ViT image tower; this model's is a ResNet", prob);
    return FALSE;
  }
  m->pdrop = prob;
  m->pdrop_seed = seed;
  return TRUE;
}

double
ct_model_patch_dropout(const CtModel *m)
{
  return m->pdrop;
}

void
ct_model_set_patch_dropout_key(CtModel *m, uint64_t key)
{
  g_return_if_fail(m != NULL);
  m->pdrop_key = key;
}

uint64_t
ct_model_patch_dropout_key(const CtModel *m)
{
  return m->pdrop_key;
}

const int *
ct_model_kept_patches(const CtModel *m, int *k)
{
  g_return_val_if_fail(m != NULL && k != NULL, NULL);
  *k = m->va.K;
  return ct_config_is_resnet(&m->cfg) ? NULL : m->va.keep;
}

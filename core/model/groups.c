/* groups.c: a tower's lock groups (open_clip's LiT locking, layer-wise
 * learning-rate decay) and the frozen groups that backward skips.
 *
 * A transformer tower of L blocks has L + 2 groups, bottom first:
 *   0      the stem: conv1, class and positional embeddings, ln_pre (image);
 *          token and positional embeddings (text)
 *   1+k    block k, for k < L - 1
 *   L      the last block with the final LayerNorm (ln_post / ln_final)
 *   L + 1  the projection (visual.proj / text_projection)
 * as open_clip's VisionTransformer.lock and TextTransformer.lock list them.
 * A ModifiedResNet image tower has 6: 0 the stem (conv1..3, bn1..3),
 * 1..4 layer1..layer4, 5 the attention pool (its c_proj is the
 * projection); open_clip refuses partial locks of this tower, so these
 * groups are cliptrain's (timm's stem/stages/head split). */
#include "config.h"

#include "model/model-private.h"

#include <string.h>

int
ct_tower_index(const char *tower)
{
  if (g_strcmp0(tower, "image") == 0)
    return 0;
  if (g_strcmp0(tower, "text") == 0)
    return 1;
  return -1;
}

int
ct_model_n_lock_groups(const CtModel *m, const char *tower)
{
  g_return_val_if_fail(m != NULL, -1);
  switch (ct_tower_index(tower)) {
  case 0:
    return ct_config_is_resnet(&m->cfg) ? 6 : m->cfg.vision_layers + 2;
  case 1:
    return m->cfg.transformer_layers + 2;
  default:
    return -1;
  }
}

/* The number after PREFIX in NAME ("<k>." follows), or -1. */
static long
index_after(const char *name, const char *prefix)
{
  if (!g_str_has_prefix(name, prefix))
    return -1;
  const char *num = name + strlen(prefix);
  char *end = NULL;
  guint64 k = g_ascii_strtoull(num, &end, 10);
  if (end == num || *end != '.' || k > G_MAXINT)
    return -1;
  return (long) k;
}

static int
resnet_group(const char *rest)
{
  if (g_str_has_prefix(rest, "attnpool."))
    return 5;
  for (int s = 1; s <= 4; s++) {
    char prefix[16];
    g_snprintf(prefix, sizeof prefix, "layer%d.", s);
    if (g_str_has_prefix(rest, prefix))
      return s;
  }
  return 0;
}

/* REST: a name inside a transformer tower without the "visual." prefix;
 * L its blocks.  The stem's tensors are those matched by no other rule. */
static int
stack_group(const char *rest, int L)
{
  long k = index_after(rest, "transformer.resblocks.");
  if (k >= 0 && k < L)
    return k == L - 1 ? L : (int) k + 1;
  return 0;
}

int
ct_model_lock_group(const CtModel *m, size_t i, const char **tower)
{
  g_return_val_if_fail(m != NULL && i < m->infos->len, -1);
  const char *name = g_array_index(m->infos, CtParamInfo, i).name;
  if (tower)
    *tower = NULL;
  if (g_str_has_prefix(name, "visual.")) {
    const char *rest = name + strlen("visual.");
    int L = m->cfg.vision_layers, g;
    if (ct_config_is_resnet(&m->cfg))
      g = resnet_group(rest);
    else if (strcmp(rest, "proj") == 0)
      g = L + 1;
    else if (g_str_has_prefix(rest, "ln_post."))
      g = L;
    else
      g = stack_group(rest, L);
    if (tower)
      *tower = "image";
    return g;
  }
  int L = m->cfg.transformer_layers, g;
  if (strcmp(name, "text_projection") == 0)
    g = L + 1;
  else if (g_str_has_prefix(name, "ln_final."))
    g = L;
  else if (g_str_has_prefix(name, "transformer."))
    g = stack_group(name, L);
  else if (strcmp(name, "token_embedding.weight") == 0 ||
           strcmp(name, "positional_embedding") == 0)
    g = 0;
  else
    return -1; /* logit_scale */
  if (tower)
    *tower = "text";
  return g;
}

gboolean
ct_model_set_frozen_groups(CtModel *m, const char *tower, int n, GError **error)
{
  g_return_val_if_fail(m != NULL, FALSE);
  int t = ct_tower_index(tower);
  if (t < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "no tower '%s': the towers are 'image' and 'text'", tower ? tower : "(null)");
    return FALSE;
  }
  int G = ct_model_n_lock_groups(m, tower);
  if (n < 0 || n > G) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "cannot freeze %d groups of the %s tower: it has %d (0 to %d)", n, tower, G, G);
    return FALSE;
  }
  m->frozen_groups[t] = n;
  return TRUE;
}

int
ct_model_frozen_groups(const CtModel *m, const char *tower)
{
  g_return_val_if_fail(m != NULL, -1);
  int t = ct_tower_index(tower);
  return t < 0 ? -1 : m->frozen_groups[t];
}

void
ct_model_set_freeze_bn_stats(CtModel *m, gboolean on)
{
  g_return_if_fail(m != NULL);
  m->freeze_bn_stats = on ? TRUE : FALSE;
}

gboolean
ct_model_freeze_bn_stats(const CtModel *m)
{
  return m->freeze_bn_stats;
}

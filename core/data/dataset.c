/* dataset.c: the dataset table, and synthetic samples. */
#include "config.h"

#include "data/dataset.h"

#include <cliptrain/rng.h>

#include <string.h>



CtDataset *
ct_dataset_new_synthetic(const CtConfig *cfg, size_t n, uint64_t seed, int split,
                         int caption_tokens)
{
  CtDataset *ds = g_new0(CtDataset, 1);
  g_mutex_init(&ds->skipped_lock);
  ds->synthetic = TRUE;
  ds->cfg = *cfg;
  ds->n = n;
  ds->seed = seed;
  ds->split = split;
  ds->caption_tokens = caption_tokens;
  return ds;
}

void
ct_dataset_free(CtDataset *ds)
{
  if (!ds)
    return;
  if (ds->src)
    ct_source_free(ds->src);
  g_free(ds->indices);
  g_strfreev(ds->o.templates);
  g_strfreev(ds->o.class_captions);
  if (ds->skipped)
    g_hash_table_destroy(ds->skipped);
  g_mutex_clear(&ds->skipped_lock);
  g_free(ds);
}

size_t
ct_dataset_len(const CtDataset *ds)
{
  return ds->n;
}

void
ct_dataset_set_indices(CtDataset *ds, size_t *indices, size_t n)
{
  g_free(ds->indices);
  ds->indices = indices;
  ds->n = n;
}

void
ct_dataset_note_skipped(CtDataset *ds, size_t source_index)
{
  g_mutex_lock(&ds->skipped_lock);
  if (!ds->skipped)
    ds->skipped = g_hash_table_new(g_direct_hash, g_direct_equal);
  g_hash_table_add(ds->skipped, GSIZE_TO_POINTER(source_index + 1));
  g_mutex_unlock(&ds->skipped_lock);
}

int
ct_dataset_take_skipped(CtDataset *ds)
{
  g_mutex_lock(&ds->skipped_lock);
  int n = ds->skipped ? (int) g_hash_table_size(ds->skipped) : 0;
  if (ds->skipped)
    g_hash_table_remove_all(ds->skipped);
  g_mutex_unlock(&ds->skipped_lock);
  return n;
}

static gboolean
synthetic_get(CtDataset *ds, size_t index, float *image, int32_t *tokens)
{
  const CtConfig *c = &ds->cfg;
  CtRng rng;
  ct_rng_init_stream(&rng, ds->seed, ((uint64_t) ds->split << 48) ^ index ^ 0x5eedull << 52);
  size_t npix = (size_t) 3 * c->image_resolution * c->image_resolution;
  ct_rng_normal_fill(&rng, image, npix, 1.0);
  int T = c->context_length, V = c->vocab_size;
  int len = ds->caption_tokens ? ds->caption_tokens : 3 + (int) ct_rng_below(&rng, T - 2);
  len = CLAMP(len, 2, T);
  memset(tokens, 0, sizeof(int32_t) * T);
  tokens[0] = V - 2;
  for (int t = 1; t < len - 1; t++)
    tokens[t] = 1 + (int32_t) ct_rng_below(&rng, V - 3);
  tokens[len - 1] = V - 1;
  return TRUE;
}

gboolean
ct_dataset_get(CtDataset *ds, size_t index, int epoch, float *image, int32_t *tokens,
               GError **error)
{
  if (index >= ds->n) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "sample %zu is beyond the %zu samples",
                index, ds->n);
    return FALSE;
  }
  if (ds->synthetic)
    return synthetic_get(ds, index, image, tokens);
  return ds->get(ds, ds->indices ? ds->indices[index] : index, epoch, image, tokens, error);
}

gboolean
ct_dataset_label(CtDataset *ds, size_t index, int *label, char **caption, GError **error)
{
  *label = -1;
  if (caption)
    *caption = NULL;
  if (index >= ds->n) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "sample %zu is beyond the %zu samples",
                index, ds->n);
    return FALSE;
  }
  if (ds->synthetic)
    return TRUE;
  return ct_source_get(ds->src, ds->indices ? ds->indices[index] : index, NULL, caption, label,
                       error);
}

const char *const *
ct_dataset_class_names(const CtDataset *ds)
{
  return ds->src ? (const char *const *) ds->src->class_names : NULL;
}

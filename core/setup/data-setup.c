/* data-setup.c: datasets from the recipe's `data:` section.
 *
 *   dataset: synthetic | image_folder | csv | tsv | idx | webdataset
 *
 * Labelled sources (image_folder, idx) get captions from their class names
 * through `captions` (a map, the fastai/self_supervised CLIP module's num_to_txt) and `templates`
 * ("a photo of a {label}."; training draws one per sample and epoch,
 * validation uses the first).  Without `vocab`, BPE merges are learned from
 * the training captions up to `vocab_size` (0: the model's). */
#include "config.h"

#include "setup/data-setup.h"

#include <cliptrain/image.h>
#include <cliptrain/rng.h>
#include <cliptrain/tokenizer.h>

#include <string.h>

static const char *const fashion_mnist[] = { "t-shirt/top", "trouser", "pullover", "dress",
                                             "coat", "sandal", "shirt", "sneaker", "bag",
                                             "ankle boot", NULL };
static const char *const digits[] = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", NULL };

static char *
resolve(const char *dir, const char *path)
{
  return g_path_is_absolute(path) ? g_strdup(path) : g_build_filename(dir, path, NULL);
}

static gboolean
need_path(const CtDataSection *d, GError **error)
{
  if (*d->path)
    return TRUE;
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: data.path: dataset '%s' needs a path",
              ct_section_where(&d->base, offsetof(CtDataSection, path)), d->dataset);
  return FALSE;
}

/* A seeded subset of N of TOTAL indices (or all when n is 0 or >= total),
 * in ascending order.  (transfer full) */
static size_t *
subset(const size_t *from, size_t total, size_t n, uint64_t seed, uint64_t stream,
       size_t *n_out)
{
  size_t *idx = g_new(size_t, MAX(total, 1));
  for (size_t i = 0; i < total; i++)
    idx[i] = from ? from[i] : i;
  if (n > 0 && n < total) {
    CtRng rng;
    ct_rng_init_stream(&rng, seed, stream);
    for (size_t i = 0; i < n; i++) { /* partial Fisher-Yates */
      size_t j = i + ct_rng_below(&rng, total - i);
      size_t t = idx[i];
      idx[i] = idx[j];
      idx[j] = t;
    }
    total = n;
  }
  /* ascending: sequential reads */
  for (size_t i = 1; i < total; i++)
    for (size_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
      size_t t = idx[j];
      idx[j] = idx[j - 1];
      idx[j - 1] = t;
    }
  *n_out = total;
  return idx;
}

static int
cmp_size(const void *a, const void *b)
{
  size_t x = *(const size_t *) a, y = *(const size_t *) b;
  return (x > y) - (x < y);
}

/* Open the training and validation sources. */
static gboolean
open_sources(const CtDataSection *d, const char *dir, uint64_t seed, CtSource **train, CtSource **valid,
             size_t **train_idx, size_t *n_train, size_t **valid_idx, size_t *n_valid,
             GError **error)
{
  const char *kind = d->dataset;
  *train_idx = *valid_idx = NULL;
  if (strcmp(kind, "idx") == 0) {
    if (!need_path(d, error))
      return FALSE;
    const char *cls = d->classes;
    const char *const *names = !strcmp(cls, "fashion_mnist") ? fashion_mnist
                               : !strcmp(cls, "digits")      ? digits
                                                             : NULL;
    g_autofree char *root = resolve(dir, d->path);
    g_autofree char *ti = g_build_filename(root, d->train_images, NULL);
    g_autofree char *tl = g_build_filename(root, d->train_labels, NULL);
    g_autofree char *vi = g_build_filename(root, d->valid_images, NULL);
    g_autofree char *vl = g_build_filename(root, d->valid_labels, NULL);
    if (!(*train = ct_source_idx_new(ti, tl, names, error)))
      return FALSE;
    if (!(*valid = ct_source_idx_new(vi, vl, names, error)))
      return FALSE;
  } else if (strcmp(kind, "image_folder") == 0) {
    if (!need_path(d, error))
      return FALSE;
    g_autofree char *root = resolve(dir, d->path);
    if (strcmp(d->split, "grandparent") == 0) {
      if (!(*train = ct_source_image_folder_new(root, d->train_folder, error)) ||
          !(*valid = ct_source_image_folder_new(root, d->valid_folder, error)))
        return FALSE;
    } else {
      if (!(*train = ct_source_image_folder_new(root, NULL, error)) ||
          !(*valid = ct_source_image_folder_new(root, NULL, error)))
        return FALSE;
      size_t N = ct_source_len(*train);
      size_t nv = (size_t) (d->valid_pct * N + 0.5);
      size_t *perm = subset(NULL, N, N, seed, 0x5b1175ull, &N);
      /* subset() sorted it: shuffle again for the split itself */
      CtRng rng;
      ct_rng_init_stream(&rng, seed, 0x5b1175ull);
      for (size_t i = N - 1; N > 1 && i > 0; i--) {
        size_t j = ct_rng_below(&rng, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
      }
      *valid_idx = g_memdup2(perm, sizeof(size_t) * MAX(nv, 1));
      *n_valid = nv;
      *train_idx = g_memdup2(perm + nv, sizeof(size_t) * MAX(N - nv, 1));
      *n_train = N - nv;
      qsort(*valid_idx, nv, sizeof(size_t), cmp_size);
      qsort(*train_idx, N - nv, sizeof(size_t), cmp_size);
      g_free(perm);
    }
  } else if (strcmp(kind, "csv") == 0 || strcmp(kind, "tsv") == 0) {
    char sep = kind[0] == 'c' ? ',' : '\t';
    if (!need_path(d, error))
      return FALSE;
    g_autofree char *tp = resolve(dir, d->path);
    if (!(*train = ct_source_csv_new(tp, sep, d->image_column, d->caption_column,
                                     error)))
      return FALSE;
    if (*d->valid_path) {
      g_autofree char *vp = resolve(dir, d->valid_path);
      if (!(*valid = ct_source_csv_new(vp, sep, d->image_column,
                                       d->caption_column, error)))
        return FALSE;
    }
  } else { /* webdataset */
    if (!need_path(d, error))
      return FALSE;
    g_autofree char *tp = resolve(dir, d->path);
    if (!(*train = ct_source_webdataset_new(tp, error)))
      return FALSE;
    if (*d->valid_path) {
      g_autofree char *vp = resolve(dir, d->valid_path);
      if (!(*valid = ct_source_webdataset_new(vp, error)))
        return FALSE;
    }
  }
  if (!*train_idx)
    *n_train = ct_source_len(*train);
  if (*valid && !*valid_idx)
    *n_valid = ct_source_len(*valid);
  return TRUE;
}

/* Caption texts per label: the class name through `captions`. */
static char **
class_captions(const CtDataSection *d, CtSource *src)
{
  if (!src->class_names)
    return NULL;
  const CtRecipeList *map = &d->captions;
  GPtrArray *out = g_ptr_array_new();
  for (char **c = src->class_names; *c; c++) {
    const char *caption = *c;
    for (size_t i = 0; i < map->n; i++)
      if (strcmp(map->keys[i], *c) == 0) {
        caption = map->values[i];
        break;
      }
    g_ptr_array_add(out, g_strdup(caption));
  }
  g_ptr_array_add(out, NULL);
  return (char **) g_ptr_array_free(out, FALSE);
}

static char **
templates(const CtDataSection *d)
{
  if (d->templates.n == 0)
    return g_strdupv((char *[]){ "{label}", NULL });
  return g_strdupv(d->templates.values);
}

/* Every training caption, for learning BPE merges. */
static gboolean
training_captions(CtSource *src, const size_t *idx, size_t n, char **captions, char **tmpls,
                  GPtrArray *out, GError **error)
{
  if (captions) { /* labelled: every class in every template */
    for (char **c = captions; *c; c++)
      for (char **t = tmpls; *t; t++) {
        const char *at = strstr(*t, "{label}");
        g_ptr_array_add(out, at ? g_strdup_printf("%.*s%s%s", (int) (at - *t), *t, *c, at + 7)
                                : g_strdup(*t));
      }
    return TRUE;
  }
  for (size_t i = 0; i < n; i++) {
    char *caption = NULL;
    if (!ct_source_get(src, idx ? idx[i] : i, NULL, &caption, NULL, error))
      return FALSE;
    g_ptr_array_add(out, caption);
  }
  return TRUE;
}

gboolean
ct_data_open(const CtDataSection *d, const char *dir, const CtConfig *cfg, uint64_t seed,
             CtData *data, GError **error)
{
  memset(data, 0, sizeof *data);
  const char *kind = d->dataset;
  size_t nt = (size_t) d->n_train, nv = (size_t) d->n_valid;
  if (strcmp(kind, "synthetic") == 0) {
    int ct = d->caption_tokens;
    if (ct > cfg->context_length) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: data.caption_tokens: %d exceeds the context length %d",
                  ct_section_where(&d->base, offsetof(CtDataSection, caption_tokens)), ct,
                  cfg->context_length);
      return FALSE;
    }
    data->train = ct_dataset_new_synthetic(cfg, nt ? nt : 256, seed, 0, ct);
    data->valid = ct_dataset_new_synthetic(cfg, nv ? nv : 64, seed, 1, ct);
    return TRUE;
  }

  CtSource *tsrc = NULL, *vsrc = NULL;
  size_t *tidx = NULL, *vidx = NULL, ntrain = 0, nvalid = 0;
  char **caps = NULL, **tmpls = templates(d);
  GPtrArray *texts = NULL;
  gboolean ok = FALSE;
  if (!open_sources(d, dir, seed, &tsrc, &vsrc, &tidx, &ntrain, &vidx, &nvalid, error))
    goto out;
  if (ntrain == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: the training set is empty",
                d->path);
    goto out;
  }
  caps = class_captions(d, tsrc);

  /* the tokenizer: a vocab file, or merges learned from the captions */
  if (*d->vocab) {
    g_autofree char *vp = resolve(dir, d->vocab);
    if (!(data->tok = ct_tokenizer_new_from_file(vp, error)))
      goto out;
  } else {
    texts = g_ptr_array_new_with_free_func(g_free);
    if (!training_captions(tsrc, tidx, ntrain, caps, tmpls, texts, error))
      goto out;
    int vs = d->vocab_size;
    vs = vs ? vs : cfg->vocab_size;
    if (!(data->tok = ct_tokenizer_train((const char *const *) texts->pdata, texts->len, vs,
                                      error)))
      goto out;
    data->learned = TRUE;
  }
  if (ct_tokenizer_vocab_size(data->tok) > cfg->vocab_size) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the tokenizer has %d ids but model.vocab_size is %d",
                ct_section_where(&d->base, offsetof(CtDataSection, vocab)),
                ct_tokenizer_vocab_size(data->tok), cfg->vocab_size);
    goto out;
  }

  CtDatasetOptions o = {
    .size = cfg->image_resolution, .augment = d->random_resized_crop,
    .ratio_lo = 3.0 / 4.0, .ratio_hi = 4.0 / 3.0, .hflip = d->hflip,
    .mean = CT_CLIP_MEAN, .std = CT_CLIP_STD, .context_length = cfg->context_length,
    .truncate = d->truncate, .skip_corrupt = strcmp(d->corrupt, "skip") == 0,
    .templates = tmpls, .random_template = TRUE, .class_captions = caps, .seed = seed,
    .min_scale = d->min_scale,
  };
  size_t n;
  size_t *ti = subset(tidx, ntrain, nt, seed, 0x7a11, &n);
  data->train = ct_dataset_new_source(tsrc, data->tok, &o);
  tsrc = NULL;
  ct_dataset_set_indices(data->train, ti, n);
  if (vsrc && nvalid > 0) {
    o.augment = FALSE;
    o.hflip = FALSE;
    o.random_template = FALSE; /* validation captions use the first template */
    size_t *vi = subset(vidx, nvalid, nv, seed, 0x7a12, &n);
    data->valid = ct_dataset_new_source(vsrc, data->tok, &o);
    vsrc = NULL;
    ct_dataset_set_indices(data->valid, vi, n);
  }
  ok = TRUE;
out:
  ct_source_free(tsrc);
  ct_source_free(vsrc);
  g_free(tidx);
  g_free(vidx);
  g_strfreev(caps);
  g_strfreev(tmpls);
  if (texts)
    g_ptr_array_free(texts, TRUE);
  if (!ok)
    ct_data_clear(data);
  return ok;
}

void
ct_data_clear(CtData *d)
{
  ct_dataset_free(d->train);
  ct_dataset_free(d->valid);
  if (d->tok)
    ct_tokenizer_free(d->tok);
  memset(d, 0, sizeof *d);
}

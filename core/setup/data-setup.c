/* data-setup.c: datasets from the recipe's `data:` section.
 *
 *   dataset: synthetic | image_folder | csv | tsv | idx | webdataset
 *
 * Labelled sources (image_folder, idx) get captions from their class names
 * through `captions` (a map, the seed's num_to_txt) and `templates`
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

static const CtParamSpec data_schema[] = {
  CT_PARAM("dataset", CT_PARAM_STRING, "synthetic", "where samples come from", 0, 0,
           "synthetic|image_folder|csv|tsv|idx|webdataset"),
  CT_PARAM("path", CT_PARAM_STRING, "", "image_folder root, csv/tsv file, idx folder, or training shards", 0, 0, NULL),
  CT_PARAM("valid_path", CT_PARAM_STRING, "", "csv/tsv file or shards for validation", 0, 0, NULL),
  CT_PARAM("split", CT_PARAM_STRING, "grandparent", "image_folder: by train/valid folders or random", 0, 0, "grandparent|random"),
  CT_PARAM("train_folder", CT_PARAM_STRING, "train", "image_folder: training folder", 0, 0, NULL),
  CT_PARAM("valid_folder", CT_PARAM_STRING, "valid", "image_folder: validation folder", 0, 0, NULL),
  CT_PARAM("valid_pct", CT_PARAM_DOUBLE, "0.2", "random split: validation fraction", 0, 1, NULL),
  CT_PARAM("image_column", CT_PARAM_STRING, "filepath", "csv/tsv: image path column", 0, 0, NULL),
  CT_PARAM("caption_column", CT_PARAM_STRING, "title", "csv/tsv: caption column", 0, 0, NULL),
  CT_PARAM("train_images", CT_PARAM_STRING, "train-images-idx3-ubyte.gz", "idx: training images (in path)", 0, 0, NULL),
  CT_PARAM("train_labels", CT_PARAM_STRING, "train-labels-idx1-ubyte.gz", "idx: training labels", 0, 0, NULL),
  CT_PARAM("valid_images", CT_PARAM_STRING, "t10k-images-idx3-ubyte.gz", "idx: validation images", 0, 0, NULL),
  CT_PARAM("valid_labels", CT_PARAM_STRING, "t10k-labels-idx1-ubyte.gz", "idx: validation labels", 0, 0, NULL),
  CT_PARAM("classes", CT_PARAM_STRING, "", "idx class names: digits or fashion_mnist (empty: from the source)", 0, 0, "|digits|fashion_mnist"),
  CT_PARAM("captions", CT_PARAM_MAP, "{}", "class name -> caption text (the seed's num_to_txt)", 0, 0, NULL),
  CT_PARAM("templates", CT_PARAM_LIST, "['{label}']", "caption templates for labelled data", 0, 0, NULL),
  CT_PARAM("vocab", CT_PARAM_STRING, "", "BPE merges file (OpenAI's bpe_simple_vocab_16e6.txt.gz); empty: learn", 0, 0, NULL),
  CT_PARAM("vocab_size", CT_PARAM_INT, "0", "learned vocabulary size (0: the model's vocab_size)", 0, 1 << 24, NULL),
  CT_PARAM("truncate", CT_PARAM_BOOL, "false", "cut captions longer than the context", 0, 0, NULL),
  CT_PARAM("corrupt", CT_PARAM_STRING, "fail", "unreadable images: fail, or skip and count", 0, 0, "fail|skip"),
  CT_PARAM("random_resized_crop", CT_PARAM_BOOL, "false", "training augmentation", 0, 0, NULL),
  CT_PARAM("min_scale", CT_PARAM_DOUBLE, "0.9", "random_resized_crop scale lower bound", 0.01, 1, NULL),
  CT_PARAM("hflip", CT_PARAM_BOOL, "false", "training: random horizontal flips", 0, 0, NULL),
  CT_PARAM("n_train", CT_PARAM_INT, "0", "synthetic: samples (0: 256); others: a seeded subset (0: all)", 0, 1e9, NULL),
  CT_PARAM("n_valid", CT_PARAM_INT, "0", "synthetic: samples (0: 64); others: a seeded subset (0: all)", 0, 1e9, NULL),
  CT_PARAM("caption_tokens", CT_PARAM_INT, "0", "synthetic: caption length, 0 for random lengths", 0, 1e6, NULL),
  CT_PARAM("batch_size", CT_PARAM_INT, "16", "samples per batch", 1, 1 << 20, NULL),
  CT_PARAM("shuffle", CT_PARAM_BOOL, "true", "reshuffle the training set every epoch", 0, 0, NULL),
  CT_PARAM("drop_last", CT_PARAM_BOOL, "true", "drop the last incomplete training batch", 0, 0, NULL),
  CT_PARAM("workers", CT_PARAM_INT, "2", "loader threads (0: load in the training thread)", 0, 256, NULL),
  CT_PARAM("prefetch", CT_PARAM_INT, "2", "batches prepared ahead", 1, 64, NULL),
  CT_PARAM_END,
};

gboolean
ct_data_check(CtRecipe *r, GError **error)
{
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), "data", "default");
  return ct_recipe_check(r, node, "data", data_schema, error);
}

static const char *
str(CtRecipe *r, const char *key)
{
  g_autofree char *path = g_strconcat("data.", key, NULL);
  return ct_rnode_scalar(ct_recipe_lookup(r, path));
}

static int64_t
num(CtRecipe *r, const char *key)
{
  g_autofree char *path = g_strconcat("data.", key, NULL);
  int64_t v = 0;
  ct_rnode_to_int(ct_recipe_lookup(r, path), &v, NULL);
  return v;
}

static gboolean
flag(CtRecipe *r, const char *key)
{
  g_autofree char *path = g_strconcat("data.", key, NULL);
  gboolean v = FALSE;
  ct_rnode_to_bool(ct_recipe_lookup(r, path), &v, NULL);
  return v;
}

static char *
resolve(const char *dir, const char *path)
{
  return g_path_is_absolute(path) ? g_strdup(path) : g_build_filename(dir, path, NULL);
}

static gboolean
need_path(CtRecipe *r, const char *key, GError **error)
{
  if (*str(r, key))
    return TRUE;
  g_autofree char *path = g_strconcat("data.", key, NULL);
  CtRNode *n = ct_recipe_lookup(r, path);
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: data.%s: dataset '%s' needs a %s",
              ct_rnode_where(n), key, str(r, "dataset"), key);
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
open_sources(CtRecipe *r, const char *dir, uint64_t seed, CtSource **train, CtSource **valid,
             size_t **train_idx, size_t *n_train, size_t **valid_idx, size_t *n_valid,
             GError **error)
{
  const char *kind = str(r, "dataset");
  *train_idx = *valid_idx = NULL;
  if (strcmp(kind, "idx") == 0) {
    if (!need_path(r, "path", error))
      return FALSE;
    const char *cls = str(r, "classes");
    const char *const *names = !strcmp(cls, "fashion_mnist") ? fashion_mnist
                               : !strcmp(cls, "digits")      ? digits
                                                             : NULL;
    g_autofree char *root = resolve(dir, str(r, "path"));
    g_autofree char *ti = g_build_filename(root, str(r, "train_images"), NULL);
    g_autofree char *tl = g_build_filename(root, str(r, "train_labels"), NULL);
    g_autofree char *vi = g_build_filename(root, str(r, "valid_images"), NULL);
    g_autofree char *vl = g_build_filename(root, str(r, "valid_labels"), NULL);
    if (!(*train = ct_source_idx_new(ti, tl, names, error)))
      return FALSE;
    if (!(*valid = ct_source_idx_new(vi, vl, names, error)))
      return FALSE;
  } else if (strcmp(kind, "image_folder") == 0) {
    if (!need_path(r, "path", error))
      return FALSE;
    g_autofree char *root = resolve(dir, str(r, "path"));
    if (strcmp(str(r, "split"), "grandparent") == 0) {
      if (!(*train = ct_source_image_folder_new(root, str(r, "train_folder"), error)) ||
          !(*valid = ct_source_image_folder_new(root, str(r, "valid_folder"), error)))
        return FALSE;
    } else {
      if (!(*train = ct_source_image_folder_new(root, NULL, error)) ||
          !(*valid = ct_source_image_folder_new(root, NULL, error)))
        return FALSE;
      size_t N = ct_source_len(*train);
      double pct = 0;
      ct_rnode_to_double(ct_recipe_lookup(r, "data.valid_pct"), &pct, NULL);
      size_t nv = (size_t) (pct * N + 0.5);
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
    if (!need_path(r, "path", error))
      return FALSE;
    g_autofree char *tp = resolve(dir, str(r, "path"));
    if (!(*train = ct_source_csv_new(tp, sep, str(r, "image_column"), str(r, "caption_column"),
                                     error)))
      return FALSE;
    if (*str(r, "valid_path")) {
      g_autofree char *vp = resolve(dir, str(r, "valid_path"));
      if (!(*valid = ct_source_csv_new(vp, sep, str(r, "image_column"),
                                       str(r, "caption_column"), error)))
        return FALSE;
    }
  } else { /* webdataset */
    if (!need_path(r, "path", error))
      return FALSE;
    g_autofree char *tp = resolve(dir, str(r, "path"));
    if (!(*train = ct_source_webdataset_new(tp, error)))
      return FALSE;
    if (*str(r, "valid_path")) {
      g_autofree char *vp = resolve(dir, str(r, "valid_path"));
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
class_captions(CtRecipe *r, CtSource *src)
{
  if (!src->class_names)
    return NULL;
  CtRNode *map = ct_recipe_lookup(r, "data.captions");
  GPtrArray *out = g_ptr_array_new();
  for (char **c = src->class_names; *c; c++) {
    CtRNode *v = ct_rnode_get(map, *c);
    g_ptr_array_add(out, g_strdup(v ? ct_rnode_scalar(v) : *c));
  }
  g_ptr_array_add(out, NULL);
  return (char **) g_ptr_array_free(out, FALSE);
}

static char **
templates(CtRecipe *r)
{
  CtRNode *list = ct_recipe_lookup(r, "data.templates");
  GPtrArray *out = g_ptr_array_new();
  for (size_t i = 0; i < ct_rnode_n_items(list); i++)
    g_ptr_array_add(out, g_strdup(ct_rnode_scalar(ct_rnode_item(list, i))));
  if (out->len == 0)
    g_ptr_array_add(out, g_strdup("{label}"));
  g_ptr_array_add(out, NULL);
  return (char **) g_ptr_array_free(out, FALSE);
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
ct_data_open(CtRecipe *r, const char *dir, const CtConfig *cfg, uint64_t seed, CtData *d,
             GError **error)
{
  memset(d, 0, sizeof *d);
  const char *kind = str(r, "dataset");
  size_t nt = (size_t) num(r, "n_train"), nv = (size_t) num(r, "n_valid");
  if (strcmp(kind, "synthetic") == 0) {
    int ct = (int) num(r, "caption_tokens");
    if (ct > cfg->context_length) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: data.caption_tokens: %d exceeds the context length %d",
                  ct_rnode_where(ct_recipe_lookup(r, "data.caption_tokens")), ct,
                  cfg->context_length);
      return FALSE;
    }
    d->train = ct_dataset_new_synthetic(cfg, nt ? nt : 256, seed, 0, ct);
    d->valid = ct_dataset_new_synthetic(cfg, nv ? nv : 64, seed, 1, ct);
    return TRUE;
  }

  CtSource *tsrc = NULL, *vsrc = NULL;
  size_t *tidx = NULL, *vidx = NULL, ntrain = 0, nvalid = 0;
  char **caps = NULL, **tmpls = templates(r);
  GPtrArray *texts = NULL;
  gboolean ok = FALSE;
  if (!open_sources(r, dir, seed, &tsrc, &vsrc, &tidx, &ntrain, &vidx, &nvalid, error))
    goto out;
  if (ntrain == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: the training set is empty",
                str(r, "path"));
    goto out;
  }
  caps = class_captions(r, tsrc);

  /* the tokenizer: a vocab file, or merges learned from the captions */
  if (*str(r, "vocab")) {
    g_autofree char *vp = resolve(dir, str(r, "vocab"));
    if (!(d->tok = ct_tokenizer_new_from_file(vp, error)))
      goto out;
  } else {
    texts = g_ptr_array_new_with_free_func(g_free);
    if (!training_captions(tsrc, tidx, ntrain, caps, tmpls, texts, error))
      goto out;
    int vs = (int) num(r, "vocab_size");
    vs = vs ? vs : cfg->vocab_size;
    if (!(d->tok = ct_tokenizer_train((const char *const *) texts->pdata, texts->len, vs,
                                      error)))
      goto out;
    d->learned = TRUE;
  }
  if (ct_tokenizer_vocab_size(d->tok) > cfg->vocab_size) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the tokenizer has %d ids but model.vocab_size is %d",
                ct_rnode_where(ct_recipe_lookup(r, "data.vocab")),
                ct_tokenizer_vocab_size(d->tok), cfg->vocab_size);
    goto out;
  }

  CtDatasetOptions o = {
    .size = cfg->image_resolution, .augment = flag(r, "random_resized_crop"),
    .ratio_lo = 3.0 / 4.0, .ratio_hi = 4.0 / 3.0, .hflip = flag(r, "hflip"),
    .mean = CT_CLIP_MEAN, .std = CT_CLIP_STD, .context_length = cfg->context_length,
    .truncate = flag(r, "truncate"), .skip_corrupt = strcmp(str(r, "corrupt"), "skip") == 0,
    .templates = tmpls, .random_template = TRUE, .class_captions = caps, .seed = seed,
  };
  ct_rnode_to_double(ct_recipe_lookup(r, "data.min_scale"), &o.min_scale, NULL);
  size_t n;
  size_t *ti = subset(tidx, ntrain, nt, seed, 0x7a11, &n);
  d->train = ct_dataset_new_source(tsrc, d->tok, &o);
  tsrc = NULL;
  ct_dataset_set_indices(d->train, ti, n);
  if (vsrc && nvalid > 0) {
    o.augment = FALSE;
    o.hflip = FALSE;
    o.random_template = FALSE; /* validation captions use the first template */
    size_t *vi = subset(vidx, nvalid, nv, seed, 0x7a12, &n);
    d->valid = ct_dataset_new_source(vsrc, d->tok, &o);
    vsrc = NULL;
    ct_dataset_set_indices(d->valid, vi, n);
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
    ct_data_clear(d);
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

/* dataset.h: samples as the model eats them: a (3, R, R) float image and
 * (context_length) token ids.  A dataset is either synthetic (seeded noise
 * and random ids) or a source (core/data/source.h) plus captions, a tokenizer
 * and image transforms.  ct_dataset_get() is deterministic in (index,
 * epoch) and safe to call from several threads at once: every random draw
 * of sample i in epoch e comes from its own stream of (seed, e, i). */
#ifndef CT_DATASET_H
#define CT_DATASET_H

#include <cliptrain/model.h>

#include "data/source.h"

#include <cliptrain/tokenizer.h>
typedef struct CtDataset CtDataset;

/* Seeded random images, N(0, 1) pixels, and random captions: start token,
 * ids in [1, vocab-3], end token, zero padding.  Captions are
 * CAPTION_TOKENS long (start and end included), or of random lengths in
 * [3, context] when it is 0.  Sample i of split SPLIT (0 train, 1 valid)
 * depends only on (seed, split, i).  (transfer full) */
CtDataset *ct_dataset_new_synthetic(const CtConfig *cfg, size_t n, uint64_t seed, int split,
                                    int caption_tokens);

typedef struct {
  int size;                 /* R */
  gboolean augment;         /* random_resized_crop (training) instead of resize + center crop */
  double min_scale;         /* random_resized_crop scale lower bound (0.9 in the
                               fastai/self_supervised CLIP module) */
  double ratio_lo, ratio_hi;
  gboolean hflip;
  float mean[3], std[3];
  int context_length;
  gboolean truncate;        /* cut long captions instead of failing */
  gboolean skip_corrupt;    /* replace unreadable images by the next good one, and count */
  char **templates;         /* for labelled sources: "a photo of a {label}."; NULL-terminated */
  gboolean random_template; /* draw a template per sample and epoch (training); else the first */
  char **class_captions;    /* label -> text put into templates; NULL: the class names */
  uint64_t seed;
} CtDatasetOptions;

/* Shared by dataset.c and dataset-source.c. */
struct CtDataset {
  /* synthetic */
  gboolean synthetic;
  CtConfig cfg;
  size_t n;
  int split, caption_tokens;
  /* source */
  CtSource *src;
  CtTokenizer *tok;
  CtDatasetOptions o; /* with owned copies of the arrays */
  /* skip_corrupt: the source indices found unreadable since the last
   * ct_dataset_take_skipped, a set, so that an image read twice (as a
   * stand-in, by a prefetch, by another worker) counts once */
  GMutex skipped_lock;
  GHashTable *skipped; /* index + 1 -> itself; NULL until one is found */
  uint64_t seed;
  size_t *indices; /* (n) sample i is source sample indices[i]; NULL: identity */
  gboolean (*get)(CtDataset *ds, size_t index, int epoch, float *image, int32_t *tokens,
                  GError **error);
};

/* Takes ownership of SRC; TOK is borrowed and must outlive the dataset.
 * OPTIONS' arrays are copied.  (transfer full) */
CtDataset *ct_dataset_new_source(CtSource *src, CtTokenizer *tok, const CtDatasetOptions *options);
void ct_dataset_free(CtDataset *ds);
size_t ct_dataset_len(const CtDataset *ds);
/* image: (3, R, R); tokens: (context_length) */
gboolean ct_dataset_get(CtDataset *ds, size_t index, int epoch, float *image, int32_t *tokens,
                        GError **error);
/* Sample INDEX's class in its source: *LABEL >= 0 for a labelled source
 * (idx, image_folder), else -1 with *CAPTION (transfer full; may be NULL
 * to skip) its caption; synthetic data has neither.  The image is not
 * read. */
gboolean ct_dataset_label(CtDataset *ds, size_t index, int *label, char **caption,
                          GError **error);
/* The source's class names (index = label), or NULL.  (transfer none) */
const char *const *ct_dataset_class_names(const CtDataset *ds);
/* Use only source samples INDICES (n of them; transfer full). */
void ct_dataset_set_indices(CtDataset *ds, size_t *indices, size_t n);
/* The distinct images found unreadable (skip_corrupt) since the last
 * call, and reset: each counted once whatever the workers and prefetch. */
int ct_dataset_take_skipped(CtDataset *ds);
/* Notes SOURCE_INDEX as unreadable (dataset-source.c); thread-safe. */
void ct_dataset_note_skipped(CtDataset *ds, size_t source_index);

#endif

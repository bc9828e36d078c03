/* dataset.h: what the loop reads samples from.  Each dataset is a table of
 * samples addressed by index; ct_dataset_get() must be deterministic in
 * the index (and safe to call from several threads on distinct outputs). */
#ifndef CT_DATASET_H
#define CT_DATASET_H

#include <cliptrain/model.h>

typedef struct CtDataset CtDataset;

/* Seeded random images, N(0, 1) pixels, and random captions: start token,
 * ids in [1, vocab-3], end token, zero padding.  Captions are
 * CAPTION_TOKENS long (start and end included), or of random lengths in
 * [3, context] when it is 0.  Sample i of split SPLIT (0 train, 1 valid)
 * depends only on (seed, split, i).  (transfer full) */
CtDataset *ct_dataset_new_synthetic(const CtConfig *cfg, size_t n, uint64_t seed, int split,
                                    int caption_tokens);
void ct_dataset_free(CtDataset *ds);
size_t ct_dataset_len(const CtDataset *ds);
/* image: (3, R, R); tokens: (context_length) */
gboolean ct_dataset_get(const CtDataset *ds, size_t index, float *image, int32_t *tokens,
                        GError **error);

#endif

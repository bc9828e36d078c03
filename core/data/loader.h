/* loader.h: batches from a dataset, prepared by worker threads ahead of
 * the training step.  The batches are bit-identical for a given seed
 * whatever the number of workers: each sample depends only on (seed,
 * epoch, index), and the order only on (seed, epoch). */
#ifndef CT_LOADER_H
#define CT_LOADER_H

#include "data/dataset.h"

typedef struct CtLoader CtLoader;

/* DS is borrowed.  WORKERS 0 loads in the caller's thread; PREFETCH is the
 * number of batches in flight (>= 1).  All buffers are allocated here.
 * (transfer full) */
CtLoader *ct_loader_new(CtDataset *ds, const CtConfig *cfg, int batch_size, gboolean shuffle,
                        gboolean drop_last, int workers, int prefetch, uint64_t seed);
void ct_loader_free(CtLoader *loader);
CtDataset *ct_loader_dataset(CtLoader *loader);
/* Load rank RANK's shard of WORLD (before the first epoch).  The epoch's
 * order is cut into global batches of WORLD x batch_size samples (the
 * last one shorter unless drop_last); batch k of this loader is RANK's
 * block of global batch k: batch_size samples, or, in a short last
 * global batch of M samples, M / WORLD of them plus one for the first
 * M % WORLD ranks.  With ALLOW_EMPTY FALSE (training), a last global batch
 * too short to give every rank a sample is dropped; with TRUE
 * (validation) a rank's block may be empty.  Every rank has the same
 * number of batches. */
void ct_loader_set_shard(CtLoader *loader, int rank, int world, gboolean allow_empty);
/* Batches per epoch. */
int ct_loader_n_batches(const CtLoader *loader);
/* Begin EPOCH: fix the sample order and start preparing batches. */
void ct_loader_start(CtLoader *loader, int epoch);
/* The same, starting at batch FIRST of the epoch (a resume). */
void ct_loader_start_at(CtLoader *loader, int epoch, int first);
/* The next batch of this epoch, copied into IMAGES (batch_size, 3, R, R)
 * and TOKENS (batch_size, context); *B is its size.  Waits for it. */
gboolean ct_loader_next(CtLoader *loader, float *images, int32_t *tokens, int *B,
                        GError **error);
/* Wait for the work in flight and drop it (for an epoch cut short). */
void ct_loader_stop(CtLoader *loader);

#endif

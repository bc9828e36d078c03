/* max-batch.h: `cliptrain fit --max-batch-size BUDGET`: the largest batch
 * whose predicted memory fits a budget.  Not installed. */
#ifndef CT_MAX_BATCH_H
#define CT_MAX_BATCH_H

#include "setup/sections.h"

#include <cliptrain/model.h>

/* BUDGET text: "6GiB", "6G", "1500MiB", "1500M", a byte count, or "auto"
 * (90% of MemAvailable).  FALSE with an error naming the text. */
gboolean ct_parse_memory_budget(const char *text, size_t *bytes, GError **error);

/* Bytes a fit of sections S (read; model S->model.cfg) would hold at
 * BATCH, by part: parameters and gradients, optimizer state, activations
 * (at PRECISION, the fp16 plugin's or fp32, and the model's
 * checkpointing), the batch buffers of the loader and the learner, and an
 * allowance for the rest (BLAS buffers, metrics).  BASE is what the
 * process holds already.  FUSED: the blocks step inside backward
 * (optimizer.step_in_backward), so only the gradients outside them and
 * one block's are resident. */
typedef struct {
  size_t params, optimizer, activations, batches, other, base, total;
} CtMemoryPlan;
void ct_memory_plan(const CtSections *s, CtPrecision precision, int batch, size_t base,
                    gboolean fused, CtMemoryPlan *plan);

/* Binary search for the largest batch in [1, LIMIT] whose plan fits
 * BUDGET, printing each probe and its parts to stderr.  0 with an error
 * when batch 1 does not fit. */
int ct_max_batch_search(const CtSections *s, CtPrecision precision, gboolean fused,
                        size_t budget, int limit, GError **error);

/* The process's resident memory now, and its peak, in bytes. */
size_t ct_rss_now(void);
size_t ct_rss_peak(void);

#endif

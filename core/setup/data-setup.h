/* data-setup.h: the recipe's `data:` section made into datasets and a
 * tokenizer. */
#ifndef CT_DATA_SETUP_H
#define CT_DATA_SETUP_H

#include "data/dataset.h"
#include "setup/sections.h"

typedef struct {
  CtDataset *train;   /* (transfer full) */
  CtDataset *valid;   /* (transfer full), NULL without validation */
  CtTokenizer *tok;   /* (transfer full), NULL for synthetic data */
  gboolean learned;   /* the tokenizer was learned from the training captions */
} CtData;

/* Open the sources of section D, split, subsample and build the
 * tokenizer.  Relative paths start at RECIPE_DIR.  Errors from the data
 * name the file and row; errors in the recipe its position. */
gboolean ct_data_open(const CtDataSection *d, const char *recipe_dir, const CtConfig *cfg,
                      uint64_t seed, CtData *data, GError **error);
void ct_data_clear(CtData *data);

#endif

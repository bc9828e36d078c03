/* model-config-private.h: FLOP counts of model-config.c for the cliptrain program
 * (exported as run.h's functions are; not installed). */
#ifndef CT_CONFIG_PRIVATE_H
#define CT_CONFIG_PRIVATE_H

#include <cliptrain/model.h>

/* The FLOPs of one training step (3 x forward, as ct_config_step_flops)
 * that readout pruning (ct_model_set_prune_readout) leaves out, at BATCH
 * with TEXT_TOKENS text positions per caption. */
CT_API double ct_config_readout_saving(const CtConfig *cfg, int batch, int text_tokens);
/* ... and that patch dropout leaves out when each image keeps KEEP of its
 * patches (ct_model_kept_patches), with readout pruning on or off (PRUNE):
 * the image tower's patch embedding and blocks over 1 + KEEP tokens. */
CT_API double ct_config_patch_dropout_saving(const CtConfig *cfg, int batch, int keep,
                                             gboolean prune);

#endif

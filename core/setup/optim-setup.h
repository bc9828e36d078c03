/* optim-setup.h: the recipe's `optimizer:` and `schedule:` sections. */
#ifndef CT_OPTIM_SETUP_H
#define CT_OPTIM_SETUP_H

#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>

#include "setup/sections.h"

/* The optimizer for MODEL as section O says: hyper-parameters, no-decay
 * globs, lr multipliers, frozen tensors, tower locks, layer decay.  A glob
 * that matches no tensor is an error at its position.  MODEL is told the
 * lock groups whose tensors are all frozen (ct_optimizer_frozen_groups),
 * which its backward then skips, and freeze_bn_stats.  (transfer full) */
CtOptimizer *ct_optim_build(const CtOptimizerSection *o, CtModel *model, GError **error);
/* A table of OPT's parameter groups: per lock group of each tower (and
 * logit_scale), the tensors alike in lr multiplier (optimizer.lr_mult
 * times the layer decay), weight decay and lock, with their lr, tensor
 * and parameter counts (`cliptrain fit --print-lr-groups`).
 * (transfer full) */
char *ct_optim_describe_groups(const CtOptimizer *opt);
/* The schedule of section S, with lr = LR (optimizer.lr).  (transfer full) */
CtSchedule *ct_schedule_build(const CtScheduleSection *s, double lr, GError **error);

#endif

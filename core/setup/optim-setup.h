/* optim-setup.h: the recipe's `optimizer:` and `schedule:` sections. */
#ifndef CT_OPTIM_SETUP_H
#define CT_OPTIM_SETUP_H

#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>

#include "setup/sections.h"

/* The optimizer for MODEL as section O says: hyper-parameters, no-decay
 * globs, lr multipliers, frozen tensors, tower locks.  A glob that matches
 * no tensor is an error at its position.  (transfer full) */
CtOptimizer *ct_optim_build(const CtOptimizerSection *o, CtModel *model, GError **error);
/* The schedule of section S, with lr = LR (optimizer.lr).  (transfer full) */
CtSchedule *ct_schedule_build(const CtScheduleSection *s, double lr, GError **error);

#endif

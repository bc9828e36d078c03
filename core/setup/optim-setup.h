/* optim-setup.h: the recipe's `optimizer:` and `schedule:` sections. */
#ifndef CT_OPTIM_SETUP_H
#define CT_OPTIM_SETUP_H

#include <cliptrain/optimizer.h>
#include <cliptrain/schedule.h>

#include "formats/recipe.h"

/* Check the sections against their schemas, filling the defaults of the
 * chosen optimizer kind and schedule. */
gboolean ct_optim_check(CtRecipe *recipe, GError **error);
/* The optimizer for MODEL as the recipe says: hyper-parameters, no-decay
 * globs, lr multipliers, frozen tensors, tower locks.  A glob that matches
 * no tensor is an error at its position.  (transfer full) */
CtOptimizer *ct_optim_build(CtRecipe *recipe, CtModel *model, GError **error);
/* The schedule, with lr = optimizer.lr.  (transfer full) */
CtSchedule *ct_schedule_build(CtRecipe *recipe, GError **error);

#endif

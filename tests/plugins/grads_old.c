/* A plugin built for ABI minor 1, before `grads`, whose descriptor holds
 * CT_GRADS_UNUSED where minor 1 had a reserved field: the core must read
 * it as undeclared, so optimizer.step_in_backward "auto" stays off. */
#include <cliptrain/plugin.h>

static CtStatus
on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
{
  return CT_STATUS_OK;
}

CT_PLUGIN_DEFINE(.abi_minor = 1, .name = "grads_old", .version = "1", .doc = "test",
                 .grads = CT_GRADS_UNUSED, .on_event = on_event)

/* A plugin that declares a use of the gradients the core does not know:
 * refused when loaded. */
#include <cliptrain/plugin.h>

static CtStatus
on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
{
  return CT_STATUS_OK;
}

CT_PLUGIN_DEFINE(.name = "grads_unknown", .version = "1", .doc = "test", .grads = 7,
                 .on_event = on_event)

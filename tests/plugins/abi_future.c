/* A plugin built for a newer minor ABI than the core's: refused. */
#include <cliptrain/plugin.h>

static CtStatus
on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
{
  return CT_STATUS_OK;
}

CT_PLUGIN_DEFINE(.abi_minor = 99, .name = "abi_future", .version = "1", .doc = "test",
                 .on_event = on_event)

/* A plugin built for another major ABI: refused. */
#include <cliptrain/plugin.h>

static CtStatus
on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
{
  return CT_STATUS_OK;
}

CT_PLUGIN_DEFINE(.abi_major = 0, .abi_minor = 3, .name = "abi_old_major", .version = "1",
                 .doc = "test", .on_event = on_event)

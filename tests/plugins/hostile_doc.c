/* A plugin whose version, doc and parameter doc hold terminal control
 * sequences and line breaks, as a hostile or careless file could:
 * `cliptrain plugins` must print them escaped. */
#include <cliptrain/plugin.h>

static CtStatus
on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
{
  return CT_STATUS_OK;
}

static const CtParamSpec params[] = {
  CT_PARAM("level", CT_PARAM_INT, "1", "a level\033]0;retitled\007 of \033[2Jnothing", 0, 9,
           NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "hostile_doc", .version = "1\033[31m",
                 .doc = "red \033[31mALERT\033[0m\nsecond line\r", .params = params,
                 .on_event = on_event)

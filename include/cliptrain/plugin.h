/* plugin.h: everything a callback plugin needs.
 *
 * A plugin is a shared object that exports one symbol,
 * ct_plugin_descriptor(), returning a static CtPluginDescriptor; write it
 * with CT_PLUGIN_DEFINE.  The core loads it with dlopen(RTLD_NOW |
 * RTLD_LOCAL), checks the ABI version (major equal, minor not newer than
 * the core's), validates the recipe's parameters against the schema, then
 * calls create() once per use in a recipe, on_event() for each event named
 * in `events`, and destroy() at the end.
 *
 *   static CtStatus
 *   on_event(void *state, CtLearner *learner, CtEvent event, GError **error)
 *   {
 *     MyState *s = state;
 *     if (ct_learner_iter(learner) >= s->limit)
 *       return CT_STATUS_CANCEL_TRAIN;
 *     return CT_STATUS_OK;
 *   }
 *
 *   static const CtParamSpec params[] = {
 *     CT_PARAM("limit", CT_PARAM_INT, "10", "batches per epoch", 1, 1e9, NULL),
 *     CT_PARAM_END,
 *   };
 *
 *   CT_PLUGIN_DEFINE(.name = "my_plugin", .version = "1.0",
 *                    .doc = "Stops each epoch after a few batches",
 *                    .order = 0, .events = CT_EVENT_BIT(CT_EVENT_AFTER_BATCH),
 *                    .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = params,
 *                    .grads = CT_GRADS_UNUSED,
 *                    .create = create, .destroy = destroy, .on_event = on_event)
 *
 * Build it against the installed library: pkg-config --cflags --libs
 * cliptrain, and install it into `pkg-config --variable=pluginsdir
 * cliptrain` or a folder on CLIPTRAIN_PLUGIN_PATH. */
#ifndef CLIPTRAIN_PLUGIN_H
#define CLIPTRAIN_PLUGIN_H

#include <cliptrain/comm.h>
#include <cliptrain/ct-common.h>
#include <cliptrain/learner.h>
#include <cliptrain/loss.h>
#include <cliptrain/model.h>
#include <cliptrain/rng.h>

G_BEGIN_DECLS

/* ABI version.  The major changes when a struct layout or a meaning
 * changes; the minor when something is appended.  A plugin built with
 * (major M, minor m) loads into a core with major M and minor >= m.
 * Minor 1 added `comm`; minor 2 added `grads`; minor 3 added
 * ct_recorder_declare and ct_recorder_check_monitor; minor 4 added
 * `model_extras` and `init_model` (in reserved space: the struct's size is
 * unchanged), ct_learner_d_logit_bias, ct_model_logit_bias and
 * ct_siglip_loss. */
#define CT_PLUGIN_ABI_MAJOR 1
#define CT_PLUGIN_ABI_MINOR 4

typedef enum {
  CT_PARAM_BOOL,
  CT_PARAM_INT,
  CT_PARAM_DOUBLE,
  CT_PARAM_STRING,
  CT_PARAM_LIST, /* a sequence of strings; default_value in YAML flow style: "[a, b]" */
  CT_PARAM_MAP,  /* a mapping of strings to strings; default "{}" or "{k: v}" */
} CtParamType;

/* One parameter of a plugin's schema.  default_value is text as a recipe
 * would write it ("0.001", "true", "valid_loss"); NULL means required.
 * For INT and DOUBLE, values outside [min, max] are refused (set both to 0
 * for no limit).  For STRING, choices is a "|"-separated list of allowed
 * values, or NULL for any. */
typedef struct {
  const char *name;
  CtParamType type;
  const char *default_value;
  const char *doc;
  double min, max;
  const char *choices;
  void *reserved[2];
} CtParamSpec;

/* Designated-initializer helpers, so that a schema reads as a table and
 * stays -Wextra clean:
 *   static const CtParamSpec params[] = {
 *     CT_PARAM("pct", CT_PARAM_DOUBLE, "0.01", "fraction of each epoch", 0, 1, NULL),
 *     CT_PARAM_END,
 *   }; */
#define CT_PARAM(name_, type_, default_, doc_, min_, max_, choices_)                       \
  { .name = (name_), .type = (type_), .default_value = (default_), .doc = (doc_),          \
    .min = (min_), .max = (max_), .choices = (choices_) }
#define CT_PARAM_END { .name = NULL }

/* A plugin's validated parameters, every schema entry present (recipe
 * value or default).  (transfer none) */
typedef struct CtParams CtParams;
CT_API gboolean ct_params_get_bool(const CtParams *params, const char *name);
CT_API int64_t ct_params_get_int(const CtParams *params, const char *name);
CT_API double ct_params_get_double(const CtParams *params, const char *name);
CT_API const char *ct_params_get_string(const CtParams *params, const char *name);
/* A LIST parameter's items (NULL-terminated), or a MAP parameter's keys
 * and values alternating (NULL-terminated).  (transfer none) */
CT_API const char *const *ct_params_get_list(const CtParams *params, const char *name);
CT_API const char *const *ct_params_get_map(const CtParams *params, const char *name);
/* TRUE if the recipe set NAME (rather than the default). */
CT_API gboolean ct_params_is_set(const CtParams *params, const char *name);

/* When a callback runs its inner-loop events (CT_EVENTS_INNER). */
typedef enum {
  CT_RUN_TRAIN = 1 << 0,
  CT_RUN_VALID = 1 << 1,
} CtRunIn;

/* What a callback does with the model's gradients (minor 2).  The core
 * steps each residual block inside backward and gives its gradient pages
 * back (optimizer.step_in_backward) only where every callback allows it:
 * the gradients of a stepped block then read as zeros, and no step can be
 * cancelled.  A plugin that says nothing (every plugin built before minor
 * 2) is CT_GRADS_UNDECLARED. */
typedef enum {
  /* unknown: step_in_backward "auto" keeps the whole-buffer step, and an
   * explicit `true` runs the callback anyway, on the recipe's word */
  CT_GRADS_UNDECLARED = 0,
  /* reads and writes no gradient and cancels no step */
  CT_GRADS_UNUSED = 1,
  /* needs every gradient before any parameter steps (clipping, loss
   * unscaling, all-reduce, accumulation), or may cancel a step:
   * step_in_backward is refused, naming the callback */
  CT_GRADS_WHOLE = 2,
} CtGradsUse;

typedef struct {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t struct_size;       /* sizeof(CtPluginDescriptor) of the plugin */
  const char *name;           /* as written in recipes: [a-z0-9_]+ */
  const char *version;
  const char *doc;            /* one line */
  int order;                  /* callbacks run in ascending order; ties keep recipe order */
  uint64_t events;            /* CT_EVENT_BIT() of each event handled */
  uint32_t run;               /* CtRunIn flags; 0 means both */
  const CtParamSpec *params;  /* terminated by an entry with name NULL; may be NULL */
  /* Create the state for one use; NULL with error set on failure.
   * (transfer full) of the state, freed by destroy. */
  void *(*create)(const CtParams *params, GError **error);
  void (*destroy)(void *state);
  CtStatus (*on_event)(void *state, CtLearner *learner, CtEvent event, GError **error);
  /* Optional: the state that a training checkpoint must keep for an exact
   * resume (a loss scale, a counter).  (transfer full) */
  GBytes *(*state_save)(void *state);
  gboolean (*state_load)(void *state, GBytes *bytes, GError **error);
  /* Optional (minor 1): a plugin that spans several processes (MPI)
   * returns its communicator's table here, called once right after
   * create(); the core then runs as one rank of that group (comm.h).
   * NULL from the function, or no function, means a single process. */
  const CtCommOps *(*comm)(void *state);
  /* CtGradsUse (minor 2): what the callback does with the gradients */
  uint32_t grads;
  /* CtModelExtras (minor 4): parameters the model must have for this
   * callback (a loss's): a run that lists it builds its model with them */
  uint32_t model_extras;
  /* Optional (minor 4): called once when a fit initialises a fresh model
   * (after create(), before model.init's weights load over it, which
   * overwrite what they hold; a resume then loads its state over both) */
  void (*init_model)(void *state, CtModel *model);
  void *reserved[5];
} CtPluginDescriptor;

#define CT_PLUGIN_SYMBOL "ct_plugin_descriptor"
typedef const CtPluginDescriptor *(*CtPluginEntry)(void);

#define CT_PLUGIN_DEFINE(...)                                                            \
  __attribute__((visibility("default"))) const CtPluginDescriptor *ct_plugin_descriptor(void); \
  __attribute__((visibility("default"))) const CtPluginDescriptor *ct_plugin_descriptor(void)  \
  {                                                                                      \
    static const CtPluginDescriptor descriptor = { .abi_major = CT_PLUGIN_ABI_MAJOR,     \
                                                   .abi_minor = CT_PLUGIN_ABI_MINOR,     \
                                                   .struct_size = sizeof(CtPluginDescriptor), \
                                                   __VA_ARGS__ };                        \
    return &descriptor;                                                                  \
  }

G_END_DECLS

#endif

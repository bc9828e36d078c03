/* plugin-loader.h: finding, loading and checking callback plugins, and
 * their validated parameters. */
#ifndef CT_PLUGIN_LOADER_H
#define CT_PLUGIN_LOADER_H

#include <cliptrain/plugin.h>

/* The folders searched for NAME.so, in order: EXTRA (from the recipe; may
 * be NULL), then each folder of $CLIPTRAIN_PLUGIN_PATH (':'-separated),
 * then the installed plugins folder, then the build tree's plugins/.libs.
 * Never the current directory.  (transfer full) */
CT_API GPtrArray *ct_plugin_search_path(const char *const *extra);

/* The first NAME.so on SEARCH, or NULL with an error listing the folders
 * searched (and a did-you-mean among the plugins found).
 * (transfer full) */
CT_API char *ct_plugin_find(const char *name, GPtrArray *search, GError **error);

/* dlopen FILE and check its descriptor: the entry symbol exists, the ABI
 * major equals ours and its minor is not newer, struct_size is large
 * enough, name and callbacks are present, the parameter schema is sane.
 * The module stays loaded.  Errors name the file, the symbol and both
 * versions. */
CT_API const CtPluginDescriptor *ct_plugin_open(const char *file, GError **error);

/* The descriptor's optional members, each resolved here alone with the
 * ABI minor that added it and its default (as ggml's
 * ggml_backend_buft_get_max_size): callers never test abi_minor nor a
 * NULL member themselves.  DESC is a checked descriptor (ct_plugin_open).
 *
 * run: the CtRunIn flags of the inner-loop events; 0 means both. */
CT_API uint32_t ct_plugin_desc_run(const CtPluginDescriptor *desc);
/* comm (minor 1): the communicator table of STATE, the callback's state
 * right after create(); NULL (a single process) before minor 1, without
 * the function, or when it returns NULL. */
CT_API const CtCommOps *ct_plugin_desc_comm(const CtPluginDescriptor *desc, void *state);
/* grads (minor 2): what the callback does with the gradients;
 * CT_GRADS_UNDECLARED before minor 2, whatever the field holds (it was
 * reserved).  An unknown value is returned as is: ct_plugin_open refuses
 * it. */
CT_API CtGradsUse ct_plugin_desc_grads(const CtPluginDescriptor *desc);
/* model_extras (minor 4): the CtModelExtras the plugin needs; 0 before. */
CT_API uint32_t ct_plugin_desc_model_extras(const CtPluginDescriptor *desc);
/* init_model (minor 4): let STATE's plugin initialise a fresh MODEL;
 * nothing before minor 4 or without the function. */
CT_API void ct_plugin_desc_init_model(const CtPluginDescriptor *desc, void *state,
                                      CtModel *model);

/* Every NAME -> file found on SEARCH (first one wins), sorted by name.
 * (transfer full): a GPtrArray of char*, name and file alternating. */
CT_API GPtrArray *ct_plugin_list(GPtrArray *search);

/* Every NAME.so on SEARCH, those that a first one hides included: sorted
 * by name, then in search order (the first of a name is the one
 * ct_plugin_find gives).  (transfer full): name and file alternating. */
CT_API GPtrArray *ct_plugin_list_all(GPtrArray *search);

/* Parameters from a checked mapping of scalars (every schema key present).
 * (transfer full) */
typedef struct CtRNode CtRNode;
CtParams *ct_params_new(const CtParamSpec *schema);
void ct_params_set(CtParams *params, const char *name, const char *value, gboolean from_recipe);
/* Set a LIST (items) or MAP (keys and values alternating) parameter;
 * ITEMS is NULL-terminated and copied. */
void ct_params_set_list(CtParams *params, const char *name, const char *const *items,
                        gboolean from_recipe);
/* Fill every parameter from NODE, a checked mapping (see ct_recipe_check). */
void ct_params_fill(CtParams *params, CtRNode *node);
void ct_params_free(CtParams *params);

#endif

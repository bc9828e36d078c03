/* run-callbacks.c: the recipe's callbacks and metrics made into created
 * callbacks, and what they decide for the run: the fused step and the
 * process group. */
#include "config.h"

#include "setup/run-private.h"
#include "train/plugin-loader.h"

#include <stddef.h>
#include <string.h>

typedef struct {
  GPtrArray *search, *cbs;
  CtPrecision *precision;
  gboolean have_precision;
} Loading;

/* The plugin file of USE's name, opened and checked against the name. */
static const CtPluginDescriptor *
open_plugin(const CtPluginUse *use, GPtrArray *search, char **file, GError **error)
{
  GError *e = NULL;
  *file = ct_plugin_find(use->name, search, &e);
#ifndef CT_HAVE_MPI
  if (!*file &&
      (strcmp(use->name, "ddp") == 0 || strcmp(use->name, "distributed_clip_trainer") == 0)) {
    g_clear_error(&e);
    g_set_error(&e, CT_ERROR, CT_ERROR_CONFIG,
                "plugin '%s' trains on several processes with MPI, and this cliptrain was "
                "built without MPI: install the Debian packages libopenmpi-dev and "
                "openmpi-bin, then run ./configure and make again", use->name);
  }
#endif
  const CtPluginDescriptor *d = *file ? ct_plugin_open(*file, &e) : NULL;
  if (!d) {
    ct_recipe_error(error, use->where, "%s.%zu: %s", use->list, use->index, e->message);
    g_error_free(e);
    return NULL;
  }
  if (strcmp(d->name, use->name) != 0) {
    ct_recipe_error(error, use->where, "%s.%zu: %s declares the name '%s', not '%s'", use->list,
                 use->index, *file, d->name, use->name);
    return NULL;
  }
  return d;
}

/* One item of callbacks or metrics: its plugin, its checked parameters. */
static gboolean
load_one(CtRecipe *r, const CtPluginUse *use, gpointer data, GError **error)
{
  Loading *ld = data;
  char *file = NULL;
  const CtPluginDescriptor *d = open_plugin(use, ld->search, &file, error);
  g_autofree char *ctx = g_strdup_printf("%s.%zu (%s)", use->list, use->index, use->name);
  if (!d || !ct_recipe_check(r, use->params, ctx, d->params, error)) {
    g_free(file);
    return FALSE;
  }
  CtCallback *cb = g_new0(CtCallback, 1);
  cb->desc = d;
  cb->file = file;
  cb->label = g_strdup_printf("%s (%s)", use->name, file);
  cb->where = g_strdup(use->where);
  cb->order = d->order;
  cb->params = ct_params_new(d->params);
  ct_params_fill(cb->params, use->params);
  g_ptr_array_add(ld->cbs, cb);
  /* the fp16 plugin's precision, for the memory of --max-batch-size */
  if (!ld->have_precision && strcmp(use->list, "callbacks") == 0 &&
      strcmp(use->name, "fp16") == 0) {
    ld->have_precision = TRUE;
    *ld->precision = CT_PRECISION_FP16;
    if (ct_params_is_set(cb->params, "precision"))
      ct_precision_from_name(ct_params_get_string(cb->params, "precision"), ld->precision, NULL);
  }
  return TRUE;
}

gboolean
ct_run_callbacks_load(CtRecipe *r, GPtrArray *search, GPtrArray *cbs, CtPrecision *precision,
                      GError **error)
{
  Loading ld = { search, cbs, precision, FALSE };
  *precision = CT_PRECISION_FP32;
  return ct_sections_each_plugin(r, load_one, &ld, error);
}

gboolean
ct_run_callbacks_create(GPtrArray *cbs, GError **error)
{
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    GError *e = NULL;
    cb->state = cb->desc->create ? cb->desc->create(cb->params, &e) : NULL;
    if (cb->desc->create && !cb->state) {
      ct_recipe_error(error, cb->where, "%s: %s", cb->label,
                   e ? e->message : "it refused its parameters without a reason");
      g_clear_error(&e);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean
ct_run_step_in_backward(const char *v, GPtrArray *cbs, const char *recipe_path, gboolean *on,
                        GError **error)
{
  *on = FALSE;
  if (g_str_equal(v, "false"))
    return TRUE;
  gboolean all_unused = TRUE;
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    CtGradsUse use = ct_plugin_desc_grads(cb->desc);
    if (use == CT_GRADS_WHOLE && g_str_equal(v, "true"))
      return ct_recipe_error(error, cb->where ? cb->where : recipe_path,
                          "%s: optimizer.step_in_backward steps each block inside backward, "
                          "and %s needs every gradient before any step; drop one of them",
                          cb->label, cb->desc->name);
    all_unused = all_unused && use == CT_GRADS_UNUSED;
  }
  *on = g_str_equal(v, "true") || all_unused;
  return TRUE;
}

CtComm *
ct_run_comm(GPtrArray *cbs, GError **error)
{
  CtComm *comm = NULL;
  for (guint i = 0; i < cbs->len; i++) {
    CtCallback *cb = g_ptr_array_index(cbs, i);
    const CtCommOps *ops = ct_plugin_desc_comm(cb->desc, cb->state);
    if (!ops)
      continue;
    if (ops->struct_size < offsetof(CtCommOps, reserved)) {
      ct_recipe_error(error, cb->where, "%s: its communicator table is too old", cb->label);
      ct_comm_free(comm);
      return NULL;
    }
    if (!comm) {
      comm = ct_comm_new(cb->desc->name, ops, cb->state);
    } else if (ops->rank(cb->state) != ct_comm_rank(comm) ||
               ops->size(cb->state) != ct_comm_size(comm)) {
      ct_recipe_error(error, cb->where, "%s sees rank %d of %d, but %s sees rank %d of %d",
                   cb->label, ops->rank(cb->state), ops->size(cb->state), ct_comm_name(comm),
                   ct_comm_rank(comm), ct_comm_size(comm));
      ct_comm_free(comm);
      return NULL;
    }
  }
  return comm ? comm : ct_comm_new(NULL, NULL, NULL);
}

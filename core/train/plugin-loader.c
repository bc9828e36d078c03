/* plugin-loader.c: plugins are shared objects found on a search path,
 * opened with dlopen(RTLD_NOW | RTLD_LOCAL) and kept loaded. */
#include "config.h"

#include "train/plugin-loader.h"
#include "formats/recipe.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- search */

GPtrArray *
ct_plugin_search_path(const char *const *extra)
{
  GPtrArray *dirs = g_ptr_array_new_with_free_func(g_free);
  for (const char *const *p = extra; p && *p; p++)
    g_ptr_array_add(dirs, g_strdup(*p));
  const char *env = g_getenv("CLIPTRAIN_PLUGIN_PATH");
  if (env) {
    g_auto(GStrv) parts = g_strsplit(env, ":", -1);
    for (char **p = parts; *p; p++)
      if (**p) /* an empty entry would mean the current directory: skipped */
        g_ptr_array_add(dirs, g_strdup(*p));
  }
  g_ptr_array_add(dirs, g_strdup(CT_PLUGINSDIR));
  g_ptr_array_add(dirs, g_build_filename(CT_BUILDDIR, "plugins", ".libs", NULL));
  return dirs;
}

GPtrArray *
ct_plugin_list(GPtrArray *search)
{
  GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  for (guint i = 0; i < search->len; i++) {
    GDir *d = g_dir_open(g_ptr_array_index(search, i), 0, NULL);
    const char *f;
    while (d && (f = g_dir_read_name(d))) {
      if (!g_str_has_suffix(f, ".so"))
        continue;
      char *name = g_strndup(f, strlen(f) - 3);
      if (g_hash_table_contains(seen, name)) {
        g_free(name);
        continue;
      }
      g_hash_table_insert(seen, name, g_build_filename(g_ptr_array_index(search, i), f, NULL));
    }
    if (d)
      g_dir_close(d);
  }
  GList *keys = g_list_sort(g_hash_table_get_keys(seen), (GCompareFunc) strcmp);
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (GList *k = keys; k; k = k->next) {
    g_ptr_array_add(out, g_strdup(k->data));
    g_ptr_array_add(out, g_strdup(g_hash_table_lookup(seen, k->data)));
  }
  g_list_free(keys);
  g_hash_table_destroy(seen);
  return out;
}

GPtrArray *
ct_plugin_list_all(GPtrArray *search)
{
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *names = ct_plugin_list(search);
  for (guint k = 0; k < names->len; k += 2) {
    g_autofree char *fname = g_strconcat(names->pdata[k], ".so", NULL);
    for (guint i = 0; i < search->len; i++) {
      char *path = g_build_filename(g_ptr_array_index(search, i), fname, NULL);
      if (!g_file_test(path, G_FILE_TEST_EXISTS | G_FILE_TEST_IS_SYMLINK)) {
        g_free(path);
        continue;
      }
      g_ptr_array_add(out, g_strdup(names->pdata[k]));
      g_ptr_array_add(out, path);
    }
  }
  g_ptr_array_free(names, TRUE);
  return out;
}

char *
ct_plugin_find(const char *name, GPtrArray *search, GError **error)
{
  /* a name, never a path: "./x" or "../x" would load from outside the
   * search path (the current directory, say) */
  if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "plugin '%s': a plugin is named, not given as a path; put its folder in the "
                "recipe's plugin_path",
                name);
    return NULL;
  }
  g_autofree char *fname = g_strconcat(name, ".so", NULL);
  for (guint i = 0; i < search->len; i++) {
    char *path = g_build_filename(g_ptr_array_index(search, i), fname, NULL);
    if (g_file_test(path, G_FILE_TEST_IS_REGULAR))
      return path;
    g_free(path);
  }
  GPtrArray *all = ct_plugin_list(search);
  GPtrArray *names = g_ptr_array_new();
  for (guint i = 0; i < all->len; i += 2)
    g_ptr_array_add(names, g_ptr_array_index(all, i));
  g_ptr_array_add(names, NULL);
  const char *guess = ct_did_you_mean(name, (const char *const *) names->pdata);
  g_ptr_array_add(search, NULL);
  g_autofree char *dirs = g_strjoinv(":", (char **) search->pdata);
  g_ptr_array_remove_index(search, search->len - 1);
  g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "no plugin '%s'%s%s%s (searched %s)", name,
              guess ? "; did you mean '" : "", guess ? guess : "", guess ? "'?" : "", dirs);
  g_ptr_array_free(names, TRUE);
  g_ptr_array_free(all, TRUE);
  return NULL;
}

/* ---------------------------------------------------------------- optional members */

/* The ABI minor that appended each optional member (plugin.h). */
enum { MINOR_COMM = 1, MINOR_GRADS = 2, MINOR_MODEL = 4 };

uint32_t
ct_plugin_desc_run(const CtPluginDescriptor *d)
{
  return d->run ? d->run : CT_RUN_TRAIN | CT_RUN_VALID;
}

const CtCommOps *
ct_plugin_desc_comm(const CtPluginDescriptor *d, void *state)
{
  return d->abi_minor >= MINOR_COMM && d->comm ? d->comm(state) : NULL;
}

CtGradsUse
ct_plugin_desc_grads(const CtPluginDescriptor *d)
{
  return d->abi_minor >= MINOR_GRADS ? (CtGradsUse) d->grads : CT_GRADS_UNDECLARED;
}

uint32_t
ct_plugin_desc_model_extras(const CtPluginDescriptor *d)
{
  return d->abi_minor >= MINOR_MODEL ? d->model_extras : 0;
}

void
ct_plugin_desc_init_model(const CtPluginDescriptor *d, void *state, CtModel *model)
{
  if (d->abi_minor >= MINOR_MODEL && d->init_model)
    d->init_model(state, model);
}

/* ---------------------------------------------------------------- open */

static gboolean
check_descriptor(const char *file, const CtPluginDescriptor *d, GError **error)
{
  if (d->abi_major != CT_PLUGIN_ABI_MAJOR || d->abi_minor > CT_PLUGIN_ABI_MINOR) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin ABI %u.%u does not match cliptrain's %d.%d (rebuild the plugin "
                "against this cliptrain)",
                file, d->abi_major, d->abi_minor, CT_PLUGIN_ABI_MAJOR, CT_PLUGIN_ABI_MINOR);
    return FALSE;
  }
  if (d->struct_size < offsetof(CtPluginDescriptor, reserved)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin descriptor is %u bytes, too small for ABI %u.%u", file,
                d->struct_size, d->abi_major, d->abi_minor);
    return FALSE;
  }
  if (ct_plugin_desc_model_extras(d) & ~(uint32_t) CT_MODEL_LOGIT_BIAS) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin asks for unknown model parameters (model_extras = 0x%x)", file,
                ct_plugin_desc_model_extras(d));
    return FALSE;
  }
  if ((uint32_t) ct_plugin_desc_grads(d) > CT_GRADS_WHOLE) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin declares an unknown use of the gradients (grads = %u)", file,
                (uint32_t) ct_plugin_desc_grads(d));
    return FALSE;
  }
  if (!d->name || !*d->name || !d->on_event) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: plugin descriptor lacks %s", file,
                !d->name || !*d->name ? "a name" : "on_event");
    return FALSE;
  }
  for (const CtParamSpec *p = d->params; p && p->name; p++) {
    if ((unsigned) p->type > CT_PARAM_MAP) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: parameter '%s' has an unknown type %d",
                  file, p->name, p->type);
      return FALSE;
    }
  }
  return TRUE;
}

/* Who may have changed a file or folder: root and the user running us
 * only (as OpenSSH's safe_path for authorized_keys). */
static gboolean
trusted_owner(uid_t uid)
{
  return uid == 0 || uid == geteuid();
}

static char *
owner_name(uid_t uid)
{
  struct passwd *pw = getpwuid(uid);
  return pw ? g_strdup_printf("%s (uid %u)", pw->pw_name, (unsigned) uid)
            : g_strdup_printf("uid %u", (unsigned) uid);
}

static const char *
writers(mode_t mode)
{
  return mode & S_IWOTH ? "others" : "its group";
}

/* FILE names the plugin in messages; REAL is its resolved path (shown too
 * when FILE is a symlink).  Each folder from REAL's up to / must be owned
 * by root or us and not writable by group or others.  A writable folder
 * with the sticky bit (/tmp) above the plugin's own folder is accepted
 * when the component below it is owned by root or us: others can neither
 * rename nor remove it there.  The plugin's own folder gets no such
 * exception: others could put a plugin in it first. */
static gboolean
check_folders(const char *file, const char *real, GError **error)
{
  g_autofree char *child = g_strdup(real);
  uid_t child_uid = 0;
  struct stat st;
  if (lstat(child, &st) == 0)
    child_uid = st.st_uid;
  gboolean own = TRUE; /* the plugin's own folder */
  for (;;) {
    g_autofree char *dir = g_path_get_dirname(child);
    if (stat(dir, &st) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot load plugin: %s: %s", file, dir,
                  g_strerror(errno));
      return FALSE;
    }
    const char *what = own ? "the plugin's folder" : "the folder";
    const char *above = own ? "" : " above the plugin";
    if (!trusted_owner(st.st_uid)) {
      g_autofree char *who = owner_name(st.st_uid);
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: %s %s%s is owned by %s, not by root or you: refused", file, what, dir,
                  above, who);
      return FALSE;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
      gboolean sticky = (st.st_mode & S_ISVTX) != 0;
      if (own || !sticky || !trusted_owner(child_uid)) {
        g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                    "%s: %s %s%s is writable by %s (mode %04o%s): refused; chmod go-w it",
                    file, what, dir, above, writers(st.st_mode),
                    (unsigned) (st.st_mode & 07777),
                    own ? "" : sticky ? ", sticky but its entry is not ours" : ", not sticky");
        return FALSE;
      }
    }
    if (strcmp(dir, "/") == 0 || strcmp(dir, child) == 0)
      return TRUE;
    g_free(child);
    child = g_steal_pointer(&dir);
    child_uid = st.st_uid;
    own = FALSE;
  }
}

/* Code that others could have replaced is not run.  The file FILE
 * resolves to (realpath) must be a regular file owned by root or us and
 * not writable by group or others, and so must every folder up to /
 * (check_folders).  When FILE is a symlink, the folders holding the link
 * are checked too: whoever may write them may point it elsewhere.  The
 * resolved path, to be opened, or NULL.  (transfer full) */
static char *
check_permissions(const char *file, GError **error)
{
  char *real = realpath(file, NULL);
  struct stat fs;
  if (!real || stat(real, &fs) != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot load plugin: %s", file,
                g_strerror(errno));
    free(real);
    return NULL;
  }
  g_autofree char *resolved = g_strdup(real);
  free(real);
  g_autofree char *shown =
    strcmp(resolved, file) != 0 ? g_strdup_printf(" %s", resolved) : g_strdup("");
  if (!S_ISREG(fs.st_mode)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: plugin file%s is not a regular file",
                file, shown);
    return NULL;
  }
  if (!trusted_owner(fs.st_uid)) {
    g_autofree char *who = owner_name(fs.st_uid);
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin file%s is owned by %s, not by root or you: refused", file, shown,
                who);
    return NULL;
  }
  if (fs.st_mode & (S_IWGRP | S_IWOTH)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: plugin file%s is writable by %s (mode %04o): refused; chmod go-w it", file,
                shown, writers(fs.st_mode), (unsigned) (fs.st_mode & 07777));
    return NULL;
  }
  if (!check_folders(file, resolved, error))
    return NULL;
  /* the link itself: its folder, resolved, with the link's own name */
  g_autofree char *dir = g_path_get_dirname(file);
  g_autofree char *base = g_path_get_basename(file);
  char *rdir = realpath(dir, NULL);
  if (!rdir) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot load plugin: %s: %s", file, dir,
                g_strerror(errno));
    return NULL;
  }
  g_autofree char *link = g_build_filename(rdir, base, NULL);
  free(rdir);
  if (strcmp(link, resolved) != 0 && !check_folders(file, link, error))
    return NULL;
  return g_steal_pointer(&resolved);
}

const CtPluginDescriptor *
ct_plugin_open(const char *file, GError **error)
{
  /* the checked file itself, not a path that could be re-pointed since */
  g_autofree char *real = check_permissions(file, error);
  if (!real)
    return NULL;
  void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot load plugin: %s", file, dlerror());
    return NULL;
  }
  CtPluginEntry entry = (CtPluginEntry) dlsym(h, CT_PLUGIN_SYMBOL);
  if (!entry) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: no symbol %s: not a cliptrain plugin (ABI %d.%d)", file, CT_PLUGIN_SYMBOL,
                CT_PLUGIN_ABI_MAJOR, CT_PLUGIN_ABI_MINOR);
    dlclose(h);
    return NULL;
  }
  const CtPluginDescriptor *d = entry();
  if (!d) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: %s returned NULL", file,
                CT_PLUGIN_SYMBOL);
    dlclose(h);
    return NULL;
  }
  if (!check_descriptor(file, d, error)) {
    dlclose(h);
    return NULL;
  }
  return d; /* the module stays loaded for the life of the process */
}

/* ---------------------------------------------------------------- params */

typedef struct {
  char *value;
  char **list; /* LIST items, or MAP keys and values alternating */
  gboolean set;
  CtParamType type;
} Param;

struct CtParams {
  GHashTable *values; /* name -> Param* */
};

static void
param_free(Param *p)
{
  g_free(p->value);
  g_strfreev(p->list);
  g_free(p);
}

CtParams *
ct_params_new(const CtParamSpec *schema)
{
  CtParams *ps = g_new0(CtParams, 1);
  ps->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify) param_free);
  for (const CtParamSpec *s = schema; s && s->name; s++) {
    Param *p = g_new0(Param, 1);
    p->type = s->type;
    if (s->type == CT_PARAM_LIST || s->type == CT_PARAM_MAP)
      p->list = g_new0(char *, 1); /* filled from the checked recipe node */
    else
      p->value = g_strdup(s->default_value);
    g_hash_table_insert(ps->values, g_strdup(s->name), p);
  }
  return ps;
}

void
ct_params_set(CtParams *ps, const char *name, const char *value, gboolean from_recipe)
{
  Param *p = g_hash_table_lookup(ps->values, name);
  g_return_if_fail(p != NULL);
  g_free(p->value);
  p->value = g_strdup(value);
  p->set = from_recipe;
}

void
ct_params_set_list(CtParams *ps, const char *name, const char *const *items,
                   gboolean from_recipe)
{
  Param *p = g_hash_table_lookup(ps->values, name);
  g_return_if_fail(p != NULL);
  g_strfreev(p->list);
  p->list = g_strdupv((char **) items);
  p->set = from_recipe;
}

void
ct_params_fill(CtParams *ps, CtRNode *node)
{
  for (size_t k = 0; node && k < ct_rnode_n_items(node); k++) {
    CtRNode *v = ct_rnode_item(node, k);
    const char *name = ct_rnode_key(node, k);
    gboolean set = strcmp(ct_rnode_where(v), "default") != 0;
    if (ct_rnode_kind(v) == CT_RNODE_SCALAR) {
      ct_params_set(ps, name, ct_rnode_scalar(v), set);
      continue;
    }
    GPtrArray *items = g_ptr_array_new();
    for (size_t i = 0; i < ct_rnode_n_items(v); i++) {
      if (ct_rnode_kind(v) == CT_RNODE_MAPPING)
        g_ptr_array_add(items, (gpointer) ct_rnode_key(v, i));
      g_ptr_array_add(items, (gpointer) ct_rnode_scalar(ct_rnode_item(v, i)));
    }
    g_ptr_array_add(items, NULL);
    ct_params_set_list(ps, name, (const char *const *) items->pdata, set);
    g_ptr_array_free(items, TRUE);
  }
}

void
ct_params_free(CtParams *ps)
{
  if (!ps)
    return;
  g_hash_table_destroy(ps->values);
  g_free(ps);
}

static const Param *
lookup(const CtParams *ps, const char *name, CtParamType type)
{
  const Param *p = ps ? g_hash_table_lookup(ps->values, name) : NULL;
  if (!p)
    g_critical("plugin asked for parameter '%s', which its schema does not declare", name);
  else if (p->type != type)
    g_critical("plugin asked for parameter '%s' with the wrong type", name);
  return p && p->type == type ? p : NULL;
}

gboolean
ct_params_get_bool(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_BOOL);
  if (!p || !p->value)
    return FALSE;
  const char *v = p->value;
  return !g_ascii_strcasecmp(v, "true") || !g_ascii_strcasecmp(v, "yes") ||
         !g_ascii_strcasecmp(v, "on");
}

int64_t
ct_params_get_int(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_INT);
  return p && p->value ? g_ascii_strtoll(p->value, NULL, 10) : 0;
}

double
ct_params_get_double(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_DOUBLE);
  return p && p->value ? g_ascii_strtod(p->value, NULL) : 0.0;
}

const char *
ct_params_get_string(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_STRING);
  return p ? p->value : NULL;
}

const char *const *
ct_params_get_list(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_LIST);
  return p ? (const char *const *) p->list : NULL;
}

const char *const *
ct_params_get_map(const CtParams *ps, const char *name)
{
  const Param *p = lookup(ps, name, CT_PARAM_MAP);
  return p ? (const char *const *) p->list : NULL;
}

gboolean
ct_params_is_set(const CtParams *ps, const char *name)
{
  const Param *p = ps ? g_hash_table_lookup(ps->values, name) : NULL;
  return p && p->set;
}

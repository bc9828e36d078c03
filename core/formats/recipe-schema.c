/* recipe-schema.c: schema tables bound to typed section structs (see
 * recipe-schema.h), and reading a recipe tree out in other ways. */
#include "config.h"

#include "formats/recipe-schema.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- fields */

static size_t
n_keys(const CtSectionKey *keys)
{
  size_t n = 0;
  while (keys && keys[n].spec.name)
    n++;
  return n;
}

static void *
field(CtSection *s, const CtSectionKey *k)
{
  return (char *) s + k->offset;
}

/* The field's size fits the key's type (a programming error otherwise). */
static gboolean
field_fits(const CtSectionKey *k)
{
  switch (k->spec.type) {
  case CT_PARAM_BOOL:
    return k->size == sizeof(gboolean);
  case CT_PARAM_INT:
    return k->size == sizeof(int) || k->size == sizeof(int64_t);
  case CT_PARAM_DOUBLE:
    return k->size == sizeof(double);
  case CT_PARAM_STRING:
    return k->size == sizeof(char *);
  case CT_PARAM_LIST:
  case CT_PARAM_MAP:
    return k->size == sizeof(CtRecipeList);
  }
  return FALSE;
}

static void
store_int(CtSection *s, const CtSectionKey *k, int64_t v)
{
  if (k->size == sizeof(int))
    *(int *) field(s, k) = (int) v;
  else
    *(int64_t *) field(s, k) = v;
}

static void
list_clear(CtRecipeList *l)
{
  g_strfreev(l->keys);
  g_strfreev(l->values);
  g_strfreev(l->where);
  memset(l, 0, sizeof *l);
}

/* Copy checked value V of key K into its field. */
static void
store(CtSection *s, const CtSectionKey *k, const CtRNode *v)
{
  int64_t i = 0;
  gboolean b = FALSE;
  switch (k->spec.type) {
  case CT_PARAM_BOOL:
    ct_rnode_to_bool(v, &b, NULL);
    *(gboolean *) field(s, k) = b;
    break;
  case CT_PARAM_INT:
    ct_rnode_to_int(v, &i, NULL);
    store_int(s, k, i);
    break;
  case CT_PARAM_DOUBLE:
    ct_rnode_to_double(v, (double *) field(s, k), NULL);
    break;
  case CT_PARAM_STRING: {
    char **p = field(s, k);
    g_free(*p);
    *p = g_strdup(ct_rnode_scalar(v));
    break;
  }
  case CT_PARAM_LIST:
  case CT_PARAM_MAP: {
    CtRecipeList *l = field(s, k);
    list_clear(l);
    l->n = ct_rnode_n_items(v);
    if (k->spec.type == CT_PARAM_MAP)
      l->keys = g_new0(char *, l->n + 1);
    l->values = g_new0(char *, l->n + 1);
    l->where = g_new0(char *, l->n + 1);
    for (size_t j = 0; j < l->n; j++) {
      const CtRNode *item = ct_rnode_item(v, j);
      if (l->keys)
        l->keys[j] = g_strdup(ct_rnode_key(v, j));
      l->values[j] = g_strdup(ct_rnode_scalar(item));
      l->where[j] = g_strdup(ct_rnode_where(item));
    }
    break;
  }
  }
}

/* ---------------------------------------------------------------- reading */

gboolean
ct_section_read(CtRecipe *r, const char *name, const CtSectionKey *keys,
                const char *const *defaults, CtSection *out, GError **error)
{
  g_return_val_if_fail(r != NULL && name != NULL && keys != NULL && out != NULL, FALSE);
  size_t n = n_keys(keys);
  out->name = name;
  out->keys = keys;
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), name, "default");
  /* the schema as ct_recipe_check takes it, with DEFAULTS over it */
  CtParamSpec *spec = g_new0(CtParamSpec, n + 1);
  for (size_t k = 0; k < n; k++) {
    g_return_val_if_fail(field_fits(&keys[k]), FALSE);
    spec[k] = keys[k].spec;
    for (const char *const *d = defaults; d && d[0]; d += 2)
      if (strcmp(d[0], spec[k].name) == 0)
        spec[k].default_value = d[1];
  }
  gboolean ok = ct_recipe_check(r, node, name, spec, error);
  g_free(spec);
  if (!ok)
    return FALSE;
  g_free(out->where);
  out->where = g_strdup(ct_rnode_where(node));
  g_strfreev(out->key_where);
  out->key_where = g_new0(char *, n + 1);
  for (size_t k = 0; k < n; k++) {
    const CtRNode *v = ct_rnode_get(node, keys[k].spec.name);
    out->key_where[k] = g_strdup(ct_rnode_where(v));
    store(out, &keys[k], v);
  }
  return TRUE;
}

gboolean
ct_section_read_owned(CtRecipe *r, const char *name, CtSectionKey *keys,
                      const char *const *defaults, CtSection *out, GError **error)
{
  g_free(out->owned_keys);
  out->owned_keys = keys;
  return ct_section_read(r, name, keys, defaults, out, error);
}

void
ct_section_clear(CtSection *s)
{
  if (!s)
    return;
  size_t n = s->key_where ? n_keys(s->keys) : 0; /* fields exist once read */
  for (size_t k = 0; k < n; k++) {
    const CtSectionKey *key = &s->keys[k];
    if (key->spec.type == CT_PARAM_STRING)
      g_clear_pointer((char **) field(s, key), g_free);
    else if (key->spec.type == CT_PARAM_LIST || key->spec.type == CT_PARAM_MAP)
      list_clear(field(s, key));
  }
  g_strfreev(s->key_where);
  g_free(s->where);
  g_free(s->owned_keys);
  memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- one value */

static gssize
key_index(const CtSection *s, size_t offset)
{
  for (size_t k = 0; s->keys && s->keys[k].spec.name; k++)
    if (s->keys[k].offset == offset)
      return (gssize) k;
  return -1;
}

const char *
ct_section_where(const CtSection *s, size_t offset)
{
  gssize k = key_index(s, offset);
  return k >= 0 && s->key_where ? s->key_where[k] : s->where;
}

gboolean
ct_section_is_set(const CtSection *s, size_t offset)
{
  gssize k = key_index(s, offset);
  return k >= 0 && s->key_where && strcmp(s->key_where[k], "default") != 0;
}

/* Set key K to TEXT in the tree, at WHERE, and remember the position. */
static void
set_text(CtRecipe *r, CtSection *s, gssize k, const char *text, const char *where)
{
  CtRNode *node = ct_rnode_get(ct_recipe_root(r), s->name);
  ct_rnode_set_scalar(r, node, s->keys[k].spec.name, text, where);
  g_free(s->key_where[k]);
  s->key_where[k] = g_strdup(where);
}

void
ct_section_set_int(CtRecipe *r, CtSection *s, size_t offset, int64_t value, const char *where)
{
  gssize k = key_index(s, offset);
  g_return_if_fail(k >= 0 && s->key_where && s->keys[k].spec.type == CT_PARAM_INT);
  g_autofree char *text = g_strdup_printf("%" G_GINT64_FORMAT, value);
  g_autofree char *at = g_strdup(where); /* WHERE may be the position replaced */
  set_text(r, s, k, text, at);
  store_int(s, &s->keys[k], value);
}

gboolean
ct_section_check_int(const CtSection *s, size_t offset, int64_t value, const char *where,
                     GError **error)
{
  gssize k = key_index(s, offset);
  g_return_val_if_fail(k >= 0 && s->keys[k].spec.type == CT_PARAM_INT, FALSE);
  const CtParamSpec *spec = &s->keys[k].spec;
  double d = (double) value;
  if (!(spec->min < spec->max) || (d >= spec->min && d <= spec->max))
    return TRUE;
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
              "%s: %s.%s: %" G_GINT64_FORMAT " is out of range [%.0f, %.0f]", where, s->name,
              spec->name, value, spec->min, spec->max);
  return FALSE;
}

/* PATH absolute: from NODE's base folder (its file's, or the current
 * directory for a --set value), else from DIR.  (transfer full) */
char *
ct_recipe_absolute_path(const CtRNode *node, const char *path, const char *dir)
{
  if (g_path_is_absolute(path))
    return g_strdup(path);
  const char *from = node && ct_rnode_base(node) ? ct_rnode_base(node) : dir;
  g_autofree char *abs_from = g_canonicalize_filename(from ? from : ".", NULL);
  return g_canonicalize_filename(path, abs_from);
}

void
ct_section_absolute_paths(CtRecipe *r, CtSection *s, const char *dir)
{
  if (!s->key_where)
    return; /* not read */
  CtRNode *sec = ct_rnode_get(ct_recipe_root(r), s->name);
  for (gssize k = 0; s->key_where && s->keys[k].spec.name; k++) {
    char **p = field(s, &s->keys[k]);
    if (!(s->keys[k].flags & CT_KEY_PATH) || !**p || g_path_is_absolute(*p))
      continue;
    char *abs = ct_recipe_absolute_path(ct_rnode_get(sec, s->keys[k].spec.name), *p, dir);
    g_autofree char *where = g_strdup(s->key_where[k]);
    set_text(r, s, k, abs, where);
    g_free(*p);
    *p = abs;
  }
}

const char *
ct_section_peek(CtRecipe *r, const char *name, const char *key, const char **where)
{
  CtRNode *sec = ct_rnode_get(ct_recipe_root(r), name);
  CtRNode *v = sec && ct_rnode_kind(sec) == CT_RNODE_MAPPING ? ct_rnode_get(sec, key) : NULL;
  if (where)
    *where = v ? ct_rnode_where(v) : sec ? ct_rnode_where(sec) : NULL;
  return v && ct_rnode_kind(v) == CT_RNODE_SCALAR ? ct_rnode_scalar(v) : NULL;
}

/* ---------------------------------------------------------------- the whole tree */

static void
each_scalar(CtRNode *node, const char *prefix, CtRecipeScalarFunc func, gpointer data)
{
  if (ct_rnode_kind(node) == CT_RNODE_SCALAR) {
    func(prefix, ct_rnode_scalar(node), data);
    return;
  }
  for (size_t i = 0; i < ct_rnode_n_items(node); i++) {
    g_autofree char *key = ct_rnode_kind(node) == CT_RNODE_MAPPING
                             ? g_strdup(ct_rnode_key(node, i))
                             : g_strdup_printf("%zu", i);
    g_autofree char *path = *prefix ? g_strconcat(prefix, ".", key, NULL) : g_strdup(key);
    each_scalar(ct_rnode_item(node, i), path, func, data);
  }
}

void
ct_recipe_foreach_scalar(CtRecipe *r, CtRecipeScalarFunc func, gpointer data)
{
  each_scalar(ct_recipe_root(r), "", func, data);
}

/* ---------------------------------------------------------------- describing */

/* A bound as the range errors of ct_recipe_check print it. */
static void
append_bound(GString *out, double v, gboolean is_int)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  const char *fmt = is_int && fabs(v) < 1e18 ? "%.0f" : "%g";
  g_string_append(out, g_ascii_formatd(buf, sizeof buf, fmt, v));
}

void
ct_param_describe(GString *out, const char *name, int width, const CtParamSpec *p,
                  const char *note)
{
  static const char *const types[] = { "bool", "int", "double", "string", "list", "map" };
  const char *type = (unsigned) p->type < G_N_ELEMENTS(types) ? types[p->type] : "?";
  g_string_append_printf(out, "  %-*s %-7s default %-12s %s", width, name, type,
                         p->default_value ? p->default_value : "(required)",
                         p->doc ? p->doc : "");
  if (p->min < p->max) {
    g_string_append(out, " [");
    append_bound(out, p->min, p->type == CT_PARAM_INT);
    g_string_append(out, ", ");
    append_bound(out, p->max, p->type == CT_PARAM_INT);
    g_string_append(out, "]");
  }
  if (p->choices)
    g_string_append_printf(out, " (%s)", p->choices);
  if (note && *note)
    g_string_append_printf(out, "; %s", note);
  g_string_append_c(out, '\n');
}

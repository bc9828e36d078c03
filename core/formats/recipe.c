/* recipe.c: YAML recipes (see recipe.h).
 *
 * libyaml's document API parses; we convert to our own tree, where every
 * node and every mapping key keeps its position text.  Aliases are
 * expanded by copying the anchored node (the copy keeps the anchored
 * node's positions); nesting depth and the node count (alias expansion
 * included) are bounded, which also stops recursive aliases.  Nodes
 * replaced after loading (overrides, ct_rnode_set_scalar) are kept until
 * the recipe is freed, so pointers handed out stay valid. */
#include "config.h"

#include "base/file.h"
#include "formats/recipe.h"
#include "base/file-write.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#define MAX_DEPTH 256
#define MAX_NODES 200000
#define MAX_FILE_SIZE (16u << 20)

struct CtRNode {
  CtRNodeKind kind;
  char *where;
  char *text;        /* scalar */
  gboolean quoted;   /* scalar written quoted: written back quoted, so that
                      * '007' or 'true' stay strings for any YAML reader */
  GPtrArray *items;  /* CtRNode *: sequence items or mapping values */
  GPtrArray *keys;   /* char *: mapping keys */
  GPtrArray *kwhere; /* char *: positions of the mapping keys */
  char *base;        /* absolute folder that relative paths in this node
                      * start from: its file's, or the current directory
                      * for a --set value; NULL for nodes made by code */
};

struct CtRecipe {
  CtRNode *root;
  GPtrArray *dead; /* replaced nodes, freed with the recipe */
};

/* ------------------------------------------------------------- the tree */

static CtRNode *
node_new(CtRNodeKind kind, const char *where, const char *text)
{
  CtRNode *n = g_new0(CtRNode, 1);
  n->kind = kind;
  n->where = g_strdup(where);
  if (kind == CT_RNODE_SCALAR)
    n->text = g_strdup(text ? text : "");
  else
    n->items = g_ptr_array_new();
  if (kind == CT_RNODE_MAPPING) {
    n->keys = g_ptr_array_new_with_free_func(g_free);
    n->kwhere = g_ptr_array_new_with_free_func(g_free);
  }
  return n;
}

static void
node_free(CtRNode *n)
{
  if (!n)
    return;
  for (guint i = 0; n->items && i < n->items->len; i++)
    node_free(n->items->pdata[i]);
  if (n->items)
    g_ptr_array_unref(n->items);
  if (n->keys) {
    g_ptr_array_unref(n->keys);
    g_ptr_array_unref(n->kwhere);
  }
  g_free(n->text);
  g_free(n->where);
  g_free(n->base);
  g_free(n);
}

static int
map_index(const CtRNode *map, const char *key)
{
  for (guint i = 0; i < map->keys->len; i++)
    if (strcmp(map->keys->pdata[i], key) == 0)
      return (int)i;
  return -1;
}

static void
map_append(CtRNode *map, const char *key, const char *kwhere, CtRNode *value)
{
  g_ptr_array_add(map->keys, g_strdup(key));
  g_ptr_array_add(map->kwhere, g_strdup(kwhere));
  g_ptr_array_add(map->items, value);
}

/* Sets KEY of MAP to VALUE (taken); a replaced node goes to DEAD, or is
 * freed when DEAD is NULL. */
static void
map_put(GPtrArray *dead, CtRNode *map, const char *key, const char *kwhere, CtRNode *value)
{
  int j = map_index(map, key);
  if (j < 0) {
    map_append(map, key, kwhere, value);
    return;
  }
  if (dead)
    g_ptr_array_add(dead, map->items->pdata[j]);
  else
    node_free(map->items->pdata[j]);
  map->items->pdata[j] = value;
  g_free(map->kwhere->pdata[j]);
  map->kwhere->pdata[j] = g_strdup(kwhere);
}

static const char *
kind_name(CtRNodeKind kind)
{
  return kind == CT_RNODE_SCALAR ? "scalar" : kind == CT_RNODE_SEQUENCE ? "sequence" : "mapping";
}

/* ----------------------------------------------------------- messages */

static void append_escaped(GString *g, const char *s, size_t limit);

/* Sets "WHERE: MESSAGE" with every control character escaped, so that the
 * error stays one line whatever text from the recipe it quotes (a key
 * with a newline in it, say). */
static void
vfail(GError **error, int code, const char *where, const char *fmt, va_list ap)
{
  char *msg = g_strdup_vprintf(fmt, ap);
  GString *line = g_string_new(NULL);
  append_escaped(line, where, 200); /* a 10 MB --set is its own where */
  g_string_append(line, ": ");
  append_escaped(line, msg, SIZE_MAX);
  g_set_error_literal(error, CT_ERROR, code, line->str);
  g_string_free(line, TRUE);
  g_free(msg);
}

/* Sets "WHERE: MESSAGE"; returns FALSE. */
G_GNUC_PRINTF(4, 5)
static gboolean
fail(GError **error, int code, const char *where, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfail(error, code, where, fmt, ap);
  va_end(ap);
  return FALSE;
}

/* Appends S to G with control characters escaped, cut after about LIMIT
 * bytes (at a character boundary). */
static void
append_escaped(GString *g, const char *s, size_t limit)
{
  const unsigned char *p = (const unsigned char *)s;
  for (size_t start = g->len; *p && (g->len - start < limit || (*p & 0xC0) == 0x80); p++) {
    if (*p < 0x20 || *p == 0x7f)
      g_string_append_printf(g, "\\x%02x", *p);
    else
      g_string_append_c(g, (char)*p);
  }
  if (*p)
    g_string_append(g, "...");
}

char *
ct_quote_cut(const char *s)
{
  GString *g = g_string_new(NULL);
  s = s ? s : "";
  append_escaped(g, s, 80);
  if (g_str_has_suffix(g->str, "...") && !g_str_has_suffix(s, "..."))
    g_string_append_printf(g, " (%zu bytes)", strlen(s));
  return g_string_free(g, FALSE);
}

/* User text for a one-line message, in BUF: at most about 80 characters
 * of it, then "... (N bytes)". */
static const char *
show(char *buf, const char *s)
{
  char *cut = ct_quote_cut(s);
  g_strlcpy(buf, cut, 256);
  g_free(cut);
  return buf;
}
#define SHOW(s) show((char[256]){ 0 }, (s))

/* ------------------------------------------------------------- parsing */

/* libyaml's document API resolves an alias to the anchored node itself;
 * converting to our tree copies it, with the anchored node's positions. */
typedef struct {
  yaml_document_t doc;
  const char *name;  /* file name in positions */
  const char *fixed; /* position text of every node (--set), or NULL */
  char *base;        /* every node's base folder (absolute) */
  size_t n_nodes;
} Doc;

static char *
mark_where(const Doc *D, yaml_mark_t m)
{
  if (D->fixed)
    return g_strdup(D->fixed);
  return g_strdup_printf("%s:%zu:%zu", D->name, m.line + 1, m.column + 1);
}

static void
syntax_error(const Doc *D, yaml_parser_t *yp, const char *data, size_t len, GError **error)
{
  yaml_mark_t m = yp->problem_mark;
  if (yp->error == YAML_READER_ERROR) { /* only an offset is known */
    m.line = m.column = 0;
    for (size_t i = 0; i < yp->problem_offset && i < len; i++) {
      if (data[i] == '\n')
        m.line++, m.column = 0;
      else if ((data[i] & 0xC0) != 0x80)
        m.column++;
    }
  }
  const char *problem = yp->problem ? yp->problem : "invalid YAML";
  char *where = mark_where(D, m);
  /* a --set value: text such as "a {label}." inside a [list] reads as
   * YAML flow syntax; say how to quote it */
  gboolean flow = FALSE;
  for (size_t i = 0; i < len; i++)
    flow |= strchr("{}[],:#", data[i]) != NULL && data[i] != '\0';
  if (D->fixed && flow)
    fail(error, CT_ERROR_CONFIG, where,
         "%s (at column %zu of the value); YAML reads { } [ ] , : # as syntax: quote an item "
         "that holds them, e.g. --set \"data.templates=['a {label}.', 'a photo of a {label}.']\"",
         problem, m.column + 1);
  else if (D->fixed)
    fail(error, CT_ERROR_CONFIG, where, "%s (at column %zu of the value)", problem, m.column + 1);
  else if (yp->context)
    fail(error, CT_ERROR_CONFIG, where, "%s (%s at %zu:%zu)", problem, yp->context,
         yp->context_mark.line + 1, yp->context_mark.column + 1);
  else
    fail(error, CT_ERROR_CONFIG, where, "%s", problem);
  g_free(where);
}

/* Our copy of node ID.  NULL on error. */
static CtRNode *
convert(Doc *D, int id, int depth, GError **error)
{
  yaml_node_t *y = yaml_document_get_node(&D->doc, id);
  char *where = mark_where(D, y->start_mark);
  CtRNode *node = NULL;

  if (depth > MAX_DEPTH || ++D->n_nodes > MAX_NODES) {
    fail(error, CT_ERROR_CONFIG, where, "more than %d levels or %d nodes (a recursive alias?)",
         MAX_DEPTH, MAX_NODES);
  } else if (y->type == YAML_SCALAR_NODE) {
    char *text = g_strndup((const char *)y->data.scalar.value, y->data.scalar.length);
    if (strlen(text) != y->data.scalar.length)
      fail(error, CT_ERROR_CONFIG, where, "NUL characters are not allowed");
    else {
      node = node_new(CT_RNODE_SCALAR, where, text);
      node->quoted = y->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    }
    g_free(text);
  } else if (y->type == YAML_SEQUENCE_NODE) {
    node = node_new(CT_RNODE_SEQUENCE, where, NULL);
    for (yaml_node_item_t *it = y->data.sequence.items.start; node && it < y->data.sequence.items.top;
         it++) {
      CtRNode *item = convert(D, *it, depth + 1, error);
      if (item)
        g_ptr_array_add(node->items, item);
      else
        g_clear_pointer(&node, node_free);
    }
  } else if (y->type == YAML_MAPPING_NODE) {
    node = node_new(CT_RNODE_MAPPING, where, NULL);
    for (yaml_node_pair_t *p = y->data.mapping.pairs.start; node && p < y->data.mapping.pairs.top;
         p++) {
      CtRNode *key = convert(D, p->key, depth + 1, error), *value = NULL;
      int dup = key && key->kind == CT_RNODE_SCALAR ? map_index(node, key->text) : -1;
      if (key && key->kind != CT_RNODE_SCALAR)
        fail(error, CT_ERROR_CONFIG, key->where, "mapping keys must be scalars, got a %s",
             kind_name(key->kind));
      else if (dup >= 0)
        fail(error, CT_ERROR_CONFIG, key->where, "duplicate key '%s' (first at %s)",
             SHOW(key->text), (const char *)node->kwhere->pdata[dup]);
      else if (key && (value = convert(D, p->value, depth + 1, error)))
        map_append(node, key->text, key->where, value);
      if (!value)
        g_clear_pointer(&node, node_free);
      node_free(key);
    }
  }
  g_free(where);
  if (node)
    node->base = g_strdup(D->base);
  return node;
}

/* The absolute folder of file NAME.  (transfer full) */
static char *
base_folder(const char *name)
{
  g_autofree char *dir = g_path_get_dirname(name);
  return g_canonicalize_filename(dir, NULL);
}

/* Parses one YAML document.  NAME is the file name in positions, or FIXED
 * the position text of every node.  BASE (or NULL) is the folder that
 * relative paths in the nodes start from (ct_rnode_base).  (transfer full) */
static CtRNode *
parse_yaml(const char *name, const char *fixed, const char *base, const char *data, size_t len,
           GError **error)
{
  Doc D = { .name = name, .fixed = fixed, .base = (char *) base };
  yaml_parser_t yp;
  yaml_document_t extra;
  CtRNode *root = NULL;
  if (!yaml_parser_initialize(&yp)) {
    fail(error, CT_ERROR_FAILED, fixed ? fixed : name, "cannot create a YAML parser");
    return NULL;
  }
  yaml_parser_set_input_string(&yp, (const unsigned char *)data, len);
  if (!yaml_parser_load(&yp, &D.doc)) {
    syntax_error(&D, &yp, data, len, error);
    yaml_parser_delete(&yp);
    return NULL;
  }
  if (!yaml_document_get_root_node(&D.doc)) { /* no document */
    char *where = fixed ? g_strdup(fixed) : g_strdup_printf("%s:1:1", name);
    if (fixed) {
      root = node_new(CT_RNODE_SCALAR, fixed, "");
      root->base = g_strdup(base);
    }
    else
      fail(error, CT_ERROR_CONFIG, where, "the recipe is empty; expected a mapping");
    g_free(where);
  } else if (!yaml_parser_load(&yp, &extra)) {
    syntax_error(&D, &yp, data, len, error);
  } else {
    if (yaml_document_get_root_node(&extra)) {
      char *where = mark_where(&D, extra.start_mark);
      fail(error, CT_ERROR_CONFIG, where, "only one YAML document is allowed");
      g_free(where);
    } else {
      root = convert(&D, 1, 0, error);
    }
    yaml_document_delete(&extra);
  }
  yaml_document_delete(&D.doc);
  yaml_parser_delete(&yp);
  return root;
}

/* ------------------------------------------------------------ loading */

/* Merges mapping OVER into mapping BASE and frees OVER: mappings merge key
 * by key, anything else replaces.  New keys come after BASE's. */
static void
merge_into(CtRNode *base, CtRNode *over)
{
  for (guint i = 0; i < over->items->len; i++) {
    const char *key = over->keys->pdata[i];
    CtRNode *v = over->items->pdata[i], *b = ct_rnode_get(base, key);
    if (b && b->kind == CT_RNODE_MAPPING && v->kind == CT_RNODE_MAPPING) {
      int j = map_index(base, key);
      merge_into(b, v);
      g_free(base->kwhere->pdata[j]);
      base->kwhere->pdata[j] = g_strdup(over->kwhere->pdata[i]);
    } else {
      map_put(NULL, base, key, over->kwhere->pdata[i], v);
    }
    over->items->pdata[i] = NULL;
  }
  g_free(base->where);
  base->where = g_steal_pointer(&over->where);
  node_free(over);
}

/* Loads PATH (or DATA when not NULL) and what it extends.  EXT_WHERE is
 * the position of the `extends:` value that named PATH, if any; CHAIN the
 * canonical paths of the files that extend it. */
static CtRNode *
load_tree(const char *path, const char *data, size_t len, const char *ext_where,
          GPtrArray *chain, GError **error)
{
  CtRNode *root = NULL, *base;
  char *owned = NULL, *canon, *real = realpath(path, NULL);
  canon = real ? g_strdup(real) : g_canonicalize_filename(path, NULL);
  free(real);

  for (guint i = 0; i < chain->len; i++) {
    if (strcmp(chain->pdata[i], canon) == 0) {
      g_ptr_array_add(chain, canon);
      g_ptr_array_add(chain, NULL);
      char *cycle = g_strjoinv(" -> ", (char **)chain->pdata + i);
      g_ptr_array_set_size(chain, chain->len - 2);
      fail(error, CT_ERROR_CONFIG, ext_where, "extends cycle: %s", cycle);
      g_free(cycle);
      goto out;
    }
  }
  GError *rerr = NULL;
  if (!data) {
    /* a regular file only: a FIFO would block and /dev/zero never end */
    if (!ct_file_read_all(path, "a recipe file", MAX_FILE_SIZE, &owned, &len, &rerr)) {
      if (ext_where)
        fail(error, rerr->code, ext_where, "extends: %s", rerr->message);
      else
        g_propagate_error(error, g_steal_pointer(&rerr));
      g_clear_error(&rerr);
      goto out;
    }
    data = owned;
  }
  char *folder = owned ? base_folder(path) : NULL; /* a file's; none for data */
  root = parse_yaml(path, NULL, folder, data, len, error);
  g_free(folder);
  if (!root)
    goto out;
  if (root->kind != CT_RNODE_MAPPING) {
    fail(error, CT_ERROR_CONFIG, root->where, "the root of a recipe must be a mapping, got a %s",
         kind_name(root->kind));
    goto fail;
  }
  int i = map_index(root, "extends");
  if (i < 0)
    goto out;
  CtRNode *ext = root->items->pdata[i];
  if (ext->kind != CT_RNODE_SCALAR || !*ext->text) {
    fail(error, CT_ERROR_CONFIG, ext->where, "extends: expected a file name, got %s",
         ext->kind == CT_RNODE_SCALAR ? "nothing" : kind_name(ext->kind));
    goto fail;
  }
  char *dir = g_path_get_dirname(path);
  char *base_path = g_path_is_absolute(ext->text) || strcmp(dir, ".") == 0
                        ? g_strdup(ext->text)
                        : g_build_filename(dir, ext->text, NULL);
  g_ptr_array_add(chain, canon);
  base = load_tree(base_path, NULL, 0, ext->where, chain, error);
  g_ptr_array_set_size(chain, chain->len - 1);
  g_free(base_path);
  g_free(dir);
  if (!base)
    goto fail;
  node_free(ext);
  g_ptr_array_remove_index(root->items, (guint)i);
  g_ptr_array_remove_index(root->keys, (guint)i);
  g_ptr_array_remove_index(root->kwhere, (guint)i);
  merge_into(base, root);
  root = base;
  goto out;
fail:
  g_clear_pointer(&root, node_free);
out:
  g_free(owned);
  g_free(canon);
  return root;
}

static CtRecipe *
load_common(const char *path, const char *data, size_t len, GError **error)
{
  GPtrArray *chain = g_ptr_array_new();
  CtRNode *root = load_tree(path, data, len, NULL, chain, error);
  g_ptr_array_unref(chain);
  if (!root)
    return NULL;
  CtRecipe *r = g_new0(CtRecipe, 1);
  r->root = root;
  r->dead = g_ptr_array_new_with_free_func((GDestroyNotify)node_free);
  return r;
}

CtRecipe *
ct_recipe_load(const char *path, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  return load_common(path, NULL, 0, error);
}

CtRecipe *
ct_recipe_load_data(const char *name, const char *yaml, gssize len, GError **error)
{
  g_return_val_if_fail(yaml != NULL, NULL);
  return load_common(name ? name : "<recipe>", yaml, len < 0 ? strlen(yaml) : (size_t)len, error);
}

void
ct_recipe_free(CtRecipe *recipe)
{
  if (!recipe)
    return;
  node_free(recipe->root);
  g_ptr_array_unref(recipe->dead);
  g_free(recipe);
}

/* ----------------------------------------------------- paths, overrides */

/* A decimal index below N. */
static gboolean
parse_index(const char *s, guint n, guint *out)
{
  guint64 v = 0;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isdigit(*p) || (v = v * 10 + (guint64)(*p - '0')) >= n)
      return FALSE;
  *out = (guint)v;
  return *s != '\0';
}

/* Whether ITEM names plugin or value NAME: a scalar NAME, or a mapping
 * whose only key is NAME ({name: {params}}). */
static gboolean
item_is(const CtRNode *item, const CtRNode *value)
{
  if (value->kind != CT_RNODE_SCALAR)
    return FALSE;
  if (item->kind == CT_RNODE_SCALAR)
    return strcmp(item->text, value->text) == 0;
  return item->kind == CT_RNODE_MAPPING && item->keys->len == 1 &&
         strcmp(item->keys->pdata[0], value->text) == 0;
}

/* PATH+=VALUE appends VALUE (the items of a sequence VALUE) to the
 * sequence at CUR (TARGET in messages); PATH-=VALUE removes every item
 * that is VALUE (or names the plugin VALUE).  VALUE is taken. */
static gboolean
edit_list(CtRecipe *recipe, CtRNode *cur, const char *target, gboolean add, CtRNode *value,
          const char *where, GError **error)
{
  if (cur->kind != CT_RNODE_SEQUENCE) {
    node_free(value);
    return fail(error, CT_ERROR_CONFIG, where, "'%s' (at %s) is a %s; %s works on lists",
                SHOW(target), cur->where, kind_name(cur->kind), add ? "+=" : "-=");
  }
  if (add) {
    if (value->kind == CT_RNODE_SEQUENCE) {
      for (guint i = 0; i < value->items->len; i++)
        g_ptr_array_add(cur->items, value->items->pdata[i]);
      g_ptr_array_set_size(value->items, 0);
      node_free(value);
    } else
      g_ptr_array_add(cur->items, value);
    return TRUE;
  }
  guint removed = 0;
  for (guint i = 0; i < cur->items->len;)
    if (item_is(cur->items->pdata[i], value)) {
      g_ptr_array_add(recipe->dead, g_ptr_array_steal_index(cur->items, i));
      removed++;
    } else
      i++;
  gboolean ok = removed > 0 ||
                fail(error, CT_ERROR_CONFIG, where, "'%s' (at %s) has no item '%s'",
                     SHOW(target), cur->where, value->kind == CT_RNODE_SCALAR
                                                 ? SHOW(value->text) : kind_name(value->kind));
  node_free(value);
  return ok;
}

gboolean
ct_recipe_override(CtRecipe *recipe, const char *assignment, GError **error)
{
  g_return_val_if_fail(recipe != NULL && assignment != NULL, FALSE);
  /* A path that is not UTF-8 would give keys that no YAML can hold, and
   * the resolved recipe could not be written: refuse it here. */
  gboolean utf8 = g_utf8_validate(assignment, -1, NULL);
  char *valid = g_utf8_make_valid(assignment, -1);
  GString *w = g_string_new("--set ");
  append_escaped(w, valid, SIZE_MAX);
  g_free(valid);
  char *where = g_string_free(w, FALSE);
  const char *eq = strchr(assignment, '=');
  char *path = g_strstrip(g_strndup(assignment, eq ? (gsize)(eq - assignment) : 0));
  /* "+=" appends to a list, "-=" removes from it */
  char op = *path && strchr("+-", path[strlen(path) - 1]) ? path[strlen(path) - 1] : 0;
  if (op) {
    path[strlen(path) - 1] = '\0';
    g_strchomp(path);
  }
  char **seg = g_strsplit(path, ".", -1);
  CtRNode *value = NULL, *cur = recipe->root;
  gboolean ok = FALSE;
  guint idx;
  char *cwd = NULL;

  if (!utf8) {
    fail(error, CT_ERROR_CONFIG, where, "not valid UTF-8");
    goto out;
  }
  if (!eq || !*path) {
    fail(error, CT_ERROR_CONFIG, where, "expected PATH=VALUE with a non-empty PATH");
    goto out;
  }
  for (guint i = 0; seg[i]; i++)
    if (!*seg[i]) {
      fail(error, CT_ERROR_CONFIG, where, "empty segment in path '%s'", SHOW(path));
      goto out;
    }
  cwd = g_get_current_dir(); /* a --set path starts here */
  if (!(value = parse_yaml(NULL, where, cwd, eq + 1, strlen(eq + 1), error)))
    goto out;
  for (guint i = 0; seg[i]; i++) {
    gboolean last = seg[i + 1] == NULL;
    if (cur->kind == CT_RNODE_MAPPING) {
      CtRNode *next = ct_rnode_get(cur, seg[i]);
      if (last && op == '+' && !next) /* a list that is not there yet */
        map_append(cur, seg[i], where, next = node_new(CT_RNODE_SEQUENCE, where, NULL));
      if (last && op) {
        if (!next) {
          fail(error, CT_ERROR_CONFIG, where, "'%s' is not set; -= has nothing to remove",
               SHOW(path));
          goto out;
        }
        ok = edit_list(recipe, next, path, op == '+', g_steal_pointer(&value), where, error);
        goto out;
      }
      if (last)
        map_put(recipe->dead, cur, seg[i], where, value);
      else if (!next)
        map_append(cur, seg[i], where, next = node_new(CT_RNODE_MAPPING, where, NULL));
      cur = next;
    } else if (cur->kind == CT_RNODE_SEQUENCE && parse_index(seg[i], cur->items->len, &idx)) {
      if (last && op) {
        ok = edit_list(recipe, cur->items->pdata[idx], path, op == '+', g_steal_pointer(&value),
                       where, error);
        goto out;
      }
      CtRNode *item = cur->items->pdata[idx];
      if (!last && item->kind == CT_RNODE_SCALAR && strcmp(item->text, seg[i + 1]) == 0) {
        /* callbacks.1.fault.x=... on `- fault`: the plugin gets its
         * parameters' mapping, {fault: {}} */
        CtRNode *params = node_new(CT_RNODE_MAPPING, item->where, NULL);
        CtRNode *plugin = node_new(CT_RNODE_MAPPING, item->where, NULL);
        map_append(plugin, item->text, item->where, params);
        g_ptr_array_add(recipe->dead, item);
        cur->items->pdata[idx] = plugin;
      }
      if (last) {
        g_ptr_array_add(recipe->dead, cur->items->pdata[idx]);
        cur->items->pdata[idx] = value;
      }
      cur = cur->items->pdata[idx];
    } else {
      char *saved = seg[i];
      seg[i] = NULL;
      char *prefix = g_strjoinv(".", seg);
      seg[i] = saved;
      if (cur->kind == CT_RNODE_SEQUENCE)
        fail(error, CT_ERROR_CONFIG, where,
             "'%s' (at %s) is a sequence of %u items; '%s' is not an index into it",
             SHOW(prefix), cur->where, cur->items->len, SHOW(seg[i]));
      else
        fail(error, CT_ERROR_CONFIG, where, "'%s' (at %s) is a scalar; it has no '%s'",
             SHOW(prefix), cur->where, SHOW(seg[i]));
      g_free(prefix);
      goto out;
    }
  }
  value = NULL; /* now in the tree */
  ok = TRUE;
out:
  node_free(value);
  g_strfreev(seg);
  g_free(path);
  g_free(where);
  g_free(cwd);
  return ok;
}

CtRNode *
ct_recipe_root(CtRecipe *recipe)
{
  g_return_val_if_fail(recipe != NULL, NULL);
  return recipe->root;
}

CtRNode *
ct_recipe_lookup(CtRecipe *recipe, const char *path)
{
  g_return_val_if_fail(recipe != NULL && path != NULL, NULL);
  if (!*path)
    return recipe->root;
  char **seg = g_strsplit(path, ".", -1);
  CtRNode *cur = recipe->root;
  guint idx;
  for (guint i = 0; cur && seg[i]; i++) {
    if (cur->kind == CT_RNODE_MAPPING)
      cur = ct_rnode_get(cur, seg[i]);
    else if (cur->kind == CT_RNODE_SEQUENCE && parse_index(seg[i], cur->items->len, &idx))
      cur = cur->items->pdata[idx];
    else
      cur = NULL;
  }
  g_strfreev(seg);
  return cur;
}

/* ------------------------------------------------------------ accessors */

CtRNodeKind
ct_rnode_kind(const CtRNode *node)
{
  g_return_val_if_fail(node != NULL, CT_RNODE_SCALAR);
  return node->kind;
}

const char *
ct_rnode_where(const CtRNode *node)
{
  g_return_val_if_fail(node != NULL, NULL);
  return node->where;
}

const char *
ct_rnode_scalar(const CtRNode *node)
{
  g_return_val_if_fail(node != NULL, NULL);
  return node->text;
}

size_t
ct_rnode_n_items(const CtRNode *node)
{
  g_return_val_if_fail(node != NULL, 0);
  return node->items ? node->items->len : 0;
}

CtRNode *
ct_rnode_item(const CtRNode *node, size_t i)
{
  g_return_val_if_fail(node != NULL, NULL);
  return node->items && i < node->items->len ? node->items->pdata[i] : NULL;
}

const char *
ct_rnode_base(const CtRNode *node)
{
  g_return_val_if_fail(node != NULL, NULL);
  return node->base;
}

const char *
ct_rnode_key(const CtRNode *node, size_t i)
{
  g_return_val_if_fail(node != NULL, NULL);
  return node->keys && i < node->keys->len ? node->keys->pdata[i] : NULL;
}

CtRNode *
ct_rnode_get(const CtRNode *map, const char *key)
{
  g_return_val_if_fail(key != NULL, NULL);
  int j = map && map->keys ? map_index(map, key) : -1;
  return j >= 0 ? map->items->pdata[j] : NULL;
}

CtRNode *
ct_rnode_set_scalar(CtRecipe *recipe, CtRNode *map, const char *key, const char *value,
                    const char *where)
{
  g_return_val_if_fail(recipe && map && map->keys && key && value && where, NULL);
  CtRNode *n = node_new(CT_RNODE_SCALAR, where, value);
  map_put(recipe->dead, map, key, where, n);
  return n;
}

CtRNode *
ct_rnode_set_item_scalar(CtRecipe *recipe, CtRNode *seq, size_t i, const char *value,
                         const char *where)
{
  g_return_val_if_fail(recipe && seq && seq->kind == CT_RNODE_SEQUENCE && value && where, NULL);
  g_return_val_if_fail(i < seq->items->len, NULL);
  CtRNode *n = node_new(CT_RNODE_SCALAR, where, value);
  g_ptr_array_add(recipe->dead, seq->items->pdata[i]);
  seq->items->pdata[i] = n;
  return n;
}

CtRNode *
ct_rnode_ensure_mapping(CtRecipe *recipe, CtRNode *map, const char *key, const char *where)
{
  g_return_val_if_fail(recipe && map && map->keys && key && where, NULL);
  CtRNode *n = ct_rnode_get(map, key);
  if (!n)
    map_append(map, key, where, n = node_new(CT_RNODE_MAPPING, where, NULL));
  return n;
}

/* ---------------------------------------------------------- typed reads */

/* LABEL is "" or "CONTEXT.KEY: ". */
static gboolean
type_error(GError **error, const CtRNode *node, const char *label, const char *what)
{
  if (node->kind == CT_RNODE_SCALAR)
    return fail(error, CT_ERROR_CONFIG, node->where, "%sexpected %s, got '%s'", label, what,
                SHOW(node->text));
  return fail(error, CT_ERROR_CONFIG, node->where, "%sexpected %s, got a %s", label, what,
              kind_name(node->kind));
}

static gboolean
read_int(const CtRNode *node, const char *label, int64_t *out, GError **error)
{
  const char *s = node->text ? node->text : "";
  const char *p = s + (*s == '+' || *s == '-');
  gboolean digits = *p != '\0';
  for (; *p; p++)
    digits = digits && g_ascii_isdigit(*p);
  if (!digits)
    return type_error(error, node, label, "an integer");
  errno = 0;
  *out = strtoll(s, NULL, 10);
  if (errno == ERANGE)
    return fail(error, CT_ERROR_CONFIG, node->where, "%s%s does not fit in a 64-bit integer",
                label, SHOW(s));
  return TRUE;
}

static gboolean
read_double(const CtRNode *node, const char *label, double *out, GError **error)
{
  const char *s = node->text ? node->text : "";
  char *end = NULL;
  errno = 0;
  if (!*s || g_ascii_isspace(*s) || (*out = g_ascii_strtod(s, &end), *end))
    return type_error(error, node, label, "a number");
  if (errno == ERANGE && isinf(*out))
    return fail(error, CT_ERROR_CONFIG, node->where, "%s%s does not fit in a double", label,
                SHOW(s));
  return TRUE;
}

static gboolean
read_bool(const CtRNode *node, const char *label, gboolean *out, GError **error)
{
  static const char *const words[] = { "true", "yes", "on", "false", "no", "off" };
  for (guint i = 0; node->text && i < G_N_ELEMENTS(words); i++)
    if (g_ascii_strcasecmp(node->text, words[i]) == 0) {
      *out = i < 3;
      return TRUE;
    }
  return type_error(error, node, label, "a boolean (true/false/yes/no/on/off)");
}

gboolean
ct_rnode_to_int(const CtRNode *node, int64_t *out, GError **error)
{
  g_return_val_if_fail(node != NULL && out != NULL, FALSE);
  return read_int(node, "", out, error);
}

gboolean
ct_rnode_to_double(const CtRNode *node, double *out, GError **error)
{
  g_return_val_if_fail(node != NULL && out != NULL, FALSE);
  return read_double(node, "", out, error);
}

gboolean
ct_rnode_to_bool(const CtRNode *node, gboolean *out, GError **error)
{
  g_return_val_if_fail(node != NULL && out != NULL, FALSE);
  return read_bool(node, "", out, error);
}

gboolean
ct_recipe_parse_double(const char *text, const char *where, double *out, GError **error)
{
  g_return_val_if_fail(text != NULL && where != NULL && out != NULL, FALSE);
  const CtRNode node = { .kind = CT_RNODE_SCALAR, .where = (char *)where, .text = (char *)text };
  return read_double(&node, "", out, error);
}

/* -------------------------------------------------------------- checks */

gboolean
ct_recipe_error(GError **error, const char *where, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vfail(error, CT_ERROR_CONFIG, where, fmt, ap);
  va_end(ap);
  return FALSE;
}

static size_t
levenshtein(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b), *row = g_new(size_t, lb + 1);
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      row[j] = MIN(MIN(up, row[j - 1]) + 1, diag + (a[i - 1] != b[j - 1]));
      diag = up;
    }
  }
  size_t d = row[lb];
  g_free(row);
  return d;
}

const char *
ct_did_you_mean(const char *word, const char *const *candidates)
{
  const char *best = NULL;
  size_t best_d = SIZE_MAX, wl = word ? strlen(word) : 0;
  for (size_t i = 0; word && candidates && candidates[i]; i++) {
    const char *c = candidates[i];
    size_t d = levenshtein(word, c), pre = 0;
    while (word[pre] && word[pre] == c[pre])
      pre++;
    if (((d <= 2 && d < wl) || pre >= 4) && d < best_d) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

/* A value against its spec.  LABEL is "CONTEXT.KEY: ". */
static gboolean
check_value(const CtParamSpec *spec, const CtRNode *v, const char *label, GError **error)
{
  int64_t i = 0;
  double d = 0;
  gboolean b, is_int = spec->type == CT_PARAM_INT;
  char lo[G_ASCII_DTOSTR_BUF_SIZE], hi[G_ASCII_DTOSTR_BUF_SIZE];

  switch (spec->type) {
  case CT_PARAM_BOOL:
    return read_bool(v, label, &b, error);
  case CT_PARAM_INT:
  case CT_PARAM_DOUBLE:
    if (is_int ? !read_int(v, label, &i, error) : !read_double(v, label, &d, error))
      return FALSE;
    d = is_int ? (double)i : d;
    if (spec->min < spec->max && !(d >= spec->min && d <= spec->max)) {
      const char *fmt = is_int && fabs(spec->min) < 1e18 && fabs(spec->max) < 1e18 ? "%.0f" : "%g";
      g_ascii_formatd(lo, sizeof lo, fmt, spec->min);
      g_ascii_formatd(hi, sizeof hi, fmt, spec->max);
      return fail(error, CT_ERROR_CONFIG, v->where, "%s%s is out of range [%s, %s]", label,
                  SHOW(v->text), lo, hi);
    }
    return TRUE;
  case CT_PARAM_STRING:
    if (v->kind != CT_RNODE_SCALAR)
      return type_error(error, v, label, "a string");
    if (spec->choices) {
      char **choices = g_strsplit(spec->choices, "|", -1);
      gboolean found = g_strv_contains((const char *const *)choices, v->text);
      const char *dym = found ? NULL : ct_did_you_mean(v->text, (const char *const *)choices);
      if (!found)
        fail(error, CT_ERROR_CONFIG, v->where, "%s'%s' is not one of %s%s%s%s", label,
             SHOW(v->text), spec->choices, dym ? "; did you mean '" : "", dym ? dym : "",
             dym ? "'?" : "");
      g_strfreev(choices);
      return found;
    }
    return TRUE;
  case CT_PARAM_LIST:
  case CT_PARAM_MAP: {
    gboolean list = spec->type == CT_PARAM_LIST;
    if (v->kind != (list ? CT_RNODE_SEQUENCE : CT_RNODE_MAPPING))
      return type_error(error, v, label, list ? "a list" : "a mapping");
    for (guint k = 0; k < v->items->len; k++) {
      const CtRNode *item = v->items->pdata[k];
      if (item->kind != CT_RNODE_SCALAR)
        return type_error(error, item, label, list ? "a list of strings" : "string values");
    }
    return TRUE;
  }
  }
  return fail(error, CT_ERROR_CONFIG, v->where, "%sunknown parameter type %d", label,
              (int)spec->type);
}

/* check_value with LABEL "CONTEXT.KEY: " */
static gboolean
check_key(const CtParamSpec *spec, const CtRNode *v, const char *ctx, GError **error)
{
  char *label = g_strdup_printf("%s%s%s: ", ctx ? ctx : "", ctx ? "." : "", spec->name);
  gboolean ok = check_value(spec, v, label, error);
  g_free(label);
  return ok;
}

gboolean
ct_recipe_check(CtRecipe *recipe, CtRNode *node, const char *context, const CtParamSpec *schema,
                GError **error)
{
  g_return_val_if_fail(recipe != NULL, FALSE);
  const char *ctx = context && *context ? context : NULL;
  char *prefix = g_strdup_printf("%s%s", ctx ? ctx : "", ctx ? ": " : "");
  size_t n = 0;
  while (schema && schema[n].name)
    n++;
  const char **names = g_new0(const char *, n + 1);
  for (size_t k = 0; k < n; k++)
    names[k] = schema[k].name;
  gboolean ok = FALSE;

  if (node && node->kind != CT_RNODE_MAPPING) {
    fail(error, CT_ERROR_CONFIG, node->where, "%sexpected a mapping, got a %s", prefix,
         kind_name(node->kind));
    goto out;
  }
  for (guint i = 0; node && i < node->items->len; i++) {
    const char *key = node->keys->pdata[i];
    size_t k = 0;
    while (k < n && strcmp(names[k], key) != 0)
      k++;
    if (k == n) {
      const char *dym = ct_did_you_mean(key, names);
      char *known = n ? g_strjoinv(", ", (char **)names) : g_strdup("none");
      fail(error, CT_ERROR_CONFIG, node->kwhere->pdata[i], "%sunknown key '%s'%s%s%s (known: %s)",
           prefix, SHOW(key), dym ? "; did you mean '" : "", dym ? dym : "", dym ? "'?" : "",
           known);
      g_free(known);
      goto out;
    }
    if (!check_key(&schema[k], node->items->pdata[i], ctx, error))
      goto out;
  }
  for (size_t k = 0; k < n; k++) {
    if (node && map_index(node, names[k]) >= 0)
      continue;
    if (!schema[k].default_value) {
      fail(error, CT_ERROR_CONFIG, node ? node->where : recipe->root->where,
           "%smissing required key '%s'", prefix, names[k]);
      goto out;
    }
    CtRNode *def;
    if (schema[k].type == CT_PARAM_LIST || schema[k].type == CT_PARAM_MAP) {
      const char *text = schema[k].default_value;
      if (!(def = parse_yaml(NULL, "default", NULL, text, strlen(text), error)))
        goto out;
      if (node)
        map_put(recipe->dead, node, names[k], "default", def);
      else
        node_free(def);
    } else {
      def = node ? ct_rnode_set_scalar(recipe, node, names[k], schema[k].default_value,
                                       "default")
                 : NULL;
    }
    if (node && !check_key(&schema[k], def, ctx, error))
      goto out;
  }
  ok = TRUE;
out:
  g_free(names);
  g_free(prefix);
  return ok;
}

/* ------------------------------------------------------------- writing */

static int
emit_to_string(void *data, unsigned char *buffer, size_t size)
{
  g_string_append_len(data, (const char *)buffer, (gssize)size);
  return 1;
}

static gboolean
emit_scalar(yaml_emitter_t *em, const char *text, gboolean quoted)
{
  yaml_event_t ev;
  return yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1,
                                      1, quoted ? YAML_SINGLE_QUOTED_SCALAR_STYLE
                                                : YAML_ANY_SCALAR_STYLE) &&
         yaml_emitter_emit(em, &ev);
}

/* Emits N; on failure *BAD is the node that could not be written. */
static gboolean
emit_node(yaml_emitter_t *em, const CtRNode *n, const CtRNode **bad)
{
  yaml_event_t ev;
  gboolean seq = n->kind == CT_RNODE_SEQUENCE;
  *bad = n;
  if (n->kind == CT_RNODE_SCALAR)
    return emit_scalar(em, n->text, n->quoted);
  if (!(seq ? yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE)
            : yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)) ||
      !yaml_emitter_emit(em, &ev))
    return FALSE;
  for (guint i = 0; i < n->items->len; i++) {
    *bad = n;
    if ((n->keys && !emit_scalar(em, n->keys->pdata[i], FALSE)) || !emit_node(em, n->items->pdata[i], bad))
      return FALSE;
  }
  *bad = n;
  if (seq)
    yaml_sequence_end_event_initialize(&ev);
  else
    yaml_mapping_end_event_initialize(&ev);
  return yaml_emitter_emit(em, &ev);
}

static char *
recipe_to_yaml(CtRecipe *recipe, GError **error)
{
  yaml_emitter_t em;
  yaml_event_t ev;
  const CtRNode *bad = recipe->root;
  GString *out = g_string_new(NULL);
  if (!yaml_emitter_initialize(&em)) {
    fail(error, CT_ERROR_FAILED, bad->where, "cannot create a YAML emitter");
    return g_string_free(out, TRUE);
  }
  yaml_emitter_set_output(&em, emit_to_string, out);
  yaml_emitter_set_unicode(&em, 1);
  yaml_emitter_set_width(&em, -1);
  yaml_emitter_set_indent(&em, 2);
  gboolean ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) &&
                yaml_emitter_emit(&em, &ev) &&
                yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) &&
                yaml_emitter_emit(&em, &ev) && emit_node(&em, recipe->root, &bad) &&
                yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&em, &ev) &&
                yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&em, &ev);
  if (!ok)
    fail(error, CT_ERROR_CONFIG, bad->where, "cannot write as YAML: %s",
         em.problem ? em.problem : "text that is not valid UTF-8");
  yaml_emitter_delete(&em);
  return g_string_free(out, !ok);
}

char *
ct_recipe_to_yaml(CtRecipe *recipe)
{
  g_return_val_if_fail(recipe != NULL, NULL);
  return recipe_to_yaml(recipe, NULL);
}

gboolean
ct_recipe_write(CtRecipe *recipe, const char *path, GError **error)
{
  g_return_val_if_fail(recipe != NULL && path != NULL, FALSE);
  char *text = recipe_to_yaml(recipe, error);
  gboolean ok = text && ct_file_write_atomic(path, text, strlen(text), error);
  g_free(text);
  return ok;
}

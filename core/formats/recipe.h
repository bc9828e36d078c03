/* recipe.h: YAML recipes: a tree of nodes that remember where they came
 * from, `extends:` composition, `--set` overrides, schema checks with
 * did-you-mean, and writing the resolved recipe back out.
 *
 * Every error message starts with the position of the offending node:
 * "FILE:LINE:COLUMN: " (1-based line and column), or "--set ASSIGNMENT: "
 * for a value that came from an override.  This module checks any mapping
 * against any CtParamSpec table; recipe-schema.h binds such a table to a
 * typed struct, and the core's sections are described in
 * core/setup/sections.c. */
#ifndef CT_RECIPE_H
#define CT_RECIPE_H

#include <cliptrain/plugin.h>

typedef enum {
  CT_RNODE_SCALAR,
  CT_RNODE_SEQUENCE,
  CT_RNODE_MAPPING,
} CtRNodeKind;

typedef struct CtRNode CtRNode; /* owned by its recipe */
typedef struct CtRecipe CtRecipe;

/* Parse PATH with libyaml (one document; its root must be a mapping).  A
 * top-level `extends: OTHER.yaml` (relative to PATH's folder) is loaded
 * first and PATH deep-merged over it: mappings merge key by key, anything
 * else is replaced whole.  Chains are followed; a cycle is an error.  The
 * `extends` key itself is dropped from the result.  (transfer full) */
CtRecipe *ct_recipe_load(const char *path, GError **error);
/* Parse a recipe from memory; NAME is used as the file name in positions. */
CtRecipe *ct_recipe_load_data(const char *name, const char *yaml, gssize len, GError **error);
void ct_recipe_free(CtRecipe *recipe);

/* Apply "a.b.c=VALUE": VALUE is parsed as YAML (a scalar, or a flow
 * sequence/mapping such as [1, 2] or {pct: 0.1}); intermediate mappings
 * are created.  Positions of the new nodes read "--set a.b.c=VALUE".
 * A list item written as a plain name takes parameters as if written
 * {NAME: {}}: "callbacks.1.short_epoch.pct=0.1" on `- short_epoch`.
 * "a.b+=VALUE" appends VALUE (or a sequence VALUE's items) to the list at
 * a.b (created when absent); "a.b-=NAME" removes the items that are NAME
 * or a one-key mapping {NAME: ...} (a plugin with parameters), and is an
 * error when there is none.  An assignment without '=' or with an empty
 * path is an error. */
gboolean ct_recipe_override(CtRecipe *recipe, const char *assignment, GError **error);

CtRNode *ct_recipe_root(CtRecipe *recipe);
/* The node at dotted PATH ("optimizer.lr"; sequence items by index,
 * "callbacks.1"), or NULL. */
CtRNode *ct_recipe_lookup(CtRecipe *recipe, const char *path);

CtRNodeKind ct_rnode_kind(const CtRNode *node);
/* "FILE:LINE:COLUMN" or "--set ..." (transfer none) */
const char *ct_rnode_where(const CtRNode *node);
/* The absolute folder a relative path written in NODE starts from: the
 * folder of the recipe file that holds it, the current directory for a
 * --set value, NULL for a node made by code.  (transfer none) */
const char *ct_rnode_base(const CtRNode *node);
/* A scalar's text.  (transfer none) */
const char *ct_rnode_scalar(const CtRNode *node);
/* Items of a sequence, or key/value pairs of a mapping, in order. */
size_t ct_rnode_n_items(const CtRNode *node);
CtRNode *ct_rnode_item(const CtRNode *node, size_t i);   /* sequence item or mapping value */
const char *ct_rnode_key(const CtRNode *node, size_t i); /* mapping key */
CtRNode *ct_rnode_get(const CtRNode *map, const char *key); /* NULL if absent */
/* Set KEY of mapping MAP to a scalar VALUE (replacing any node there);
 * WHERE is its position text.  Returns the new node. */
CtRNode *ct_rnode_set_scalar(CtRecipe *recipe, CtRNode *map, const char *key,
                             const char *value, const char *where);
/* Replace item I of sequence SEQ with a scalar VALUE at WHERE.  Returns
 * the new node. */
CtRNode *ct_rnode_set_item_scalar(CtRecipe *recipe, CtRNode *seq, size_t i, const char *value,
                                  const char *where);
/* Make KEY of MAP an empty mapping if absent; returns it (or the existing
 * node, which may be of another kind). */
CtRNode *ct_rnode_ensure_mapping(CtRecipe *recipe, CtRNode *map, const char *key,
                                 const char *where);

/* Typed reads of a scalar, with an error at the node's position when the
 * text is not of that type.  Booleans: true/false/yes/no/on/off. */
gboolean ct_rnode_to_int(const CtRNode *node, int64_t *out, GError **error);
gboolean ct_rnode_to_double(const CtRNode *node, double *out, GError **error);
gboolean ct_rnode_to_bool(const CtRNode *node, gboolean *out, GError **error);
/* The same for TEXT written at WHERE, once out of the tree (a typed
 * section's list value). */
gboolean ct_recipe_parse_double(const char *text, const char *where, double *out,
                                GError **error);

/* Check mapping NODE against SCHEMA (terminated by name NULL):
 * - NODE must be a mapping (NULL counts as an empty one);
 * - an unknown key is an error with a did-you-mean among SCHEMA's names
 *   (edit distance <= 2, or a shared prefix of 4+) and the list of keys;
 * - each value must be a scalar of its type, within [min, max] when
 *   min < max, one of `choices` when set;
 * - a missing key with a default gets the default (written into the tree,
 *   position "default"); a missing key without one is an error naming it.
 * CONTEXT names the section in messages ("optimizer", "callbacks.2
 * (short_epoch)"). */
gboolean ct_recipe_check(CtRecipe *recipe, CtRNode *node, const char *context,
                         const CtParamSpec *schema, GError **error);

/* Set a CT_ERROR_CONFIG error "WHERE: MESSAGE" (WHERE a position, as
 * ct_rnode_where gives); returns FALSE. */
gboolean ct_recipe_error(GError **error, const char *where, const char *fmt, ...)
  G_GNUC_PRINTF(3, 4);

/* The best match for WORD among CANDIDATES (NULL-terminated), or NULL. */
const char *ct_did_you_mean(const char *word, const char *const *candidates);
/* S for quoting in a one-line error: control characters escaped, cut
 * after about 80 characters with "... (N bytes)" so that a 10 MB value
 * gives a readable line.  (transfer full) */
char *ct_quote_cut(const char *s);

/* The tree as YAML (block style, keys in order).  (transfer full) */
char *ct_recipe_to_yaml(CtRecipe *recipe);
/* Write it to PATH atomically (temporary file, fsync, rename). */
gboolean ct_recipe_write(CtRecipe *recipe, const char *path, GError **error);

#endif

/* recipe-schema.h: a recipe section described by a schema table bound to
 * a C struct, as plugins describe their parameters (CtParamSpec): one
 * check fills the defaults into the tree (ct_recipe_check, with its
 * errors at FILE:LINE:COLUMN) and copies every value into its typed
 * field.  Components then read fields, never the tree.  Not installed.
 *
 *   typedef struct { CtSection base; int epochs; char *dir; } MySection;
 *   static const CtSectionKey my_keys[] = {
 *     CT_KEY(MySection, epochs, "epochs", CT_PARAM_INT, "1", "epochs", 1, 1000, NULL),
 *     CT_PATH_KEY(MySection, dir, "dir", "", "output folder"),
 *     CT_KEY_END,
 *   };
 *   MySection s = { 0 };
 *   if (!ct_section_read(recipe, "fit", my_keys, NULL, &s.base, error)) ...
 *   ct_section_clear(&s.base);
 *
 * Field types by CtParamType: BOOL gboolean; INT int or int64_t (by the
 * field's size); DOUBLE double; STRING char * (NUL-terminated copy); LIST
 * and MAP CtRecipeList. */
#ifndef CT_RECIPE_SCHEMA_H
#define CT_RECIPE_SCHEMA_H

#include "formats/recipe.h"

#include <stddef.h>

/* A LIST or MAP value, copied out of the tree; freed by ct_section_clear. */
typedef struct {
  size_t n;
  char **keys;   /* MAP: the n keys, NULL-terminated; LIST: NULL */
  char **values; /* the n items (LIST) or values (MAP), NULL-terminated */
  char **where;  /* the n items' positions, NULL-terminated */
} CtRecipeList;

enum {
  CT_KEY_PATH = 1 << 0, /* a STRING path: ct_section_absolute_paths makes it absolute */
};

/* One key of a section: its schema entry and where its value goes. */
typedef struct {
  CtParamSpec spec;
  size_t offset; /* of the typed field in the section struct */
  size_t size;   /* sizeof that field */
  unsigned flags;
} CtSectionKey;

#define CT_KEY(type_, field_, name_, ptype_, default_, doc_, min_, max_, choices_)            \
  { .spec = CT_PARAM(name_, ptype_, default_, doc_, min_, max_, choices_),                     \
    .offset = offsetof(type_, field_), .size = sizeof(((type_ *) 0)->field_), .flags = 0 }
/* A STRING key holding a path, relative to the recipe's folder */
#define CT_PATH_KEY(type_, field_, name_, default_, doc_)                                     \
  { .spec = CT_PARAM(name_, CT_PARAM_STRING, default_, doc_, 0, 0, NULL),                      \
    .offset = offsetof(type_, field_), .size = sizeof(((type_ *) 0)->field_),                  \
    .flags = CT_KEY_PATH }
#define CT_KEY_END { .spec = CT_PARAM_END }

/* The first member of every section struct: what its values were read
 * from.  Zero-initialised before ct_section_read; owned by the section. */
typedef struct {
  const char *name;          /* "data" (static) */
  const CtSectionKey *keys;  /* the schema read, CT_KEY_END-terminated */
  CtSectionKey *owned_keys;  /* KEYS when the section built its own, else NULL */
  char *where;               /* the section mapping's position */
  char **key_where;          /* each key's value's position, in schema order */
} CtSection;

/* Check section NAME of RECIPE (an empty mapping is added, at position
 * "default", when absent) against KEYS with ct_recipe_check, which writes
 * the defaults into the tree, then copy every value into its field of
 * OUT.  DEFAULTS, when not NULL, replaces some keys' default values:
 * NULL-terminated name, value pairs.  OUT keeps KEYS (which must outlive
 * it).  FALSE with ct_recipe_check's error at the offending position. */
gboolean ct_section_read(CtRecipe *recipe, const char *name, const CtSectionKey *keys,
                         const char *const *defaults, CtSection *out, GError **error);
/* As ct_section_read, taking ownership of KEYS (g_free'd by clear). */
gboolean ct_section_read_owned(CtRecipe *recipe, const char *name, CtSectionKey *keys,
                               const char *const *defaults, CtSection *out, GError **error);
/* Free every string and list field, the positions and owned keys; zeroes
 * the header.  Safe on a zeroed or half-read section. */
void ct_section_clear(CtSection *section);

/* The position of the value at OFFSET ("FILE:LINE:COLUMN", "--set ...",
 * "default"), or the section's position for an unbound offset.
 * (transfer none) */
const char *ct_section_where(const CtSection *section, size_t offset);
/* TRUE when the recipe gave the value at OFFSET (not a default). */
gboolean ct_section_is_set(const CtSection *section, size_t offset);
/* Set the INT value at OFFSET, in the field and in the tree (so that the
 * resolved recipe says it), at position WHERE. */
void ct_section_set_int(CtRecipe *recipe, CtSection *section, size_t offset, int64_t value,
                        const char *where);
/* Check VALUE, given at WHERE (a command-line option, say), against the
 * range of the INT key at OFFSET, as a recipe's value is checked: FALSE
 * with "WHERE: SECTION.KEY: VALUE is out of range [MIN, MAX]". */
gboolean ct_section_check_int(const CtSection *section, size_t offset, int64_t value,
                              const char *where, GError **error);
/* Make every non-empty relative CT_KEY_PATH value absolute, in the fields
 * and in the tree, keeping their positions: a value written in a recipe
 * file starts from that file's folder, a --set value from the current
 * directory, one made by code from DIR.  The resolved recipe (and
 * --resume, which reads it from the run folder) then finds the same files
 * from anywhere. */
void ct_section_absolute_paths(CtRecipe *recipe, CtSection *section, const char *dir);
/* PATH made absolute the same way, for the value of NODE.  (transfer full) */
char *ct_recipe_absolute_path(const CtRNode *node, const char *path, const char *dir);

/* The scalar text of KEY in section NAME before any check, or NULL when
 * the section or the key is absent or not of that shape; *WHERE (may be
 * NULL) gets the key's position when present, else the section's, else
 * NULL.  For keys that choose the others' defaults (optimizer.name). */
const char *ct_section_peek(CtRecipe *recipe, const char *name, const char *key,
                            const char **where);

/* Every scalar of the tree with its dotted path ("data.templates.0"), in
 * order. */
typedef void (*CtRecipeScalarFunc)(const char *path, const char *value, gpointer data);
void ct_recipe_foreach_scalar(CtRecipe *recipe, CtRecipeScalarFunc func, gpointer data);

/* One line describing parameter SPEC as NAME (padded to WIDTH): type,
 * default ("(required)" without one), doc, range and choices, then NOTE
 * (may be NULL), then a newline; as `cliptrain plugins NAME` and
 * `cliptrain recipe --keys` print them. */
CT_API void ct_param_describe(GString *out, const char *name, int width, const CtParamSpec *spec,
                              const char *note);

#endif

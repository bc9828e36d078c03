/* fuzz_recipe.c: a recipe file of any bytes through the loader and the
 * validators: ct_recipe_load (extends resolved beside it), a --set
 * assignment (the bytes after the first NUL, if any), the core's typed
 * sections (sections.c), a schema with every parameter type, fixed
 * overrides, lookups, and the resolved YAML, which must load again and
 * print the same (cliptrain fit OUT/recipe.yaml must repeat a run). */
#include "setup/sections.h"
#include "formats/recipe.h"

#include "fuzz-util.h"

#include <string.h>

static const CtParamSpec fit_schema[] = {
  CT_PARAM("epochs", CT_PARAM_INT, "1", "epochs", 1, 100000, NULL),
  CT_PARAM("rate", CT_PARAM_DOUBLE, "0.5", "a number", 0, 1, NULL),
  CT_PARAM("flag", CT_PARAM_BOOL, "false", "a boolean", 0, 0, NULL),
  CT_PARAM("mode", CT_PARAM_STRING, "a", "a choice", 0, 0, "a|b|c"),
  CT_PARAM("list", CT_PARAM_LIST, "[x, y]", "a list", 0, 0, NULL),
  CT_PARAM("map", CT_PARAM_MAP, "{k: v}", "a map", 0, 0, NULL),
  CT_PARAM_END,
};

static const char *const lookups[] = { "fit.epochs", "callbacks.0", "callbacks.1.short_epoch.pct",
                                       "data.templates.0", "a.b.c", "", ".", "0", NULL };

static const char *const overrides[] = { "fit.epochs=2", "callbacks.0.x=[1, {a: b}]",
                                         "data.templates=[a {label}.]", "q=", "=x", NULL };

/* Loads the resolved YAML of R again and checks it prints the same. */
static void
check_round_trip(CtRecipe *r)
{
  char *yaml = ct_recipe_to_yaml(r);
  if (!yaml) {
    char *path = fuzz_path("resolved.yaml");
    GError *err = NULL;
    if (ct_recipe_write(r, path, &err) || !err)
      abort();
    fprintf(stderr, "recipe cannot be written: %s\n", err->message);
    abort();
  }
  GError *err = NULL;
  CtRecipe *again = ct_recipe_load_data("resolved.yaml", yaml, -1, &err);
  if (!again) {
    fprintf(stderr, "resolved recipe does not load: %s\n---\n%s---\n", err->message, yaml);
    abort();
  }
  char *yaml2 = ct_recipe_to_yaml(again);
  if (strcmp(yaml, yaml2) != 0) {
    fprintf(stderr, "resolved recipe changes when reloaded:\n---\n%s---\n%s---\n", yaml, yaml2);
    abort();
  }
  g_free(yaml2);
  ct_recipe_free(again);
  g_free(yaml);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* the recipe, then after a NUL byte (if any) a --set assignment */
  const uint8_t *nul = memchr(data, 0, size);
  size_t rlen = nul ? (size_t)(nul - data) : size;
  char *path = fuzz_write("r.yaml", data, rlen);
  GError *err = NULL;
  CtRecipe *r = ct_recipe_load(path, &err);
  if (!r)
    fuzz_check_error(&err, NULL); /* an extends: error names the other file */
  g_free(path);
  if (!r)
    return 0;
  if (nul) {
    char *assignment = g_strndup((const char *)nul + 1, size - rlen - 1);
    if (!ct_recipe_override(r, assignment, &err))
      fuzz_check_error(&err, "--set ");
    g_free(assignment);
  }
  check_round_trip(r);
  for (const char *const *p = lookups; *p; p++)
    ct_recipe_lookup(r, *p);
  CtRNode *root = ct_recipe_root(r);
  if (!ct_recipe_check(r, ct_rnode_get(root, "fit"), "fit", fit_schema, &err))
    fuzz_check_error(&err, NULL);
  CtSections sections = { 0 };
  if (!ct_sections_read(r, CT_SECTIONS_ALL, &sections, &err))
    fuzz_check_error(&err, NULL);
  ct_sections_clear(&sections);
  for (const char *const *o = overrides; *o; o++)
    ct_recipe_override(r, *o, NULL);
  for (size_t i = 0; i < ct_rnode_n_items(root); i++) {
    const char *key = ct_rnode_key(root, i);
    ct_did_you_mean(key, (const char *const[]){ "data", "model", "optimizer", "fit", NULL });
  }
  check_round_trip(r);
  ct_recipe_free(r);
  return 0;
}

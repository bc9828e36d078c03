/* test-recipe.c: YAML recipes: parsing with positions, aliases, extends
 * chains and cycles, --set overrides, schema checks (a table of broken
 * recipes), defaults, did-you-mean, YAML round trips and atomic writes;
 * the core's typed sections read from one schema table each. */
#include "config.h"

#include "formats/recipe.h"
#include "setup/sections-private.h"
#include "test-util.h"

#include <cliptrain/schedule.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* ---------------------------------------------------------------- helpers */

static const CtParamSpec optimizer_schema[] = {
  { "name", CT_PARAM_STRING, "adamw", "optimizer", 0, 0, "adamw|sgd", { NULL } },
  { "lr", CT_PARAM_DOUBLE, NULL, "learning rate", 0, 10, NULL, { NULL } },
  { "beta1", CT_PARAM_DOUBLE, "0.9", "", 0, 1, NULL, { NULL } },
  { "beta2", CT_PARAM_DOUBLE, "0.999", "", 0, 1, NULL, { NULL } },
  { "eps", CT_PARAM_DOUBLE, "1e-8", "", 0, 0, NULL, { NULL } },
  { "weight_decay", CT_PARAM_DOUBLE, "0.01", "", 0, 0, NULL, { NULL } },
  { NULL, 0, NULL, NULL, 0, 0, NULL, { NULL } },
};

static const CtParamSpec fit_schema[] = {
  { "epochs", CT_PARAM_INT, "1", "", 1, 100000, NULL, { NULL } },
  { "fp16", CT_PARAM_BOOL, "false", "", 0, 0, NULL, { NULL } },
  { "max_norm", CT_PARAM_DOUBLE, "0", "", 0, 0, NULL, { NULL } },
  { NULL, 0, NULL, NULL, 0, 0, NULL, { NULL } },
};

static const CtParamSpec data_schema[] = {
  { "dataset", CT_PARAM_STRING, NULL, "", 0, 0, "synthetic|image_folder", { NULL } },
  { "batch_size", CT_PARAM_INT, "32", "", 1, 65536, NULL, { NULL } },
  { "root", CT_PARAM_STRING, "", "", 0, 0, NULL, { NULL } },
  { NULL, 0, NULL, NULL, 0, 0, NULL, { NULL } },
};

/* Checks the sections that are present. */
static gboolean
check_sections(CtRecipe *r, GError **error)
{
  static const struct {
    const char *name;
    const CtParamSpec *schema;
  } sections[] = { { "optimizer", optimizer_schema }, { "fit", fit_schema }, { "data", data_schema } };
  for (guint i = 0; i < G_N_ELEMENTS(sections); i++) {
    CtRNode *node = ct_rnode_get(ct_recipe_root(r), sections[i].name);
    if (node && !ct_recipe_check(r, node, sections[i].name, sections[i].schema, error))
      return FALSE;
  }
  return TRUE;
}

/* ERR is CODE, one line, starts with PREFIX and contains TEXT; frees it. */
static void
assert_error(GError **err, int code, const char *prefix, const char *text)
{
  g_assert_nonnull(*err);
  gboolean ok = g_error_matches(*err, CT_ERROR, code) && g_str_has_prefix((*err)->message, prefix) &&
                (!text || strstr((*err)->message, text)) && !strchr((*err)->message, '\n');
  if (!ok)
    g_printerr("# got error %d '%s'\n# wanted %d, prefix '%s', containing '%s'\n", (*err)->code,
               (*err)->message, code, prefix, text ? text : "");
  g_assert_true(ok);
  g_clear_error(err);
}

static CtRecipe *
load(const char *yaml)
{
  GError *err = NULL;
  CtRecipe *r = ct_recipe_load_data("r.yaml", yaml, -1, &err);
  g_assert_no_error(err);
  g_assert_nonnull(r);
  return r;
}

static void
assert_scalar(CtRecipe *r, const char *path, const char *text, const char *where)
{
  CtRNode *n = ct_recipe_lookup(r, path);
  if (!n)
    g_printerr("# no node at '%s'\n", path);
  g_assert_nonnull(n);
  g_assert_cmpint(ct_rnode_kind(n), ==, CT_RNODE_SCALAR);
  g_assert_cmpstr(ct_rnode_scalar(n), ==, text);
  if (where)
    g_assert_cmpstr(ct_rnode_where(n), ==, where);
}

static gboolean
tree_equal(const CtRNode *a, const CtRNode *b)
{
  if (ct_rnode_kind(a) != ct_rnode_kind(b) || ct_rnode_n_items(a) != ct_rnode_n_items(b))
    return FALSE;
  if (ct_rnode_kind(a) == CT_RNODE_SCALAR)
    return strcmp(ct_rnode_scalar(a), ct_rnode_scalar(b)) == 0;
  for (size_t i = 0; i < ct_rnode_n_items(a); i++) {
    if (ct_rnode_kind(a) == CT_RNODE_MAPPING &&
        strcmp(ct_rnode_key(a, i), ct_rnode_key(b, i)) != 0)
      return FALSE;
    if (!tree_equal(ct_rnode_item(a, i), ct_rnode_item(b, i)))
      return FALSE;
  }
  return TRUE;
}

static char *
write_file(const char *dir, const char *name, const char *text)
{
  GError *err = NULL;
  char *path = g_build_filename(dir, name, NULL);
  g_file_set_contents(path, text, -1, &err);
  g_assert_no_error(err);
  return path;
}

/* ------------------------------------------------------------------ tests */

static const char *tree_yaml = "model: tiny\n"                 /* 1 */
                               "optimizer:\n"                  /* 2 */
                               "  name: adamw\n"               /* 3 */
                               "  lr: 3e-4\n"                  /* 4 */
                               "callbacks:\n"                  /* 5 */
                               "  - short_epoch:\n"            /* 6 */
                               "      pct: 0.1\n"              /* 7 */
                               "  - name: \"x: y\"\n"          /* 8 */
                               "flow: {a: [1, 2], b: ''}\n";   /* 9 */

static void
test_parse_tree(void)
{
  CtRecipe *r = load(tree_yaml);
  CtRNode *root = ct_recipe_root(r);
  g_assert_cmpint(ct_rnode_kind(root), ==, CT_RNODE_MAPPING);
  g_assert_cmpuint(ct_rnode_n_items(root), ==, 4);
  const char *keys[] = { "model", "optimizer", "callbacks", "flow" };
  for (guint i = 0; i < 4; i++)
    g_assert_cmpstr(ct_rnode_key(root, i), ==, keys[i]);
  g_assert_null(ct_rnode_key(root, 4));
  g_assert_null(ct_rnode_item(root, 4));

  assert_scalar(r, "model", "tiny", "r.yaml:1:8");
  assert_scalar(r, "optimizer.name", "adamw", "r.yaml:3:9");
  assert_scalar(r, "optimizer.lr", "3e-4", "r.yaml:4:7");
  assert_scalar(r, "callbacks.0.short_epoch.pct", "0.1", "r.yaml:7:12");
  assert_scalar(r, "callbacks.1.name", "x: y", "r.yaml:8:11");
  assert_scalar(r, "flow.a.1", "2", "r.yaml:9:15");
  assert_scalar(r, "flow.b", "", "r.yaml:9:22");

  CtRNode *opt = ct_recipe_lookup(r, "optimizer");
  g_assert_cmpint(ct_rnode_kind(opt), ==, CT_RNODE_MAPPING);
  g_assert_cmpstr(ct_rnode_where(opt), ==, "r.yaml:3:3");
  g_assert_null(ct_rnode_scalar(opt));
  g_assert_true(ct_rnode_get(opt, "lr") == ct_recipe_lookup(r, "optimizer.lr"));
  g_assert_true(ct_rnode_item(opt, 1) == ct_rnode_get(opt, "lr"));
  g_assert_null(ct_rnode_get(opt, "nope"));

  CtRNode *cbs = ct_recipe_lookup(r, "callbacks");
  g_assert_cmpint(ct_rnode_kind(cbs), ==, CT_RNODE_SEQUENCE);
  g_assert_cmpstr(ct_rnode_where(cbs), ==, "r.yaml:6:3");
  g_assert_cmpuint(ct_rnode_n_items(cbs), ==, 2);
  g_assert_null(ct_rnode_key(cbs, 0));
  g_assert_null(ct_rnode_get(cbs, "0"));
  g_assert_cmpstr(ct_rnode_where(ct_rnode_item(cbs, 0)), ==, "r.yaml:6:5");
  g_assert_cmpstr(ct_rnode_where(ct_recipe_lookup(r, "flow")), ==, "r.yaml:9:7");
  g_assert_cmpstr(ct_rnode_where(ct_recipe_lookup(r, "flow.a")), ==, "r.yaml:9:11");

  g_assert_true(ct_recipe_lookup(r, "") == root);
  g_assert_null(ct_recipe_lookup(r, "callbacks.2"));
  g_assert_null(ct_recipe_lookup(r, "callbacks.x"));
  g_assert_null(ct_recipe_lookup(r, "callbacks.-1"));
  g_assert_null(ct_recipe_lookup(r, "model.x"));
  g_assert_null(ct_recipe_lookup(r, "optimizer..lr"));
  g_assert_null(ct_recipe_lookup(r, "nothing"));
  ct_recipe_free(r);

  /* LEN limits the text; NULL name. */
  GError *err = NULL;
  r = ct_recipe_load_data(NULL, "a: 1\nb: [", 5, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_rnode_n_items(ct_recipe_root(r)), ==, 1);
  g_assert_true(g_str_has_suffix(ct_rnode_where(ct_recipe_lookup(r, "a")), ":1:4"));
  ct_recipe_free(r);
}

static void
test_parse_aliases(void)
{
  CtRecipe *r = load("base: &b {lr: 0.1, name: sgd}\n"
                     "opt: *b\n"
                     "list: [*b, x]\n");
  assert_scalar(r, "opt.lr", "0.1", "r.yaml:1:15");
  assert_scalar(r, "list.0.name", "sgd", NULL);
  assert_scalar(r, "list.1", "x", "r.yaml:3:12");
  /* Aliases are copies: changing one leaves the others. */
  GError *err = NULL;
  g_assert_true(ct_recipe_override(r, "opt.lr=0.5", &err));
  g_assert_no_error(err);
  assert_scalar(r, "opt.lr", "0.5", NULL);
  assert_scalar(r, "base.lr", "0.1", NULL);
  assert_scalar(r, "list.0.lr", "0.1", NULL);
  ct_recipe_free(r);

  g_assert_null(ct_recipe_load_data("r.yaml", "a: 1\nb: *nope\n", -1, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:2:4: ", "undefined alias");
  g_assert_null(ct_recipe_load_data("r.yaml", "a: &x [1, *x]\n", -1, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:", "recursive alias");

  /* A billion laughs stops at the node limit. */
  GString *bomb = g_string_new("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
  for (int i = 1; i < 8; i++)
    g_string_append_printf(bomb, "l%d: &l%d [*l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d, *l%d]\n", i,
                           i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
  g_assert_null(ct_recipe_load_data("r.yaml", bomb->str, -1, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:", "nodes");
  g_string_free(bomb, TRUE);
}

typedef struct {
  const char *yaml;
  int code;
  const char *prefix;
  const char *text;
} BrokenRow;

static const BrokenRow broken[] = {
  /* unknown keys, with and without a suggestion */
  { "optimizer:\n  lr: 0.1\n  lrr: 0.2\n", CT_ERROR_CONFIG, "r.yaml:3:3: ",
    "optimizer: unknown key 'lrr'; did you mean 'lr'? (known: name, lr, beta1, beta2, eps, "
    "weight_decay)" },
  { "optimizer:\n  lr: 1\n  weight_dec: 0.1\n", CT_ERROR_CONFIG, "r.yaml:3:3: ",
    "optimizer: unknown key 'weight_dec'; did you mean 'weight_decay'?" },
  { "fit:\n  zzz: 1\n", CT_ERROR_CONFIG, "r.yaml:2:3: ",
    "fit: unknown key 'zzz' (known: epochs, fp16, max_norm)" },
  /* wrong types */
  { "fit:\n  epochs: two\n", CT_ERROR_CONFIG, "r.yaml:2:11: ",
    "fit.epochs: expected an integer, got 'two'" },
  { "fit:\n  epochs: 1.5\n", CT_ERROR_CONFIG, "r.yaml:2:11: ",
    "fit.epochs: expected an integer, got '1.5'" },
  { "fit:\n  epochs: 99999999999999999999\n", CT_ERROR_CONFIG, "r.yaml:2:11: ",
    "fit.epochs: 99999999999999999999 does not fit in a 64-bit integer" },
  { "fit:\n  epochs: [1]\n", CT_ERROR_CONFIG, "r.yaml:2:11: ",
    "fit.epochs: expected an integer, got a sequence" },
  { "optimizer:\n  lr: fast\n", CT_ERROR_CONFIG, "r.yaml:2:7: ",
    "optimizer.lr: expected a number, got 'fast'" },
  { "fit:\n  fp16: maybe\n", CT_ERROR_CONFIG, "r.yaml:2:9: ",
    "fit.fp16: expected a boolean (true/false/yes/no/on/off), got 'maybe'" },
  { "data:\n  dataset: synthetic\n  root: {a: 1}\n", CT_ERROR_CONFIG, "r.yaml:3:9: ",
    "data.root: expected a string, got a mapping" },
  /* out of range */
  { "fit:\n  epochs: 0\n", CT_ERROR_CONFIG, "r.yaml:2:11: ", "fit.epochs: 0 is out of range [1, 100000]" },
  { "optimizer:\n  lr: 11\n", CT_ERROR_CONFIG, "r.yaml:2:7: ", "optimizer.lr: 11 is out of range [0, 10]" },
  /* bad choice */
  { "data:\n  dataset: synthetik\n", CT_ERROR_CONFIG, "r.yaml:2:12: ",
    "data.dataset: 'synthetik' is not one of synthetic|image_folder; did you mean 'synthetic'?" },
  /* missing required */
  { "optimizer:\n  name: sgd\n", CT_ERROR_CONFIG, "r.yaml:2:3: ",
    "optimizer: missing required key 'lr'" },
  /* non-mapping sections */
  { "fit: 3\n", CT_ERROR_CONFIG, "r.yaml:1:6: ", "fit: expected a mapping, got a scalar" },
  { "optimizer: [lr]\n", CT_ERROR_CONFIG, "r.yaml:1:12: ", "optimizer: expected a mapping, got a sequence" },
  /* duplicate key */
  { "optimizer:\n  lr: 1\n  lr: 2\n", CT_ERROR_CONFIG, "r.yaml:3:3: ",
    "duplicate key 'lr' (first at r.yaml:2:3)" },
  /* YAML syntax errors */
  { "optimizer:\n  lr: 1\n lr2: 2\n", CT_ERROR_CONFIG, "r.yaml:3:2: ", "did not find expected key" },
  { "a: b: c\n", CT_ERROR_CONFIG, "r.yaml:1:5: ", "mapping values are not allowed in this context" },
  { "a: [1, 2\n", CT_ERROR_CONFIG, "r.yaml:2:1: ", "did not find expected ',' or ']'" },
  { "a: \xff\n", CT_ERROR_CONFIG, "r.yaml:1:4: ", "invalid leading UTF-8 octet" },
  /* document shape */
  { "a: 1\n---\nb: 2\n", CT_ERROR_CONFIG, "r.yaml:2:1: ", "only one YAML document is allowed" },
  { "- a\n- b\n", CT_ERROR_CONFIG, "r.yaml:1:1: ", "the root of a recipe must be a mapping, got a sequence" },
  { "# nothing\n", CT_ERROR_CONFIG, "r.yaml:1:1: ", "the recipe is empty" },
  { "? [a]\n: 1\n", CT_ERROR_CONFIG, "r.yaml:1:3: ", "mapping keys must be scalars, got a sequence" },
  { "extends: [a.yaml]\n", CT_ERROR_CONFIG, "r.yaml:1:10: ", "extends: expected a file name" },
};

static void
test_check_table(void)
{
  for (guint i = 0; i < G_N_ELEMENTS(broken); i++) {
    GError *err = NULL;
    g_test_message("row %u", i);
    CtRecipe *r = ct_recipe_load_data("r.yaml", broken[i].yaml, -1, &err);
    g_assert_true((r == NULL) == (err != NULL));
    if (r) {
      g_assert_false(check_sections(r, &err));
      ct_recipe_free(r);
    }
    assert_error(&err, broken[i].code, broken[i].prefix, broken[i].text);
  }
}

static void
test_check_defaults(void)
{
  GError *err = NULL;
  CtRecipe *r = load("optimizer:\n  lr: 0.1\nfit: {}\n");
  g_assert_true(check_sections(r, &err));
  g_assert_no_error(err);
  assert_scalar(r, "optimizer.lr", "0.1", "r.yaml:2:7");
  assert_scalar(r, "optimizer.name", "adamw", "default");
  assert_scalar(r, "optimizer.beta2", "0.999", "default");
  assert_scalar(r, "optimizer.eps", "1e-8", "default");
  assert_scalar(r, "fit.epochs", "1", "default");
  assert_scalar(r, "fit.fp16", "false", "default");
  CtRNode *opt = ct_recipe_lookup(r, "optimizer");
  const char *order[] = { "lr", "name", "beta1", "beta2", "eps", "weight_decay" };
  g_assert_cmpuint(ct_rnode_n_items(opt), ==, G_N_ELEMENTS(order));
  for (guint i = 0; i < G_N_ELEMENTS(order); i++)
    g_assert_cmpstr(ct_rnode_key(opt, i), ==, order[i]);
  /* Checking again changes nothing. */
  g_assert_true(check_sections(r, &err));
  g_assert_cmpuint(ct_rnode_n_items(opt), ==, G_N_ELEMENTS(order));
  char *yaml = ct_recipe_to_yaml(r);
  g_assert_nonnull(strstr(yaml, "  beta2: 0.999\n"));
  g_assert_nonnull(strstr(yaml, "fit:\n  epochs: 1\n  fp16: false\n  max_norm: 0\n"));
  g_free(yaml);

  /* A NULL section is an empty mapping: required keys are missing (at the
   * root's position), defaults cannot be written. */
  g_assert_false(ct_recipe_check(r, NULL, "data", data_schema, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:1:1: ", "data: missing required key 'dataset'");
  g_assert_true(ct_recipe_check(r, NULL, "fit", fit_schema, &err));
  g_assert_no_error(err);

  /* An empty schema knows no key; no context gives bare key names. */
  static const CtParamSpec none[] = { { NULL, 0, NULL, NULL, 0, 0, NULL, { NULL } } };
  g_assert_false(ct_recipe_check(r, opt, NULL, none, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:2:3: ", "unknown key 'lr' (known: none)");
  g_assert_false(ct_recipe_check(r, ct_recipe_lookup(r, "fit"), "", optimizer_schema, &err));
  assert_error(&err, CT_ERROR_CONFIG, "default: ", "unknown key 'epochs'");

  /* ensure_mapping and set_scalar */
  CtRNode *root = ct_recipe_root(r);
  CtRNode *m = ct_rnode_ensure_mapping(r, root, "data", "code");
  g_assert_cmpint(ct_rnode_kind(m), ==, CT_RNODE_MAPPING);
  g_assert_cmpstr(ct_rnode_where(m), ==, "code");
  g_assert_true(ct_rnode_ensure_mapping(r, root, "data", "other") == m);
  g_assert_true(ct_rnode_ensure_mapping(r, opt, "lr", "x") == ct_rnode_get(opt, "lr"));
  g_assert_false(ct_recipe_check(r, m, "data", data_schema, &err));
  assert_error(&err, CT_ERROR_CONFIG, "code: ", "data: missing required key 'dataset'");
  CtRNode *s = ct_rnode_set_scalar(r, m, "dataset", "image_folder", "code");
  g_assert_cmpstr(ct_rnode_scalar(s), ==, "image_folder");
  g_assert_cmpstr(ct_rnode_where(s), ==, "code");
  g_assert_true(ct_rnode_get(m, "dataset") == s);
  g_assert_true(ct_recipe_check(r, m, "data", data_schema, &err));
  g_assert_no_error(err);
  CtRNode *old = ct_rnode_get(m, "batch_size"); /* the default */
  g_assert_cmpstr(ct_rnode_scalar(old), ==, "32");
  CtRNode *s2 = ct_rnode_set_scalar(r, m, "batch_size", "64", "code2");
  g_assert_true(ct_rnode_get(m, "batch_size") == s2);
  g_assert_cmpstr(ct_rnode_scalar(old), ==, "32"); /* replaced nodes live on */
  g_assert_cmpstr(ct_rnode_key(m, 1), ==, "batch_size"); /* replaced in place */
  g_assert_cmpuint(ct_rnode_n_items(m), ==, 3);
  ct_recipe_free(r);
}

static void
test_typed_reads(void)
{
  CtRecipe *r = load("i: 42\nn: -7\np: +3\nf: 1.5\nw: abc\nbig: 9223372036854775808\n"
                     "max: 9223372036854775807\nd: 3e-4\nh: 1e999\nb1: YES\nb2: Off\n"
                     "b3: maybe\ne: ''\nm: {a: 1}\nsp: ' 1'\nb4: on\nb5: No\n");
  GError *err = NULL;
  int64_t i = 0;
  double d = 0;
  gboolean b = FALSE;
  g_assert_true(ct_rnode_to_int(ct_recipe_lookup(r, "i"), &i, &err));
  g_assert_cmpint(i, ==, 42);
  g_assert_true(ct_rnode_to_int(ct_recipe_lookup(r, "n"), &i, &err));
  g_assert_cmpint(i, ==, -7);
  g_assert_true(ct_rnode_to_int(ct_recipe_lookup(r, "p"), &i, &err));
  g_assert_cmpint(i, ==, 3);
  g_assert_true(ct_rnode_to_int(ct_recipe_lookup(r, "max"), &i, &err));
  g_assert_cmpint(i, ==, G_MAXINT64);
  g_assert_no_error(err);
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "f"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:4:4: ", "expected an integer, got '1.5'");
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "w"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:5:4: ", "expected an integer, got 'abc'");
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "big"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:6:6: ", "does not fit in a 64-bit integer");
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "e"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:13:4: ", "expected an integer, got ''");
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "m"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:14:4: ", "expected an integer, got a mapping");
  g_assert_false(ct_rnode_to_int(ct_recipe_lookup(r, "sp"), &i, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:15:5: ", "expected an integer");

  g_assert_true(ct_rnode_to_double(ct_recipe_lookup(r, "d"), &d, &err));
  g_assert_cmpfloat(d, ==, 3e-4);
  g_assert_true(ct_rnode_to_double(ct_recipe_lookup(r, "n"), &d, &err));
  g_assert_cmpfloat(d, ==, -7.0);
  g_assert_no_error(err);
  g_assert_false(ct_rnode_to_double(ct_recipe_lookup(r, "h"), &d, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:9:4: ", "1e999 does not fit in a double");
  g_assert_false(ct_rnode_to_double(ct_recipe_lookup(r, "w"), &d, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:5:4: ", "expected a number, got 'abc'");
  g_assert_false(ct_rnode_to_double(ct_recipe_lookup(r, "e"), &d, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:13:4: ", "expected a number");
  g_assert_false(ct_rnode_to_double(ct_recipe_lookup(r, "sp"), &d, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:15:5: ", "expected a number");

  g_assert_true(ct_rnode_to_bool(ct_recipe_lookup(r, "b1"), &b, &err));
  g_assert_true(b);
  g_assert_true(ct_rnode_to_bool(ct_recipe_lookup(r, "b2"), &b, &err));
  g_assert_false(b);
  g_assert_true(ct_rnode_to_bool(ct_recipe_lookup(r, "b4"), &b, &err));
  g_assert_true(b);
  g_assert_true(ct_rnode_to_bool(ct_recipe_lookup(r, "b5"), &b, &err));
  g_assert_false(b);
  g_assert_no_error(err);
  g_assert_false(ct_rnode_to_bool(ct_recipe_lookup(r, "b3"), &b, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:12:5: ", "expected a boolean");
  g_assert_false(ct_rnode_to_bool(ct_recipe_lookup(r, "m"), &b, &err));
  assert_error(&err, CT_ERROR_CONFIG, "r.yaml:14:4: ", "got a mapping");
  ct_recipe_free(r);
}

static void
test_did_you_mean(void)
{
  const char *const opt[] = { "name", "lr", "beta1", "beta2", "eps", "weight_decay", NULL };
  g_assert_cmpstr(ct_did_you_mean("lrr", opt), ==, "lr");
  g_assert_cmpstr(ct_did_you_mean("nmae", opt), ==, "name");
  g_assert_cmpstr(ct_did_you_mean("weight_dec", opt), ==, "weight_decay");
  g_assert_cmpstr(ct_did_you_mean("weig", opt), ==, "weight_decay");
  g_assert_cmpstr(ct_did_you_mean("beta3", opt), ==, "beta1");
  g_assert_cmpstr(ct_did_you_mean("ep", opt), ==, "eps");
  g_assert_null(ct_did_you_mean("wei", opt));
  g_assert_null(ct_did_you_mean("zzz", opt));
  g_assert_null(ct_did_you_mean("l", opt)); /* distance 1 is not below 1 */
  g_assert_null(ct_did_you_mean("momentum", opt));
  const char *const ep[] = { "epochs_max", "epoch", NULL };
  g_assert_cmpstr(ct_did_you_mean("epochs", ep), ==, "epoch"); /* smallest distance wins */
  const char *const empty[] = { NULL };
  g_assert_null(ct_did_you_mean("lr", empty));
}

static void
test_extends(void)
{
  char *dir = ct_test_make_tmpdir("ct-recipe-XXXXXX");
  char *sub = g_build_filename(dir, "sub", NULL);
  g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
  char *base = write_file(dir, "base.yaml",
                          "model: tiny\n"
                          "optimizer:\n"
                          "  name: adamw\n"
                          "  lr: 0.001\n"
                          "  beta1: 0.9\n"
                          "callbacks:\n"
                          "  - a\n"
                          "  - b\n"
                          "data:\n"
                          "  dataset: synthetic\n");
  char *mid = write_file(sub, "mid.yaml",
                         "extends: ../base.yaml\n"
                         "optimizer:\n"
                         "  lr: 0.01\n"
                         "callbacks: [x]\n"
                         "fit:\n"
                         "  epochs: 3\n");
  char *top = write_file(dir, "top.yaml",
                         "optimizer:\n"
                         "  weight_decay: 0.1\n"
                         "fit:\n"
                         "  epochs: 5\n"
                         "data: {dataset: image_folder}\n"
                         "extends: sub/mid.yaml\n");
  GError *err = NULL;
  CtRecipe *r = ct_recipe_load(top, &err);
  g_assert_no_error(err);
  CtRNode *root = ct_recipe_root(r);
  g_assert_null(ct_rnode_get(root, "extends"));
  char *w_root = g_strdup_printf("%s:1:1", top); /* the including file's */
  g_assert_cmpstr(ct_rnode_where(root), ==, w_root);
  g_free(w_root);
  const char *keys[] = { "model", "optimizer", "callbacks", "data", "fit" };
  g_assert_cmpuint(ct_rnode_n_items(root), ==, G_N_ELEMENTS(keys));
  for (guint i = 0; i < G_N_ELEMENTS(keys); i++)
    g_assert_cmpstr(ct_rnode_key(root, i), ==, keys[i]);

  char *w_base = g_strdup_printf("%s/sub/../base.yaml:3:9", dir);
  char *w_mid = g_strdup_printf("%s:3:7", mid);
  char *w_top = g_strdup_printf("%s:2:17", top);
  assert_scalar(r, "model", "tiny", NULL);            /* base only */
  assert_scalar(r, "optimizer.name", "adamw", w_base); /* base only, nested */
  assert_scalar(r, "optimizer.lr", "0.01", w_mid);     /* mid over base */
  assert_scalar(r, "optimizer.beta1", "0.9", NULL);
  assert_scalar(r, "optimizer.weight_decay", "0.1", w_top);
  assert_scalar(r, "fit.epochs", "5", NULL); /* top over mid */
  assert_scalar(r, "data.dataset", "image_folder", NULL);
  CtRNode *cbs = ct_recipe_lookup(r, "callbacks"); /* replaced whole */
  g_assert_cmpint(ct_rnode_kind(cbs), ==, CT_RNODE_SEQUENCE);
  g_assert_cmpuint(ct_rnode_n_items(cbs), ==, 1);
  assert_scalar(r, "callbacks.0", "x", NULL);
  const char *okeys[] = { "name", "lr", "beta1", "weight_decay" };
  CtRNode *opt = ct_recipe_lookup(r, "optimizer");
  g_assert_cmpuint(ct_rnode_n_items(opt), ==, G_N_ELEMENTS(okeys));
  for (guint i = 0; i < G_N_ELEMENTS(okeys); i++)
    g_assert_cmpstr(ct_rnode_key(opt, i), ==, okeys[i]);
  g_assert_true(check_sections(r, &err));
  g_assert_no_error(err);
  ct_recipe_free(r);

  /* A relative path: positions keep it relative. */
  char *cwd = g_get_current_dir();
  g_assert_cmpint(g_chdir(dir), ==, 0);
  r = ct_recipe_load("top.yaml", &err);
  g_assert_cmpint(g_chdir(cwd), ==, 0);
  g_free(cwd);
  g_assert_no_error(err);
  assert_scalar(r, "optimizer.name", "adamw", "sub/../base.yaml:3:9");
  assert_scalar(r, "optimizer.lr", "0.01", "sub/mid.yaml:3:7");
  assert_scalar(r, "fit.epochs", "5", "top.yaml:4:11");
  ct_recipe_free(r);

  /* From memory, relative to the name's folder. */
  char *name = g_build_filename(dir, "mem.yaml", NULL);
  r = ct_recipe_load_data(name, "extends: base.yaml\nmodel: big\n", -1, &err);
  g_assert_no_error(err);
  assert_scalar(r, "model", "big", NULL);
  assert_scalar(r, "optimizer.lr", "0.001", NULL);
  ct_recipe_free(r);

  /* A broken base reports its own position. */
  char *bad = write_file(dir, "bad.yaml", "a: [1\n");
  char *uses_bad = write_file(dir, "uses-bad.yaml", "extends: bad.yaml\n");
  g_assert_null(ct_recipe_load(uses_bad, &err));
  char *prefix = g_strdup_printf("%s:2:1: ", bad);
  assert_error(&err, CT_ERROR_CONFIG, prefix, "did not find expected");

  g_free(prefix);
  g_free(bad);
  g_free(uses_bad);
  g_free(name);
  g_free(w_base);
  g_free(w_mid);
  g_free(w_top);
  g_free(base);
  g_free(mid);
  g_free(top);
  g_free(sub);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_extends_cycle(void)
{
  char *dir = ct_test_make_tmpdir("ct-recipe-XXXXXX");
  char *a = write_file(dir, "a.yaml", "extends: b.yaml\nx: 1\n");
  char *b = write_file(dir, "b.yaml", "y: 2\nextends: a.yaml\n");
  char *c = write_file(dir, "c.yaml", "extends: c.yaml\n");
  GError *err = NULL;
  g_assert_null(ct_recipe_load(a, &err));
  char *prefix = g_strdup_printf("%s:2:10: extends cycle: ", b);
  char *real = realpath(dir, NULL);
  char *chain = g_strdup_printf("%s/a.yaml -> %s/b.yaml -> %s/a.yaml", real, real, real);
  assert_error(&err, CT_ERROR_CONFIG, prefix, chain);
  g_free(prefix);
  g_free(chain);

  g_assert_null(ct_recipe_load(c, &err));
  prefix = g_strdup_printf("%s:1:10: ", c);
  chain = g_strdup_printf("extends cycle: %s/c.yaml -> %s/c.yaml", real, real);
  assert_error(&err, CT_ERROR_CONFIG, prefix, chain);
  g_free(prefix);
  g_free(chain);
  free(real);
  g_free(a);
  g_free(b);
  g_free(c);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_extends_missing(void)
{
  char *dir = ct_test_make_tmpdir("ct-recipe-XXXXXX");
  char *top = write_file(dir, "top.yaml", "x: 1\nextends: nope.yaml\n");
  GError *err = NULL;
  g_assert_null(ct_recipe_load(top, &err));
  char *prefix = g_strdup_printf("%s:2:10: ", top);
  char *text = g_strdup_printf("extends: %s/nope.yaml: %s", dir, g_strerror(ENOENT));
  assert_error(&err, CT_ERROR_IO, prefix, text);
  g_free(prefix);
  g_free(text);

  /* The recipe itself: "PATH: strerror". */
  char *none = g_build_filename(dir, "none.yaml", NULL);
  g_assert_null(ct_recipe_load(none, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_IO);
  text = g_strdup_printf("%s: %s", none, g_strerror(ENOENT));
  g_assert_cmpstr(err->message, ==, text);
  g_clear_error(&err);
  g_free(text);
  /* a folder, where a recipe was expected */
  g_assert_null(ct_recipe_load(dir, &err));
  text = g_strdup_printf("%s: is a folder, not a recipe file", dir);
  g_assert_error(err, CT_ERROR, CT_ERROR_IO);
  g_assert_cmpstr(err->message, ==, text);
  g_clear_error(&err);
  g_free(text);
  g_free(none);
  g_free(top);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static const char *set_yaml = "optimizer:\n"        /* 1 */
                              "  lr: 0.001\n"       /* 2 */
                              "callbacks:\n"        /* 3 */
                              "  - name: a\n"       /* 4 */
                              "  - short_epoch:\n"  /* 5 */
                              "      pct: 0.5\n"    /* 6 */
                              "  - plain\n"         /* 7 */
                              "tags: [x, y]\n";     /* 8 */

static void
set_ok(CtRecipe *r, const char *assignment)
{
  GError *err = NULL;
  g_assert_true(ct_recipe_override(r, assignment, &err));
  g_assert_no_error(err);
}

static void
test_override(void)
{
  CtRecipe *r = load(set_yaml);
  CtRNode *old_lr = ct_recipe_lookup(r, "optimizer.lr");

  set_ok(r, "optimizer.lr=3e-4"); /* existing key */
  assert_scalar(r, "optimizer.lr", "3e-4", "--set optimizer.lr=3e-4");
  g_assert_cmpuint(ct_rnode_n_items(ct_recipe_lookup(r, "optimizer")), ==, 1);
  g_assert_cmpstr(ct_rnode_scalar(old_lr), ==, "0.001"); /* still valid */

  set_ok(r, "fit.schedule.warmup=100"); /* new nested key */
  assert_scalar(r, "fit.schedule.warmup", "100", "--set fit.schedule.warmup=100");
  g_assert_cmpint(ct_rnode_kind(ct_recipe_lookup(r, "fit")), ==, CT_RNODE_MAPPING);
  g_assert_cmpstr(ct_rnode_where(ct_recipe_lookup(r, "fit.schedule")), ==,
                  "--set fit.schedule.warmup=100");
  g_assert_cmpstr(ct_rnode_key(ct_recipe_root(r), 3), ==, "fit");

  set_ok(r, "callbacks.1.short_epoch.pct=0.2"); /* through a sequence */
  assert_scalar(r, "callbacks.1.short_epoch.pct", "0.2", "--set callbacks.1.short_epoch.pct=0.2");
  CtRNode *old_tag = ct_recipe_lookup(r, "tags.0");
  set_ok(r, "tags.0=z"); /* a sequence item */
  assert_scalar(r, "tags.0", "z", NULL);
  g_assert_cmpstr(ct_rnode_scalar(old_tag), ==, "x"); /* still valid */
  assert_scalar(r, "tags.1", "y", "r.yaml:8:11");

  set_ok(r, "optimizer.betas=[0.9, 0.95]"); /* flow values */
  CtRNode *betas = ct_recipe_lookup(r, "optimizer.betas");
  g_assert_cmpint(ct_rnode_kind(betas), ==, CT_RNODE_SEQUENCE);
  g_assert_cmpuint(ct_rnode_n_items(betas), ==, 2);
  assert_scalar(r, "optimizer.betas.1", "0.95", "--set optimizer.betas=[0.9, 0.95]");
  set_ok(r, "callbacks.1.short_epoch={pct: 0.1, seed: '7'}");
  assert_scalar(r, "callbacks.1.short_epoch.pct", "0.1", NULL);
  assert_scalar(r, "callbacks.1.short_epoch.seed", "7", NULL);
  set_ok(r, "callbacks.2={x: 1}"); /* a scalar item becomes a mapping */
  assert_scalar(r, "callbacks.2.x", "1", NULL);
  set_ok(r, "note=");
  assert_scalar(r, "note", "", "--set note=");
  set_ok(r, " name = 'a = b' ");
  assert_scalar(r, "name", "a = b", NULL);
  set_ok(r, "url=http://x/?a=b#c");
  assert_scalar(r, "url", "http://x/?a=b#c", NULL);

  /* The check names the override. */
  set_ok(r, "data.dataset=synthetik");
  GError *err = NULL;
  g_assert_false(ct_recipe_check(r, ct_recipe_lookup(r, "data"), "data", data_schema, &err));
  assert_error(&err, CT_ERROR_CONFIG, "--set data.dataset=synthetik: ",
               "data.dataset: 'synthetik' is not one of synthetic|image_folder");
  ct_recipe_free(r);
}

/* += appends to a list (made when absent), -= removes a name or the
 * plugin of that name with its parameters; both refuse what is no list. */
static void
test_override_lists(void)
{
  CtRecipe *r = load(set_yaml);
  set_ok(r, "callbacks+=report");
  g_assert_cmpuint(ct_rnode_n_items(ct_recipe_lookup(r, "callbacks")), ==, 4);
  assert_scalar(r, "callbacks.3", "report", "--set callbacks+=report");
  set_ok(r, "callbacks -= short_epoch"); /* a plugin with parameters */
  g_assert_cmpuint(ct_rnode_n_items(ct_recipe_lookup(r, "callbacks")), ==, 3);
  assert_scalar(r, "callbacks.1", "plain", "r.yaml:7:5");
  set_ok(r, "tags+=[u, v]"); /* a sequence's items */
  g_assert_cmpuint(ct_rnode_n_items(ct_recipe_lookup(r, "tags")), ==, 4);
  assert_scalar(r, "tags.3", "v", NULL);
  set_ok(r, "tags-=x");
  assert_scalar(r, "tags.0", "y", NULL);
  set_ok(r, "callbacks.1.plain.k=2"); /* a plain name takes parameters */
  assert_scalar(r, "callbacks.1.plain.k", "2", "--set callbacks.1.plain.k=2");
  set_ok(r, "metrics+={zero_shot: {top_k: 3}}"); /* a new list */
  assert_scalar(r, "metrics.0.zero_shot.top_k", "3", NULL);
  static const struct {
    const char *assignment, *text;
  } rows[] = {
    { "callbacks-=nothing", "'callbacks' (at r.yaml:4:3) has no item 'nothing'" },
    { "optimizer.lr+=1", "'optimizer.lr' (at r.yaml:2:7) is a scalar; += works on lists" },
    { "optimizer-=lr", "is a mapping; -= works on lists" },
    { "absent-=x", "'absent' is not set; -= has nothing to remove" },
  };
  for (guint i = 0; i < G_N_ELEMENTS(rows); i++) {
    GError *err = NULL;
    g_autofree char *prefix = g_strdup_printf("--set %s: ", rows[i].assignment);
    g_assert_false(ct_recipe_override(r, rows[i].assignment, &err));
    assert_error(&err, CT_ERROR_CONFIG, prefix, rows[i].text);
  }
  ct_recipe_free(r);
}

/* A node's base folder: its recipe file's folder (absolute), the current
 * directory for a --set value; ct_recipe_absolute_path uses it. */
static void
test_node_base(void)
{
  g_autofree char *dir = g_dir_make_tmp("ct-base-XXXXXX", NULL);
  g_autofree char *file = g_build_filename(dir, "r.yaml", NULL);
  g_assert_true(g_file_set_contents(file, "data: {path: imgs}\n", -1, NULL));
  CtRecipe *r = ct_recipe_load(file, NULL);
  g_assert_nonnull(r);
  CtRNode *p = ct_recipe_lookup(r, "data.path");
  g_assert_cmpstr(ct_rnode_base(p), ==, dir);
  g_autofree char *abs = ct_recipe_absolute_path(p, "imgs", "/elsewhere");
  g_autofree char *want = g_build_filename(dir, "imgs", NULL);
  g_assert_cmpstr(abs, ==, want);
  set_ok(r, "data.path=other");
  g_autofree char *cwd = g_get_current_dir();
  p = ct_recipe_lookup(r, "data.path");
  g_assert_cmpstr(ct_rnode_base(p), ==, cwd);
  g_autofree char *abs2 = ct_recipe_absolute_path(p, "../x", "/elsewhere");
  g_autofree char *up = g_path_get_dirname(cwd);
  g_autofree char *want2 = g_build_filename(up, "x", NULL);
  g_assert_cmpstr(abs2, ==, want2);
  g_autofree char *same = ct_recipe_absolute_path(p, "/abs/y", "/elsewhere");
  g_assert_cmpstr(same, ==, "/abs/y");
  ct_recipe_free(r);
  g_unlink(file);
  g_rmdir(dir);
}

static void
test_override_bad(void)
{
  static const struct {
    const char *assignment, *text;
  } rows[] = {
    { "optimizer.lr", "expected PATH=VALUE" },
    { "=3", "expected PATH=VALUE with a non-empty PATH" },
    { " =3", "non-empty PATH" },
    { "a..b=1", "empty segment in path 'a..b'" },
    /* found by tests/fuzz/fuzz_recipe: the path was quoted raw */
    { "a\n..b=1", "empty segment in path 'a\\x0a..b'" },
    { "optimizer.=1", "empty segment" },
    { "optimizer.lr.x=1", "'optimizer.lr' (at r.yaml:2:7) is a scalar; it has no 'x'" },
    { "callbacks.2.x.y=1", "'callbacks.2' (at r.yaml:7:5) is a scalar; it has no 'x'" },
    { "callbacks.3=1", "'callbacks' (at r.yaml:4:3) is a sequence of 3 items; '3' is not an index" },
    { "callbacks.x.y=1", "is a sequence of 3 items; 'x' is not an index" },
    { "callbacks.-1=1", "'-1' is not an index" },
    { "optimizer.lr=[1, 2", "did not find expected ',' or ']'" },
    { "optimizer.lr=a: b: c", "mapping values are not allowed" },
    { "optimizer.lr=a\n---\nb", "only one YAML document is allowed" },
    { "optimizer.lr=\"\\0\"", "NUL characters are not allowed" },
  };
  CtRecipe *r = load(set_yaml);
  char *before = ct_recipe_to_yaml(r);
  for (guint i = 0; i < G_N_ELEMENTS(rows); i++) {
    GError *err = NULL;
    char **parts = g_strsplit(rows[i].assignment, "\n", -1); /* shown as \x0a */
    char *shown = g_strjoinv("\\x0a", parts);
    g_strfreev(parts);
    char *prefix = g_strdup_printf("--set %s: ", shown);
    g_test_message("row %u: %s", i, rows[i].assignment);
    g_assert_false(ct_recipe_override(r, rows[i].assignment, &err));
    assert_error(&err, CT_ERROR_CONFIG, prefix, rows[i].text);
    g_free(prefix);
    g_free(shown);
  }
  /* A path that is not UTF-8 made a recipe that could not be written
   * (found by tests/fuzz/fuzz_recipe); the message stays UTF-8. */
  GError *err = NULL;
  g_assert_false(ct_recipe_override(r, "optimizer.\xff\xfe=1", &err));
  g_assert_true(g_utf8_validate(err->message, -1, NULL));
  assert_error(&err, CT_ERROR_CONFIG, "--set optimizer.\xef\xbf\xbd\xef\xbf\xbd=1: ",
               "not valid UTF-8");
  g_assert_false(ct_recipe_override(r, "optimizer.lr=\xff", &err));
  assert_error(&err, CT_ERROR_CONFIG, "--set optimizer.lr=\xef\xbf\xbd: ", "not valid UTF-8");
  char *after = ct_recipe_to_yaml(r); /* nothing changed */
  g_assert_cmpstr(before, ==, after);
  g_free(before);
  g_free(after);
  ct_recipe_free(r);
}

static const char *tricky_yaml = "plain: hello\n"
                                 "colon: \"a: b\"\n"
                                 "hash: \"x # y\"\n"
                                 "lead: \" lead\"\n"
                                 "trail: \"trail \"\n"
                                 "empty: ''\n"
                                 "truthy: 'true'\n"
                                 "num: '007'\n"
                                 "multi: \"line1\\nline2\\n\"\n"
                                 "quote: \"it's \\\"q\\\"\"\n"
                                 "unicode: \"h\xc3\xa9llo \xe2\x9c\x93\"\n"
                                 "tab: \"a\\tb\"\n"
                                 "nested:\n"
                                 "  list: [1, [2, 3], {k: v}, []]\n"
                                 "  emptymap: {}\n"
                                 "  deeper: {a: {b: {c: d}}}\n"
                                 "\"key: with colon\": 1\n"
                                 "\"\": empty key\n"
                                 "dash: \"- x\"\n"
                                 "star: \"*x\"\n"
                                 "brace: \"{a}\"\n"
                                 "long: \"" /* longer than a line */
                                 "aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa "
                                 "aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa aaaaaaaaa\"\n";

static void
test_to_yaml_roundtrip(void)
{
  CtRecipe *r = load(tricky_yaml);
  set_ok(r, "optimizer.betas=[0.9, 0.95]");
  GError *err = NULL;
  g_assert_true(ct_recipe_check(r, ct_rnode_ensure_mapping(r, ct_recipe_root(r), "fit", "code"),
                                "fit", fit_schema, &err));
  char *y1 = ct_recipe_to_yaml(r);
  g_assert_nonnull(y1);
  g_test_message("%s", y1);
  g_assert_true(g_str_has_prefix(y1, "plain: hello\n")); /* block style, plain when safe */
  g_assert_nonnull(strstr(y1, "\nnested:\n  list:\n  - 1\n"));
  g_assert_nonnull(strstr(y1, "\nfit:\n  epochs: 1\n"));
  g_assert_null(strstr(y1, "a: b\n")); /* quoted */
  g_assert_nonnull(strstr(y1, "h\xc3\xa9llo \xe2\x9c\x93")); /* UTF-8 kept */
  CtRecipe *r2 = ct_recipe_load_data("out.yaml", y1, -1, &err);
  g_assert_no_error(err);
  g_assert_true(tree_equal(ct_recipe_root(r), ct_recipe_root(r2)));
  assert_scalar(r2, "multi", "line1\nline2\n", NULL);
  assert_scalar(r2, "quote", "it's \"q\"", NULL);
  assert_scalar(r2, "lead", " lead", NULL);
  g_assert_cmpstr(ct_rnode_scalar(ct_rnode_get(ct_recipe_root(r2), "key: with colon")), ==, "1");
  g_assert_cmpstr(ct_rnode_scalar(ct_rnode_get(ct_recipe_root(r2), "")), ==, "empty key");
  char *y2 = ct_recipe_to_yaml(r2);
  g_assert_cmpstr(y1, ==, y2);
  g_free(y1);
  g_free(y2);
  ct_recipe_free(r2);

  /* Text the emitter cannot write: an error at the node's position. */
  ct_rnode_set_scalar(r, ct_recipe_root(r), "bad", "\xff", "code:1:1");
  g_assert_null(ct_recipe_to_yaml(r));
  g_assert_false(ct_recipe_write(r, "/nonexistent/never.yaml", &err));
  assert_error(&err, CT_ERROR_CONFIG, "code:1:1: ", "cannot write as YAML");
  ct_recipe_free(r);
}

static void
test_write(void)
{
  char *dir = ct_test_make_tmpdir("ct-recipe-XXXXXX");
  char *path = g_build_filename(dir, "out.yaml", NULL);
  CtRecipe *r = load(tree_yaml);
  GError *err = NULL;
  g_assert_true(ct_recipe_write(r, path, &err));
  g_assert_no_error(err);
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 1); /* no temporary left */
  char *text = NULL, *yaml = ct_recipe_to_yaml(r);
  g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, yaml);
  g_free(text);
  g_free(yaml);
  CtRecipe *back = ct_recipe_load(path, &err);
  g_assert_no_error(err);
  g_assert_true(tree_equal(ct_recipe_root(r), ct_recipe_root(back)));
  ct_recipe_free(back);

  /* Replacing keeps the file's mode. */
  g_assert_cmpint(g_chmod(path, 0640), ==, 0);
  set_ok(r, "model=big");
  g_assert_true(ct_recipe_write(r, path, &err));
  g_assert_no_error(err);
  struct stat sb;
  g_assert_cmpint(g_stat(path, &sb), ==, 0);
  g_assert_cmpint(sb.st_mode & 07777, ==, 0640);
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 1);
  back = ct_recipe_load(path, &err);
  g_assert_no_error(err);
  assert_scalar(back, "model", "big", NULL);
  ct_recipe_free(back);

  /* A folder in the way: the rename fails and the temporary goes. */
  char *in_way = g_build_filename(dir, "in-way", NULL);
  g_assert_cmpint(g_mkdir(in_way, 0700), ==, 0);
  g_assert_false(ct_recipe_write(r, in_way, &err));
  char *msg = g_strdup_printf("%s: write failed: %s", in_way, g_strerror(EISDIR));
  assert_error(&err, CT_ERROR_IO, msg, NULL);
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 2);
  g_assert_cmpint(g_rmdir(in_way), ==, 0);
  g_free(msg);
  g_free(in_way);

  /* A folder that does not exist. */
  char *bad = g_build_filename(dir, "missing", "out.yaml", NULL);
  g_assert_false(ct_recipe_write(r, bad, &err));
  char *prefix = g_strdup_printf("%s: cannot create temporary file: ", bad);
  assert_error(&err, CT_ERROR_IO, prefix, g_strerror(ENOENT));
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 1);
  g_free(prefix);
  g_free(bad);

  ct_recipe_free(r);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* ---------------------------------------------------------------- typed sections */

static void
test_sections_typed(void)
{
  GError *err = NULL;
  CtRecipe *r = load("seed: 7\n"
                     "data: {batch_size: 4, templates: ['a {label}', b], captions: {cat: a cat},\n"
                     "       path: imgs, n_train: 3}\n"
                     "model: {preset: rn, vision_layers: [1, 1, 2, 1], image_resolution: 32}\n"
                     "optimizer: {name: adam, lr_mult: {'visual.*': 2}, freeze: [logit_scale]}\n"
                     "schedule: {name: flat_cos}\n"
                     "fit: {epochs: 3}\n");
  CtSections s = { 0 };
  g_assert_true(ct_sections_read(r, CT_SECTIONS_ALL, &s, &err));
  g_assert_no_error(err);
  g_assert_cmpuint(s.seed, ==, 7);
  /* data: values, defaults, lists with their positions */
  g_assert_cmpint(s.data.batch_size, ==, 4);
  g_assert_cmpint(s.data.n_train, ==, 3);
  g_assert_cmpstr(s.data.dataset, ==, "synthetic");
  g_assert_true(s.data.shuffle);
  g_assert_cmpfloat(s.data.min_scale, ==, 0.9);
  g_assert_cmpuint(s.data.templates.n, ==, 2);
  g_assert_cmpstr(s.data.templates.values[0], ==, "a {label}");
  g_assert_null(s.data.templates.values[2]);
  g_assert_cmpstr(s.data.captions.keys[0], ==, "cat");
  g_assert_cmpstr(s.data.captions.values[0], ==, "a cat");
  g_assert_cmpstr(s.data.captions.where[0], ==, "r.yaml:2:68");
  g_assert_cmpstr(ct_section_where(&s.data.base, offsetof(CtDataSection, batch_size)), ==,
                  "r.yaml:2:20");
  g_assert_cmpstr(ct_section_where(&s.data.base, offsetof(CtDataSection, prefetch)), ==,
                  "default");
  g_assert_true(ct_section_is_set(&s.data.base, offsetof(CtDataSection, batch_size)));
  g_assert_false(ct_section_is_set(&s.data.base, offsetof(CtDataSection, workers)));
  /* model: the preset, the stages from a list, validated */
  g_assert_cmpstr(s.model.preset, ==, "rn");
  g_assert_cmpint(s.model.cfg.vision_stages[2], ==, 2);
  g_assert_cmpint(s.model.cfg.vision_layers, ==, 5);
  g_assert_cmpint(s.model.cfg.image_resolution, ==, 32);
  g_assert_cmpint(s.model.cfg.embed_dim, ==, 64);
  g_assert_cmpint(s.model.checkpoint_nchunks, ==, 2);
  assert_scalar(r, "model.vision_stage3", "2", "r.yaml:4:36");
  /* optimizer: adam's defaults; schedule: flat_cos's keys alone */
  g_assert_cmpfloat(s.optimizer.lr, ==, 1e-3);
  g_assert_cmpfloat(s.optimizer.beta2, ==, 0.99);
  assert_scalar(r, "optimizer.eps", "1e-5", "default");
  g_assert_cmpstr(s.optimizer.lr_mult.keys[0], ==, "visual.*");
  g_assert_cmpstr(s.optimizer.freeze.where[0], ==, "r.yaml:5:60");
  g_assert_cmpstr(s.optimizer.step_in_backward, ==, "auto");
  g_assert_cmpfloat(s.schedule.pct_start, ==, 0.75);
  g_assert_cmpfloat(s.schedule.div, ==, 0);
  g_assert_null(ct_recipe_lookup(r, "schedule.div"));
  CtRNode *sched = ct_recipe_lookup(r, "schedule");
  g_assert_cmpstr(ct_rnode_key(sched, 1), ==, "pct_start");
  g_assert_cmpstr(ct_rnode_key(sched, 2), ==, "div_final");
  g_assert_cmpint(s.fit.epochs, ==, 3);
  g_assert_cmpint(s.fit.threads, ==, 2);
  g_assert_cmpstr(s.output.dir, ==, "");
  g_assert_null(s.plugin_path[0]);
  /* a value set later goes into the field and the tree */
  ct_section_set_int(r, &s.data.base, offsetof(CtDataSection, batch_size), 9, "--here");
  g_assert_cmpint(s.data.batch_size, ==, 9);
  assert_scalar(r, "data.batch_size", "9", "--here");
  ct_sections_absolute_paths(r, &s, "/base");
  g_assert_cmpstr(s.data.path, ==, "/base/imgs");
  assert_scalar(r, "data.path", "/base/imgs", "r.yaml:3:14");
  g_assert_cmpstr(s.data.vocab, ==, "");
  ct_sections_clear(&s);
  ct_recipe_free(r);

  /* the data and model sections alone (bench --loader): no optimizer read */
  r = load("optimizer: {lr: fast}\n");
  g_assert_true(ct_sections_read(r, CT_SECTIONS_DATA | CT_SECTIONS_MODEL, &s, &err));
  g_assert_no_error(err);
  g_assert_null(s.optimizer.name);
  ct_sections_clear(&s);
  ct_recipe_free(r);
}

/* Bad sections: the messages that `cliptrain fit` gives. */
static void
test_sections_errors(void)
{
  static const struct {
    const char *yaml, *prefix, *text;
  } rows[] = {
    { "sed: 1\n", "r.yaml:1:6: ", "unknown section 'sed'; did you mean 'seed'? (known: seed, data, model" },
    { "seed: -1\n", "r.yaml:1:7: ", "seed: expected a non-negative integer" },
    { "data: {batch_size: 0}\n", "r.yaml:1:20: ", "data.batch_size: 0 is out of range [1, 1048576]" },
    { "data: [1]\n", "r.yaml:1:7: ", "data: expected a mapping" },
    { "model: 3\n", "r.yaml:1:8: ", "model: expected a mapping" },
    { "model: {preset: vitb99}\n", "r.yaml:1:17: ", "model.preset: unknown preset 'vitb99'" },
    { "model: {vision_layers: [1, 2]}\n", "r.yaml:1:24: ", "needs 4 counts" },
    { "model: {vision_width: 30, vision_heads: 7}\n", "r.yaml:1:8: ", "model: " },
    { "optimizer: {name: adamx}\n", "r.yaml:1:19: ", "optimizer.name: 'adamx' is not one of adam|adamw|sgd" },
    { "schedule: {name: const, div: 2}\n", "r.yaml:1:25: ", "schedule: unknown key 'div' (known: name, warmup)" },
    { "schedule: {name: cosine}\n", "r.yaml:1:18: ", "schedule.name: 'cosine' is not one of const|one_cycle" },
    { "fit: {epoch: 2}\n", "r.yaml:1:7: ", "fit: unknown key 'epoch'; did you mean 'epochs'?" },
    { "output: {dirs: x}\n", "r.yaml:1:10: ", "did you mean 'dir'?" },
    { "plugin_path: x\n", "r.yaml:1:14: ", "plugin_path: expected a list of folders" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    GError *err = NULL;
    CtRecipe *r = load(rows[i].yaml);
    CtSections s = { 0 };
    g_assert_false(ct_sections_read(r, CT_SECTIONS_ALL, &s, &err));
    assert_error(&err, CT_ERROR_CONFIG, rows[i].prefix, rows[i].text);
    ct_sections_clear(&s);
    ct_recipe_free(r);
  }
}

/* The tables agree with the modules they describe, and --keys says every
 * key of them. */
static void
test_sections_tables(void)
{
  const CtSectionInfo *model = NULL, *schedule = NULL;
  for (const CtSectionInfo *i = ct_section_infos; i->name; i++) {
    if (g_str_equal(i->name, "model"))
      model = i;
    if (g_str_equal(i->name, "schedule"))
      schedule = i;
  }
  g_assert_nonnull(model);
  g_assert_nonnull(schedule);
  /* model: preset, then every config key in ct_config_keys() order */
  const char *const *ck = ct_config_keys();
  for (size_t i = 0; ck[i]; i++)
    g_assert_cmpstr(model->keys[i + 1].spec.name, ==, ck[i]);
  /* schedule: every schedule's every parameter (but lr) is in the table */
  g_autofree char *names = g_strjoinv("|", (char **) ct_schedule_names());
  g_assert_cmpstr(schedule->keys[0].spec.choices, ==, names);
  for (const char *const *n = ct_schedule_names(); *n; n++) {
    g_auto(GStrv) d = ct_sections_schedule_defaults(*n);
    for (char **p = d; p[0]; p += 2) {
      gboolean found = FALSE;
      for (const CtSectionKey *k = schedule->keys; k->spec.name; k++)
        found = found || g_str_equal(k->spec.name, p[0]);
      if (!found)
        g_printerr("# schedule %s: parameter %s is not in the table\n", *n, p[0]);
      g_assert_true(found);
    }
  }
  g_autofree char *text = ct_sections_describe();
  for (const CtParamSpec *p = ct_top_level_keys; p->name; p++) {
    g_autofree char *line = g_strdup_printf("\n  %s ", p->name);
    g_assert_nonnull(strstr(text, line));
  }
  for (const CtSectionInfo *i = ct_section_infos; i->name; i++)
    for (const CtSectionKey *k = i->keys; k->spec.name; k++) {
      g_autofree char *line = g_strdup_printf("\n  %s.%s ", i->name, k->spec.name);
      if (!strstr(text, line))
        g_printerr("# --keys lacks %s.%s\n", i->name, k->spec.name);
      g_assert_nonnull(strstr(text, line));
    }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/recipe/parse/tree", test_parse_tree);
  g_test_add_func("/recipe/parse/aliases", test_parse_aliases);
  g_test_add_func("/recipe/check/table", test_check_table);
  g_test_add_func("/recipe/check/defaults", test_check_defaults);
  g_test_add_func("/recipe/check/typed-reads", test_typed_reads);
  g_test_add_func("/recipe/check/did-you-mean", test_did_you_mean);
  g_test_add_func("/recipe/extends/chain", test_extends);
  g_test_add_func("/recipe/extends/cycle", test_extends_cycle);
  g_test_add_func("/recipe/extends/missing", test_extends_missing);
  g_test_add_func("/recipe/override/ok", test_override);
  g_test_add_func("/recipe/override/bad", test_override_bad);
  g_test_add_func("/recipe/override/lists", test_override_lists);
  g_test_add_func("/recipe/node-base", test_node_base);
  g_test_add_func("/recipe/to-yaml/roundtrip", test_to_yaml_roundtrip);
  g_test_add_func("/recipe/write/atomic", test_write);
  g_test_add_func("/recipe/sections/typed", test_sections_typed);
  g_test_add_func("/recipe/sections/errors", test_sections_errors);
  g_test_add_func("/recipe/sections/tables", test_sections_tables);
  return g_test_run();
}

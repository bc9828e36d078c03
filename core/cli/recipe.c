/* recipe.c: `cliptrain recipe --keys`, the reference of every recipe key,
 * and `cliptrain recipe RECIPE`, a recipe resolved as a fit would run it. */
#include "config.h"

#include "cli/cli.h"
#include "setup/run.h"
#include "setup/sections.h"

#include <stdio.h>

int
ct_cli_recipe(int argc, char **argv)
{
  gboolean keys = FALSE;
  g_auto(GStrv) sets = NULL;
  GOptionEntry entries[] = {
    { "keys", 'k', 0, G_OPTION_ARG_NONE, &keys,
      "Print every key of the core sections: type, default, doc, range and choices", NULL },
    { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets,
      "Override a recipe key, e.g. optimizer.lr=3e-4 (repeatable)", "KEY=VALUE" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(&argc, &argv, entries,
                             "[RECIPE.yaml] - describe recipe keys, or resolve a recipe",
                             "With --keys, the reference of every key.  With RECIPE, the "
                             "recipe as 'cliptrain fit' would\nrun it and write it into its run "
                             "folder: overrides applied, every default\nfilled (the plugins' "
                             "too), paths made absolute.",
                             &error);
  if (ok && !ct_cli_check_sets("recipe", sets, argc, argv))
    return CT_EXIT_USAGE;
  if (!ok || (keys ? argc != 1 : argc != 2)) {
    ct_cli_error("recipe: %s", error ? error->message
                               : keys ? "--keys takes no recipe"
                                      : "usage: cliptrain recipe --keys | RECIPE.yaml [--set KEY=VALUE]...");
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  if (keys) {
    g_autofree char *text = ct_sections_describe();
    fputs(text, stdout);
    return CT_EXIT_OK;
  }
  CtRunOptions o = { .recipe = argv[1], .sets = (const char *const *) sets };
  g_autofree char *yaml = NULL;
  int rc = ct_run_resolve(&o, &yaml, &error);
  if (rc != 0) {
    ct_cli_error("%s", error ? error->message : "recipe: failed");
    g_clear_error(&error);
    return rc;
  }
  fputs(yaml, stdout);
  return CT_EXIT_OK;
}

/* fit.c: `cliptrain fit RECIPE`, and `cliptrain plugins [NAME]`. */
#include "config.h"

#include "cli/cli.h"
#include "formats/recipe-schema.h"
#include "train/plugin-loader.h"
#include "setup/run.h"

#include <cliptrain/plugin.h>

#include <stdio.h>
#include <string.h>

/* "90s", "30m", "2h", "1d" or plain seconds */
static gboolean
parse_duration(const char *text, double *seconds)
{
  char *end = NULL;
  double v = g_ascii_strtod(text, &end);
  if (end == text || !(v > 0))
    return FALSE;
  double unit = !*end || !strcmp(end, "s") ? 1 : !strcmp(end, "m") ? 60
                : !strcmp(end, "h") ? 3600 : !strcmp(end, "d") ? 86400 : 0;
  *seconds = v * unit;
  return unit > 0;
}

gboolean
ct_cli_check_sets(const char *cmd, char *const *sets, int argc, char **argv)
{
  for (char *const *s = sets; s && *s; s++)
    if (!strchr(*s, '=')) {
      /* `--set fit.epochs 2`: the value became an argument */
      const char *next = argc > 2 ? argv[2] : NULL;
      g_autofree char *ex = g_strdup_printf("%s=%s", *s, next ? next : "VALUE");
      ct_cli_error("%s: --set %s: expected KEY=VALUE in one argument, as in --set %s", cmd, *s,
                   ex);
      return FALSE;
    }
  return TRUE;
}

int
ct_cli_fit(int argc, char **argv)
{
  g_auto(GStrv) sets = NULL;
  g_autofree char *out = NULL;
  int threads = 0;
  g_autofree char *resume = NULL, *time_limit = NULL, *max_batch = NULL;
  gint64 stop_after = 0;
  gboolean print_groups = FALSE;
  GOptionEntry entries[] = {
    { "resume", 'r', 0, G_OPTION_ARG_FILENAME, &resume, "Continue the run in DIR from its training state (its recipe.yaml is used)", "DIR" },
    { "stop-after", 0, 0, G_OPTION_ARG_INT64, &stop_after, "Stop after N training steps in all, leaving a resumable state", "N" },
    { "time-limit", 0, 0, G_OPTION_ARG_STRING, &time_limit, "Stop after this wall-clock time (90s, 30m, 2h, 1d), leaving a resumable state", "DURATION" },
    { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets, "Override a recipe key, e.g. optimizer.lr=3e-4 (repeatable)", "KEY=VALUE" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Run folder (default: output.dir, else runs/RECIPE-TIME)", "DIR" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "BLAS threads (default: fit.threads)", "N" },
    { "max-batch-size", 0, 0, G_OPTION_ARG_STRING, &max_batch, "Train with the largest batch whose predicted memory fits BUDGET (6GiB, 1500MiB, auto)", "BUDGET" },
    { "print-lr-groups", 0, 0, G_OPTION_ARG_NONE, &print_groups, "Print the optimizer's parameter groups (lr multiplier from lr_mult and layer_decay, weight decay, locked or not, tensors, parameters) and exit without training", NULL },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "RECIPE.yaml - train a CLIP model from a recipe",
    NULL, &error);
  if (ok && !ct_cli_check_sets("fit", sets, argc, argv))
    return CT_EXIT_USAGE;
  double limit = 0;
  if (ok && time_limit && !parse_duration(time_limit, &limit)) {
    ct_cli_error("fit: --time-limit '%s' is not a duration such as 90s, 30m, 2h or 1d",
                 time_limit);
    return CT_EXIT_USAGE;
  }
  if (!ok || argc > 2 || (argc < 2 && !resume) || threads < 0 || stop_after < 0) {
    ct_cli_error("fit: %s", error ? error->message
                          : argc < 2 ? "a recipe file is required: cliptrain fit RECIPE.yaml"
                          : argc > 2 ? "only one recipe file is taken"
                                     : "--threads and --stop-after must be positive");
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  if (resume && out) {
    ct_cli_error("fit: --resume continues in its own folder; drop --out");
    return CT_EXIT_USAGE;
  }
  CtRunOptions o = { argc == 2 ? argv[1] : NULL, (const char *const *) sets, out, threads,
                     resume, stop_after, limit, TRUE, max_batch };
  if (print_groups) {
    g_autofree char *text = NULL;
    int rc = ct_run_lr_groups(&o, &text, &error);
    if (rc != 0) {
      ct_cli_error("%s", error ? error->message : "fit --print-lr-groups failed");
      g_clear_error(&error);
    } else {
      fputs(text, stdout);
    }
    return rc;
  }
  int rc = ct_run_fit(&o, &error);
  if (rc != 0) {
    ct_cli_error("%s", error ? error->message : "fit failed");
    g_clear_error(&error);
  }
  return rc;
}

/* OUT's lines, each escaped (ct_cli_escape), to stdout. */
static void
print_escaped_lines(const char *text)
{
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (!l[1] && !**l) /* after the last newline */
      break;
    g_autofree char *safe = ct_cli_escape(*l);
    printf("%s\n", safe);
  }
}

static void
print_params(const CtPluginDescriptor *d)
{
  if (!d->params || !d->params->name) {
    printf("  (none)\n");
    return;
  }
  GString *out = g_string_new(NULL);
  for (const CtParamSpec *p = d->params; p->name; p++)
    ct_param_describe(out, p->name, 16, p, NULL);
  print_escaped_lines(out->str);
  g_string_free(out, TRUE);
}

/* One line of `cliptrain plugins` for FILE, found for NAME; WINNER is the
 * file loading NAME would use (the first on the search path). */
static void
list_one(const char *name, const char *file, const char *winner)
{
  g_autofree char *sname = ct_cli_escape(name), *sfile = ct_cli_escape(file);
  if (!winner || strcmp(file, winner) != 0) {
    g_autofree char *swin = ct_cli_escape(winner);
    printf("%-18s (not loaded: %s is hidden by %s, found first on the search path)\n", sname,
           sfile, winner ? swin : "no regular file");
    return;
  }
  GError *e = NULL;
  const CtPluginDescriptor *d = ct_plugin_open(file, &e);
  if (d && strcmp(d->name, name) != 0) {
    g_autofree char *claimed = ct_cli_escape(d->name);
    printf("%-18s (cannot load: %s declares the name '%s', not '%s')\n", sname, sfile, claimed,
           sname);
  } else if (d) {
    g_autofree char *doc = ct_cli_escape(d->doc);
    printf("%-18s %s\n", sname, doc);
  } else {
    g_autofree char *msg = ct_cli_escape(e->message);
    printf("%-18s (cannot load: %s)\n", sname, msg);
    g_error_free(e);
  }
}

int
ct_cli_plugins(int argc, char **argv)
{
  GOptionEntry entries[] = { { NULL } };
  GError *error = NULL;
  g_autofree char *where = g_strdup_printf(
    "Search order: CLIPTRAIN_PLUGIN_PATH, %s, the build tree.", CT_PLUGINSDIR);
  if (!ct_cli_parse(&argc, &argv, entries, "[NAME] - list the plugins found, or describe one",
                    where, &error) || argc > 2) {
    ct_cli_error("plugins: %s", error ? error->message : "usage: cliptrain plugins [NAME]");
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  GPtrArray *search = ct_plugin_search_path(NULL);
  int rc = CT_EXIT_OK;
  if (argc == 1) {
    GPtrArray *all = ct_plugin_list_all(search);
    for (guint i = 0; i < all->len; i += 2) {
      const char *name = all->pdata[i];
      g_autofree char *winner = ct_plugin_find(name, search, NULL);
      list_one(name, all->pdata[i + 1], winner);
    }
    g_ptr_array_free(all, TRUE);
  } else {
    GError *e = NULL;
    g_autofree char *file = ct_plugin_find(argv[1], search, &e);
    const CtPluginDescriptor *d = file ? ct_plugin_open(file, &e) : NULL;
    if (!d) {
      ct_cli_error("plugins: %s", e->message);
      g_error_free(e);
      rc = CT_EXIT_USAGE;
    } else if (strcmp(d->name, argv[1]) != 0) {
      g_autofree char *claimed = ct_cli_escape(d->name);
      ct_cli_error("plugins: %s declares the name '%s', not '%s'", file, claimed, argv[1]);
      rc = CT_EXIT_USAGE;
    } else {
      g_autofree char *sname = ct_cli_escape(d->name), *sversion = ct_cli_escape(d->version),
                      *sdoc = ct_cli_escape(d->doc), *sfile = ct_cli_escape(file);
      printf("%s %s\n  %s\n\nfile:    %s\nABI:     %u.%u\norder:   %d\nruns in: %s\nevents: ",
             sname, sversion, sdoc, sfile, d->abi_major,
             d->abi_minor, d->order,
             ct_plugin_desc_run(d) == CT_RUN_TRAIN   ? "training"
             : ct_plugin_desc_run(d) == CT_RUN_VALID ? "validation"
                                      : "training and validation");
      for (int ev = 0; ev < CT_N_EVENTS; ev++)
        if (d->events & CT_EVENT_BIT(ev))
          printf(" %s", ct_event_name(ev));
      CtGradsUse use = ct_plugin_desc_grads(d);
      printf("\ngrads:   %s\n",
             use == CT_GRADS_UNUSED ? "unused (optimizer.step_in_backward auto may run)"
             : use == CT_GRADS_WHOLE
               ? "whole (needs every gradient before any step: no step_in_backward)"
               : "undeclared (optimizer.step_in_backward auto stays off)");
      if (ct_plugin_desc_model_extras(d) & CT_MODEL_LOGIT_BIAS)
        printf("model:   adds the parameter logit_bias\n");
      printf("\nparameters:\n");
      print_params(d);
    }
  }
  g_ptr_array_free(search, TRUE);
  return rc;
}

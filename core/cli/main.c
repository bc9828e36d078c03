/* main.c: the cliptrain program: dispatch to subcommands. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <stdio.h>
#include <string.h>

static const char usage[] =
  "Usage: cliptrain COMMAND [OPTIONS]\n"
  "\n"
  "Train CLIP models in C.\n"
  "\n"
  "Commands:\n"
  "  fit        train from a YAML recipe: cliptrain fit RECIPE [--set KEY=VALUE]...\n"
  "  recipe     every recipe key with its type, default, range and doc (--keys),\n"
  "             or a recipe resolved as fit would run it: cliptrain recipe RECIPE\n"
  "  plugins    list the callback plugins found, or describe one\n"
  "  bench      time whole training steps (forward, loss, backward, AdamW)\n"
  "             on synthetic data and print one JSON line\n"
  "  init       write OpenAI-initialised weights for a preset (safetensors)\n"
  "  tokenize   print CLIP token ids of captions on stdin, one line each\n"
  "  embed      write L2-normalised features of images or texts\n"
  "             (.safetensors or .npy)\n"
  "  zeroshot   classify images by labels and prompt templates\n"
  "  retrieve   the images of an embedded index nearest to a text query\n"
  "  eval       a trained model's metrics on a recipe's validation set:\n"
  "             cliptrain eval RECIPE --model RUN_DIR (JSON)\n"
  "\n"
  "Options:\n"
  "  --help     show this help\n"
  "  --version  show the version\n"
  "\n"
  "Run 'cliptrain COMMAND --help' for a command's options.\n"
  "Exit status: 0 success, 1 failure while running, 2 bad usage.\n";

void
ct_cli_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* one line: newlines inside a message become spaces */
  for (char *p = msg; *p; p++)
    if (*p == '\n')
      *p = ' ';
  fprintf(stderr, "cliptrain: %s\n", msg);
}

int
main(int argc, char **argv)
{
  ct_cli_blas_setup(argv);
  if (argc < 2) {
    fputs(usage, stderr);
    return CT_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    fputs(usage, stdout);
    return CT_EXIT_OK;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("cliptrain %s\n", ct_version());
    return CT_EXIT_OK;
  }
  if (strcmp(cmd, "bench") == 0)
    return ct_cli_bench(argc - 1, argv + 1);
  if (strcmp(cmd, "fit") == 0)
    return ct_cli_fit(argc - 1, argv + 1);
  if (strcmp(cmd, "recipe") == 0)
    return ct_cli_recipe(argc - 1, argv + 1);
  if (strcmp(cmd, "plugins") == 0)
    return ct_cli_plugins(argc - 1, argv + 1);
  if (strcmp(cmd, "init") == 0)
    return ct_cli_init(argc - 1, argv + 1);
  if (strcmp(cmd, "tokenize") == 0)
    return ct_cli_tokenize(argc - 1, argv + 1);
  if (strcmp(cmd, "embed") == 0)
    return ct_cli_embed(argc - 1, argv + 1);
  if (strcmp(cmd, "zeroshot") == 0)
    return ct_cli_zeroshot(argc - 1, argv + 1);
  if (strcmp(cmd, "retrieve") == 0)
    return ct_cli_retrieve(argc - 1, argv + 1);
  if (strcmp(cmd, "eval") == 0)
    return ct_cli_eval(argc - 1, argv + 1);
  ct_cli_error("unknown command '%s'; run 'cliptrain --help'", cmd);
  return CT_EXIT_USAGE;
}

gboolean
ct_cli_parse(int *argc, char ***argv, const GOptionEntry *entries, const char *summary,
             const char *description, GError **error)
{
  /* --help's usage line: "cliptrain COMMAND", not the bare command */
  if (*argc > 0 && !g_get_prgname()) {
    g_autofree char *name = g_strconcat("cliptrain ", (*argv)[0], NULL);
    g_set_prgname(name);
  }
  GOptionContext *ctx = g_option_context_new(summary);
  if (description)
    g_option_context_set_description(ctx, description);
  g_option_context_add_main_entries(ctx, entries, NULL);
  gboolean ok = g_option_context_parse(ctx, argc, argv, error);
  g_option_context_free(ctx);
  return ok;
}

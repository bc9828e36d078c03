/* main.c: the cliptrain program: dispatch to subcommands. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <locale.h>
#include <stdio.h>
#include <string.h>

/* The subcommands.  `cliptrain --help` lists them from this table, and
 * ct_cli_parse ends each one's --help with its example and its docs page,
 * so that a new subcommand needs only a row here (and a test in
 * tests/cli/help.sh reads the list back from `cliptrain --help`). */
typedef struct {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary; /* its lines in `cliptrain --help`, "\n" between */
  const char *example; /* whole commands, one a line */
  const char *docs;    /* docs/PAGE.md#section, from the top source folder */
} CtCliCommand;

static const CtCliCommand commands[] = {
  { "fit", ct_cli_fit, "train from a YAML recipe: cliptrain fit RECIPE [--set KEY=VALUE]...",
    "cliptrain fit recipes/fashion_mnist.yaml\n"
    "cliptrain fit recipes/fashion_mnist.yaml --set fit.epochs=1 --out runs/fm1\n"
    "cliptrain fit --resume runs/fm1",
    "docs/training.md#cliptrain-fit" },
  { "recipe", ct_cli_recipe,
    "every recipe key with its type, default, range and doc (--keys),\n"
    "or a recipe resolved as fit would run it: cliptrain recipe RECIPE",
    "cliptrain recipe --keys\n"
    "cliptrain recipe recipes/fashion_mnist.yaml --set optimizer.lr=3e-4",
    "docs/training.md#recipes" },
  { "plugins", ct_cli_plugins, "list the callback plugins found, or describe one",
    "cliptrain plugins\n"
    "cliptrain plugins retrieval_at_k",
    "docs/plugins.md#the-shipped-plugins" },
  { "bench", ct_cli_bench,
    "time whole training steps (forward, loss, backward, AdamW)\n"
    "on synthetic data and print one JSON line",
    "cliptrain bench --preset vitb32 --batch 16 --steps 3\n"
    "cliptrain bench --sgemm 2048",
    "docs/performance.md#measuring-cliptrain-bench" },
  { "init", ct_cli_init, "write OpenAI-initialised weights for a preset (safetensors)",
    "cliptrain init --preset vitb32 --seed 0 --out vitb32.safetensors",
    "docs/models.md#cliptrain-init" },
  { "tokenize", ct_cli_tokenize, "print CLIP token ids of captions on stdin, one line each",
    "echo 'a photo of a cat.' | cliptrain tokenize --vocab runs/fm1/vocab.txt",
    "docs/data.md#the-tokenizer" },
  { "embed", ct_cli_embed, "write L2-normalised features of images or texts\n(.safetensors or .npy)",
    "cliptrain embed --model runs/fm1/model.safetensors --images photos/ --out photos.safetensors",
    "docs/models.md#using-a-trained-model" },
  { "zeroshot", ct_cli_zeroshot, "classify images by labels and prompt templates",
    "cliptrain zeroshot --model runs/fashion --data recipes/fashion_mnist.yaml --confusion confusion.csv\n"
    "cliptrain zeroshot --model runs/fm1/model.safetensors --labels \"shirt,sneaker,bag\" photo.png",
    "docs/models.md#using-a-trained-model" },
  { "retrieve", ct_cli_retrieve, "the images of an embedded index nearest to a text query",
    "cliptrain retrieve --model runs/fm1/model.safetensors --index photos.safetensors "
    "--query \"a photo of a bag\"",
    "docs/models.md#using-a-trained-model" },
  { "eval", ct_cli_eval,
    "a trained model's metrics on a recipe's validation set:\n"
    "cliptrain eval RECIPE --model RUN_DIR (JSON)",
    "cliptrain eval recipes/fashion_mnist.yaml --model runs/fashion --out eval.json",
    "docs/models.md#using-a-trained-model" },
};

static const CtCliCommand *
find_command(const char *name)
{
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  return NULL;
}

static void
print_usage(FILE *to)
{
  fputs("Usage: cliptrain COMMAND [OPTIONS]\n\nTrain CLIP models in C.\n\nCommands:\n", to);
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
    g_auto(GStrv) lines = g_strsplit(commands[i].summary, "\n", -1);
    for (char **l = lines; *l; l++)
      fprintf(to, "  %-10s %s\n", l == lines ? commands[i].name : "", *l);
  }
  fputs("\nOptions:\n"
        "  --help     show this help\n"
        "  --version  show the version\n"
        "\n"
        "Run 'cliptrain COMMAND --help' for a command's options, an example and its docs page.\n"
        "Exit status: 0 success, 1 failure while running, 2 bad usage.\n",
        to);
}

void
ct_cli_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* one line: newlines inside a message become spaces, and any other
   * control character quoted from a file is escaped */
  for (char *p = msg; *p; p++)
    if (*p == '\n')
      *p = ' ';
  g_autofree char *safe = ct_cli_escape(msg);
  fprintf(stderr, "cliptrain: %s\n", safe);
}

int
main(int argc, char **argv)
{
  /* the user's locale for text (messages, the terminal's charset), but
   * numbers keep C's '.' everywhere they are printed or parsed: JSON, CSV,
   * YAML, metrics and state files */
  setlocale(LC_ALL, "");
  setlocale(LC_NUMERIC, "C");
  ct_cli_blas_setup(argv);
  if (argc < 2) {
    print_usage(stderr);
    return CT_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    print_usage(stdout);
    return CT_EXIT_OK;
  }
  if (strcmp(cmd, "--version") == 0) {
    printf("cliptrain %s\n", ct_version());
    return CT_EXIT_OK;
  }
  const CtCliCommand *c = find_command(cmd);
  if (c)
    return c->run(argc - 1, argv + 1);
  ct_cli_error("unknown command '%s'; run 'cliptrain --help'", cmd);
  return CT_EXIT_USAGE;
}

gboolean
ct_cli_parse(int *argc, char ***argv, const GOptionEntry *entries, const char *summary,
             const char *description, GError **error)
{
  /* "Usage: cliptrain fit [OPTION?] ...", and the row's example and docs
   * page at the end */
  const char *name = *argc > 0 ? (*argv)[0] : "";
  const CtCliCommand *c = find_command(name);
  g_autofree char *prgname = g_strdup_printf("cliptrain %s", name);
  g_set_prgname(prgname);
  GString *desc = g_string_new(description);
  if (description && !g_str_has_suffix(description, "\n"))
    g_string_append_c(desc, '\n');
  if (c) {
    if (desc->len)
      g_string_append_c(desc, '\n');
    g_auto(GStrv) lines = g_strsplit(c->example, "\n", -1);
    g_string_append(desc, g_strv_length(lines) > 1 ? "Examples:\n" : "Example:\n");
    for (char **l = lines; *l; l++)
      g_string_append_printf(desc, "  %s\n", *l);
    g_string_append_printf(desc, "\nDocumentation: %s (in the source tree)\n", c->docs);
  }
  GOptionContext *ctx = g_option_context_new(summary);
  if (desc->len)
    g_option_context_set_description(ctx, desc->str);
  /* text options are read as the bytes given, as UTF-8 whatever the
   * locale (GOption would convert a STRING from the locale's charset,
   * and in the C locale refuse "café"), then checked to be UTF-8 */
  size_t n = 0;
  while (entries[n].long_name)
    n++;
  GOptionEntry *raw = g_new0(GOptionEntry, n + 1);
  memcpy(raw, entries, n * sizeof *raw);
  for (size_t i = 0; i < n; i++)
    raw[i].arg = raw[i].arg == G_OPTION_ARG_STRING         ? G_OPTION_ARG_FILENAME
                 : raw[i].arg == G_OPTION_ARG_STRING_ARRAY ? G_OPTION_ARG_FILENAME_ARRAY
                                                           : raw[i].arg;
  g_option_context_add_main_entries(ctx, raw, NULL);
  gboolean ok = g_option_context_parse(ctx, argc, argv, error);
  g_option_context_free(ctx);
  g_free(raw);
  for (const GOptionEntry *e = entries; ok && e->long_name; e++) {
    gboolean bad = FALSE;
    if (e->arg == G_OPTION_ARG_STRING) {
      const char *v = *(char **) e->arg_data;
      bad = v && !g_utf8_validate(v, -1, NULL);
    } else if (e->arg == G_OPTION_ARG_STRING_ARRAY) {
      for (char **v = *(char ***) e->arg_data; v && *v; v++)
        bad = bad || !g_utf8_validate(*v, -1, NULL);
    }
    if (bad) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--%s: the value is not UTF-8 text", e->long_name);
      ok = FALSE;
    }
  }
  /* an empty path (--out "") names nothing: bad usage, said so, rather
   * than a failure with an empty file name in it */
  for (const GOptionEntry *e = entries; ok && e->long_name; e++) {
    gboolean empty = FALSE;
    if (e->arg == G_OPTION_ARG_FILENAME) {
      const char *v = *(char **) e->arg_data;
      empty = v && !*v;
    } else if (e->arg == G_OPTION_ARG_FILENAME_ARRAY) {
      for (char **v = *(char ***) e->arg_data; v && *v; v++)
        empty = empty || !**v;
    }
    if (empty) {
      g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                  "--%s \"\": an empty path names no file or folder", e->long_name);
      ok = FALSE;
    }
  }
  g_string_free(desc, TRUE);
  return ok;
}

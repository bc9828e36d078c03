/* tokenize.c: `cliptrain tokenize`, captions on stdin to CLIP token ids, as
 * clip.tokenize: one line of context-length space-separated ids per caption. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
ct_cli_tokenize(int argc, char **argv)
{
  g_autofree char *vocab = NULL;
  gint context_length = CT_TOKENIZER_CONTEXT_LENGTH;
  gboolean truncate = FALSE;
  GOptionEntry entries[] = {
    { "vocab", 'v', 0, G_OPTION_ARG_FILENAME, &vocab,
      "Merges file: OpenAI's bpe_simple_vocab_16e6.txt.gz or a learned one "
      "(default: $CLIPTRAIN_VOCAB)",
      "FILE" },
    { "context-length", 'n', 0, G_OPTION_ARG_INT, &context_length,
      "Ids per caption, with the start and end tokens and zero padding (77)", "N" },
    { "truncate", 't', 0, G_OPTION_ARG_NONE, &truncate,
      "Cut longer captions, ending them with the end token, instead of failing", NULL },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "- token ids of the captions on stdin, one per line",
    "Prints one line of ids per input line, as OpenAI's clip.tokenize.\n"
    "Exit status: 0 success, 1 a caption failed (too long, not UTF-8), 2 bad usage.\n",
    &error);
  if (!ok || argc > 1) {
    ct_cli_error("tokenize: %s", error ? error->message : "unexpected argument");
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  if (context_length < 1) {
    ct_cli_error("tokenize: --context-length must be positive, not %d", context_length);
    return CT_EXIT_USAGE;
  }
  if (!vocab) {
    const char *env = g_getenv("CLIPTRAIN_VOCAB");
    if (!env || !*env) {
      ct_cli_error("tokenize: no vocabulary: pass --vocab FILE (e.g. OpenAI's "
                   "bpe_simple_vocab_16e6.txt.gz) or set CLIPTRAIN_VOCAB");
      return CT_EXIT_USAGE;
    }
    vocab = g_strdup(env);
  }
  CtTokenizer *tok = ct_tokenizer_new_from_file(vocab, &error);
  if (!tok) {
    ct_cli_error("tokenize: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  int32_t *ids = g_new(int32_t, (size_t) context_length);
  GString *out = g_string_sized_new(8 * (size_t) context_length);
  char *line = NULL;
  size_t cap = 0, lineno = 0;
  ssize_t len;
  int status = CT_EXIT_OK;
  while ((len = getline(&line, &cap, stdin)) >= 0) {
    lineno++;
    if (len > 0 && line[len - 1] == '\n')
      line[--len] = '\0';
    if (strlen(line) != (size_t) len) {
      ct_cli_error("tokenize: line %zu: holds a NUL byte", lineno);
      status = CT_EXIT_FAILURE;
      break;
    }
    if (!ct_tokenizer_tokenize(tok, line, context_length, truncate, ids, &error)) {
      ct_cli_error("tokenize: line %zu: %s", lineno, error->message);
      g_clear_error(&error);
      status = CT_EXIT_FAILURE;
      break;
    }
    g_string_truncate(out, 0);
    for (int i = 0; i < context_length; i++) {
      char num[16];
      char *p = num + sizeof num;
      uint32_t v = (uint32_t) ids[i];
      do
        *--p = (char) ('0' + v % 10);
      while ((v /= 10));
      if (i)
        g_string_append_c(out, ' ');
      g_string_append_len(out, p, num + sizeof num - p);
    }
    g_string_append_c(out, '\n');
    fwrite(out->str, 1, out->len, stdout);
  }
  free(line);
  g_string_free(out, TRUE);
  g_free(ids);
  ct_tokenizer_free(tok);
  if (status == CT_EXIT_OK && ferror(stdin)) {
    ct_cli_error("tokenize: cannot read stdin");
    status = CT_EXIT_FAILURE;
  }
  if (fflush(stdout) != 0 || ferror(stdout)) {
    ct_cli_error("tokenize: cannot write stdout");
    status = CT_EXIT_FAILURE;
  }
  return status;
}

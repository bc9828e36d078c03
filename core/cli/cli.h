/* cli.h: the cliptrain program's subcommands. */
#ifndef CT_CLI_H
#define CT_CLI_H

#include <glib.h>

/* Exit statuses of every subcommand. */
enum { CT_EXIT_OK = 0, CT_EXIT_FAILURE = 1, CT_EXIT_USAGE = 2 };

/* Each takes the arguments after the subcommand name (argv[0] is the
 * subcommand) and returns an exit status. */
int ct_cli_bench(int argc, char **argv);
int ct_cli_init(int argc, char **argv);
int ct_cli_tokenize(int argc, char **argv);
int ct_cli_fit(int argc, char **argv);
int ct_cli_plugins(int argc, char **argv);
int ct_cli_recipe(int argc, char **argv);
int ct_cli_embed(int argc, char **argv);
int ct_cli_zeroshot(int argc, char **argv);
int ct_cli_retrieve(int argc, char **argv);
int ct_cli_eval(int argc, char **argv);

/* escape.c: S with every control character (C0, DEL, C1) and every byte
 * that is no UTF-8 written as an escape (\x1b, \u009b), for printing
 * text read from files on a terminal; "" for NULL.  (transfer full) */
char *ct_cli_escape(const char *s);

/* embed.c: what embed, zeroshot and retrieve share. */
typedef struct CtModel CtModel;
typedef struct _CtTokenizer CtTokenizer;
/* VOCAB when given, else the learned "vocab" metadata of the checkpoint
 * MODEL_PATH; fails when it has more ids than M's vocab_size. */
CtTokenizer *ct_cli_tokenizer(const char *model_path, const char *vocab, const CtModel *m,
                              GError **error);
/* Each arg a file, or a folder searched for .png/.jpg/.jpeg files (sorted
 * by path).  (transfer full: strings) */
GPtrArray *ct_cli_image_paths(char **args, GError **error);
/* The lines of PATH ("-": stdin), without their newlines.  (transfer full) */
GPtrArray *ct_cli_read_lines(const char *path, GError **error);
/* L2-normalised features, (n, embed_dim), in batches of the model's
 * max_batch; errors name the image, or WHERE:LINE for a text.
 * (transfer full: g_free) */
float *ct_cli_encode_images(CtModel *m, const char *const *paths, size_t n, GError **error);
float *ct_cli_encode_texts(CtModel *m, const CtTokenizer *tok, const char *const *texts,
                           size_t n, int context_length, gboolean truncate, const char *where,
                           GError **error);

/* model-arg.c: --model ARG: a weights file, a training state file, or a
 * run folder (its model.safetensors, else its state.safetensors).  The
 * file's path, or NULL with an error naming a folder that has neither.
 * (transfer full) */
char *ct_cli_model_path(const char *arg, GError **error);
/* The model of --model ARG, in inference mode, at MAX_BATCH; *PATH gets
 * the file read (transfer full), for the tokenizer and messages. */
CtModel *ct_cli_model_open(const char *arg, int max_batch, int vision_heads, int text_heads,
                           char **path, GError **error);

/* --vision-heads and --text-heads for weights without config metadata
 * (OpenAI's rule, width / 64, otherwise). */
#define CT_CLI_HEADS_OPTIONS(vh, th)                                                           \
  { "vision-heads", 0, 0, G_OPTION_ARG_INT, &(vh),                                             \
    "Image tower heads, for weights without config metadata (default: width / 64)", "N" },     \
  { "text-heads", 0, 0, G_OPTION_ARG_INT, &(th),                                               \
    "Text tower heads, for weights without config metadata (default: width / 64)", "N" }

/* --model FILE|RUN_DIR (with the two heads options) and --vocab FILE, as embed,
 * zeroshot and retrieve take them. */
#define CT_CLI_MODEL_OPTIONS(model, vocab, vh, th)                                              \
  { "model", 'm', 0, G_OPTION_ARG_FILENAME, &(model),                                          \
    "Weights (safetensors), a training state, or a run folder", "FILE|RUN_DIR" },               \
  CT_CLI_HEADS_OPTIONS(vh, th),                                                                \
  { "vocab", 'v', 0, G_OPTION_ARG_FILENAME, &(vocab),                                          \
    "Merges file (default: the checkpoint's learned vocabulary)", "FILE" }

/* Parse a subcommand's options ((*argv)[0] is the subcommand): --help
 * shows "Usage: cliptrain CMD [OPTION?] SUMMARY", the options, DESCRIPTION
 * (or NULL), then the example and docs page of CMD's row in main.c's
 * table.  FALSE with ERROR set on a bad option. */
gboolean ct_cli_parse(int *argc, char ***argv, const GOptionEntry *entries, const char *summary,
                      const char *description, GError **error);

/* FALSE, after a one-line error for CMD, when a --set value in SETS has
 * no '=' (`--set fit.epochs 2`, whose value ARGV then holds). */
gboolean ct_cli_check_sets(const char *cmd, char *const *sets, int argc, char **argv);

/* strcmp of two char * pointed to, for sorting. */
int ct_cli_strcmp_p(const void *a, const void *b);

/* blas.c: re-exec with better OpenBLAS kernels when its detection fell
 * back to SSE ones on a CPU with AVX2 or AVX-512.  Returns if it did not. */
void ct_cli_blas_setup(char **argv);
/* The OPENBLAS_CORETYPE this CPU can use best, or NULL. */
const char *ct_cli_blas_better_core(void);

/* Prints "cliptrain: MESSAGE" to stderr as one line. */
void ct_cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif

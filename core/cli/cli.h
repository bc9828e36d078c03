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

/* blas.c: re-exec with better OpenBLAS kernels when its detection fell
 * back to SSE ones on a CPU with AVX2 or AVX-512.  Returns if it did not. */
void ct_cli_blas_setup(char **argv);
/* The OPENBLAS_CORETYPE this CPU can use best, or NULL. */
const char *ct_cli_blas_better_core(void);

/* Prints "cliptrain: MESSAGE" to stderr as one line. */
void ct_cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif

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

/* Prints "cliptrain: MESSAGE" to stderr as one line. */
void ct_cli_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

#endif

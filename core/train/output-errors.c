/* output-errors.c: a fit whose stdout or stderr broke goes on.
 *
 * With SIGPIPE ignored (run-signals.c), a write to a pipe whose reader
 * left (`cliptrain fit ... | head -1`), or to a full disk, fails and sets
 * the stream's error flag; nothing else happens.  Once a step the learner
 * looks at both flags, and says each stream's failure once: a line in the
 * run folder's log.txt, and on stderr too when only stdout failed. */
#include "config.h"

#include "train/learner-private.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Why writing to FD failed, as far as can be told after the fact. */
static const char *
why(int fd)
{
  struct stat st;
  struct pollfd p = { .fd = fd, .events = POLLOUT };
  if (fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && poll(&p, 1, 0) == 1 &&
      (p.revents & POLLERR))
    return "its reader closed the pipe";
  if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
    return "it is closed";
  return "a write failed";
}

/* Append LINE to OUT/log.txt, in one write. */
static void
log_line(const char *out, const char *line)
{
  if (!out)
    return;
  g_autofree char *path = g_build_filename(out, "log.txt", NULL);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return;
  ssize_t k = write(fd, line, strlen(line));
  (void) k;
  close(fd);
}

void
ct_learner_check_outputs(CtLearner *L)
{
  static const char *const names[2] = { "stdout", "stderr" };
  FILE *const streams[2] = { stdout, stderr };
  for (int i = 0; i < 2; i++) {
    guint bit = 1u << i;
    if ((L->output_failed & bit) || !ferror(streams[i]))
      continue;
    L->output_failed |= bit;
    g_autofree char *msg =
      g_strdup_printf("cliptrain: writing to %s failed by training step %" G_GINT64_FORMAT
                      " (%s); what the run prints there is lost from now on, and training "
                      "goes on",
                      names[i], L->train_iter, why(fileno(streams[i])));
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%d %H:%M:%S");
    g_autofree char *line = g_strdup_printf("%s %s\n", stamp, msg);
    log_line(ct_comm_rank(L->comm) == 0 ? L->out_dir : NULL, line);
    if (i == 0 && !ferror(stderr))
      ct_learner_log(L, "%s", msg);
  }
}

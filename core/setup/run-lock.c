/* run-lock.c: one run at a time in a run folder.  A fit (new or resumed)
 * holds an exclusive flock(2) on OUT/.lock from before it writes anything
 * there until it ends; the file holds the holder's PID, so that a second
 * run is refused in one line naming it.  The kernel drops the lock when
 * its holder dies, however it dies: a stale .lock (after SIGKILL) blocks
 * nothing. */
#include "config.h"

#include "setup/run-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct CtRunLock {
  int fd;     /* open on path, locked */
  char *path; /* OUT/.lock */
};

/* The PID written in the lock file FD by its holder ("" while it has not
 * written it yet, nor in a few milliseconds).  (transfer full) */
static char *
holder_pid(int fd)
{
  char buf[32];
  for (int i = 0; i < 20; i++) {
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    buf[MAX(n, 0)] = 0;
    size_t digits = strspn(buf, "0123456789");
    if (digits > 0 && (buf[digits] == '\n' || buf[digits] == 0)) {
      buf[digits] = 0;
      return g_strdup(buf);
    }
    g_usleep(5000);
  }
  return g_strdup("");
}

/* Whether FD is still the file at PATH (not one removed or replaced since). */
static gboolean
same_file(int fd, const char *path)
{
  struct stat a, b;
  return fstat(fd, &a) == 0 && lstat(path, &b) == 0 && a.st_dev == b.st_dev &&
         a.st_ino == b.st_ino;
}

static gboolean
write_pid(int fd, GError **error, const char *path)
{
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%ld\n", (long) getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t) len, 0) != len) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot write: %s", path,
                g_strerror(errno ? errno : EIO));
    return FALSE;
  }
  return TRUE;
}

CtRunLock *
ct_run_lock(const char *out, GError **error)
{
  gboolean made = !g_file_test(out, G_FILE_TEST_EXISTS);
  char *path = g_build_filename(out, ".lock", NULL);
  int fd = -1;
  /* a run that ends removes its .lock, and one that fails before its first
   * step its folder: a file opened just before that is not the lock any
   * more, so lock the one in the folder, and again if it was replaced */
  for (int tries = 0;; tries++) {
    if (g_mkdir_with_parents(out, 0755) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", out, g_strerror(errno));
      goto fail;
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (fd < 0 && errno == ENOENT && tries < 10)
      continue;
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(errno));
      goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: not a regular file", path);
      goto fail;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        g_autofree char *pid = holder_pid(fd);
        g_set_error(error, CT_ERROR, CT_ERROR_IO,
                    "%s is in use by another run (process %s holds %s); wait for it to end "
                    "or choose another folder",
                    out, *pid ? pid : "unknown", path);
        close(fd);
        g_free(path);
        return NULL; /* the folder is the other run's: leave it as it is */
      }
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot lock: %s", path,
                  g_strerror(errno));
      goto fail;
    }
    if (same_file(fd, path))
      break;
    close(fd);
    fd = -1;
    if (tries >= 10) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: replaced while being locked", path);
      goto fail;
    }
  }
  if (!write_pid(fd, error, path)) {
    g_unlink(path);
    goto fail;
  }
  CtRunLock *lock = g_new0(CtRunLock, 1);
  lock->fd = fd;
  lock->path = path;
  return lock;

fail:
  if (made) { /* leave nothing behind: the folder was made for the lock */
    if (fd >= 0 && same_file(fd, path))
      g_unlink(path);
    g_rmdir(out);
  }
  if (fd >= 0)
    close(fd);
  g_free(path);
  return NULL;
}

void
ct_run_unlock(CtRunLock *lock)
{
  if (!lock)
    return;
  /* remove the file while it is locked (a run opening it meanwhile sees
   * that it was removed); not when the folder went and another run has
   * made a new .lock since */
  if (same_file(lock->fd, lock->path))
    g_unlink(lock->path);
  close(lock->fd);
  g_free(lock->path);
  g_free(lock);
}

/* file-write.c: replacing a file whole, so that a reader sees the old
 * contents or the new, never a part, and a failure names the final file. */
#include "config.h"

#include "base/file-write.h"

#include <cliptrain/ct-common.h>

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <sys/stat.h>
#include <unistd.h>

gboolean
ct_file_write_atomic(const char *path, const void *data, size_t len, GError **error)
{
  char *tmp = g_strdup_printf("%s.tmp.XXXXXX", path), *dir = g_path_get_dirname(path);
  const char *what = "cannot create temporary file";
  struct stat sb;
  gboolean ok = FALSE, renamed = FALSE;
  int dfd = -1, fd = g_mkstemp_full(tmp, O_RDWR | O_CLOEXEC, 0666), rc;
  gboolean created = fd >= 0;
  if (fd < 0)
    goto out;
  what = "write failed";
  if (stat(path, &sb) == 0 && fchmod(fd, sb.st_mode & 07777) < 0)
    goto out;
  for (size_t off = 0; off < len;) {
    ssize_t k = write(fd, (const char *) data + off, len - off);
    if (k < 0 && errno != EINTR)
      goto out;
    if (k == 0) { /* nothing written and no error: as a full disk */
      errno = ENOSPC;
      goto out;
    }
    off += k > 0 ? (size_t)k : 0;
  }
  if (fsync(fd) < 0)
    goto out;
  rc = close(fd);
  fd = -1;
  if (rc < 0 || rename(tmp, path) < 0)
    goto out;
  renamed = TRUE;
  what = "cannot sync its folder";
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ok = dfd >= 0 && (fsync(dfd) == 0 || errno == EINVAL);
out:
  if (!ok)
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s: %s", path, what, g_strerror(errno));
  if (fd >= 0)
    close(fd);
  if (dfd >= 0)
    close(dfd);
  if (!ok && created && !renamed)
    unlink(tmp);
  g_free(dir);
  g_free(tmp);
  return ok;
}


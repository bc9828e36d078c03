/* file.c: opening and reading input files with bounds (file.h). */
#include "config.h"

#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>

/* "a FIFO", "a character device"...: what a non-regular MODE is. */
static const char *
kind_name(mode_t mode)
{
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISSOCK(mode))
    return "a socket";
  return "not a file";
}

/* "20 bytes", "64 MiB", "1.5 GiB": g_format_size's, without its
 * no-break space, which greps and some terminals trip on. */
static char *
size_text(guint64 bytes)
{
  static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
  if (bytes < 1024)
    return g_strdup_printf("%" G_GUINT64_FORMAT " bytes", bytes);
  int u = 0;
  guint64 scale = 1024;
  while (u < 3 && bytes >= scale * 1024) {
    scale *= 1024;
    u++;
  }
  if (bytes % scale == 0)
    return g_strdup_printf("%" G_GUINT64_FORMAT " %s", bytes / scale, units[u]);
  return g_strdup_printf("%.1f %s", (double)bytes / (double)scale, units[u]);
}

int
ct_file_open_regular(const char *path, const char *what, struct stat *sb, GError **error)
{
  g_return_val_if_fail(path != NULL && what != NULL, -1);
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(e));
    errno = e;
    return -1;
  }
  if (fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(e));
    return -1;
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: is a folder, not %s", path, what);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: not a regular file (%s), not %s", path,
                kind_name(st.st_mode), what);
    return -1;
  }
  /* reads block as usual from here (O_NONBLOCK only kept a FIFO's open
   * from waiting for a writer) */
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0)
    (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  if (sb)
    *sb = st;
  return fd;
}

gboolean
ct_file_read_all(const char *path, const char *what, size_t max, char **data, size_t *len,
                 GError **error)
{
  struct stat sb;
  int fd = ct_file_open_regular(path, what, &sb, error);
  if (fd < 0)
    return FALSE;
  char *buf = NULL;
  if ((guint64)sb.st_size > max) {
    g_autofree char *size = size_text((guint64)sb.st_size), *limit = size_text(max);
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: %s is too large for %s (limit %s)",
                path, size, what, limit);
    goto fail;
  }
  /* The size may change under us: read what is there, up to the limit. */
  size_t cap = (size_t)sb.st_size + 1, n = 0; /* + 1: EOF is seen without growing */
  if (!(buf = g_try_malloc(cap + 1))) {
    g_autofree char *size = size_text(cap);
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: out of memory reading %s", path, size);
    goto fail;
  }
  for (;;) {
    ssize_t k = read(fd, buf + n, cap - n);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(errno));
      goto fail;
    }
    if (k == 0)
      break;
    n += (size_t)k;
    if (n > max) {
      g_autofree char *limit = size_text(max);
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: grew past the limit for %s (%s) while "
                  "being read", path, what, limit);
      goto fail;
    }
    if (n == cap) {
      size_t want = MIN(cap * 2, max + 1);
      char *more = g_try_realloc(buf, want + 1);
      if (!more) {
        g_autofree char *size = size_text(want);
        g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: out of memory reading %s", path, size);
        goto fail;
      }
      buf = more;
      cap = want;
    }
  }
  close(fd);
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return TRUE;

fail:
  close(fd);
  g_free(buf);
  return FALSE;
}

gboolean
ct_gunzip(const char *path, const char *what, const guint8 *data, size_t len, size_t max,
          gboolean prefix, guint8 **out, size_t *out_len, GError **error)
{
  /* The buffer grows to LIMIT bytes at most: MAX, or one more to see
   * that there is more than MAX.  The last member's trailer (its ISIZE,
   * the length mod 2^32) is a first guess at the size. */
  size_t limit = prefix ? max : max + 1;
  size_t cap = MIN((size_t)1 << 16, limit);
  if (!prefix && len >= 18) {
    guint32 isize = (guint32)data[len - 4] | ((guint32)data[len - 3] << 8) |
                    ((guint32)data[len - 2] << 16) | ((guint32)data[len - 1] << 24);
    cap = MAX(cap, MIN((size_t)isize + 1, limit));
  }
  guint8 *buf = g_try_malloc(cap + 1);
  size_t in_pos = 0, out_pos = 0;
  GZlibDecompressor *z = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
  gboolean ok = FALSE, grow = FALSE;
  while (buf) {
    if (out_pos == cap || grow) {
      if (cap == limit) {
        if (prefix) {
          ok = TRUE;
        } else {
          g_autofree char *lim = size_text(max);
          g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                      "%s: decompresses to more than %s, the limit for %s", path, lim, what);
        }
        break;
      }
      size_t want = cap > limit / 2 ? limit : cap * 2;
      guint8 *more = g_try_realloc(buf, want + 1);
      if (!more) {
        g_autofree char *size = size_text(want);
        g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: out of memory decompressing %s", path,
                    size);
        break;
      }
      buf = more;
      cap = want;
      grow = FALSE;
    }
    gsize nread = 0, nwritten = 0;
    GError *zerr = NULL;
    GConverterResult r =
        g_converter_convert(G_CONVERTER(z), data + in_pos, len - in_pos, buf + out_pos,
                            cap - out_pos, G_CONVERTER_INPUT_AT_END, &nread, &nwritten, &zerr);
    in_pos += nread;
    out_pos += nwritten;
    if (r == G_CONVERTER_FINISHED) {
      /* another member may follow, as Python's gzip module reads them;
       * NUL padding after the last one is skipped, as it skips it */
      while (in_pos < len && data[in_pos] == 0)
        in_pos++;
      if (in_pos == len) {
        ok = TRUE;
        break;
      }
      g_converter_reset(G_CONVERTER(z));
      continue;
    }
    if (r == G_CONVERTER_ERROR) {
      if (g_error_matches(zerr, G_IO_ERROR, G_IO_ERROR_NO_SPACE)) {
        g_error_free(zerr);
        grow = TRUE; /* too little room to go on */
        continue;
      }
      if (g_error_matches(zerr, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT))
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated gzip data", path);
      else
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: corrupt gzip data: %s", path,
                    zerr->message);
      g_error_free(zerr);
      break;
    }
    if (nread == 0 && nwritten == 0 && in_pos == len) {
      /* no progress with all input given: the stream ended early */
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated gzip data", path);
      break;
    }
  }
  if (!buf) {
    g_autofree char *size = size_text(cap);
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: out of memory decompressing %s", path, size);
  }
  g_object_unref(z);
  if (!ok) {
    g_free(buf);
    return FALSE;
  }
  buf[out_pos] = 0;
  *out = buf;
  *out_len = out_pos;
  return TRUE;
}

/* hash.c: file checksums, for manifests, training states and indexes. */
#include "config.h"

#include <cliptrain/ct-common.h>

#include "base/file.h"

#include <errno.h>
#include <stdio.h>
#include <unistd.h>

char *
ct_file_sha256(const char *path, GError **error)
{
  /* a regular file only: a FIFO would block and /dev/zero never end */
  int fd = ct_file_open_regular(path, "a file", NULL, error);
  FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
  if (!f) {
    if (fd >= 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(errno));
      close(fd);
    }
    return NULL;
  }
  GChecksum *sum = g_checksum_new(G_CHECKSUM_SHA256);
  guchar *buf = g_malloc(1 << 20); /* streamed: weights files can be large */
  size_t k;
  while ((k = fread(buf, 1, 1 << 20, f)) > 0)
    g_checksum_update(sum, buf, k);
  char *hex = ferror(f) ? NULL : g_strdup(g_checksum_get_string(sum));
  if (!hex)
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: read failed", path);
  fclose(f);
  g_free(buf);
  g_checksum_free(sum);
  return hex;
}

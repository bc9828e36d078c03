/* hash.c: file checksums, for manifests, training states and indexes. */
#include "config.h"

#include <cliptrain/ct-common.h>

#include <errno.h>
#include <stdio.h>

char *
ct_file_sha256(const char *path, GError **error)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path, g_strerror(errno));
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

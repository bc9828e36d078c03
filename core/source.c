/* source.c: what every file-backed source's get() does alike. */
#include "config.h"

#include "source.h"

#include <string.h>

gboolean
ct_source_check_index(const char *name, size_t index, size_t n, GError **error)
{
  if (index < n)
    return TRUE;
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "%s: index %zu is out of range (%zu samples)",
              name, index, n);
  return FALSE;
}

CtImage *
ct_source_load_image(const char *path, GError **error)
{
  GError *e = NULL;
  CtImage *im = ct_image_load(path, &e);
  if (!im) {
    if (!strstr(e->message, path)) /* every error names the file */
      g_prefix_error(&e, "%s: ", path);
    g_propagate_error(error, e);
  }
  return im;
}

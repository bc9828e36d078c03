/* source.c: what every file-backed source's get() does alike. */
#include "config.h"

#include "data/source.h"

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

char *
ct_source_one_line(const char *msg)
{
  char *valid = g_utf8_make_valid(msg, -1);
  GString *g = g_string_new(NULL);
  for (const char *p = valid; *p; p++) {
    if ((guchar)*p < 0x20 || *p == 0x7f)
      g_string_append_printf(g, "\\x%02x", (guchar)*p);
    else
      g_string_append_c(g, *p);
  }
  g_free(valid);
  return g_string_free(g, FALSE);
}

CtImage *
ct_source_load_image(const char *path, GError **error)
{
  GError *e = NULL;
  CtImage *im = ct_image_load(path, &e);
  if (!im) {
    if (!strstr(e->message, path)) /* every error names the file */
      g_prefix_error(&e, "%s: ", path);
    char *line = ct_source_one_line(e->message); /* a CSV may name "a\nb.png" */
    g_free(e->message);
    e->message = line;
    g_propagate_error(error, e);
  }
  return im;
}

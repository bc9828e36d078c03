/* test-util.h: helpers the GLib test programs share. */
#ifndef CT_TEST_UTIL_H
#define CT_TEST_UTIL_H

#include <glib.h>
#include <glib/gstdio.h>

/* Remove DIR and the files in it (one level: what the tests write). */
static inline void
ct_test_remove_dir(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *p = g_build_filename(dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(dir);
}

#endif

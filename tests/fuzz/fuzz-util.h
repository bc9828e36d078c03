/* fuzz-util.h: what the libFuzzer targets in tests/fuzz/ share.
 *
 * Some readers take a path only: fuzz_write() puts the input in a file of
 * a private temporary folder (made once, removed at exit).  Each target is
 * one LLVMFuzzerTestOneInput that must never crash, leak or trip a
 * sanitizer, whatever the bytes; errors are expected and dropped. */
#ifndef CT_FUZZ_UTIL_H
#define CT_FUZZ_UTIL_H

#include <glib.h>
#include <glib/gstdio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char *fuzz_dir; /* the private folder, for the process's life */

/* A g_critical or g_warning (a failed g_return_if_fail, say) is a bug:
 * abort, so that libFuzzer keeps the input (G_DEBUG=fatal-criticals would
 * raise SIGTRAP, which libFuzzer does not catch). */
static void
fuzz_log_handler(const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING)) {
    fprintf(stderr, "%s: %s\n", domain ? domain : "(no domain)", message);
    abort();
  }
}

__attribute__((constructor)) static void
fuzz_log_setup(void)
{
  g_log_set_default_handler(fuzz_log_handler, NULL);
}

static void
fuzz_dir_remove(void)
{
  GDir *d = g_dir_open(fuzz_dir, 0, NULL);
  const char *name;
  while (d && (name = g_dir_read_name(d))) {
    char *p = g_build_filename(fuzz_dir, name, NULL);
    g_unlink(p);
    g_free(p);
  }
  if (d)
    g_dir_close(d);
  g_rmdir(fuzz_dir);
}

/* Every error is one line of UTF-8 that names what failed (NAME, when not
 * NULL): anything else is a bug worth an abort.  Clears *ERRP. */
static G_GNUC_UNUSED void
fuzz_check_error(GError **errp, const char *name)
{
  GError *err = *errp;
  if (!err)
    abort(); /* failed without saying why */
  if (strchr(err->message, '\n') || !g_utf8_validate(err->message, -1, NULL) ||
      (name && !strstr(err->message, name))) {
    fprintf(stderr, "bad error message (not one line of UTF-8 naming %s): ", name ? name : "-");
    for (const char *p = err->message; *p; p++)
      fprintf(stderr, (*p < 0x20 || (guchar)*p >= 0x7f) ? "\\x%02x" : "%c", (guchar)*p);
    fputc('\n', stderr);
    abort();
  }
  g_clear_error(errp);
}

/* The path of NAME in the private folder.  (transfer full) */
static char *
fuzz_path(const char *name)
{
  if (!fuzz_dir) {
    fuzz_dir = g_dir_make_tmp("ct-fuzz-XXXXXX", NULL);
    if (!fuzz_dir)
      abort();
    atexit(fuzz_dir_remove);
  }
  return g_build_filename(fuzz_dir, name, NULL);
}

/* Writes DATA[0..size) to NAME in the private folder, in place (no fsync:
 * g_file_set_contents would sync on every run).  (transfer full) */
static G_GNUC_UNUSED char *
fuzz_write(const char *name, const uint8_t *data, size_t size)
{
  char *path = fuzz_path(name);
  FILE *f = fopen(path, "wb");
  if (!f || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
    abort();
  return path;
}

#endif

/* file.h: opening and reading the files a user names, with bounds.  Not
 * installed.
 *
 * Every reader of an input file (recipes, CSV, IDX, vocabularies, tar
 * shards, safetensors) opens it here, so that a folder, a FIFO or a
 * device such as /dev/zero named where a file is expected is refused at
 * once, without blocking, in one line that names the path; and nothing
 * is read or inflated past a limit that the caller gives.  Large buffers
 * are allocated with g_try_malloc: running out of memory is an error
 * naming the file, never GLib's abort.  The program (core/cli) reads its
 * own input files with these too, hence CT_API. */
#ifndef CT_FILE_H
#define CT_FILE_H

#include <cliptrain/ct-common.h>

#include <sys/stat.h>

/* Opens PATH read-only and checks that it is a regular file: the open
 * does not block on a FIFO (O_NONBLOCK) and does not make a terminal ours.
 * WHAT says what was expected ("a CSV file"), for the message about a
 * folder.  The fd (close it), or -1 with CT_ERROR_IO naming PATH (and
 * errno open's, when open failed).  *SB (may be NULL) gets its fstat. */
CT_API int ct_file_open_regular(const char *path, const char *what, struct stat *sb, GError **error);

/* Reads the regular file PATH whole, refusing one over MAX bytes
 * (CT_ERROR_FORMAT, naming WHAT and the limit).  *DATA (transfer full)
 * ends with a NUL after its *LEN bytes. */
CT_API gboolean ct_file_read_all(const char *path, const char *what, size_t max, char **data,
                                 size_t *len, GError **error);

/* Gunzips DATA[0..LEN) (one gzip member, or several one after another)
 * into *OUT (transfer full, a NUL after its *OUT_LEN bytes).  Output past
 * MAX bytes is an error naming PATH, WHAT and the limit; with PREFIX, the
 * first MAX bytes (or fewer, when that is all) are returned instead and
 * the rest is never inflated.  Corrupt or truncated data is
 * CT_ERROR_FORMAT naming PATH. */
gboolean ct_gunzip(const char *path, const char *what, const guint8 *data, size_t len,
                   size_t max, gboolean prefix, guint8 **out, size_t *out_len, GError **error);

/* TRUE when DATA starts with the gzip magic (1f 8b). */
static inline gboolean
ct_is_gzip(const void *data, size_t len)
{
  const guint8 *p = data;
  return len >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

#endif

/* file-write.h: replacing a file whole (internal to libctcore). */
#ifndef CT_BASE_FILE_WRITE_H
#define CT_BASE_FILE_WRITE_H

#include <glib.h>

/* Replace PATH with LEN bytes of DATA: a temporary file in the same folder
 * (mode 0666 less the umask, or the replaced file's), written in full,
 * synced, renamed over PATH, then the folder synced.  A failure removes the
 * temporary file and names PATH, the final file, in one style:
 * "PATH: write failed: CAUSE". */
gboolean ct_file_write_atomic(const char *path, const void *data, size_t len, GError **error);

#endif

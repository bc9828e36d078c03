/* fuzz_csv.c: the CSV reader (RFC 4180 quoting) and the TSV reader on the
 * same bytes, with open_clip's column names; every caption is read back
 * (images are not: their paths could name any file). */
#include "data/source.h"

#include "fuzz-util.h"

#include <string.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const char seps[2] = { ',', '\t' };
  char *path = fuzz_write("t.csv", data, size);
  for (int k = 0; k < 2; k++) {
    GError *err = NULL;
    CtSource *src = ct_source_csv_new(path, seps[k], NULL, NULL, &err);
    if (!src) {
      fuzz_check_error(&err, path);
      continue;
    }
    size_t n = ct_source_len(src);
    if (n == 0)
      abort();
    for (size_t i = 0; i < n; i++) {
      char *caption = NULL;
      int label = 0;
      if (!ct_source_get(src, i, NULL, &caption, &label, NULL) || !caption || label != -1 ||
          !g_utf8_validate(caption, -1, NULL))
        abort();
      g_free(caption);
    }
    if (ct_source_get(src, n, NULL, NULL, NULL, NULL))
      abort(); /* out of range */
    ct_source_free(src);
  }
  g_free(path);
  return 0;
}

/* fuzz_webdataset.c: a webdataset shard of any bytes (tar, or anything
 * libarchive's filters take): indexed at open, then the first samples read
 * back, images decoded. */
#include "data/source.h"

#include "fuzz-util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *path = fuzz_write("shard.tar", data, size);
  GError *err = NULL;
  CtSource *src = ct_source_webdataset_new(path, &err);
  if (!src)
    fuzz_check_error(&err, path);
  if (!src) {
    g_free(path);
    return 0;
  }
  size_t n = ct_source_len(src);
  for (size_t i = 0; i < n && i < 16; i++) {
    CtImage *image = NULL;
    char *caption = NULL;
    int label = 0;
    if (!ct_source_get(src, i, &image, &caption, &label, &err))
      fuzz_check_error(&err, path);
    else if (!image || !caption || !g_utf8_validate(caption, -1, NULL))
      abort();
    ct_image_free(image);
    g_free(caption);
  }
  ct_source_free(src);
  g_free(path);
  return 0;
}

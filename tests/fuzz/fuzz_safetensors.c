/* fuzz_safetensors.c: ct_safetensors_open on any bytes, then every tensor
 * read back (float dtypes as float32, integers as int64) and every
 * metadata value looked up. */
#include <cliptrain/safetensors.h>

#include "fuzz-util.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *path = fuzz_write("f.safetensors", data, size);
  GError *err = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &err);
  if (!st)
    fuzz_check_error(&err, path);
  g_free(path);
  if (!st)
    return 0;
  for (size_t i = 0; i < ct_safetensors_n_tensors(st); i++) {
    const CtTensorInfo *t = ct_safetensors_tensor(st, i);
    if (ct_safetensors_find(st, t->name) != t)
      abort(); /* names are unique */
    if (t->numel > (1u << 20))
      continue;
    void *buf = g_malloc(t->numel * 8 + 1);
    if (ct_dtype_is_float(t->dtype))
      ct_safetensors_read_f32(st, t->name, buf, t->numel, NULL);
    else
      ct_safetensors_read_i64(st, t->name, buf, t->numel, NULL);
    g_free(buf);
  }
  const char **keys = ct_safetensors_metadata_keys(st);
  for (const char **k = keys; *k; k++)
    if (!ct_safetensors_metadata(st, *k))
      abort();
  g_free(keys);
  ct_safetensors_free(st);
  return 0;
}

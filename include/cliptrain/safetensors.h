/* safetensors.h: reading and writing the safetensors checkpoint format.
 *
 * Layout of a file: an 8-byte little-endian header length N, then N bytes of
 * JSON mapping tensor names to {"dtype", "shape", "data_offsets": [begin,end]}
 * (offsets relative to the byte after the header), plus an optional
 * "__metadata__" object of string to string, then the data.
 *
 * The reader validates the whole header at open: it is 2 to 100,000,000
 * bytes of UTF-8, strict JSON (RFC 8259) nested at most 64 deep with no key
 * twice in an object and integers within int64; every offset lies inside
 * the file, no two tensors overlap, byte counts equal numel * dtype size,
 * shapes do not overflow, names are unique.  Every error message is one line
 * that begins with the file's path and names the tensor when one is
 * concerned. */
#ifndef CLIPTRAIN_SAFETENSORS_H
#define CLIPTRAIN_SAFETENSORS_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

typedef enum {
  CT_DTYPE_F32,
  CT_DTYPE_F16,
  CT_DTYPE_BF16,
  CT_DTYPE_I64,
  CT_DTYPE_I32,
  CT_DTYPE_U8,
  CT_DTYPE_F64,
  CT_DTYPE_BOOL,
  CT_DTYPE_I8,
  CT_DTYPE_I16,
  CT_DTYPE_U16,
  CT_DTYPE_U32,
  CT_DTYPE_U64,
  CT_DTYPE_UNKNOWN
} CtDtype;

#define CT_SAFETENSORS_MAX_DIMS 8

/* Name of a dtype as written in a header ("F32", ...).  (transfer none) */
CT_API const char *ct_dtype_name(CtDtype dtype);
/* A shape as text, "[64, 32]".  (transfer full) */
CT_API char *ct_shape_string(int ndim, const int64_t *shape);
/* TRUE for F32, F16, BF16 and F64: what ct_safetensors_read_f32 reads. */
CT_API gboolean ct_dtype_is_float(CtDtype dtype);
/* Bytes per element, 0 for CT_DTYPE_UNKNOWN. */
CT_API size_t ct_dtype_size(CtDtype dtype);

/* Description of one tensor in an open file.  All pointers are owned by the
 * CtSafetensors and live as long as it. */
typedef struct {
  const char *name;
  CtDtype dtype;
  int ndim;                /* 0 .. CT_SAFETENSORS_MAX_DIMS */
  const int64_t *shape;    /* [ndim] */
  size_t numel;            /* product of shape (1 for ndim 0) */
  size_t nbytes;           /* numel * ct_dtype_size(dtype) */
} CtTensorInfo;

typedef struct CtSafetensors CtSafetensors;

/* Open and validate PATH.  Returns NULL and sets error on any problem: a
 * missing file, a truncated file, a header length beyond the file, bad JSON,
 * an unknown dtype string, offsets out of range or overlapping, a size that
 * does not match the shape, duplicate names, a header over 100 MB.
 * (transfer full): free with ct_safetensors_free(). */
CT_API CtSafetensors *ct_safetensors_open(const char *path, GError **error);
CT_API void ct_safetensors_free(CtSafetensors *st);

/* The path given at open.  (transfer none) */
CT_API const char *ct_safetensors_path(const CtSafetensors *st);

/* Number of tensors, and the i-th in header order (0 <= i < n).
 * (transfer none) */
CT_API size_t ct_safetensors_n_tensors(const CtSafetensors *st);
CT_API const CtTensorInfo *ct_safetensors_tensor(const CtSafetensors *st, size_t i);

/* The tensor called NAME, or NULL if there is none.  (transfer none) */
CT_API const CtTensorInfo *ct_safetensors_find(const CtSafetensors *st, const char *name);

/* Raw bytes of a tensor (little-endian, nbytes long).  (transfer none) */
CT_API const void *ct_safetensors_data(const CtSafetensors *st, const CtTensorInfo *info);

/* Copy tensor NAME into DST as float32, converting from F32, F16, BF16 or
 * F64.  N is the number of floats DST holds and must equal the tensor's
 * numel.  Errors: missing tensor (CT_ERROR_MISSING), other dtype
 * (CT_ERROR_DTYPE), numel != n (CT_ERROR_SHAPE); each names file and tensor. */
CT_API gboolean ct_safetensors_read_f32(const CtSafetensors *st, const char *name,
                                        float *dst, size_t n, GError **error);

/* Copy tensor NAME into DST as int64, converting from I64, I32, I16, I8, U8,
 * U16, U32.  Same errors as ct_safetensors_read_f32(). */
CT_API gboolean ct_safetensors_read_i64(const CtSafetensors *st, const char *name,
                                        int64_t *dst, size_t n, GError **error);

/* Value of KEY in the header's __metadata__, or NULL.  (transfer none) */
CT_API const char *ct_safetensors_metadata(const CtSafetensors *st, const char *key);
/* Every __metadata__ key, NULL-terminated, in no particular order.
 * (transfer container): g_free() the array, not the strings. */
CT_API const char **ct_safetensors_metadata_keys(const CtSafetensors *st);

/* ---- writing ---- */

typedef struct CtSafetensorsWriter CtSafetensorsWriter;

/* (transfer full): free with ct_safetensors_writer_free(). */
CT_API CtSafetensorsWriter *ct_safetensors_writer_new(void);
CT_API void ct_safetensors_writer_free(CtSafetensorsWriter *w);

/* Add a tensor.  NAME and SHAPE are copied; DATA is borrowed (transfer none)
 * and must stay valid until ct_safetensors_writer_write() returns.  Tensors
 * are written in the order added.  Returns FALSE on a duplicate name. */
CT_API gboolean ct_safetensors_writer_add(CtSafetensorsWriter *w, const char *name,
                                          CtDtype dtype, int ndim, const int64_t *shape,
                                          const void *data, GError **error);

/* Set a __metadata__ entry (both strings copied). */
CT_API void ct_safetensors_writer_set_metadata(CtSafetensorsWriter *w, const char *key,
                                               const char *value);

/* Write everything to PATH atomically: to PATH.tmp.XXXXXX in the same
 * folder, fsync, rename over PATH, fsync the folder.  A failed write (full
 * disk included) leaves any earlier PATH untouched and removes the
 * temporary file. */
CT_API gboolean ct_safetensors_writer_write(CtSafetensorsWriter *w, const char *path,
                                            GError **error);

G_END_DECLS

#endif

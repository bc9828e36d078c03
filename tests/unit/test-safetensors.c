/* test-safetensors.c: round trips, a table of broken files, read errors,
 * atomic writes and the golden case file. */
#include "config.h"

#include <cliptrain/safetensors.h>

#include "test-util.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* ---------------------------------------------------------------- helpers */

/* Writes PATH as: CLAIMED (the header length field), HEADER[0..hlen), then
 * DATA_LEN bytes 0, 1, 2, ... */
static void
write_raw(const char *path, guint64 claimed, const char *header, size_t hlen, size_t data_len)
{
  GByteArray *b = g_byte_array_new();
  guint64 le = GUINT64_TO_LE(claimed);
  g_byte_array_append(b, (const guint8 *)&le, 8);
  g_byte_array_append(b, (const guint8 *)header, (guint)hlen);
  for (size_t i = 0; i < data_len; i++) {
    guint8 v = (guint8)i;
    g_byte_array_append(b, &v, 1);
  }
  GError *err = NULL;
  g_file_set_contents(path, (const char *)b->data, b->len, &err);
  g_assert_no_error(err);
  g_byte_array_unref(b);
}

/* ERR has CODE, is one line starting with PATH and contains S1 and S2. */
static void
check_error(const GError *err, gint code, const char *path, const char *s1, const char *s2)
{
  g_assert_nonnull(err);
  g_test_message("error: %s", err->message);
  g_assert_error(err, CT_ERROR, code);
  g_assert_true(g_str_has_prefix(err->message, path));
  g_assert_null(strchr(err->message, '\n'));
  if (s1)
    g_assert_nonnull(strstr(err->message, s1));
  if (s2)
    g_assert_nonnull(strstr(err->message, s2));
}

/* Opening PATH fails with CODE and a message containing S1 and S2. */
static void
expect_open_error(const char *path, gint code, const char *s1, const char *s2)
{
  GError *err = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_null(st);
  check_error(err, code, path, s1, s2);
  g_error_free(err);
}

static guint32
float_bits(float f)
{
  guint32 u;
  memcpy(&u, &f, 4);
  return u;
}

/* ---------------------------------------------------------------- dtypes */

static void
test_dtypes(void)
{
  g_assert_cmpstr(ct_dtype_name(CT_DTYPE_F32), ==, "F32");
  g_assert_cmpstr(ct_dtype_name(CT_DTYPE_BF16), ==, "BF16");
  g_assert_cmpstr(ct_dtype_name(CT_DTYPE_U64), ==, "U64");
  g_assert_cmpuint(ct_dtype_size(CT_DTYPE_F16), ==, 2);
  g_assert_cmpuint(ct_dtype_size(CT_DTYPE_I64), ==, 8);
  g_assert_cmpuint(ct_dtype_size(CT_DTYPE_BOOL), ==, 1);
  g_assert_cmpuint(ct_dtype_size(CT_DTYPE_UNKNOWN), ==, 0);
}

/* ---------------------------------------------------------------- round trip */

static const float f32_vals[6] = { 1.5f, -2.25f, 0.0f, 3.0e-39f /* subnormal */, 1e30f, -7.0f };
static const guint16 f16_bits[8] = { 0x3C00, 0xC000, 0x7C00, 0xFC00, 0x0001, 0x03FF, 0x8000,
                                     0x7E00 };
static const guint16 bf16_bits[4] = { 0x3F80, 0xC000, 0x7F80, 0x0001 };
static const gint64 i64_vals[4] = { 0, -1, G_MAXINT64, G_MININT64 };
static const gint32 i32_vals[3] = { -5, 7, G_MININT32 };
static const guint8 u8_vals[3] = { 0, 200, 255 };
static const gint8 i8_vals[2] = { -128, 127 };
static const guint16 u16_vals[2] = { 65535, 1 };
static const double f64_vals[2] = { 0.1, -1e300 };
static const float scalar_val = 42.0f;

/* Writes every test tensor to PATH. */
static void
write_sample(const char *path)
{
  GError *err = NULL;
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  const int64_t s23[] = { 2, 3 }, s8[] = { 8 }, s4[] = { 4 }, s22[] = { 2, 2 }, s3[] = { 3 },
                s2[] = { 2 }, s04[] = { 0, 4 };
  g_assert_true(ct_safetensors_writer_add(w, "f32", CT_DTYPE_F32, 2, s23, f32_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "f16", CT_DTYPE_F16, 1, s8, f16_bits, &err));
  g_assert_true(ct_safetensors_writer_add(w, "bf16", CT_DTYPE_BF16, 1, s4, bf16_bits, &err));
  g_assert_true(ct_safetensors_writer_add(w, "i64", CT_DTYPE_I64, 2, s22, i64_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "scalar", CT_DTYPE_F32, 0, NULL, &scalar_val, &err));
  g_assert_true(ct_safetensors_writer_add(w, "empty", CT_DTYPE_F32, 2, s04, NULL, &err));
  g_assert_true(ct_safetensors_writer_add(w, "i32", CT_DTYPE_I32, 1, s3, i32_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "u8", CT_DTYPE_U8, 1, s3, u8_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "i8", CT_DTYPE_I8, 1, s2, i8_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "u16", CT_DTYPE_U16, 1, s2, u16_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "f64", CT_DTYPE_F64, 1, s2, f64_vals, &err));
  g_assert_true(ct_safetensors_writer_add(w, "ünï \"q\"\n", CT_DTYPE_U8, 1, s2, u8_vals, &err));
  g_assert_no_error(err);
  ct_safetensors_writer_set_metadata(w, "format", "pt");
  ct_safetensors_writer_set_metadata(w, "note", "first");
  ct_safetensors_writer_set_metadata(w, "note", "héllo \"there\"");
  g_assert_true(ct_safetensors_writer_write(w, path, &err));
  g_assert_no_error(err);
  ct_safetensors_writer_free(w);
}

static void
test_roundtrip(void)
{
  static const char *order[] = { "f32", "f16", "bf16", "i64", "scalar", "empty", "i32", "u8",
                                 "i8", "u16", "f64", "ünï \"q\"\n" };
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "rt.safetensors", NULL);
  GError *err = NULL;
  write_sample(path);

  /* header: 8 + N is a multiple of 8 and __metadata__ comes first */
  char *bytes;
  gsize len;
  g_assert_true(g_file_get_contents(path, &bytes, &len, NULL));
  guint64 hlen;
  memcpy(&hlen, bytes, 8);
  hlen = GUINT64_FROM_LE(hlen);
  g_assert_cmpuint((8 + hlen) % 8, ==, 0);
  g_assert_cmpuint(8 + hlen, <=, len);
  g_assert_true(g_str_has_prefix(bytes + 8, "{\"__metadata__\""));
  g_free(bytes);

  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpstr(ct_safetensors_path(st), ==, path);
  g_assert_cmpuint(ct_safetensors_n_tensors(st), ==, G_N_ELEMENTS(order));
  for (size_t i = 0; i < G_N_ELEMENTS(order); i++)
    g_assert_cmpstr(ct_safetensors_tensor(st, i)->name, ==, order[i]);

  const CtTensorInfo *t = ct_safetensors_find(st, "f32");
  g_assert_nonnull(t);
  g_assert_cmpint(t->dtype, ==, CT_DTYPE_F32);
  g_assert_cmpint(t->ndim, ==, 2);
  g_assert_cmpint(t->shape[0], ==, 2);
  g_assert_cmpint(t->shape[1], ==, 3);
  g_assert_cmpuint(t->numel, ==, 6);
  g_assert_cmpuint(t->nbytes, ==, 24);
  g_assert_cmpmem(ct_safetensors_data(st, t), 24, f32_vals, 24);
  float f[8];
  g_assert_true(ct_safetensors_read_f32(st, "f32", f, 6, &err));
  g_assert_cmpmem(f, sizeof f32_vals, f32_vals, sizeof f32_vals);

  /* F16 from hand-made bit patterns */
  g_assert_true(ct_safetensors_read_f32(st, "f16", f, 8, &err));
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_cmpfloat(f[1], ==, -2.0f);
  g_assert_true(isinf(f[2]) && f[2] > 0);
  g_assert_true(isinf(f[3]) && f[3] < 0);
  g_assert_cmpfloat(f[4], ==, 5.9604644775390625e-8f);  /* 2^-24, smallest subnormal */
  g_assert_cmpfloat(f[5], ==, 6.097555160522461e-5f);   /* 1023 * 2^-24 */
  g_assert_cmpuint(float_bits(f[6]), ==, 0x80000000u);  /* -0 */
  g_assert_true(isnan(f[7]));

  g_assert_true(ct_safetensors_read_f32(st, "bf16", f, 4, &err));
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_cmpfloat(f[1], ==, -2.0f);
  g_assert_true(isinf(f[2]));
  g_assert_cmpuint(float_bits(f[3]), ==, 0x00010000u);

  g_assert_true(ct_safetensors_read_f32(st, "f64", f, 2, &err));
  g_assert_cmpfloat(f[0], ==, 0.1f);
  g_assert_true(isinf(f[1]) && f[1] < 0);

  t = ct_safetensors_find(st, "scalar");
  g_assert_cmpint(t->ndim, ==, 0);
  g_assert_cmpuint(t->numel, ==, 1);
  g_assert_true(ct_safetensors_read_f32(st, "scalar", f, 1, &err));
  g_assert_cmpfloat(f[0], ==, 42.0f);

  t = ct_safetensors_find(st, "empty");
  g_assert_cmpuint(t->numel, ==, 0);
  g_assert_cmpuint(t->nbytes, ==, 0);
  g_assert_true(ct_safetensors_read_f32(st, "empty", f, 0, &err));
  /* into no buffer at all, as g_new(float, 0) gives: no memcpy to NULL
   * (UBSan, in tests/sanitize.sh) */
  g_assert_true(ct_safetensors_read_f32(st, "empty", g_new(float, 0), 0, &err));
  g_assert_no_error(err);

  gint64 v[4];
  g_assert_true(ct_safetensors_read_i64(st, "i64", v, 4, &err));
  g_assert_cmpmem(v, sizeof i64_vals, i64_vals, sizeof i64_vals);
  g_assert_true(ct_safetensors_read_i64(st, "i32", v, 3, &err));
  g_assert_cmpint(v[0], ==, -5);
  g_assert_cmpint(v[2], ==, G_MININT32);
  g_assert_true(ct_safetensors_read_i64(st, "u8", v, 3, &err));
  g_assert_cmpint(v[1], ==, 200);
  g_assert_cmpint(v[2], ==, 255);
  g_assert_true(ct_safetensors_read_i64(st, "i8", v, 2, &err));
  g_assert_cmpint(v[0], ==, -128);
  g_assert_true(ct_safetensors_read_i64(st, "u16", v, 2, &err));
  g_assert_cmpint(v[0], ==, 65535);
  g_assert_true(ct_safetensors_read_i64(st, "ünï \"q\"\n", v, 2, &err));
  g_assert_no_error(err);

  g_assert_cmpstr(ct_safetensors_metadata(st, "format"), ==, "pt");
  g_assert_cmpstr(ct_safetensors_metadata(st, "note"), ==, "héllo \"there\"");
  g_assert_null(ct_safetensors_metadata(st, "absent"));
  g_assert_null(ct_safetensors_find(st, "absent"));
  g_assert_null(ct_safetensors_find(st, "__metadata__"));

  ct_safetensors_free(st);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* A header of odd length puts the data at an odd address: reads must not
 * depend on alignment.  Also: no metadata, extra fields allowed, gaps allowed. */
static void
test_unaligned(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "odd.safetensors", NULL);
  const char *hdr = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9],\"x\":[[1]]},"
                    "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[11,13]}}";
  /* pad to an odd length with a space so the data starts at an odd offset */
  char *h = g_strdup_printf("%s%s", hdr, strlen(hdr) % 2 ? "" : " ");
  size_t hlen = strlen(h);
  GError *err = NULL;

  /* data: [u8 7][f32 1.0][f32 -0.5][2 bytes gap][f16 1.0] */
  GByteArray *b = g_byte_array_new();
  guint64 le = GUINT64_TO_LE((guint64)hlen);
  const guint8 u = 7, gap[2] = { 0, 0 };
  const float w[2] = { 1.0f, -0.5f };
  const guint16 one = 0x3C00;
  g_byte_array_append(b, (const guint8 *)&le, 8);
  g_byte_array_append(b, (const guint8 *)h, (guint)hlen);
  g_byte_array_append(b, &u, 1);
  g_byte_array_append(b, (const guint8 *)w, 8);
  g_byte_array_append(b, gap, 2);
  g_byte_array_append(b, (const guint8 *)&one, 2);
  g_assert_true(g_file_set_contents(path, (const char *)b->data, b->len, NULL));
  g_byte_array_unref(b);

  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_safetensors_n_tensors(st), ==, 3);
  g_assert_cmpstr(ct_safetensors_tensor(st, 0)->name, ==, "a");
  g_assert_cmpstr(ct_safetensors_tensor(st, 1)->name, ==, "w");
  float f[2];
  g_assert_true(ct_safetensors_read_f32(st, "w", f, 2, &err));
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_cmpfloat(f[1], ==, -0.5f);
  g_assert_true(ct_safetensors_read_f32(st, "h", f, 1, &err));
  g_assert_cmpfloat(f[0], ==, 1.0f);
  g_assert_no_error(err);
  ct_safetensors_free(st);
  g_free(h);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* ---------------------------------------------------------------- read errors */

static void
test_read_errors(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "r.safetensors", NULL);
  GError *err = NULL;
  write_sample(path);
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  float f[8];
  gint64 v[8];

  g_assert_false(ct_safetensors_read_f32(st, "visual.proj", f, 8, &err));
  check_error(err, CT_ERROR_MISSING, path, "'visual.proj'", NULL);
  g_clear_error(&err);

  g_assert_false(ct_safetensors_read_f32(st, "i64", f, 4, &err));
  check_error(err, CT_ERROR_DTYPE, path, "'i64'", "I64");
  g_clear_error(&err);

  g_assert_false(ct_safetensors_read_f32(st, "f32", f, 5, &err));
  check_error(err, CT_ERROR_SHAPE, path, "'f32'", "[2, 3]");
  g_clear_error(&err);

  g_assert_false(ct_safetensors_read_i64(st, "f16", v, 8, &err));
  check_error(err, CT_ERROR_DTYPE, path, "'f16'", "F16");
  g_clear_error(&err);

  g_assert_false(ct_safetensors_read_i64(st, "nope", v, 1, &err));
  check_error(err, CT_ERROR_MISSING, path, "'nope'", NULL);
  g_clear_error(&err);

  g_assert_false(ct_safetensors_read_i64(st, "i64", v, 8, &err));
  check_error(err, CT_ERROR_SHAPE, path, "'i64'", "8");
  g_clear_error(&err);

  ct_safetensors_free(st);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_writer_errors(void)
{
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  GError *err = NULL;
  const int64_t s1[] = { 1 }, neg[] = { 2, -1 }, huge[] = { G_MAXINT64, G_MAXINT64 };
  const float x = 1.0f;
  g_assert_true(ct_safetensors_writer_add(w, "a", CT_DTYPE_F32, 1, s1, &x, &err));
  g_assert_false(ct_safetensors_writer_add(w, "a", CT_DTYPE_F32, 1, s1, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(err->message, "'a'"));
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "__metadata__", CT_DTYPE_F32, 1, s1, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "n", CT_DTYPE_F32, 2, neg, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_SHAPE);
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "h", CT_DTYPE_F32, 2, huge, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_SHAPE);
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "bad\xff", CT_DTYPE_F32, 1, s1, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "z", CT_DTYPE_F32, 9, s1, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_SHAPE);
  g_clear_error(&err);
  g_assert_false(ct_safetensors_writer_add(w, "d", CT_DTYPE_UNKNOWN, 1, s1, &x, &err));
  g_assert_error(err, CT_ERROR, CT_ERROR_DTYPE);
  g_clear_error(&err);
  ct_safetensors_writer_free(w);
}

/* ---------------------------------------------------------------- broken files */

#define T(name, dtype, shape, offs) "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape \
                                    ",\"data_offsets\":" offs "}"

typedef struct {
  const char *name;      /* test path suffix */
  const char *header;
  size_t data_len;
  gint code;     
  const char *s1, *s2;   /* expected in the message */
} BrokenCase;

static const BrokenCase broken_cases[] = {
  { "header-length-0", "", 0, CT_ERROR_FORMAT, "header length 0 is too short", NULL },
  { "header-length-1", "{", 0, CT_ERROR_FORMAT, "header length 1 is too short", NULL },
  { "bad-json", "{\"w\":{\"dtype\":\"F32\",", 0, CT_ERROR_FORMAT, "tensor 'w': header JSON, byte 20",
    "expected a string key" },
  { "not-an-object", "[1, 2, 3]", 0, CT_ERROR_FORMAT, "not a JSON object", NULL },
  { "not-an-object-spaces", "  \"{}\"", 0, CT_ERROR_FORMAT, "not a JSON object", NULL },
  { "not-an-object-number", "12", 0, CT_ERROR_FORMAT, "not a JSON object", NULL },
  { "entry-not-object", "{\"w\": 5}", 0, CT_ERROR_FORMAT, "'w'", "not an object" },
  { "unknown-dtype", "{" T("w", "F8_E4M3X", "[1]", "[0,1]") "}", 1, CT_ERROR_DTYPE, "'w'",
    "F8_E4M3X" },
  { "dtype-not-string", "{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
    CT_ERROR_FORMAT, "'w'", "dtype" },
  { "missing-shape", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, CT_ERROR_FORMAT,
    "'w'", "shape" },
  { "missing-offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, CT_ERROR_FORMAT, "'w'",
    "data_offsets" },
  { "negative-dim", "{" T("w", "F32", "[-1,4]", "[0,16]") "}", 16, CT_ERROR_FORMAT, "'w'",
    "shape dim 0" },
  { "fractional-dim", "{" T("w", "F32", "[1.5]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "'w'",
    "shape dim 0" },
  { "too-many-dims", "{" T("w", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "'w'", "9 dims" },
  { "shape-overflow", "{" T("w", "F32", "[4294967296,4294967296,16]", "[0,4]") "}", 4,
    CT_ERROR_FORMAT, "'w'", "overflows" },
  { "bytes-overflow", "{" T("visual.proj", "F32", "[4611686018427387904]", "[0,4]") "}", 4,
    CT_ERROR_FORMAT, "'visual.proj'", "[4611686018427387904] of F32 overflows" },
  { "offsets-not-pair", "{" T("w", "F32", "[1]", "[0]") "}", 4, CT_ERROR_FORMAT, "'w'",
    "data_offsets" },
  { "offsets-negative", "{" T("w", "F32", "[1]", "[-4,0]") "}", 4, CT_ERROR_FORMAT, "'w'",
    "data_offsets" },
  { "offsets-out-of-range", "{" T("w", "F32", "[8]", "[0,32]") "}", 16, CT_ERROR_FORMAT, "'w'",
    "beyond the 16 bytes" },
  { "begin-after-end", "{" T("w", "F32", "[1]", "[8,4]") "}", 16, CT_ERROR_FORMAT, "'w'",
    "[8, 4] begin after" },
  { "size-mismatch", "{" T("visual.proj", "F32", "[64,32]", "[0,12]") "}", 12, CT_ERROR_FORMAT,
    "tensor 'visual.proj': data_offsets [0, 12] hold 12 bytes but shape [64, 32] of F32 needs 8192",
    NULL },
  { "overlap", "{" T("a", "F32", "[2]", "[0,8]") "," T("b", "F32", "[2]", "[4,12]") "}", 12,
    CT_ERROR_FORMAT, "'b'", "overlap those of 'a'" },
  { "overlap-contained", "{" T("a", "U8", "[8]", "[0,8]") "," T("c", "U8", "[1]", "[8,9]") ","
    T("b", "U8", "[2]", "[2,4]") "}", 9, CT_ERROR_FORMAT, "'b'", "overlap those of 'a'" },
  { "duplicate", "{" T("w", "F32", "[1]", "[0,4]") "," T("w", "F32", "[1]", "[4,8]") "}", 8,
    CT_ERROR_FORMAT, "'w'", "more than once" },
  { "duplicate-escaped", "{" T("wq", "F32", "[1]", "[0,4]") "," T("w\\u0071", "F32", "[1]",
    "[4,8]") "}", 8, CT_ERROR_FORMAT, "'wq'", "more than once" },
  { "non-utf8", "{" T("w\xff\xfe", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "UTF-8", NULL },
  { "metadata-non-string", "{\"__metadata__\":{\"k\":1}," T("w", "F32", "[1]", "[0,4]") "}", 4,
    CT_ERROR_FORMAT, "__metadata__", "'k'" },
  { "metadata-not-object", "{\"__metadata__\":\"x\"}", 0, CT_ERROR_FORMAT, "__metadata__",
    NULL },
  { "metadata-object-value", "{\"__metadata__\":{\"k\":{\"a\":\"b\"}}}", 0, CT_ERROR_FORMAT,
    "__metadata__ value of 'k'", "not a string" },
  { "metadata-array-value", "{\"__metadata__\":{\"k\":[\"a\"]}}", 0, CT_ERROR_FORMAT,
    "__metadata__ value of 'k'", "not a string" },
  { "metadata-null-value", "{\"__metadata__\":{\"k\":null}}", 0, CT_ERROR_FORMAT,
    "__metadata__ value of 'k'", "not a string" },
  { "metadata-bool-value", "{\"__metadata__\":{\"k\":true}}", 0, CT_ERROR_FORMAT,
    "__metadata__ value of 'k'", "not a string" },
  { "metadata-twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, CT_ERROR_FORMAT,
    "__metadata__ appears twice", NULL },
  { "metadata-key-twice", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, CT_ERROR_FORMAT,
    "__metadata__: header JSON, byte 25", "key 'k' appears twice" },
  /* a field twice in one entry: json-glib would keep the second dtype */
  { "field-twice", "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I64\",\"shape\":[1],"
    "\"data_offsets\":[0,4]}}", 4, CT_ERROR_FORMAT, "tensor 'w'", "key 'dtype' appears twice" },
  /* integers beyond int64: json-glib would wrap them (this one to INT64_MAX,
   * making the shape [9223372036854775807, 0] a valid empty tensor) */
  { "dim-below-int64", "{" T("w", "F32", "[-9223372036854775809,0]", "[0,0]") "}", 0,
    CT_ERROR_FORMAT, "tensor 'w'", "integer -9223372036854775809 does not fit in 64 bits" },
  { "dim-above-int64", "{" T("w", "U8", "[9223372036854775808]", "[0,1]") "}", 1,
    CT_ERROR_FORMAT, "tensor 'w'", "integer 9223372036854775808 does not fit" },
  { "dim-above-uint64", "{" T("w", "U8", "[18446744073709551617]", "[0,1]") "}", 1,
    CT_ERROR_FORMAT, "tensor 'w'", "does not fit in 64 bits" },
  { "offset-above-int64", "{" T("w", "U8", "[1]", "[0,100000000000000000000000000000]") "}", 1,
    CT_ERROR_FORMAT, "tensor 'w'", "does not fit in 64 bits" },
  { "shape-overflow-int64-max", "{" T("w", "U8", "[9223372036854775807,3]", "[0,1]") "}", 1,
    CT_ERROR_FORMAT, "tensor 'w'", "[9223372036854775807, 3] of U8 overflows" },
  { "bytes-overflow-f64", "{" T("w", "F64", "[2305843009213693952,1]", "[0,8]") "}", 8,
    CT_ERROR_FORMAT, "tensor 'w'", "overflows" },
  { "offsets-int64-max", "{" T("w", "U8", "[1]", "[9223372036854775806,9223372036854775807]") "}",
    1, CT_ERROR_FORMAT, "tensor 'w'", "beyond the 1 bytes" },
  { "offsets-float", "{" T("w", "U8", "[1]", "[0,1.0]") "}", 1, CT_ERROR_FORMAT, "tensor 'w'",
    "data_offsets" },
  { "offsets-triple", "{" T("w", "U8", "[1]", "[0,1,2]") "}", 2, CT_ERROR_FORMAT, "tensor 'w'",
    "data_offsets" },
  { "size-mismatch-short", "{" T("w", "F16", "[3]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "tensor 'w'", "hold 4 bytes but shape [3] of F16 needs 6" },
  { "size-mismatch-scalar", "{" T("s", "F32", "[]", "[0,8]") "}", 8, CT_ERROR_FORMAT,
    "tensor 's'", "hold 8 bytes but shape [] of F32 needs 4" },
  { "overlap-same-range", "{" T("a", "U8", "[4]", "[0,4]") "," T("b", "U8", "[4]", "[0,4]") "}",
    4, CT_ERROR_FORMAT, "overlap those of", NULL },
  { "dtype-lowercase", "{" T("w", "f32", "[1]", "[0,4]") "}", 4, CT_ERROR_DTYPE, "tensor 'w'",
    "unknown dtype 'f32'" },
  { "dtype-nul", "{" T("w", "F32\\u0000", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "tensor 'w'",
    "NUL" },
  { "name-nul", "{" T("w\\u0000x", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "byte 3",
    "NUL" },
  { "name-lone-surrogate", "{" T("w\\ud800", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "byte 3", "\\uD800 is a lone surrogate" },
  { "name-lone-low-surrogate", "{" T("\\udc00w", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "byte 2", "\\uDC00 is a lone surrogate" },
  { "name-bad-escape", "{" T("w\\x41", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "byte 3",
    "invalid escape" },
  { "name-short-unicode-escape", "{" T("w\\u12", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "byte 3", "4 hex digits" },
  { "name-raw-tab", "{" T("w\tx", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT, "byte 3",
    "control character 0x09" },
  { "non-utf8-overlong", "{" T("w\xc0\xaf", "F32", "[1]", "[0,4]") "}", 4, CT_ERROR_FORMAT,
    "UTF-8", NULL },
  { "non-utf8-surrogate", "{" T("w\xed\xa0\x80", "F32", "[1]", "[0,4]") "}", 4,
    CT_ERROR_FORMAT, "UTF-8", NULL },
  { "non-utf8-truncated", "{\"__metadata__\":{\"k\":\"\xe2\x82\"}}", 0, CT_ERROR_FORMAT,
    "UTF-8", NULL },
  /* what json-glib accepts and JSON does not */
  { "hex-number", "{" T("w", "U8", "[0x1]", "[0,1]") "}", 1, CT_ERROR_FORMAT, "tensor 'w'",
    "expected ',' or ']'" },
  { "leading-zero", "{" T("w", "U8", "[01]", "[0,1]") "}", 1, CT_ERROR_FORMAT, "tensor 'w'",
    "leading zero" },
  { "comment", "{" T("w", "U8", "[1]", "[0,1]") "/* x */}", 1, CT_ERROR_FORMAT, "tensor 'w'",
    "expected ',' or '}'" },
  { "single-quotes", "{'w':{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
    CT_ERROR_FORMAT, "byte 1", "expected a string key" },
  { "bare-key", "{w:1}", 0, CT_ERROR_FORMAT, "byte 1", "expected a string key" },
  { "trailing-comma", "{" T("w", "U8", "[1,]", "[0,1]") "}", 1, CT_ERROR_FORMAT, "tensor 'w'",
    "unexpected character ']'" },
  { "trailing-comma-object", "{" T("w", "U8", "[1]", "[0,1]") ",}", 1, CT_ERROR_FORMAT,
    "expected a string key", NULL },
  { "trailing-data", "{" T("w", "U8", "[1]", "[0,1]") "} {}", 1, CT_ERROR_FORMAT,
    "more data after the end", NULL },
  { "unclosed-string", "{\"w\":{\"dtype\":\"F32}}", 0, CT_ERROR_FORMAT, "tensor 'w'",
    "string is not closed" },
  { "unclosed-object", "{" T("w", "U8", "[1]", "[0,1]"), 1, CT_ERROR_FORMAT,
    "ends before a closing '}'", NULL },
  { "missing-colon", "{\"w\" 5}", 0, CT_ERROR_FORMAT, "expected ':'", NULL },
  { "bad-literal", "{\"w\":nul}", 0, CT_ERROR_FORMAT, "tensor 'w'", "unexpected character 'n'" },
  { "minus-alone", "{\"w\":-}", 0, CT_ERROR_FORMAT, "tensor 'w'", "'-' is not followed" },
  { "bad-fraction", "{\"w\":1.}", 0, CT_ERROR_FORMAT, "tensor 'w'", "decimal point" },
  { "bad-exponent", "{\"w\":1e+}", 0, CT_ERROR_FORMAT, "tensor 'w'", "exponent" },
};

static void
test_broken(gconstpointer data)
{
  const BrokenCase *c = data;
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "broken.safetensors", NULL);
  write_raw(path, strlen(c->header), c->header, strlen(c->header), c->data_len);
  expect_open_error(path, c->code, c->s1, c->s2);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_broken_short(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "short.safetensors", NULL);
  g_assert_true(g_file_set_contents(path, "\x10\0\0\0", 4, NULL));
  expect_open_error(path, CT_ERROR_FORMAT, "truncated", "4 bytes");
  g_assert_true(g_file_set_contents(path, "", 0, NULL));
  expect_open_error(path, CT_ERROR_FORMAT, "truncated", "0 bytes");
  /* the header length says more than the file holds */
  write_raw(path, 5000, "{}", 2, 90);
  expect_open_error(path, CT_ERROR_FORMAT, "truncated",
                    "header says 5000 bytes but only 92 follow");
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_broken_huge_header(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "huge.safetensors", NULL);
  write_raw(path, (guint64)200 * 1000 * 1000, "{}", 2, 0);
  expect_open_error(path, CT_ERROR_FORMAT, "200000000", "100 MB");
  write_raw(path, G_MAXUINT64, "{}", 2, 0);
  expect_open_error(path, CT_ERROR_FORMAT, "100 MB", NULL);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* 100000 '[' must be refused by depth, not recursed into. */
static void
test_broken_deep_nesting(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "deep.safetensors", NULL);
  GString *h = g_string_new("{\"w\":");
  for (int i = 0; i < 100000; i++)
    g_string_append_c(h, '[');
  write_raw(path, h->len, h->str, h->len, 0);
  expect_open_error(path, CT_ERROR_FORMAT, "nested deeper", NULL);
  /* brackets inside strings do not count */
  g_string_assign(h, "{\"__metadata__\":{\"k\":\"");
  for (int i = 0; i < 1000; i++)
    g_string_append(h, "[{");
  g_string_append(h, "\\\"\"}," T("w", "F32", "[1]", "[0,4]") "}");
  write_raw(path, h->len, h->str, h->len, 4);
  GError *err = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_safetensors_n_tensors(st), ==, 1);
  g_assert_cmpuint(strlen(ct_safetensors_metadata(st, "k")), ==, 2001);
  ct_safetensors_free(st);
  g_string_free(h, TRUE);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* The limit is 64 levels: an entry's extra field nested to 64 is read, one
 * more level is refused, naming the tensor. */
static void
test_broken_depth_limit(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "depth.safetensors", NULL);
  for (int levels = 64; levels <= 65; levels++) {
    /* the top-level object and the entry are levels 1 and 2 */
    GString *h = g_string_new("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":");
    for (int i = 2; i < levels; i++)
      g_string_append_c(h, '[');
    for (int i = 2; i < levels; i++)
      g_string_append_c(h, ']');
    g_string_append(h, "}}");
    write_raw(path, h->len, h->str, h->len, 1);
    if (levels == 64) {
      GError *err = NULL;
      CtSafetensors *st = ct_safetensors_open(path, &err);
      g_assert_no_error(err);
      g_assert_nonnull(ct_safetensors_find(st, "w"));
      ct_safetensors_free(st);
    } else {
      expect_open_error(path, CT_ERROR_FORMAT, "tensor 'w'", "nested deeper than 64 levels");
    }
    g_string_free(h, TRUE);
  }
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* A raw NUL byte inside the header (not an escape) is not UTF-8 text. */
static void
test_broken_raw_nul(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "nul.safetensors", NULL);
  static const char h[] = "{\"w\0\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  write_raw(path, sizeof h - 1, h, sizeof h - 1, 1);
  expect_open_error(path, CT_ERROR_FORMAT, "not valid UTF-8", NULL);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* Names reach error messages: a line break or terminal escape in one is
 * written as \xNN, and a huge name is cut, so the error stays one short
 * line. */
static void
test_broken_hostile_name(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "name.safetensors", NULL);
  const char *h = "{\"a\\nb\\u001b[31m\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
  write_raw(path, strlen(h), h, strlen(h), 1);
  expect_open_error(path, CT_ERROR_DTYPE, "tensor 'a\\x0ab\\x1b[31m'", "unknown dtype 'Q8'");

  GString *g = g_string_new("{\"");
  for (int i = 0; i < 100000; i++)
    g_string_append(g, "\xc3\xa9"); /* é: the cut must not split it */
  g_string_append(g, "\":{\"dtype\":\"Q8\",\"shape\":[1],\"data_offsets\":[0,1]}}");
  write_raw(path, g->len, g->str, g->len, 1);
  GError *err = NULL;
  g_assert_null(ct_safetensors_open(path, &err));
  check_error(err, CT_ERROR_DTYPE, path, "\xc3\xa9...': unknown dtype 'Q8'", NULL);
  g_assert_true(g_utf8_validate(err->message, -1, NULL));
  g_assert_cmpuint(strlen(err->message), <, strlen(path) + 300);
  g_clear_error(&err);
  g_string_free(g, TRUE);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* A file really holding a header of more than 100,000,000 bytes (sparse, so
 * it costs no disk) is refused by its length field, before the header is
 * read; one of exactly 100,000,000 passes that check and fails on its
 * contents (NUL bytes are not UTF-8). */
static void
test_broken_huge_header_file(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "sparse.safetensors", NULL);
  for (guint64 hlen = 100000000; hlen <= 100000001; hlen++) {
    write_raw(path, hlen, "{", 1, 0);
    g_assert_cmpint(truncate(path, (off_t)(8 + hlen)), ==, 0);
    if (hlen > 100000000)
      expect_open_error(path, CT_ERROR_FORMAT, "header length 100000001 exceeds the limit",
                        NULL);
    else
      expect_open_error(path, CT_ERROR_FORMAT, "not valid UTF-8", NULL);
  }
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* Valid JSON that json-glib and we must read alike: escapes, surrogate
 * pairs, exponents in extra fields, whitespace, the extreme int64 values
 * in an extra field. */
static void
test_strict_json_accepts(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "ok.safetensors", NULL);
  const char *h = " \r\n\t{ \"__metadata__\" : { \"k\\/\" : \"\\ud83d\\ude00 \\\"q\\\"\" } ,"
                  "\"\\u00e9\\t\":{\"dtype\":\"U8\",\"shape\":[ 2 ],\"data_offsets\":[0,2],"
                  "\"x\":[-0,1.5e-3,2E+2,-9223372036854775808,9223372036854775807,true,false,null,{}]},"
                  "\"\\uD83D\\uDE00\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[2,3]} }  ";
  write_raw(path, strlen(h), h, strlen(h), 3);
  GError *err = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_safetensors_n_tensors(st), ==, 2);
  g_assert_cmpstr(ct_safetensors_tensor(st, 0)->name, ==, "\xc3\xa9\t");
  g_assert_cmpstr(ct_safetensors_tensor(st, 1)->name, ==, "\xf0\x9f\x98\x80");
  g_assert_cmpstr(ct_safetensors_metadata(st, "k/"), ==, "\xf0\x9f\x98\x80 \"q\"");
  gint64 v[2];
  g_assert_true(ct_safetensors_read_i64(st, "\xc3\xa9\t", v, 2, &err));
  g_assert_cmpint(v[0], ==, 0);
  g_assert_cmpint(v[1], ==, 1);
  g_assert_no_error(err);
  ct_safetensors_free(st);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

static void
test_missing_file(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "absent.safetensors", NULL);
  expect_open_error(path, CT_ERROR_IO, "No such file", NULL);
  expect_open_error(dir, CT_ERROR_IO, "is a folder, not a safetensors file", NULL);
  g_free(path);
  ct_test_count_entries(dir, TRUE);
  g_free(dir);
}

/* ---------------------------------------------------------------- atomic writes */

static void
test_atomic_nonexistent_dir(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *sub = g_build_filename(dir, "nope", NULL);
  char *path = g_build_filename(sub, "x.safetensors", NULL);
  GError *err = NULL;
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  const int64_t s1[] = { 1 };
  const float x = 3.0f;
  g_assert_true(ct_safetensors_writer_add(w, "x", CT_DTYPE_F32, 1, s1, &x, &err));
  g_assert_false(ct_safetensors_writer_write(w, path, &err));
  check_error(err, CT_ERROR_IO, path, "No such file", NULL);
  g_clear_error(&err);
  g_assert_false(g_file_test(sub, G_FILE_TEST_EXISTS));
  g_assert_cmpuint(ct_test_count_entries(dir, TRUE), ==, 0);
  ct_safetensors_writer_free(w);
  g_free(path);
  g_free(sub);
  g_free(dir);
}

static void
test_atomic_replace(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "x.safetensors", NULL);
  char *fresh = g_build_filename(dir, "fresh.safetensors", NULL);
  GError *err = NULL;
  struct stat sb;

  g_assert_true(g_file_set_contents(path, "old contents", -1, NULL));
  g_assert_cmpint(g_chmod(path, 0640), ==, 0);
  write_sample(path);
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_nonnull(ct_safetensors_find(st, "f16"));
  ct_safetensors_free(st);
  g_assert_cmpint(g_stat(path, &sb), ==, 0);
  g_assert_cmpint(sb.st_mode & 0777, ==, 0640);  /* the replaced file's mode */

  write_sample(fresh);  /* umask is 022, set in main() */
  g_assert_cmpint(g_stat(fresh, &sb), ==, 0);
  g_assert_cmpint(sb.st_mode & 0777, ==, 0644);

  /* nothing but the two files: no PATH.tmp.* left behind */
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 2);
  ct_test_count_entries(dir, TRUE);
  g_free(fresh);
  g_free(path);
  g_free(dir);
}

/* A write that fails half way (file size limit: EFBIG after a short write,
 * as a full disk would) leaves the old PATH and no temporary file. */
static void
test_atomic_failed_write(void)
{
  char *dir = ct_test_make_tmpdir("ct-st-XXXXXX");
  char *path = g_build_filename(dir, "x.safetensors", NULL);
  GError *err = NULL;
  static float big[1024];
  const int64_t shape[] = { 1024 };
  struct rlimit old, lim;

  g_assert_true(g_file_set_contents(path, "old contents", -1, NULL));
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  g_assert_true(ct_safetensors_writer_add(w, "big", CT_DTYPE_F32, 1, shape, big, &err));

  g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
  lim = old;
  lim.rlim_cur = 64;
  void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &lim), ==, 0);
  gboolean ok = ct_safetensors_writer_write(w, path, &err);
  g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
  signal(SIGXFSZ, prev);

  g_assert_false(ok);
  check_error(err, CT_ERROR_IO, path, "write failed", g_strerror(EFBIG));
  g_clear_error(&err);
  char *contents;
  g_assert_true(g_file_get_contents(path, &contents, NULL, NULL));
  g_assert_cmpstr(contents, ==, "old contents");
  g_free(contents);
  g_assert_cmpuint(ct_test_count_entries(dir, FALSE), ==, 1);

  ct_safetensors_writer_free(w);
  ct_test_count_entries(dir, TRUE);
  g_free(path);
  g_free(dir);
}

/* ---------------------------------------------------------------- golden file */

static void
test_golden(void)
{
  const char *data = g_getenv("CT_TEST_DATA");
  if (!data) {
    g_test_skip("CT_TEST_DATA is not set");
    return;
  }
  char *path = g_build_filename(data, "clip_case_small.safetensors", NULL);
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
    char *msg = g_strdup_printf("%s is missing", path);
    g_test_skip(msg);
    g_free(msg);
    g_free(path);
    return;
  }
  GError *err = NULL;
  CtSafetensors *st = ct_safetensors_open(path, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_safetensors_n_tensors(st), >, 2);

  const CtTensorInfo *t = ct_safetensors_find(st, "param.visual.conv1.weight");
  g_assert_nonnull(t);
  g_assert_cmpint(t->dtype, ==, CT_DTYPE_F32);
  g_assert_cmpint(t->ndim, ==, 4);
  const int64_t want[] = { 64, 3, 8, 8 };
  g_assert_cmpmem(t->shape, sizeof want, want, sizeof want);
  float *w = g_new(float, t->numel);
  g_assert_true(ct_safetensors_read_f32(st, t->name, w, t->numel, &err));
  g_assert_no_error(err);
  for (size_t i = 0; i < t->numel; i++)
    g_assert_true(isfinite(w[i]));
  g_free(w);

  t = ct_safetensors_find(st, "input.tokens");
  g_assert_nonnull(t);
  g_assert_cmpint(t->dtype, ==, CT_DTYPE_I64);
  g_assert_cmpint(t->ndim, ==, 2);
  g_assert_cmpint(t->shape[0], ==, 4);
  g_assert_cmpint(t->shape[1], ==, 16);
  /* each row's largest id is the end token, vocab_size - 1 */
  gint64 vocab, tokens[64];
  g_assert_true(ct_safetensors_read_i64(st, "config.vocab_size", &vocab, 1, &err));
  g_assert_true(ct_safetensors_read_i64(st, "input.tokens", tokens, 64, &err));
  g_assert_no_error(err);
  for (int r = 0; r < 4; r++) {
    gint64 mx = 0;
    for (int c = 0; c < 16; c++)
      mx = MAX(mx, tokens[r * 16 + c]);
    g_assert_cmpint(mx, ==, vocab - 1);
  }
  ct_safetensors_free(st);
  g_free(path);
}

int
main(int argc, char **argv)
{
  umask(022);
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/safetensors/dtypes", test_dtypes);
  g_test_add_func("/safetensors/roundtrip", test_roundtrip);
  g_test_add_func("/safetensors/unaligned", test_unaligned);
  g_test_add_func("/safetensors/read-errors", test_read_errors);
  g_test_add_func("/safetensors/writer-errors", test_writer_errors);
  for (size_t i = 0; i < G_N_ELEMENTS(broken_cases); i++) {
    char *name = g_strdup_printf("/safetensors/broken/%s", broken_cases[i].name);
    g_test_add_data_func(name, &broken_cases[i], test_broken);
    g_free(name);
  }
  g_test_add_func("/safetensors/broken/truncated", test_broken_short);
  g_test_add_func("/safetensors/broken/header-over-100mb", test_broken_huge_header);
  g_test_add_func("/safetensors/broken/deep-nesting", test_broken_deep_nesting);
  g_test_add_func("/safetensors/broken/depth-limit", test_broken_depth_limit);
  g_test_add_func("/safetensors/broken/raw-nul", test_broken_raw_nul);
  g_test_add_func("/safetensors/broken/hostile-name", test_broken_hostile_name);
  g_test_add_func("/safetensors/broken/header-over-100mb-file", test_broken_huge_header_file);
  g_test_add_func("/safetensors/strict-json-accepts", test_strict_json_accepts);
  g_test_add_func("/safetensors/broken/missing-file", test_missing_file);
  g_test_add_func("/safetensors/atomic/nonexistent-dir", test_atomic_nonexistent_dir);
  g_test_add_func("/safetensors/atomic/replace", test_atomic_replace);
  g_test_add_func("/safetensors/atomic/failed-write", test_atomic_failed_write);
  g_test_add_func("/safetensors/golden", test_golden);
  return g_test_run();
}

/* test-image: PNG and JPEG decoding and CLIP's image transforms against
 * PIL and torchvision.
 *
 * The reference files live in tests/data/images/ and are written by
 * tests/torch/gen_image_cases.py (run with /usr/bin/python3): small PNGs and
 * JPEGs, and ref.safetensors with what PIL decodes from each and what
 * torchvision's Resize/CenterCrop/resized_crop + ToTensor + Normalize
 * make of some.  Decoded PNGs must match PIL exactly, JPEGs within 1 (the
 * IDCT may differ between libjpeg builds); resampled images must match
 * byte for byte and their normalised floats within 1e-6.
 *
 * Bad input (empty, random, truncated at many points, bad CRCs, corrupt
 * JPEG markers, random mutations of good files) must give CT_ERROR_FORMAT
 * naming the input, and no crash: run under valgrind as well
 *   valgrind --error-exitcode=1 tests/unit/test-image
 *
 * With -m perf, /image/bench measures decode + resize throughput:
 *   tests/unit/test-image -m perf -p /image/bench */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include <glib/gstdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/image-private.h"

static const float clip_mean[3] = CT_CLIP_MEAN;
static const float clip_std[3] = CT_CLIP_STD;

static char *datadir;
static CtSafetensors *ref;

static char *
data_path(const char *name)
{
  return g_build_filename(datadir, name, NULL);
}

static guint8 *
read_data(const char *name, size_t *len)
{
  char *path = data_path(name), *data = NULL;
  gsize n = 0;
  GError *error = NULL;
  g_file_get_contents(path, &data, &n, &error);
  g_assert_no_error(error);
  g_free(path);
  *len = n;
  return (guint8 *)data;
}

static CtImage *
load(const char *name)
{
  char *path = data_path(name);
  GError *error = NULL;
  CtImage *image = ct_image_load(path, &error);
  g_assert_no_error(error);
  g_assert_nonnull(image);
  g_free(path);
  return image;
}

static const CtTensorInfo *
ref_tensor(const char *name, CtDtype dtype)
{
  const CtTensorInfo *t = ct_safetensors_find(ref, name);
  if (!t)
    g_error("%s is not in ref.safetensors: rerun tests/torch/gen_image_cases.py", name);
  g_assert_cmpint(t->dtype, ==, dtype);
  return t;
}

/* IMAGE equals the U8 (h, w, 3) tensor NAME within TOL; returns the
 * number of differing samples. */
static size_t
check_u8(const CtImage *image, const char *name, int tol)
{
  const CtTensorInfo *t = ref_tensor(name, CT_DTYPE_U8);
  g_assert_cmpint(t->ndim, ==, 3);
  g_assert_cmpint(t->shape[0], ==, image->height);
  g_assert_cmpint(t->shape[1], ==, image->width);
  g_assert_cmpint(t->shape[2], ==, 3);
  const guint8 *want = ct_safetensors_data(ref, t);
  size_t n_diff = 0;
  int worst = 0;
  for (size_t i = 0; i < t->numel; i++) {
    int d = abs((int)image->pixels[i] - (int)want[i]);
    if (d) {
      if (!n_diff)
        g_test_message("%s: first difference at (%zu, %zu, %zu): %d, PIL %d", name,
                       i / 3 / image->width, i / 3 % image->width, i % 3, image->pixels[i],
                       want[i]);
      n_diff++;
      worst = MAX(worst, d);
    }
  }
  if (n_diff)
    g_test_message("%s: %zu of %zu samples differ, by at most %d", name, n_diff, t->numel,
                   worst);
  g_assert_cmpint(worst, <=, tol);
  return n_diff;
}

/* OUT (3, h, w) rows ROW0 .. ROW0 + rows - 1 equal the F32 (3, rows, w)
 * tensor NAME within 1e-6. */
static void
check_f32(const float *out, int h, int w, int row0, const char *name)
{
  const CtTensorInfo *t = ref_tensor(name, CT_DTYPE_F32);
  g_assert_cmpint(t->ndim, ==, 3);
  g_assert_cmpint(t->shape[0], ==, 3);
  g_assert_cmpint(t->shape[2], ==, w);
  int rows = (int)t->shape[1];
  g_assert_cmpint(row0 + rows, <=, h);
  /* tensor data is not aligned in the file: read it into an aligned copy */
  g_autofree float *want = g_new(float, t->numel);
  g_assert_true(ct_safetensors_read_f32(ref, name, want, t->numel, NULL));
  double worst = 0;
  for (int c = 0; c < 3; c++)
    for (int y = 0; y < rows; y++)
      for (int x = 0; x < w; x++) {
        double d = fabs((double)out[((size_t)c * h + row0 + y) * w + x] -
                        want[((size_t)c * rows + y) * w + x]);
        worst = MAX(worst, d);
      }
  g_test_message("%s: max |ours - torchvision| = %.3g", name, worst);
  g_assert_cmpfloat(worst, <=, 1e-6);
}

/* ---------------------------------------------------------------- decoding */

static const char *const png_cases[] = {
  "rgb.png", "rgba.png", "grey.png", "grey-alpha.png", "palette.png",
  "palette4-interlaced.png", "rgb16.png", "rgba16.png", "grey16.png", "grey1.png",
  "grey2.png", "grey4.png", "grey-trns.png", "rgb-interlaced.png", "grey2-interlaced.png",
  "fmnist.png",
};

static const char *const jpeg_cases[] = {
  "baseline.jpg", "baseline444.jpg", "progressive.jpg", "grey.jpg", "cmyk.jpg",
};

static void
test_decode_png(void)
{
  for (size_t i = 0; i < G_N_ELEMENTS(png_cases); i++) {
    CtImage *image = load(png_cases[i]);
    char *key = g_strconcat("decode/", png_cases[i], NULL);
    g_assert_cmpuint(check_u8(image, key, 0), ==, 0);
    g_free(key);
    ct_image_free(image);
  }
}

static void
test_decode_jpeg(void)
{
  for (size_t i = 0; i < G_N_ELEMENTS(jpeg_cases); i++) {
    CtImage *image = load(jpeg_cases[i]);
    char *key = g_strconcat("decode/", jpeg_cases[i], NULL);
    size_t n = check_u8(image, key, 1);
    g_test_message("%s: %zu samples differ from PIL", jpeg_cases[i], n);
    g_free(key);
    ct_image_free(image);
  }
}

/* Decoding from memory and from a file give the same image; a grey image
 * built from bytes equals the decoded grey PNG. */
static void
test_decode_memory_and_gray(void)
{
  size_t len;
  guint8 *data = read_data("fmnist.png", &len);
  GError *error = NULL;
  CtImage *a = ct_image_decode(data, len, "fmnist", &error);
  g_assert_no_error(error);
  CtImage *b = load("fmnist.png");
  g_assert_cmpint(a->width, ==, 28);
  g_assert_cmpint(a->height, ==, 28);
  g_assert_cmpmem(a->pixels, 28 * 28 * 3, b->pixels, 28 * 28 * 3);
  guint8 gray[28 * 28];
  for (int i = 0; i < 28 * 28; i++) {
    g_assert_cmpint(a->pixels[i * 3], ==, a->pixels[i * 3 + 1]);
    g_assert_cmpint(a->pixels[i * 3], ==, a->pixels[i * 3 + 2]);
    gray[i] = a->pixels[i * 3];
  }
  CtImage *c = ct_image_new_from_gray(gray, 28, 28);
  g_assert_cmpmem(c->pixels, 28 * 28 * 3, a->pixels, 28 * 28 * 3);
  ct_image_free(a);
  ct_image_free(b);
  ct_image_free(c);
  ct_image_free(NULL);
  g_free(data);
}

/* ---------------------------------------------------------------- bad input */

static guint8 *
dup_bytes(const guint8 *p, size_t n)
{
  guint8 *d = g_malloc(n);
  memcpy(d, p, n);
  return d;
}

static guint32
crc32_of(const guint8 *p, size_t n)
{
  guint32 c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    c ^= p[i];
    for (int k = 0; k < 8; k++)
      c = (c >> 1) ^ (0xedb88320u & -(c & 1));
  }
  return ~c;
}

static void
put_be32(guint8 *p, guint32 v)
{
  p[0] = v >> 24;
  p[1] = v >> 16;
  p[2] = v >> 8;
  p[3] = v;
}

/* Recompute the CRC of the PNG chunk starting at OFF. */
static void
fix_crc(guint8 *png, size_t off)
{
  guint32 n = ((guint32)png[off] << 24) | ((guint32)png[off + 1] << 16) |
              ((guint32)png[off + 2] << 8) | png[off + 3];
  put_be32(png + off + 8 + n, crc32_of(png + off + 4, n + 4));
}

/* Offset of the first chunk of KIND. */
static size_t
find_chunk(const guint8 *png, size_t len, const char *kind)
{
  size_t off = 8;
  while (off + 8 <= len) {
    guint32 n = ((guint32)png[off] << 24) | ((guint32)png[off + 1] << 16) |
                ((guint32)png[off + 2] << 8) | png[off + 3];
    if (memcmp(png + off + 4, kind, 4) == 0)
      return off;
    off += 12 + n;
  }
  g_assert_not_reached();
  return 0;
}

static void
expect_format_error(const guint8 *data, size_t len, const char *name, const char *want)
{
  GError *error = NULL;
  CtImage *image = ct_image_decode(data, len, name, &error);
  if (image)
    g_error("%s: decoded a %d x %d image, expected an error (%s)", name, image->width,
            image->height, want);
  g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
  g_test_message("%s -> %s", name, error->message);
  g_assert_true(g_str_has_prefix(error->message, name));
  if (!strstr(error->message, want))
    g_error("%s: message \"%s\" lacks \"%s\"", name, error->message, want);
  g_error_free(error);
}

static void
test_bad_input(void)
{
  size_t png_len, jpg_len, prog_len;
  guint8 *png = read_data("rgb.png", &png_len);
  guint8 *jpg = read_data("baseline.jpg", &jpg_len);
  guint8 *prog = read_data("progressive.jpg", &prog_len);

  expect_format_error((const guint8 *)"", 0, "empty", "not a PNG or JPEG image");
  expect_format_error((const guint8 *)"hello, world\n", 13, "text", "not a PNG or JPEG image");
  guint8 noise[600];
  GRand *r = g_rand_new_with_seed(7);
  for (size_t i = 0; i < sizeof noise; i++)
    noise[i] = (guint8)g_rand_int_range(r, 0, 256);
  noise[0] = 0x42;
  expect_format_error(noise, sizeof noise, "random", "not a PNG or JPEG image");

  /* truncated PNG: in the signature, in IHDR, after IHDR, in IDAT, before
   * IEND, one byte short */
  size_t png_cuts[] = { 4, 7, 8, 20, 33, png_len / 2, png_len - 12, png_len - 1 };
  for (size_t i = 0; i < G_N_ELEMENTS(png_cuts); i++) {
    char *name = g_strdup_printf("rgb.png[:%zu]", png_cuts[i]);
    expect_format_error(png, png_cuts[i], name, "truncated PNG data");
    g_free(name);
  }
  /* bad CRCs: IHDR's, IDAT's */
  guint8 *bad = dup_bytes(png, png_len);
  bad[29] ^= 0x01;
  expect_format_error(bad, png_len, "rgb.png+ihdr-crc", "corrupt PNG: ");
  memcpy(bad, png, png_len);
  size_t idat = find_chunk(png, png_len, "IDAT");
  size_t idat_len = ((size_t)png[idat] << 24) | ((size_t)png[idat + 1] << 16) |
                    ((size_t)png[idat + 2] << 8) | png[idat + 3];
  bad[idat + 8 + idat_len] ^= 0x01; /* the CRC itself: the data inflates fine */
  expect_format_error(bad, png_len, "rgb.png+idat-crc", "IDAT: CRC error");
  memcpy(bad, png, png_len);
  bad[idat + 8 + 5] ^= 0x40; /* the data: zlib fails before the CRC is read */
  expect_format_error(bad, png_len, "rgb.png+idat-data", "corrupt PNG: IDAT");
  /* a broken zlib header under a good CRC */
  memcpy(bad, png, png_len);
  bad[idat + 8] = 0;
  bad[idat + 9] = 0;
  fix_crc(bad, idat);
  expect_format_error(bad, png_len, "rgb.png+zlib", "corrupt PNG: ");
  /* IHDR claiming 0 x 5, and a huge image (both with good CRCs) */
  memcpy(bad, png, png_len);
  put_be32(bad + 16, 0);
  fix_crc(bad, 8);
  expect_format_error(bad, png_len, "rgb.png+zero-width", "corrupt PNG: ");
  memcpy(bad, png, png_len);
  put_be32(bad + 16, 900000);
  put_be32(bad + 20, 900000);
  fix_crc(bad, 8);
  expect_format_error(bad, png_len, "rgb.png+huge", "too large");
  /* IEND replaced by another IDAT-less end: chunk type garbage */
  memcpy(bad, png, png_len);
  memcpy(bad + png_len - 8, "\x01\x02\x03\x04", 4);
  expect_format_error(bad, png_len, "rgb.png+bad-chunk", "corrupt PNG: ");
  g_free(bad);

  /* truncated JPEG: SOI only, in the headers, in the entropy data, no EOI */
  size_t jpg_cuts[] = { 2, 3, 20, 200, jpg_len / 2, jpg_len - 100, jpg_len - 2, jpg_len - 1 };
  for (size_t i = 0; i < G_N_ELEMENTS(jpg_cuts); i++) {
    char *name = g_strdup_printf("baseline.jpg[:%zu]", jpg_cuts[i]);
    expect_format_error(jpg, jpg_cuts[i], name, "truncated JPEG data");
    g_free(name);
  }
  size_t prog_cuts[] = { prog_len / 3, prog_len / 2, prog_len - 2 };
  for (size_t i = 0; i < G_N_ELEMENTS(prog_cuts); i++) {
    char *name = g_strdup_printf("progressive.jpg[:%zu]", prog_cuts[i]);
    expect_format_error(prog, prog_cuts[i], name, "truncated JPEG data");
    g_free(name);
  }
  /* corrupt JPEG: a 12-bit frame, a zero-size frame, no markers at all */
  bad = dup_bytes(jpg, jpg_len);
  size_t sof = 2;
  while (sof + 4 < jpg_len && !(bad[sof] == 0xff && bad[sof + 1] == 0xc0))
    sof++;
  g_assert_cmpuint(sof + 9, <, jpg_len);
  bad[sof + 4] = 12;
  expect_format_error(bad, jpg_len, "baseline.jpg+12-bit", "corrupt JPEG: ");
  memcpy(bad, jpg, jpg_len);
  bad[sof + 5] = bad[sof + 6] = 0; /* height */
  bad[sof + 7] = bad[sof + 8] = 0; /* width */
  expect_format_error(bad, jpg_len, "baseline.jpg+zero-size", "corrupt JPEG: ");
  memset(bad + 2, 0, jpg_len - 2);
  expect_format_error(bad, jpg_len, "baseline.jpg+zeros", "JPEG");
  g_free(bad);

  g_rand_free(r);
  g_free(png);
  g_free(jpg);
  g_free(prog);
}

/* Random byte changes and cuts of good files: each decodes or fails with
 * CT_ERROR_FORMAT, never crashes (valgrind checks the reads). */
static void
test_mutations(void)
{
  const char *files[] = { "rgb.png", "palette4-interlaced.png", "rgb16.png", "baseline.jpg",
                          "progressive.jpg", "grey.jpg" };
  GRand *r = g_rand_new_with_seed(1234);
  int n_ok = 0, n_err = 0;
  for (size_t f = 0; f < G_N_ELEMENTS(files); f++) {
    size_t len;
    guint8 *good = read_data(files[f], &len);
    guint8 *buf = g_malloc(len);
    for (int iter = 0; iter < 60; iter++) {
      memcpy(buf, good, len);
      size_t n = len;
      int edits = g_rand_int_range(r, 1, 6);
      for (int e = 0; e < edits; e++) {
        /* keep the signature so the decoders, not the sniffing, are tested */
        size_t at = (size_t)g_rand_int_range(r, 8, (gint32)len);
        buf[at] = (guint8)g_rand_int_range(r, 0, 256);
      }
      if (g_rand_boolean(r))
        n = (size_t)g_rand_int_range(r, 8, (gint32)len);
      GError *error = NULL;
      CtImage *image = ct_image_decode(buf, n, files[f], &error);
      if (image) {
        g_assert_no_error(error);
        g_assert_cmpint(image->width, >, 0);
        n_ok++;
      } else {
        g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
        g_assert_true(g_str_has_prefix(error->message, files[f]));
        g_error_free(error);
        n_err++;
      }
      ct_image_free(image);
    }
    g_free(buf);
    g_free(good);
  }
  g_test_message("mutations: %d decoded, %d refused", n_ok, n_err);
  g_assert_cmpint(n_err, >, 0);
  g_rand_free(r);
}

static void
test_load_errors(void)
{
  GError *error = NULL;
  char *missing = data_path("no-such-image.png");
  g_assert_null(ct_image_load(missing, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_IO);
  g_assert_nonnull(strstr(error->message, missing));
  g_clear_error(&error);
  g_free(missing);

  char *dir = g_dir_make_tmp("ct-image-XXXXXX", &error);
  g_assert_no_error(error);
  char *path = g_build_filename(dir, "cut.jpg", NULL);
  size_t len;
  guint8 *jpg = read_data("baseline.jpg", &len);
  g_assert_true(g_file_set_contents(path, (const char *)jpg, (gssize)(len / 2), NULL));
  g_assert_null(ct_image_load(path, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
  g_assert_true(g_str_has_prefix(error->message, path));
  g_assert_nonnull(strstr(error->message, "truncated JPEG data"));
  g_clear_error(&error);
  g_assert_null(ct_image_load(dir, &error)); /* a folder */
  g_assert_error(error, CT_ERROR, CT_ERROR_IO);
  g_assert_nonnull(strstr(error->message, dir));
  g_clear_error(&error);
  /* a device that never ends, and a FIFO without a writer: refused at once,
   * neither read until memory runs out nor waited on */
  g_assert_null(ct_image_load("/dev/zero", &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_IO);
  g_assert_cmpstr(error->message, ==,
                  "/dev/zero: not a regular file (a character device), not an image file");
  g_clear_error(&error);
  char *fifo = g_build_filename(dir, "fifo.png", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_assert_null(ct_image_load(fifo, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_IO);
  g_assert_true(g_str_has_prefix(error->message, fifo));
  g_assert_nonnull(strstr(error->message, "not a regular file"));
  g_clear_error(&error);
  g_unlink(fifo);
  g_free(fifo);
  g_unlink(path);
  g_rmdir(dir);
  g_free(path);
  g_free(dir);
  g_free(jpg);
}

/* ---------------------------------------------------------------- transforms */

static void
test_resize_center_crop(void)
{
  static const struct {
    const char *file;
    int size;
  } cases[] = {
    { "fmnist.png", 224 }, /* 28 x 28 grey, upscaled 8x */
    { "wide.png", 32 },    /* 98 x 61 -> 51 x 32, crop left round(9.5) = 10 */
    { "tall.png", 32 },    /* 61 x 95 -> 32 x 49, crop top round(8.5) = 8 */
    { "big.png", 24 },     /* 128 x 96 -> 32 x 24, 4x antialiased */
    { "wide.png", 61 },    /* 98 x 61 -> 98 x 61: no resize, crop only */
    { "photo.jpg", 224 },  /* 500 x 375 -> 298 x 224 */
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    int size = cases[i].size;
    CtImage *image = load(cases[i].file);
    char *key = g_strdup_printf("rcc/%s/%d", cases[i].file, size);
    CtImage *u8 = ct_image_resize_center_crop_u8(image, size);
    g_assert_cmpint(u8->width, ==, size);
    g_assert_cmpint(u8->height, ==, size);
    char *k_u8 = g_strconcat(key, "/u8", NULL);
    char *k_sha = g_strconcat(key, "/sha256", NULL);
    if (ct_safetensors_find(ref, k_u8)) {
      g_assert_cmpuint(check_u8(u8, k_u8, 0), ==, 0);
    } else {
      const char *want = ct_safetensors_metadata(ref, k_sha);
      g_assert_nonnull(want);
      char *got = g_compute_checksum_for_data(G_CHECKSUM_SHA256, u8->pixels,
                                              (gsize)size * size * 3);
      g_assert_cmpstr(got, ==, want);
      g_free(got);
    }
    float *out = g_new(float, (size_t)3 * size * size);
    ct_image_resize_center_crop(image, size, clip_mean, clip_std, out);
    char *k_f32 = g_strconcat(key, "/f32", NULL);
    char *k_rows = g_strconcat(key, "/f32rows", NULL);
    char *k_row0 = g_strconcat(key, "/row0", NULL);
    if (ct_safetensors_find(ref, k_f32))
      check_f32(out, size, size, 0, k_f32);
    if (ct_safetensors_find(ref, k_rows))
      check_f32(out, size, size, atoi(ct_safetensors_metadata(ref, k_row0)), k_rows);
    /* the floats are exactly the normalised bytes */
    float *again = g_new(float, (size_t)3 * size * size);
    ct_image_normalize(u8, FALSE, clip_mean, clip_std, again);
    g_assert_cmpmem(out, sizeof(float) * 3 * size * size, again,
                    sizeof(float) * 3 * size * size);
    g_free(again);
    g_free(out);
    g_free(k_u8);
    g_free(k_sha);
    g_free(k_f32);
    g_free(k_rows);
    g_free(k_row0);
    g_free(key);
    ct_image_free(u8);
    ct_image_free(image);
  }
}

static void
test_crop_boxes(void)
{
  for (int k = 0;; k++) {
    char *key = g_strdup_printf("crop/%d/box", k);
    if (!ct_safetensors_find(ref, key)) {
      g_assert_cmpint(k, >=, 6);
      g_free(key);
      break;
    }
    int64_t box[5];
    GError *error = NULL;
    g_assert_true(ct_safetensors_read_i64(ref, key, box, 5, &error));
    g_free(key);
    key = g_strdup_printf("crop/%d/file", k);
    const char *file = ct_safetensors_metadata(ref, key);
    g_assert_nonnull(file);
    g_free(key);
    CtImage *image = load(file);
    int size = (int)box[4];
    CtImage *u8 = ct_image_resized_crop_u8(image, (int)box[0], (int)box[1], (int)box[2],
                                           (int)box[3], size, size);
    key = g_strdup_printf("crop/%d/u8", k);
    g_test_message("%s: %s box top %d left %d %d x %d -> %d", key, file, (int)box[0],
                   (int)box[1], (int)box[3], (int)box[2], size);
    g_assert_cmpuint(check_u8(u8, key, 0), ==, 0);
    g_free(key);
    key = g_strdup_printf("crop/%d/f32", k);
    if (ct_safetensors_find(ref, key)) {
      float *out = g_new(float, (size_t)3 * size * size);
      ct_image_normalize(u8, FALSE, clip_mean, clip_std, out);
      check_f32(out, size, size, 0, key);
      g_free(out);
    }
    g_free(key);
    ct_image_free(u8);
    ct_image_free(image);
  }
}

/* A box of the whole image at the same size is the identity. */
static void
test_identity(void)
{
  CtImage *image = load("rgb.png");
  CtImage *same =
    ct_image_resized_crop_u8(image, 0, 0, image->height, image->width, image->width,
                             image->height);
  g_assert_cmpmem(same->pixels, (size_t)image->width * image->height * 3, image->pixels,
                  (size_t)image->width * image->height * 3);
  ct_image_free(same);
  ct_image_free(image);
}

static gboolean
box_ok(const CtImage *image, int top, int left, int h, int w)
{
  return top >= 0 && left >= 0 && h > 0 && w > 0 && top + h <= image->height &&
         left + w <= image->width;
}

static void
test_rrc_boxes(void)
{
  static const int shapes[][2] = { { 98, 61 }, { 61, 95 }, { 1, 100 }, { 100, 1 },
                                   { 5, 5 },   { 28, 28 }, { 500, 375 } };
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    CtImage *image = ct_image_new(shapes[s][0], shapes[s][1]);
    for (uint64_t seed = 0; seed < 300; seed++) {
      CtRng rng;
      ct_rng_init(&rng, seed);
      int top, left, h, w;
      ct_image_random_resized_crop_box(image, 0.08, 3.0 / 4, 4.0 / 3, &rng, &top, &left, &h,
                                       &w);
      if (!box_ok(image, top, left, h, w))
        g_error("%d x %d seed %" G_GUINT64_FORMAT ": box top %d left %d %d x %d", image->width,
                image->height, seed, top, left, w, h);
      /* either a try that fits, with the area and ratio in range (up to
       * rounding), or the central fallback */
      double area = (double)w * h / ((double)image->width * image->height);
      gboolean central = top == (image->height - h) / 2 && left == (image->width - w) / 2;
      if (!central && MIN(image->width, image->height) >= 28) {
        g_assert_cmpfloat(area, <=, 1.0);
        g_assert_cmpfloat(area, >=, 0.08 * 0.7);
      }
    }
    ct_image_free(image);
  }
  CtRng rng;
  int top, left, h, w;
  /* fallbacks: a 1 x 100 column and a 100 x 1 row never fit 3/4 .. 4/3 */
  CtImage *col = ct_image_new(1, 100), *row = ct_image_new(100, 1);
  ct_rng_init(&rng, 5);
  ct_image_random_resized_crop_box(col, 0.08, 3.0 / 4, 4.0 / 3, &rng, &top, &left, &h, &w);
  g_assert_cmpint(top, ==, 49);
  g_assert_cmpint(left, ==, 0);
  g_assert_cmpint(h, ==, 1); /* round(1 / (3/4)) */
  g_assert_cmpint(w, ==, 1);
  ct_image_random_resized_crop_box(row, 0.08, 3.0 / 4, 4.0 / 3, &rng, &top, &left, &h, &w);
  g_assert_cmpint(top, ==, 0);
  g_assert_cmpint(left, ==, 49);
  g_assert_cmpint(h, ==, 1);
  g_assert_cmpint(w, ==, 1); /* round(1 * 4/3) */
  ct_image_free(col);
  ct_image_free(row);
  /* scale (1, 1) at the image's own ratio: the whole image */
  CtImage *wide = ct_image_new(98, 61);
  ct_rng_init(&rng, 9);
  ct_image_random_resized_crop_box(wide, 1.0, 98.0 / 61, 98.0 / 61, &rng, &top, &left, &h, &w);
  g_assert_cmpint(top, ==, 0);
  g_assert_cmpint(left, ==, 0);
  g_assert_cmpint(h, ==, 61);
  g_assert_cmpint(w, ==, 98);
  ct_image_free(wide);
}

static void
test_rrc_deterministic(void)
{
  CtImage *image = load("wide.png");
  size_t n = 3 * 32 * 32;
  float *a = g_new(float, n), *b = g_new(float, n);
  CtRng r1, r2;
  ct_rng_init(&r1, 42);
  ct_rng_init(&r2, 42);
  for (int i = 0; i < 20; i++) {
    ct_image_random_resized_crop(image, 32, 0.08, 3.0 / 4, 4.0 / 3, TRUE, &r1, clip_mean,
                                 clip_std, a);
    ct_image_random_resized_crop(image, 32, 0.08, 3.0 / 4, 4.0 / 3, TRUE, &r2, clip_mean,
                                 clip_std, b);
    g_assert_cmpmem(a, n * sizeof(float), b, n * sizeof(float));
    g_assert_cmpmem(&r1, sizeof r1, &r2, sizeof r2);
  }
  g_free(a);
  g_free(b);
  ct_image_free(image);
}

/* The output is the box resized and normalised, mirrored exactly when
 * the draw after the box's is below 0.5; without HFLIP nothing more is
 * drawn and nothing is mirrored. */
static void
test_rrc_flip(void)
{
  CtImage *image = load("tall.png");
  const int size = 24;
  size_t n = (size_t)3 * size * size;
  float *out = g_new(float, n), *want = g_new(float, n), *plain = g_new(float, n);
  int n_flips = 0;
  for (uint64_t seed = 0; seed < 200; seed++) {
    for (int hflip = 0; hflip <= 1; hflip++) {
      CtRng rng, mirror;
      ct_rng_init(&rng, seed);
      ct_rng_init(&mirror, seed);
      ct_image_random_resized_crop(image, size, 0.3, 0.5, 2.0, hflip, &rng, clip_mean, clip_std,
                                   out);
      int top, left, h, w;
      ct_image_random_resized_crop_box(image, 0.3, 0.5, 2.0, &mirror, &top, &left, &h, &w);
      gboolean flip = hflip && ct_rng_uniform(&mirror) < 0.5;
      g_assert_cmpmem(&rng, sizeof rng, &mirror, sizeof mirror);
      CtImage *u8 = ct_image_resized_crop_u8(image, top, left, h, w, size, size);
      ct_image_normalize(u8, flip, clip_mean, clip_std, want);
      g_assert_cmpmem(out, n * sizeof(float), want, n * sizeof(float));
      if (flip) {
        n_flips++;
        ct_image_normalize(u8, FALSE, clip_mean, clip_std, plain);
        for (int c = 0; c < 3; c++)
          for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
              g_assert_cmpfloat(out[(c * size + y) * size + x], ==,
                                plain[(c * size + y) * size + size - 1 - x]);
      }
      ct_image_free(u8);
    }
  }
  g_test_message("%d flips in 200", n_flips);
  g_assert_cmpint(n_flips, >, 60);
  g_assert_cmpint(n_flips, <, 140);
  g_free(out);
  g_free(want);
  g_free(plain);
  ct_image_free(image);
}

/* ---------------------------------------------------------------- throughput */

static double
images_per_second(const guint8 *data, size_t len, const char *name, double seconds)
{
  float *out = g_new(float, 3 * 224 * 224);
  int n = 0;
  gint64 t0 = g_get_monotonic_time(), t;
  do {
    CtImage *image = ct_image_decode(data, len, name, NULL);
    g_assert_nonnull(image);
    ct_image_resize_center_crop(image, 224, clip_mean, clip_std, out);
    ct_image_free(image);
    n++;
    t = g_get_monotonic_time();
  } while (t - t0 < seconds * 1e6);
  g_free(out);
  return n / ((t - t0) / 1e6);
}

static void
test_bench(void)
{
  const char *files[] = { "fmnist.png", "photo.jpg" };
  for (size_t i = 0; i < G_N_ELEMENTS(files); i++) {
    size_t len;
    guint8 *data = read_data(files[i], &len);
    double ips = images_per_second(data, len, files[i], 2.0);
    /* decode alone */
    int n = 0;
    gint64 t0 = g_get_monotonic_time(), t;
    do {
      ct_image_free(ct_image_decode(data, len, files[i], NULL));
      n++;
      t = g_get_monotonic_time();
    } while (t - t0 < 1e6);
    double dps = n / ((t - t0) / 1e6);
    g_test_minimized_result(1.0 / ips, "%s", files[i]);
    g_printerr("%s -> 224: %.0f images/s decode + resize + crop + normalise "
               "(decode alone %.0f/s), one thread\n",
               files[i], ips, dps);
    g_free(data);
  }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  const char *env = g_getenv("CT_TEST_DATA");
  datadir = env ? g_build_filename(env, "images", NULL)
                : g_test_build_filename(G_TEST_DIST, "..", "data", "images", NULL);
  char *ref_path = g_build_filename(datadir, "ref.safetensors", NULL);
  GError *error = NULL;
  ref = ct_safetensors_open(ref_path, &error);
  g_assert_no_error(error);
  g_free(ref_path);

  g_test_add_func("/image/decode-png", test_decode_png);
  g_test_add_func("/image/decode-jpeg", test_decode_jpeg);
  g_test_add_func("/image/decode-memory-gray", test_decode_memory_and_gray);
  g_test_add_func("/image/bad-input", test_bad_input);
  g_test_add_func("/image/mutations", test_mutations);
  g_test_add_func("/image/load-errors", test_load_errors);
  g_test_add_func("/image/resize-center-crop", test_resize_center_crop);
  g_test_add_func("/image/crop-boxes", test_crop_boxes);
  g_test_add_func("/image/identity", test_identity);
  g_test_add_func("/image/rrc-boxes", test_rrc_boxes);
  g_test_add_func("/image/rrc-deterministic", test_rrc_deterministic);
  g_test_add_func("/image/rrc-flip", test_rrc_flip);
  if (g_test_perf())
    g_test_add_func("/image/bench", test_bench);
  int rc = g_test_run();
  ct_safetensors_free(ref);
  g_free(datadir);
  return rc;
}

/* test-sources.c: the four sample sources (IDX, image folder, CSV/TSV,
 * webdataset shards): contents, ordering, errors, truncated input and
 * concurrent get().  Fixtures are built in a temporary folder from the
 * small images in tests/data/sources (see tests/torch/gen_source_fixtures.py). */
#include "config.h"

#include "data/source.h"
#include "test-util.h"

#include <string.h>

#include <archive.h>
#include <archive_entry.h>
#include <gio/gio.h>
#include <glib/gstdio.h>

/* ---------------------------------------------------------------- helpers */

static void
rm_rf(const char *path)
{
  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    GDir *d = g_dir_open(path, 0, NULL);
    g_assert_nonnull(d);
    const char *name;
    while ((name = g_dir_read_name(d))) {
      char *p = g_build_filename(path, name, NULL);
      rm_rf(p);
      g_free(p);
    }
    g_dir_close(d);
    g_assert_cmpint(g_rmdir(path), ==, 0);
  } else {
    g_assert_cmpint(g_unlink(path), ==, 0);
  }
}

/* The path of fixture NAME.  (transfer full) */
static char *
fixture(const char *name)
{
  const char *data = g_getenv("CT_TEST_DATA");
  if (data)
    return g_build_filename(data, "sources", name, NULL);
  return g_test_build_filename(G_TEST_DIST, "..", "data", "sources", name, NULL);
}

static GBytes *
fixture_bytes(const char *name)
{
  char *p = fixture(name);
  char *d;
  gsize n;
  GError *err = NULL;
  g_file_get_contents(p, &d, &n, &err);
  g_assert_no_error(err);
  g_free(p);
  return g_bytes_new_take(d, n);
}

static void
write_file(const char *path, const void *data, gsize len)
{
  char *dir = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  g_free(dir);
  GError *err = NULL;
  g_file_set_contents(path, data, (gssize)len, &err);
  g_assert_no_error(err);
}

static void
write_text(const char *path, const char *text)
{
  write_file(path, text, strlen(text));
}

/* Copies fixture NAME to DIR/REL (folders made as needed). */
static void
put_fixture(const char *dir, const char *rel, const char *name)
{
  GBytes *b = fixture_bytes(name);
  char *p = g_build_filename(dir, rel, NULL);
  gsize n;
  const void *d = g_bytes_get_data(b, &n);
  write_file(p, d, n);
  g_free(p);
  g_bytes_unref(b);
}

/* ERR has CODE, is one line, starts with PREFIX and contains S1 and S2. */
static void
check_error(const GError *err, gint code, const char *prefix, const char *s1, const char *s2)
{
  g_assert_nonnull(err);
  g_test_message("error: %s", err->message);
  g_assert_error(err, CT_ERROR, code);
  if (prefix && !g_str_has_prefix(err->message, prefix))
    g_error("'%s' does not start with '%s'", err->message, prefix);
  g_assert_null(strchr(err->message, '\n'));
  if (s1 && !strstr(err->message, s1))
    g_error("'%s' does not contain '%s'", err->message, s1);
  if (s2 && !strstr(err->message, s2))
    g_error("'%s' does not contain '%s'", err->message, s2);
}

/* rgbK.png: 3x2, pixel (x, y) = (40K + 10x, 50y + 5, 200 - 30K). */
static void
check_rgb(const CtImage *im, int k)
{
  g_assert_nonnull(im);
  g_assert_cmpint(im->width, ==, 3);
  g_assert_cmpint(im->height, ==, 2);
  for (int y = 0; y < 2; y++)
    for (int x = 0; x < 3; x++) {
      const uint8_t *p = im->pixels + ((size_t)y * 3 + (size_t)x) * 3;
      g_assert_cmpint(p[0], ==, 40 * k + 10 * x);
      g_assert_cmpint(p[1], ==, 50 * y + 5);
      g_assert_cmpint(p[2], ==, 200 - 30 * k);
    }
}

/* gray.png: 2x2 grey [0, 85; 170, 255] as RGB. */
static void
check_gray(const CtImage *im)
{
  g_assert_nonnull(im);
  g_assert_cmpint(im->width, ==, 2);
  g_assert_cmpint(im->height, ==, 2);
  static const int v[4] = { 0, 85, 170, 255 };
  for (int i = 0; i < 4; i++)
    for (int c = 0; c < 3; c++)
      g_assert_cmpint(im->pixels[i * 3 + c], ==, v[i]);
}

/* Gets sample I, which must succeed. */
static void
get_ok(CtSource *src, size_t i, CtImage **image, char **caption, int *label)
{
  GError *err = NULL;
  gboolean ok = ct_source_get(src, i, image, caption, label, &err);
  g_assert_no_error(err);
  g_assert_true(ok);
}

static void
check_rgb_sample(CtSource *src, size_t i, int k, const char *caption, int label)
{
  CtImage *im = NULL;
  char *cap = (char *)"unset";
  int l = -7;
  get_ok(src, i, &im, &cap, &l);
  check_rgb(im, k);
  g_assert_cmpstr(cap, ==, caption);
  g_assert_cmpint(l, ==, label);
  ct_image_free(im);
  g_free(cap);
}

static void
check_get_out_of_range(CtSource *src)
{
  GError *err = NULL;
  CtImage *im = NULL;
  char *cap = NULL;
  int l;
  g_assert_false(ct_source_get(src, ct_source_len(src), &im, &cap, &l, &err));
  check_error(err, CT_ERROR_INVALID, NULL, "out of range", NULL);
  g_error_free(err);
  g_assert_null(im);
}

/* ---------------------------------------------------------------- idx */

static GBytes *
gzip_bytes(const void *data, gsize len)
{
  GZlibCompressor *z = g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP, 9);
  GByteArray *out = g_byte_array_new();
  guint8 buf[4096];
  gsize in_pos = 0;
  for (;;) {
    gsize nread = 0, nwritten = 0;
    GError *err = NULL;
    GConverterResult r =
        g_converter_convert(G_CONVERTER(z), (const guint8 *)data + in_pos, len - in_pos, buf,
                            sizeof buf, G_CONVERTER_INPUT_AT_END, &nread, &nwritten, &err);
    g_assert_no_error(err);
    in_pos += nread;
    g_byte_array_append(out, buf, (guint)nwritten);
    if (r == G_CONVERTER_FINISHED)
      break;
  }
  g_object_unref(z);
  return g_byte_array_free_to_bytes(out);
}

static void
put_be32(GByteArray *b, guint32 v)
{
  guint8 p[4] = { (guint8)(v >> 24), (guint8)(v >> 16), (guint8)(v >> 8), (guint8)v };
  g_byte_array_append(b, p, 4);
}

/* IDX images: N images HxW with pixel (i, y, x) = 10i + 3y + x. */
static GByteArray *
idx_images(guint32 magic, guint32 n, guint32 h, guint32 w)
{
  GByteArray *b = g_byte_array_new();
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, h);
  put_be32(b, w);
  for (guint32 i = 0; i < n; i++)
    for (guint32 y = 0; y < h; y++)
      for (guint32 x = 0; x < w; x++) {
        guint8 v = (guint8)(10 * i + 3 * y + x);
        g_byte_array_append(b, &v, 1);
      }
  return b;
}

static GByteArray *
idx_labels(guint32 magic, guint32 n, const guint8 *labels)
{
  GByteArray *b = g_byte_array_new();
  put_be32(b, magic);
  put_be32(b, n);
  g_byte_array_append(b, labels, n);
  return b;
}

static void
write_bytes(const char *path, GByteArray *b, gboolean gz)
{
  if (gz) {
    GBytes *z = gzip_bytes(b->data, b->len);
    gsize n;
    const void *d = g_bytes_get_data(z, &n);
    write_file(path, d, n);
    g_bytes_unref(z);
  } else {
    write_file(path, b->data, b->len);
  }
  g_byte_array_unref(b);
}

static const guint8 idx_test_labels[3] = { 2, 0, 1 };

static void
check_idx_source(CtSource *src)
{
  g_assert_cmpuint(ct_source_len(src), ==, 3);
  for (size_t i = 0; i < 3; i++) {
    CtImage *im = NULL;
    char *cap = (char *)"unset";
    int l = -7;
    get_ok(src, i, &im, &cap, &l);
    g_assert_null(cap);
    g_assert_cmpint(l, ==, idx_test_labels[i]);
    g_assert_cmpint(im->width, ==, 3);
    g_assert_cmpint(im->height, ==, 2);
    for (int y = 0; y < 2; y++)
      for (int x = 0; x < 3; x++)
        for (int c = 0; c < 3; c++)
          g_assert_cmpint(im->pixels[((size_t)y * 3 + (size_t)x) * 3 + (size_t)c], ==,
                          10 * (int)i + 3 * y + x);
    ct_image_free(im);
  }
  check_get_out_of_range(src);
}

static void
test_idx(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *img = g_build_filename(dir, "images-idx3-ubyte.gz", NULL);
  char *lab = g_build_filename(dir, "labels-idx1-ubyte.gz", NULL);
  char *lab_raw = g_build_filename(dir, "labels-idx1-ubyte", NULL);
  write_bytes(img, idx_images(0x803, 3, 2, 3), TRUE);
  write_bytes(lab, idx_labels(0x801, 3, idx_test_labels), TRUE);
  write_bytes(lab_raw, idx_labels(0x801, 3, idx_test_labels), FALSE);

  static const char *const names[] = { "zero", "one", "two", NULL };
  GError *err = NULL;
  CtSource *src = ct_source_idx_new(img, lab, names, &err);
  g_assert_no_error(err);
  check_idx_source(src);
  g_assert_cmpuint(g_strv_length(src->class_names), ==, 3);
  g_assert_cmpstr(src->class_names[0], ==, "zero");
  g_assert_cmpstr(src->class_names[2], ==, "two");
  ct_source_free(src);

  /* Default names, and a plain (not gzipped) labels file. */
  src = ct_source_idx_new(img, lab_raw, NULL, &err);
  g_assert_no_error(err);
  check_idx_source(src);
  g_assert_cmpuint(g_strv_length(src->class_names), ==, 3);
  g_assert_cmpstr(src->class_names[0], ==, "0");
  g_assert_cmpstr(src->class_names[1], ==, "1");
  g_assert_cmpstr(src->class_names[2], ==, "2");
  /* A label-only get skips the image. */
  int l = -1;
  get_ok(src, 0, NULL, NULL, &l);
  g_assert_cmpint(l, ==, 2);
  ct_source_free(src);

  g_free(img);
  g_free(lab);
  g_free(lab_raw);
  rm_rf(dir);
  g_free(dir);
}

static void
expect_idx_error(const char *images, const char *labels, const char *const *names, gint code,
                 const char *prefix, const char *s1, const char *s2)
{
  GError *err = NULL;
  CtSource *src = ct_source_idx_new(images, labels, names, &err);
  g_assert_null(src);
  check_error(err, code, prefix, s1, s2);
  g_error_free(err);
}

static void
test_idx_errors(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *img = g_build_filename(dir, "img.gz", NULL);
  char *lab = g_build_filename(dir, "lab.gz", NULL);
  char *bad = g_build_filename(dir, "bad.gz", NULL);
  char *missing = g_build_filename(dir, "missing.gz", NULL);
  write_bytes(img, idx_images(0x803, 3, 2, 3), TRUE);
  write_bytes(lab, idx_labels(0x801, 3, idx_test_labels), TRUE);

  expect_idx_error(missing, lab, NULL, CT_ERROR_IO, missing, "No such file", NULL);
  expect_idx_error(img, missing, NULL, CT_ERROR_IO, missing, NULL, NULL);

  /* Bad magic, both ways round. */
  write_bytes(bad, idx_images(0x801, 3, 2, 3), TRUE);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "magic 0x00000801", NULL);
  expect_idx_error(img, img, NULL, CT_ERROR_FORMAT, img, "magic 0x00000803", "labels");

  /* Truncated raw data: the header promises more than the file holds. */
  GByteArray *b = idx_images(0x803, 3, 2, 3);
  g_byte_array_set_size(b, b->len - 1);
  write_bytes(bad, b, TRUE);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "truncated", NULL);
  b = idx_labels(0x801, 3, idx_test_labels);
  g_byte_array_set_size(b, b->len - 2);
  write_bytes(bad, b, FALSE);
  expect_idx_error(img, bad, NULL, CT_ERROR_FORMAT, bad, "truncated", NULL);
  /* A header alone is too short. */
  b = idx_images(0x803, 3, 2, 3);
  g_byte_array_set_size(b, 10);
  write_bytes(bad, b, FALSE);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "too short", NULL);
  /* Trailing bytes. */
  b = idx_images(0x803, 3, 2, 3);
  g_byte_array_append(b, (const guint8 *)"xx", 2);
  write_bytes(bad, b, FALSE);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "bytes", NULL);

  /* Truncated gzip stream. */
  b = idx_images(0x803, 3, 2, 3);
  GBytes *z = gzip_bytes(b->data, b->len);
  g_byte_array_unref(b);
  gsize zn;
  const guint8 *zd = g_bytes_get_data(z, &zn);
  write_file(bad, zd, zn - 12);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "truncated gzip", NULL);
  /* Corrupt gzip stream. */
  guint8 *zc = g_malloc(zn);
  memcpy(zc, zd, zn);
  for (gsize i = 10; i < zn - 8; i++)
    zc[i] ^= 0x5a;
  write_file(bad, zc, zn);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "gzip", NULL);
  g_free(zc);
  g_bytes_unref(z);

  /* Count mismatch. */
  static const guint8 four[4] = { 0, 1, 2, 0 };
  write_bytes(bad, idx_labels(0x801, 4, four), TRUE);
  expect_idx_error(img, bad, NULL, CT_ERROR_FORMAT, bad, "4 labels", "3 images");

  /* A label with no class name. */
  static const char *const two_names[] = { "a", "b", NULL };
  expect_idx_error(img, lab, two_names, CT_ERROR_FORMAT, lab, "index 0: label 2", NULL);

  /* Zero images. */
  write_bytes(bad, idx_images(0x803, 0, 2, 3), FALSE);
  char *lab0 = g_build_filename(dir, "lab0", NULL);
  write_bytes(lab0, idx_labels(0x801, 0, NULL), FALSE);
  expect_idx_error(bad, lab0, NULL, CT_ERROR_MISSING, bad, "no images", NULL);
  /* Zero-sized images. */
  write_bytes(bad, idx_images(0x803, 3, 0, 3), FALSE);
  expect_idx_error(bad, lab, NULL, CT_ERROR_FORMAT, bad, "bad image size", NULL);

  g_free(lab0);
  g_free(img);
  g_free(lab);
  g_free(bad);
  g_free(missing);
  rm_rf(dir);
  g_free(dir);
}

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

static void
test_idx_fashion_mnist(void)
{
  const char *images = FASHION_DIR "/t10k-images-idx3-ubyte.gz";
  const char *labels = FASHION_DIR "/t10k-labels-idx1-ubyte.gz";
  if (!g_file_test(images, G_FILE_TEST_EXISTS) || !g_file_test(labels, G_FILE_TEST_EXISTS)) {
    g_test_skip("Fashion-MNIST is not in " FASHION_DIR);
    return;
  }
  static const char *const names[] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                       "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
                                       NULL };
  GError *err = NULL;
  CtSource *src = ct_source_idx_new(images, labels, names, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(src), ==, 10000);
  int counts[10] = { 0 };
  for (size_t i = 0; i < 10000; i++) {
    int l = -1;
    get_ok(src, i, NULL, NULL, &l);
    g_assert_cmpint(l, >=, 0);
    g_assert_cmpint(l, <=, 9);
    counts[l]++;
  }
  for (int c = 0; c < 10; c++)
    g_assert_cmpint(counts[c], ==, 1000);
  /* The first labels, and image 0's pixel sum, from Python's gzip module. */
  static const int first[10] = { 9, 2, 1, 1, 6, 1, 4, 6, 5, 7 };
  for (size_t i = 0; i < 10; i++) {
    CtImage *im = NULL;
    int l = -1;
    get_ok(src, i, &im, NULL, &l);
    g_assert_cmpint(l, ==, first[i]);
    g_assert_cmpint(im->width, ==, 28);
    g_assert_cmpint(im->height, ==, 28);
    if (i == 0) {
      long sum = 0;
      for (int p = 0; p < 28 * 28; p++) {
        g_assert_cmpint(im->pixels[p * 3], ==, im->pixels[p * 3 + 1]);
        sum += im->pixels[p * 3];
      }
      g_assert_cmpint(sum, ==, 33456);
    }
    ct_image_free(im);
  }
  g_assert_cmpstr(src->class_names[9], ==, "Ankle boot");
  ct_source_free(src);
}

/* ---------------------------------------------------------------- folder */

static void
test_folder(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  put_fixture(dir, "dog/c.PNG", "rgb2.png");
  put_fixture(dir, "cat/b.png", "rgb1.png");
  put_fixture(dir, "cat/a.png", "rgb0.png");
  put_fixture(dir, "cat/photo.jpeg", "photo.jpg");
  put_fixture(dir, "cat/.hidden.png", "rgb3.png");
  put_fixture(dir, ".cache/x.png", "rgb3.png");
  put_fixture(dir, "dog/deeper/y.png", "rgb3.png");
  char *p = g_build_filename(dir, "notes.txt", NULL);
  write_text(p, "not a class");
  g_free(p);
  p = g_build_filename(dir, "dog", "notes.txt", NULL);
  write_text(p, "not an image");
  g_free(p);
  p = g_build_filename(dir, "ant", NULL); /* a class with no image keeps its index */
  g_assert_cmpint(g_mkdir(p, 0755), ==, 0);
  g_free(p);

  GError *err = NULL;
  CtSource *src = ct_source_image_folder_new(dir, NULL, &err);
  g_assert_no_error(err);
  g_assert_nonnull(src->class_names);
  g_assert_cmpuint(g_strv_length(src->class_names), ==, 3);
  g_assert_cmpstr(src->class_names[0], ==, "ant");
  g_assert_cmpstr(src->class_names[1], ==, "cat");
  g_assert_cmpstr(src->class_names[2], ==, "dog");
  g_assert_cmpuint(ct_source_len(src), ==, 4);
  check_rgb_sample(src, 0, 0, NULL, 1); /* cat/a.png */
  check_rgb_sample(src, 1, 1, NULL, 1); /* cat/b.png */
  CtImage *im = NULL;
  int l = -1;
  get_ok(src, 2, &im, NULL, &l); /* cat/photo.jpeg */
  g_assert_cmpint(l, ==, 1);
  g_assert_cmpint(im->width, ==, 8);
  g_assert_cmpint(im->height, ==, 6);
  ct_image_free(im);
  check_rgb_sample(src, 3, 2, NULL, 2); /* dog/c.PNG */
  check_get_out_of_range(src);
  ct_source_free(src);
  rm_rf(dir);
  g_free(dir);
}

static void
test_folder_split(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  put_fixture(dir, "train/3/a.png", "rgb0.png");
  put_fixture(dir, "train/3/b.png", "rgb1.png");
  put_fixture(dir, "train/7/c.png", "rgb2.png");
  put_fixture(dir, "valid/3/d.png", "rgb3.png");
  put_fixture(dir, "valid/7/e.png", "gray.png");
  put_fixture(dir, "test/f.png", "rgb0.png");
  GError *err = NULL;

  CtSource *train = ct_source_image_folder_new(dir, "train", &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(train), ==, 3);
  g_assert_cmpuint(g_strv_length(train->class_names), ==, 2);
  g_assert_cmpstr(train->class_names[0], ==, "3");
  g_assert_cmpstr(train->class_names[1], ==, "7");
  check_rgb_sample(train, 0, 0, NULL, 0);
  check_rgb_sample(train, 1, 1, NULL, 0);
  check_rgb_sample(train, 2, 2, NULL, 1);
  ct_source_free(train);

  CtSource *valid = ct_source_image_folder_new(dir, "valid", &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(valid), ==, 2);
  check_rgb_sample(valid, 0, 3, NULL, 0);
  CtImage *im = NULL;
  int l = -1;
  get_ok(valid, 1, &im, NULL, &l);
  check_gray(im);
  g_assert_cmpint(l, ==, 1);
  ct_image_free(im);
  ct_source_free(valid);

  /* Without the split level, the splits are the classes, and only
   * test/f.png sits directly in one. */
  CtSource *all = ct_source_image_folder_new(dir, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(all), ==, 1);
  g_assert_cmpuint(g_strv_length(all->class_names), ==, 3);
  g_assert_cmpstr(all->class_names[0], ==, "test");
  g_assert_cmpstr(all->class_names[1], ==, "train");
  g_assert_cmpstr(all->class_names[2], ==, "valid");
  check_rgb_sample(all, 0, 0, NULL, 0);
  ct_source_free(all);

  CtSource *none = ct_source_image_folder_new(dir, "nosuch", &err);
  g_assert_null(none);
  char *want = g_build_filename(dir, "nosuch", NULL);
  check_error(err, CT_ERROR_IO, want, "No such file", NULL);
  g_free(want);
  g_clear_error(&err);
  rm_rf(dir);
  g_free(dir);
}

static void
test_folder_errors(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  GError *err = NULL;
  /* Empty root. */
  CtSource *src = ct_source_image_folder_new(dir, NULL, &err);
  g_assert_null(src);
  char *want = g_strconcat(dir, "/: no images found (looked for ROOT/<class>/*.png|jpg|jpeg)",
                           NULL);
  g_assert_nonnull(err);
  g_assert_cmpstr(err->message, ==, want);
  g_free(want);
  g_assert_error(err, CT_ERROR, CT_ERROR_MISSING);
  g_clear_error(&err);

  /* Class folders without images, and images without class folders. */
  put_fixture(dir, "train/a/readme.txt", "rgb0.png");
  put_fixture(dir, "train/loose.png", "rgb0.png");
  src = ct_source_image_folder_new(dir, "train", &err);
  g_assert_null(src);
  check_error(err, CT_ERROR_MISSING, dir, "no images found",
              "ROOT/train/<class>/*.png|jpg|jpeg");
  g_clear_error(&err);

  /* A corrupt image fails in get(), naming its path. */
  put_fixture(dir, "train/a/bad.png", "corrupt.png");
  src = ct_source_image_folder_new(dir, "train", &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(src), ==, 1);
  CtImage *im = NULL;
  int l = 5;
  g_assert_false(ct_source_get(src, 0, &im, NULL, &l, &err));
  char *bad = g_build_filename(dir, "train", "a", "bad.png", NULL);
  check_error(err, CT_ERROR_FORMAT, NULL, bad, NULL);
  g_clear_error(&err);
  g_free(bad);
  g_assert_null(im);
  ct_source_free(src);
  rm_rf(dir);
  g_free(dir);
}

/* ---------------------------------------------------------------- csv */

static CtSource *
open_csv(const char *path, char sep, const char *img_col, const char *cap_col)
{
  GError *err = NULL;
  CtSource *src = ct_source_csv_new(path, sep, img_col, cap_col, &err);
  g_assert_no_error(err);
  g_assert_nonnull(src);
  g_assert_null(src->class_names);
  return src;
}

static void
test_csv(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  put_fixture(dir, "data/img/rgb0.png", "rgb0.png");
  put_fixture(dir, "data/img/rgb1.png", "rgb1.png");
  put_fixture(dir, "data/img/rgb2.png", "rgb2.png");
  put_fixture(dir, "data/img/rgb3.png", "rgb3.png");
  put_fixture(dir, "data/img/gray.png", "gray.png");
  char *abs_img = g_build_filename(dir, "data", "img", "rgb3.png", NULL);
  char *csv = g_build_filename(dir, "data", "train.csv", NULL);
  char *text = g_strconcat(
      "\xEF\xBB\xBF" "id,filepath,title\r\n",
      "1,img/rgb0.png,\"A cat, sitting\"\r\n",
      "2,img/rgb1.png,\"She said \"\"hi\"\"\"\r\n",
      "\r\n",
      "3,\"img/rgb2.png\",\"two\r\nlines\"\r\n",
      "4,", abs_img, ",\xC3\xA9t\xC3\xA9 \"\r\n", /* unquoted: the quote is literal */
      "5,img/gray.png,", /* empty caption, no final line end */
      NULL);
  write_text(csv, text);
  g_free(text);

  CtSource *src = open_csv(csv, ',', NULL, NULL);
  g_assert_cmpuint(ct_source_len(src), ==, 5);
  check_rgb_sample(src, 0, 0, "A cat, sitting", -1);
  check_rgb_sample(src, 1, 1, "She said \"hi\"", -1);
  check_rgb_sample(src, 2, 2, "two\r\nlines", -1);
  check_rgb_sample(src, 3, 3, "\xC3\xA9t\xC3\xA9 \"", -1);
  CtImage *im = NULL;
  char *cap = NULL;
  int l = 0;
  get_ok(src, 4, &im, &cap, &l);
  check_gray(im);
  g_assert_cmpstr(cap, ==, "");
  g_assert_cmpint(l, ==, -1);
  ct_image_free(im);
  g_free(cap);
  /* A caption-only get skips the image. */
  get_ok(src, 0, NULL, &cap, NULL);
  g_assert_cmpstr(cap, ==, "A cat, sitting");
  g_free(cap);
  check_get_out_of_range(src);
  ct_source_free(src);

  /* Custom column names, chosen by name whatever their order. */
  write_text(csv, "caption,path\n\"x, y\",img/rgb1.png\nz,img/rgb2.png\n\n");
  src = open_csv(csv, ',', "path", "caption");
  g_assert_cmpuint(ct_source_len(src), ==, 2);
  check_rgb_sample(src, 0, 1, "x, y", -1);
  check_rgb_sample(src, 1, 2, "z", -1);
  ct_source_free(src);

  /* A CSV in the working folder: paths relative to ".". */
  char *cwd = g_get_current_dir();
  char *data = g_build_filename(dir, "data", NULL);
  g_assert_cmpint(g_chdir(data), ==, 0);
  src = open_csv("train.csv", ',', "path", "caption");
  check_rgb_sample(src, 1, 2, "z", -1);
  ct_source_free(src);
  g_assert_cmpint(g_chdir(cwd), ==, 0);
  g_free(cwd);
  g_free(data);

  g_free(abs_img);
  g_free(csv);
  rm_rf(dir);
  g_free(dir);
}

static void
test_tsv(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  put_fixture(dir, "imgs/rgb0.png", "rgb0.png");
  put_fixture(dir, "imgs/rgb2.png", "rgb2.png");
  char *tsv = g_build_filename(dir, "meta", "train.tsv", NULL);
  /* No quoting in TSV: quotes and commas are ordinary characters. */
  write_text(tsv, "image\tcaption\tscore\r\n"
                  "../imgs/rgb0.png\t\"quoted\", she said\t0.5\r\n"
                  "../imgs/rgb2.png\ta\u00a0b\t1\r\n");
  CtSource *src = open_csv(tsv, '\t', "image", "caption");
  g_assert_cmpuint(ct_source_len(src), ==, 2);
  check_rgb_sample(src, 0, 0, "\"quoted\", she said", -1);
  check_rgb_sample(src, 1, 2, "a\u00a0b", -1);
  ct_source_free(src);

  /* A wrong column count in TSV. */
  write_text(tsv, "image\tcaption\n../imgs/rgb0.png\tok\n../imgs/rgb2.png\ta\tb\n");
  GError *err = NULL;
  src = ct_source_csv_new(tsv, '\t', "image", "caption", &err);
  g_assert_null(src);
  char *want = g_strconcat(tsv, ":3: row has 3 columns, the header has 2", NULL);
  g_assert_nonnull(err);
  g_assert_cmpstr(err->message, ==, want);
  g_assert_error(err, CT_ERROR, CT_ERROR_FORMAT);
  g_free(want);
  g_clear_error(&err);
  g_free(tsv);
  rm_rf(dir);
  g_free(dir);
}

static void
expect_csv_error(const char *path, const char *content, char sep, const char *img,
                 const char *cap, gint code, const char *message)
{
  write_text(path, content);
  GError *err = NULL;
  CtSource *src = ct_source_csv_new(path, sep, img, cap, &err);
  g_assert_null(src);
  g_assert_nonnull(err);
  g_test_message("error: %s", err->message);
  char *want = g_strconcat(path, message, NULL);
  g_assert_cmpstr(err->message, ==, want);
  g_assert_error(err, CT_ERROR, code);
  g_free(want);
  g_error_free(err);
}

static void
test_csv_errors(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *csv = g_build_filename(dir, "x.csv", NULL);

  /* Row numbers are the line where the row starts; a quoted line break
   * counts. */
  expect_csv_error(csv, "filepath,title\na.png,\"one\ntwo\"\nb.png,x,y\n", ',', NULL, NULL,
                   CT_ERROR_FORMAT, ":4: row has 3 columns, the header has 2");
  expect_csv_error(csv, "filepath,title\r\na.png,ok\r\nb.png\r\n", ',', NULL, NULL,
                   CT_ERROR_FORMAT, ":3: row has 1 column, the header has 2");
  expect_csv_error(csv, "filepath,title\na.png,ok\nb.png,\"caf\xE9\"\n", ',', NULL, NULL,
                   CT_ERROR_FORMAT, ":3: caption is not valid UTF-8");
  expect_csv_error(csv, "path,caption\na.png,x\n", ',', NULL, NULL, CT_ERROR_MISSING,
                   ": no column 'filepath' (columns: path, caption)");
  expect_csv_error(csv, "path,caption\na.png,x\n", ',', "path", "title", CT_ERROR_MISSING,
                   ": no column 'title' (columns: path, caption)");
  /* the header in the message stays one line of UTF-8 (found by
   * tests/fuzz/fuzz_csv): line breaks and bad bytes in quoted names,
   * long names cut, at most 20 names */
  expect_csv_error(csv, "\"file\npath\",\"t\xffitle\",\"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH\"\n"
                   "a.png,x,y\n", ',', NULL, NULL, CT_ERROR_MISSING,
                   ": no column 'filepath' (columns: file\\x0apath, t\xef\xbf\xbditle, "
                   "abcdefghijklmnopqrstuvwxyz0123456789ABCD...)");
  expect_csv_error(csv, "c0,c1,c2,c3,c4,c5,c6,c7,c8,c9,c10,c11,c12,c13,c14,c15,c16,c17,c18,c19,c20,c21\n"
                   "x\n", ',', NULL, NULL, CT_ERROR_MISSING,
                   ": no column 'filepath' (columns: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, "
                   "c11, c12, c13, c14, c15, c16, c17, c18, c19, ... (22 in all))");
  expect_csv_error(csv, "filepath,title\n", ',', NULL, NULL, CT_ERROR_MISSING,
                   ": no rows after the header");
  expect_csv_error(csv, "", ',', NULL, NULL, CT_ERROR_FORMAT, ": empty file, no header row");
  expect_csv_error(csv, "filepath,title\na.png,\"open\n", ',', NULL, NULL, CT_ERROR_FORMAT,
                   ":2: quoted field is not closed before the end of the file");
  expect_csv_error(csv, "filepath,title\na.png,\"x\"y\n", ',', NULL, NULL, CT_ERROR_FORMAT,
                   ":2: unexpected character after a closing quote (expected ',' or a line end)");
  expect_csv_error(csv, "filepath,title\n,x\n", ',', NULL, NULL, CT_ERROR_FORMAT,
                   ":2: empty image path");

  char *missing = g_build_filename(dir, "nosuch.csv", NULL);
  GError *err = NULL;
  g_assert_null(ct_source_csv_new(missing, ',', NULL, NULL, &err));
  check_error(err, CT_ERROR_IO, missing, "No such file", NULL);
  g_clear_error(&err);
  g_free(missing);

  /* An image path with a line break stays one line in get()'s error. */
  write_text(csv, "filepath,title\n\"gone\nbad.png\",x\n");
  CtSource *odd = open_csv(csv, ',', NULL, NULL);
  g_assert_false(ct_source_get(odd, 0, &(CtImage *){ NULL }, NULL, NULL, &err));
  char *odd_path = g_build_filename(dir, "gone\\x0abad.png", NULL);
  check_error(err, CT_ERROR_IO, odd_path, "No such file", NULL);
  g_clear_error(&err);
  g_free(odd_path);
  ct_source_free(odd);

  /* A missing or corrupt image fails in get(), naming its path. */
  put_fixture(dir, "bad.png", "corrupt.png");
  write_text(csv, "filepath,title\nbad.png,x\ngone.png,y\n");
  CtSource *src = open_csv(csv, ',', NULL, NULL);
  CtImage *im = NULL;
  char *cap = NULL;
  g_assert_false(ct_source_get(src, 0, &im, &cap, NULL, &err));
  char *bad = g_build_filename(dir, "bad.png", NULL);
  check_error(err, CT_ERROR_FORMAT, NULL, bad, NULL);
  g_clear_error(&err);
  g_free(bad);
  g_assert_false(ct_source_get(src, 1, &im, &cap, NULL, &err));
  bad = g_build_filename(dir, "gone.png", NULL);
  check_error(err, CT_ERROR_IO, NULL, bad, NULL);
  g_clear_error(&err);
  g_free(bad);
  g_assert_null(im);
  g_assert_null(cap);
  ct_source_free(src);

  g_free(csv);
  rm_rf(dir);
  g_free(dir);
}

/* ---------------------------------------------------------------- webdataset */

typedef struct {
  const char *name;
  const char *fixture; /* or NULL: TEXT */
  const char *text;
} TarEntry;

/* Writes a tar (gzipped when GZ) of ENTRIES (NULL name ends them). */
static void
write_tar(const char *path, const TarEntry *entries, gboolean gz)
{
  struct archive *a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gz)
    archive_write_add_filter_gzip(a);
  g_assert_cmpint(archive_write_open_filename(a, path), ==, ARCHIVE_OK);
  for (const TarEntry *t = entries; t->name; t++) {
    GBytes *b = t->fixture ? fixture_bytes(t->fixture) : g_bytes_new(t->text, strlen(t->text));
    gsize n;
    const void *d = g_bytes_get_data(b, &n);
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, t->name);
    archive_entry_set_size(e, (la_int64_t)n);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    g_assert_cmpint(archive_write_header(a, e), ==, ARCHIVE_OK);
    if (n)
      g_assert_cmpint(archive_write_data(a, d, n), ==, (la_ssize_t)n);
    archive_entry_free(e);
    g_bytes_unref(b);
  }
  g_assert_cmpint(archive_write_close(a), ==, ARCHIVE_OK);
  archive_write_free(a);
}

#define LONG_DIR                                                                             \
  "a-folder-name-long-enough-to-need-a-pax-header/another-long-folder-name-for-good-measure/" \
  "and-a-third-one-to-pass-one-hundred-bytes"

static const TarEntry shard0[] = {
  { "s0/0001.png", "rgb0.png", NULL },
  { "s0/0001.txt", NULL, "first" },
  { "s0/0002.txt", NULL, "second, before its image" },
  { "s0/0003.json", NULL, "{}" },
  { "s0/0002.PNG", "rgb1.png", NULL }, /* extensions compare without case */
  { "s0/0003.txt", NULL, "no image" },
  { "s0/0004.png", "rgb3.png", NULL }, /* no caption */
  { NULL, NULL, NULL },
};
static const TarEntry shard1[] = {
  { "dir.v2/0005.jpg", "photo.jpg", NULL }, /* key: up to the basename's first '.' */
  { "dir.v2/0005.txt", NULL, "a photo" },
  { "dir.v2/0005.seg.png", "rgb3.png", NULL }, /* extension "seg.png": ignored */
  { LONG_DIR "/0006.txt", NULL, "\xC3\xA9t\xC3\xA9" },
  { LONG_DIR "/0006.png", "rgb2.png", NULL },
  { "0007.png", "gray.png", NULL },
  { "0007.txt", NULL, "grey\n" },
  { NULL, NULL, NULL },
};

/* The four samples of shard0 + shard1, in order. */
static void
check_wds(CtSource *src)
{
  g_assert_cmpuint(ct_source_len(src), ==, 5);
  g_assert_null(src->class_names);
  check_rgb_sample(src, 0, 0, "first", -1);
  check_rgb_sample(src, 1, 1, "second, before its image", -1);
  CtImage *im = NULL;
  char *cap = NULL;
  int l = 0;
  get_ok(src, 2, &im, &cap, &l);
  g_assert_cmpint(im->width, ==, 8);
  g_assert_cmpint(im->height, ==, 6);
  g_assert_cmpstr(cap, ==, "a photo");
  g_assert_cmpint(l, ==, -1);
  ct_image_free(im);
  g_free(cap);
  check_rgb_sample(src, 3, 2, "\xC3\xA9t\xC3\xA9", -1);
  get_ok(src, 4, &im, &cap, &l);
  check_gray(im);
  g_assert_cmpstr(cap, ==, "grey\n");
  ct_image_free(im);
  g_free(cap);
  check_get_out_of_range(src);
}

static CtSource *
open_wds_expecting_skip(const char *pattern)
{
  g_test_expect_message(NULL, G_LOG_LEVEL_MESSAGE,
                        "*skipped 1 key without an image and 1 without a caption*");
  GError *err = NULL;
  CtSource *src = ct_source_webdataset_new(pattern, &err);
  g_assert_no_error(err);
  g_test_assert_expected_messages();
  return src;
}

static void
test_webdataset(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *s0 = g_build_filename(dir, "shard-000.tar", NULL);
  char *s1 = g_build_filename(dir, "shard-001.tar", NULL);
  write_tar(s0, shard0, FALSE);
  write_tar(s1, shard1, FALSE);

  char *pattern = g_build_filename(dir, "shard-{000..001}.tar", NULL);
  CtSource *src = open_wds_expecting_skip(pattern);
  check_wds(src);
  ct_source_free(src);
  g_free(pattern);

  /* The same through a comma list, "::" and a brace list. */
  pattern = g_strconcat(s0, ",", s1, NULL);
  src = open_wds_expecting_skip(pattern);
  check_wds(src);
  ct_source_free(src);
  g_free(pattern);
  pattern = g_strconcat(s0, "::", s1, NULL);
  src = open_wds_expecting_skip(pattern);
  check_wds(src);
  ct_source_free(src);
  g_free(pattern);
  pattern = g_build_filename(dir, "shard-00{0,1}.tar", NULL);
  src = open_wds_expecting_skip(pattern);
  check_wds(src);
  ct_source_free(src);
  g_free(pattern);

  /* A shard alone: no sample is skipped, so no message. */
  GError *err = NULL;
  src = ct_source_webdataset_new(s1, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(src), ==, 3);
  check_rgb_sample(src, 1, 2, "\xC3\xA9t\xC3\xA9", -1);
  ct_source_free(src);

  /* Gzipped shards: read by skipping from the start. */
  char *z0 = g_build_filename(dir, "gz-000.tar.gz", NULL);
  char *z1 = g_build_filename(dir, "gz-001.tar.gz", NULL);
  write_tar(z0, shard0, TRUE);
  write_tar(z1, shard1, TRUE);
  pattern = g_build_filename(dir, "gz-{0..1}.tar.gz", NULL);
  /* {0..1} is not padded: gz-0.tar.gz does not exist. */
  g_assert_null(ct_source_webdataset_new(pattern, &err));
  char *want = g_build_filename(dir, "gz-0.tar.gz", NULL);
  check_error(err, CT_ERROR_IO, want, "No such file", NULL);
  g_free(want);
  g_clear_error(&err);
  g_free(pattern);
  pattern = g_build_filename(dir, "gz-{000..1}.tar.gz", NULL);
  src = open_wds_expecting_skip(pattern);
  check_wds(src);
  ct_source_free(src);
  g_free(pattern);

  g_free(z0);
  g_free(z1);
  g_free(s0);
  g_free(s1);
  rm_rf(dir);
  g_free(dir);
}

static void
expect_wds_error(const char *pattern, gint code, const char *prefix, const char *s1,
                 const char *s2)
{
  GError *err = NULL;
  CtSource *src = ct_source_webdataset_new(pattern, &err);
  g_assert_null(src);
  check_error(err, code, prefix, s1, s2);
  g_error_free(err);
}

static void
test_webdataset_errors(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *p = g_build_filename(dir, "s.tar", NULL);

  expect_wds_error("a-{000..001.tar", CT_ERROR_INVALID, "shard pattern 'a-{000..001.tar'",
                   "unbalanced '{'", NULL);
  expect_wds_error("a-}.tar", CT_ERROR_INVALID, NULL, "unbalanced '}'", NULL);
  expect_wds_error("a-{x}.tar", CT_ERROR_INVALID, NULL, "'{x}' is neither", NULL);
  expect_wds_error(",::,", CT_ERROR_INVALID, NULL, "names no shard", NULL);
  expect_wds_error(p, CT_ERROR_IO, p, "No such file", NULL);

  /* Only incomplete keys. */
  static const TarEntry lonely[] = {
    { "a.png", "rgb0.png", NULL }, { "b.txt", NULL, "x" }, { "c.json", NULL, "{}" },
    { NULL, NULL, NULL },
  };
  write_tar(p, lonely, FALSE);
  expect_wds_error(p, CT_ERROR_MISSING, p, "no sample with both an image",
                   "1 key without an image, 1 without a caption");

  /* Two images for one key. */
  static const TarEntry twice[] = {
    { "k/a.png", "rgb0.png", NULL }, { "k/a.txt", NULL, "x" }, { "k/a.jpg", "photo.jpg", NULL },
    { NULL, NULL, NULL },
  };
  write_tar(p, twice, FALSE);
  expect_wds_error(p, CT_ERROR_FORMAT, p, "entry 'k/a.jpg': key 'k/a' already has an image",
                   NULL);

  /* Entry names are any bytes: a line break or escape in one stays out of
   * the one-line error (found by tests/fuzz/fuzz_webdataset). */
  static const TarEntry odd_names[] = {
    { "k/a\nb.png", "rgb0.png", NULL }, { "k/a\nb.txt", NULL, "x" },
    { "k/a\nb.JPG", "photo.jpg", NULL }, { NULL, NULL, NULL },
  };
  write_tar(p, odd_names, FALSE);
  expect_wds_error(p, CT_ERROR_FORMAT, p,
                   "entry 'k/a\\x0ab.JPG': key 'k/a\\x0ab' already has an image 'k/a\\x0ab.png'",
                   NULL);

  /* Not a tar file. */
  write_text(p, "just some text that is not a tar archive, but long enough to look at");
  expect_wds_error(p, CT_ERROR_FORMAT, p, "not a tar file", NULL);

  /* A corrupt image and a caption that is not UTF-8 fail in get(). */
  static const TarEntry corrupt[] = {
    { "k/a.png", "corrupt.png", NULL }, { "k/a.txt", NULL, "ok" },
    { "k/b.png", "rgb0.png", NULL },    { "k/b.txt", NULL, "caf\xE9" },
    { NULL, NULL, NULL },
  };
  write_tar(p, corrupt, FALSE);
  GError *err = NULL;
  CtSource *src = ct_source_webdataset_new(p, &err);
  g_assert_no_error(err);
  CtImage *im = NULL;
  char *cap = NULL;
  g_assert_false(ct_source_get(src, 0, &im, &cap, NULL, &err));
  char *want = g_strconcat(p, ": entry 'k/a.png'", NULL);
  check_error(err, CT_ERROR_FORMAT, want, NULL, NULL);
  g_free(want);
  g_clear_error(&err);
  g_assert_false(ct_source_get(src, 1, &im, &cap, NULL, &err));
  want = g_strconcat(p, ": entry 'k/b.txt': caption is not valid UTF-8", NULL);
  g_assert_nonnull(err);
  g_assert_cmpstr(err->message, ==, want);
  g_free(want);
  g_clear_error(&err);
  g_assert_null(im);
  g_assert_null(cap);
  /* The caption alone is fine for sample 0, the image alone for 1. */
  get_ok(src, 0, NULL, &cap, NULL);
  g_assert_cmpstr(cap, ==, "ok");
  g_free(cap);
  get_ok(src, 1, &im, NULL, NULL);
  check_rgb(im, 0);
  ct_image_free(im);
  ct_source_free(src);

  g_free(p);
  rm_rf(dir);
  g_free(dir);
}

/* The offset of entry NAME's (first) header in the tar at PATH. */
static gint64
header_pos(const char *path, const char *name)
{
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  g_assert_cmpint(archive_read_open_filename(a, path, 10240), ==, ARCHIVE_OK);
  struct archive_entry *e;
  gint64 pos = -1;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK)
    if (strcmp(archive_entry_pathname(e), name) == 0) {
      pos = archive_read_header_position(a);
      break;
    }
  archive_read_free(a);
  g_assert_cmpint(pos, >=, 0);
  return pos;
}

/* Every truncation of a shard fails cleanly at open (or, cut exactly
 * between entries, opens with fewer samples). */
static void
test_webdataset_truncated(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  char *full = g_build_filename(dir, "full.tar", NULL);
  char *cut = g_build_filename(dir, "cut.tar", NULL);
  char *cutgz = g_build_filename(dir, "cut.tar.gz", NULL);
  write_tar(full, shard1, FALSE);
  char *fullgz = g_build_filename(dir, "full.tar.gz", NULL);
  write_tar(fullgz, shard1, TRUE);
  const char *fulls[2] = { full, fullgz };
  const char *cuts[2] = { cut, cutgz };
  guint failures = 0, opened = 0;
  for (int gz = 0; gz < 2; gz++) {
    char *data;
    gsize len;
    GError *err = NULL;
    g_file_get_contents(fulls[gz], &data, &len, &err);
    g_assert_no_error(err);
    gsize step = gz ? 7 : 97;
    for (gsize n = 0; n < len; n += step) {
      write_file(cuts[gz], data, n);
      CtSource *src = ct_source_webdataset_new(cuts[gz], &err);
      if (src) {
        /* Only whole samples are left: each one reads back. */
        opened++;
        for (size_t i = 0; i < ct_source_len(src); i++) {
          CtImage *im = NULL;
          char *cap = NULL;
          get_ok(src, i, &im, &cap, NULL);
          ct_image_free(im);
          g_free(cap);
        }
        ct_source_free(src);
        continue;
      }
      failures++;
      g_assert_nonnull(err);
      g_test_message("cut at %zu: %s", n, err->message);
      g_assert_true(err->code == CT_ERROR_FORMAT || err->code == CT_ERROR_MISSING);
      g_assert_true(g_str_has_prefix(err->message, cuts[gz]));
      g_assert_null(strchr(err->message, '\n'));
      g_clear_error(&err);
    }
    g_free(data);
  }
  g_test_message("%u truncations failed, %u opened", failures, opened);
  g_assert_cmpuint(failures, >, 20);

  /* Cut inside the data of a PNG: named in the error. */
  char *data;
  gsize len;
  g_file_get_contents(full, &data, &len, NULL);
  write_file(cut, data, (gsize)header_pos(full, "0007.png") + 512 + 30);
  GError *err = NULL;
  g_assert_null(ct_source_webdataset_new(cut, &err));
  char *want = g_strconcat(cut, ": entry '0007.png': truncated tar data", NULL);
  g_assert_nonnull(err);
  g_assert_cmpstr(err->message, ==, want);
  g_free(want);
  g_clear_error(&err);
  g_free(data);

  g_free(full);
  g_free(fullgz);
  g_free(cut);
  g_free(cutgz);
  rm_rf(dir);
  g_free(dir);
}

/* ---------------------------------------------------------------- threads */

typedef struct {
  guint32 hash; /* of the pixels */
  int width, height, label;
  char *caption;
} Got;

static Got
get_summary(CtSource *src, size_t i)
{
  CtImage *im = NULL;
  char *cap = NULL;
  int l = -9;
  GError *err = NULL;
  Got g = { 0 };
  if (!ct_source_get(src, i, &im, &cap, &l, &err)) {
    g.caption = g_strdup_printf("error: %s", err->message);
    g_error_free(err);
    return g;
  }
  guint32 h = 2166136261u;
  for (size_t k = 0; k < (size_t)im->width * (size_t)im->height * 3; k++)
    h = (h ^ im->pixels[k]) * 16777619u;
  g.hash = h;
  g.width = im->width;
  g.height = im->height;
  g.label = l;
  g.caption = cap;
  ct_image_free(im);
  return g;
}

typedef struct {
  CtSource *src;
  const Got *want;
  size_t n;
  guint seed;
  guint mismatches;
} Worker;

static gpointer
worker(gpointer data)
{
  Worker *w = data;
  for (int round = 0; round < 4; round++)
    for (size_t k = 0; k < w->n; k++) {
      size_t i = (k * 7 + w->seed * 3 + (size_t)round) % w->n;
      Got g = get_summary(w->src, i);
      const Got *e = &w->want[i];
      if (g.hash != e->hash || g.width != e->width || g.height != e->height ||
          g.label != e->label || g_strcmp0(g.caption, e->caption) != 0)
        w->mismatches++;
      g_free(g.caption);
    }
  return NULL;
}

static void
check_concurrent(CtSource *src)
{
  size_t n = ct_source_len(src);
  Got *want = g_new0(Got, n);
  for (size_t i = 0; i < n; i++) {
    want[i] = get_summary(src, i);
    g_assert_cmpint(want[i].width, >, 0); /* no error */
  }
  Worker w[4];
  GThread *t[4];
  for (guint k = 0; k < 4; k++) {
    w[k] = (Worker){ src, want, n, k, 0 };
    t[k] = g_thread_new("get", worker, &w[k]);
  }
  for (guint k = 0; k < 4; k++) {
    g_thread_join(t[k]);
    g_assert_cmpuint(w[k].mismatches, ==, 0);
  }
  for (size_t i = 0; i < n; i++)
    g_free(want[i].caption);
  g_free(want);
}

static void
test_threads(void)
{
  char *dir = ct_test_make_tmpdir("ct-src-XXXXXX");
  static const char *const fx[5] = { "rgb0.png", "rgb1.png", "rgb2.png", "rgb3.png",
                                     "gray.png" };
  /* 24 samples in each source. */
  GString *csv = g_string_new("filepath,title\n");
  TarEntry ents[2][25];
  char *names[2][24];
  char *caps[24];
  for (int i = 0; i < 24; i++) {
    char *rel = g_strdup_printf("c%d/img%02d.png", i % 3, i);
    put_fixture(dir, rel, fx[i % 5]);
    caps[i] = g_strdup_printf("caption %d", i);
    g_string_append_printf(csv, "%s,\"%s\"\n", rel, caps[i]);
    g_free(rel);
    int shard = i / 12, j = (i % 12) * 2;
    names[shard][j] = g_strdup_printf("k%02d.png", i);
    names[shard][j + 1] = g_strdup_printf("k%02d.txt", i);
    ents[shard][j] = (TarEntry){ names[shard][j], fx[i % 5], NULL };
    ents[shard][j + 1] = (TarEntry){ names[shard][j + 1], NULL, caps[i] };
  }
  ents[0][24] = ents[1][24] = (TarEntry){ NULL, NULL, NULL };
  char *csv_path = g_build_filename(dir, "list.csv", NULL);
  write_text(csv_path, csv->str);
  g_string_free(csv, TRUE);
  for (int s = 0; s < 2; s++) {
    char *p = g_strdup_printf("%s/t-%d.tar", dir, s);
    write_tar(p, ents[s], FALSE);
    g_free(p);
    p = g_strdup_printf("%s/t-%d.tar.gz", dir, s);
    write_tar(p, ents[s], TRUE);
    g_free(p);
  }

  GError *err = NULL;
  CtSource *src = ct_source_csv_new(csv_path, ',', NULL, NULL, &err);
  g_assert_no_error(err);
  check_concurrent(src);
  ct_source_free(src);

  src = ct_source_image_folder_new(dir, NULL, &err);
  g_assert_no_error(err);
  g_assert_cmpuint(ct_source_len(src), ==, 24);
  check_concurrent(src);
  ct_source_free(src);

  for (int gz = 0; gz < 2; gz++) {
    char *pattern = g_strdup_printf("%s/t-{0..1}.tar%s", dir, gz ? ".gz" : "");
    src = ct_source_webdataset_new(pattern, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(ct_source_len(src), ==, 24);
    check_concurrent(src);
    ct_source_free(src);
    g_free(pattern);
  }

  char *img = g_build_filename(dir, "i.idx", NULL);
  char *lab = g_build_filename(dir, "l.idx", NULL);
  guint8 labels[24];
  for (int i = 0; i < 24; i++)
    labels[i] = (guint8)(i % 10);
  write_bytes(img, idx_images(0x803, 24, 4, 5), TRUE);
  write_bytes(lab, idx_labels(0x801, 24, labels), FALSE);
  src = ct_source_idx_new(img, lab, NULL, &err);
  g_assert_no_error(err);
  check_concurrent(src);
  ct_source_free(src);
  g_free(img);
  g_free(lab);

  for (int i = 0; i < 24; i++) {
    g_free(caps[i]);
    g_free(names[i / 12][(i % 12) * 2]);
    g_free(names[i / 12][(i % 12) * 2 + 1]);
  }
  g_free(csv_path);
  rm_rf(dir);
  g_free(dir);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/sources/idx/gzip", test_idx);
  g_test_add_func("/sources/idx/errors", test_idx_errors);
  g_test_add_func("/sources/idx/fashion-mnist", test_idx_fashion_mnist);
  g_test_add_func("/sources/folder/classes", test_folder);
  g_test_add_func("/sources/folder/split", test_folder_split);
  g_test_add_func("/sources/folder/errors", test_folder_errors);
  g_test_add_func("/sources/csv/quoting", test_csv);
  g_test_add_func("/sources/csv/tsv", test_tsv);
  g_test_add_func("/sources/csv/errors", test_csv_errors);
  g_test_add_func("/sources/webdataset/shards", test_webdataset);
  g_test_add_func("/sources/webdataset/errors", test_webdataset_errors);
  g_test_add_func("/sources/webdataset/truncated", test_webdataset_truncated);
  g_test_add_func("/sources/threads", test_threads);
  return g_test_run();
}

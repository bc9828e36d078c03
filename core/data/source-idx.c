/* source-idx.c: MNIST-format IDX files (gzipped or not) as a labelled
 * source.
 *
 * Both files are read whole into memory at open (and gunzipped there when
 * they start with the gzip signature): Fashion-MNIST's train images are
 * 47 MB raw.  Open first inflates only the two headers and validates
 * them: the magic numbers (0x00000803 for images (N, H, W) u8, 0x00000801
 * for labels (N) u8), that both hold N samples, and that the size each
 * declares is at most IDX_MAX_BYTES and one its file can hold.  Then it
 * inflates each file up to its declared size and no further (so a gzip
 * bomb costs no more than its header admits), checks that the data is
 * exactly that long, and that every label names a class.  get() copies one image out of the table: it only reads
 * shared memory, so it is safe from any number of threads.
 *
 * CLASS_NAMES: NULL-terminated; NULL means the labels' decimal names
 * "0", "1", ... up to the largest label found. */
#include "config.h"

#include "base/file.h"
#include "data/source.h"

#include <string.h>

typedef struct {
  CtSource base;
  char *images_path;
  guint8 *images; /* whole file, header included */
  guint8 *labels; /* whole file, header included */
  size_t n;
  int height, width;
} IdxSource;

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define IDX_MAX_DIM 65536u
/* The most an IDX file may hold, inflated: EMNIST's largest is 547 MB. */
#define IDX_MAX_BYTES ((size_t)2 << 30)

static guint32
read_be32(const guint8 *p)
{
  return ((guint32)p[0] << 24) | ((guint32)p[1] << 16) | ((guint32)p[2] << 8) | (guint32)p[3];
}

/* One IDX file as read from disk: gzipped or not. */
typedef struct {
  const char *path;
  char *raw; /* the file's bytes */
  size_t raw_len;
  gboolean gz;
  guint8 header[16];
} IdxFile;

/* Reads F->path whole (at most IDX_MAX_BYTES) and its first HLEN bytes
 * of data (inflated when gzipped: only those) into F->header. */
static gboolean
idx_read_header(IdxFile *f, size_t hlen, const char *what, GError **error)
{
  if (!ct_file_read_all(f->path, "an IDX file", IDX_MAX_BYTES, &f->raw, &f->raw_len, error))
    return FALSE;
  f->gz = ct_is_gzip(f->raw, f->raw_len);
  const guint8 *head = (const guint8 *)f->raw;
  guint8 *inflated = NULL;
  size_t got = f->raw_len;
  if (f->gz && !ct_gunzip(f->path, "an IDX header", head, f->raw_len, hlen, TRUE, &inflated,
                          &got, error))
    return FALSE;
  if (got < hlen) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: %zu bytes is too short for an IDX %s header (%zu bytes)", f->path, got,
                what, hlen);
    g_free(inflated);
    return FALSE;
  }
  memcpy(f->header, inflated ? inflated : head, hlen);
  g_free(inflated);
  return TRUE;
}

/* Whether F can hold WANT bytes of data, header included: at most
 * IDX_MAX_BYTES, exactly the file's length when it is not gzipped, and no
 * more than deflate's best ratio (1032:1) allows when it is, so that a
 * lying header is found before anything is inflated.  SAYS is the
 * header's claim ("60000 images of 28x28"), for the messages. */
static gboolean
idx_check_size(const IdxFile *f, guint64 want, const char *says, GError **error)
{
  if (want > IDX_MAX_BYTES) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %s (%" G_GUINT64_FORMAT " bytes), over the limit of %"
                G_GUINT64_FORMAT " bytes for an IDX file", f->path, says, want,
                (guint64)IDX_MAX_BYTES);
    return FALSE;
  }
  if (!f->gz && want != f->raw_len) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %s (%" G_GUINT64_FORMAT " bytes) but the data is %zu bytes%s",
                f->path, says, want, f->raw_len, want > f->raw_len ? " (truncated)" : "");
    return FALSE;
  }
  if (f->gz && want / 1032 > f->raw_len) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %s (%" G_GUINT64_FORMAT " bytes) but %zu bytes of gzip data "
                "cannot hold that much (truncated)", f->path, says, want, f->raw_len);
    return FALSE;
  }
  return TRUE;
}

/* F's data, header included, WANT bytes (checked by idx_check_size):
 * F's buffer when it is not gzipped, else inflated up to WANT bytes and
 * no further.  (transfer full) */
static guint8 *
idx_read_body(IdxFile *f, size_t want, const char *says, GError **error)
{
  if (!f->gz)
    return (guint8 *)g_steal_pointer(&f->raw);
  guint8 *out = NULL;
  size_t got = 0;
  g_autofree char *what = g_strdup_printf("the %s its header says", says);
  if (!ct_gunzip(f->path, what, (const guint8 *)f->raw, f->raw_len, want, FALSE, &out, &got,
                 error))
    return NULL;
  if (got != want) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %s (%zu bytes) but the data is %zu bytes (truncated)", f->path,
                says, want, got);
    g_free(out);
    return NULL;
  }
  return out;
}

static size_t
idx_len(CtSource *src)
{
  return ((IdxSource *)src)->n;
}

static gboolean
idx_get(CtSource *src, size_t index, CtImage **image, char **caption, int *label,
        GError **error)
{
  IdxSource *s = (IdxSource *)src;
  if (!ct_source_check_index(s->images_path, index, s->n, error))
    return FALSE;
  size_t plane = (size_t)s->height * (size_t)s->width;
  if (image)
    *image = ct_image_new_from_gray(s->images + 16 + index * plane, s->width, s->height);
  if (caption)
    *caption = NULL;
  if (label)
    *label = s->labels[8 + index];
  return TRUE;
}

static void
idx_free(CtSource *src)
{
  IdxSource *s = (IdxSource *)src;
  g_strfreev(s->base.class_names);
  g_free(s->images_path);
  g_free(s->images);
  g_free(s->labels);
  g_free(s);
}

static char *
idx_where(CtSource *src, size_t index)
{
  IdxSource *s = (IdxSource *)src;
  return g_strdup_printf("%s: image %zu", s->images_path, index);
}

static const CtSourceVTable idx_vtable = { idx_len, idx_get, idx_free, idx_where };

CtSource *
ct_source_idx_new(const char *images_path, const char *labels_path,
                  const char *const *class_names, GError **error)
{
  g_return_val_if_fail(images_path && labels_path, NULL);
  /* Both headers are read and checked against each other before either
   * file is inflated: a small gzip file may inflate to gigabytes. */
  IdxFile fi = { .path = images_path }, fl = { .path = labels_path };
  guint8 *images = NULL, *labels = NULL;
  char *says_images = NULL, *says_labels = NULL;
  if (!idx_read_header(&fi, 16, "images", error) || !idx_read_header(&fl, 8, "labels", error))
    goto fail;

  guint32 magic = read_be32(fi.header);
  if (magic != IDX_IMAGES_MAGIC) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: magic 0x%08x is not IDX u8 images (0x%08x)", images_path, magic,
                IDX_IMAGES_MAGIC);
    goto fail;
  }
  guint32 n = read_be32(fi.header + 4), h = read_be32(fi.header + 8),
          w = read_be32(fi.header + 12);
  if (h == 0 || w == 0 || h > IDX_MAX_DIM || w > IDX_MAX_DIM) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: bad image size %ux%u", images_path, w,
                h);
    goto fail;
  }
  magic = read_be32(fl.header);
  if (magic != IDX_LABELS_MAGIC) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: magic 0x%08x is not IDX u8 labels (0x%08x)", labels_path, magic,
                IDX_LABELS_MAGIC);
    goto fail;
  }
  guint32 nl = read_be32(fl.header + 4);
  says_images = g_strdup_printf("%u images of %ux%u", n, w, h);
  says_labels = g_strdup_printf("%u labels", nl);
  /* n < 2^32 and h, w <= 2^16: no overflow */
  guint64 want = 16 + (guint64)n * h * w;
  if (!idx_check_size(&fi, want, says_images, error) ||
      !idx_check_size(&fl, 8 + (guint64)nl, says_labels, error))
    goto fail;
  if (nl != n) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: %u labels but %s has %u images",
                labels_path, nl, images_path, n);
    goto fail;
  }
  if (n == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: no images", images_path);
    goto fail;
  }
  if (!(images = idx_read_body(&fi, (size_t)want, says_images, error)) ||
      !(labels = idx_read_body(&fl, 8 + (size_t)nl, says_labels, error)))
    goto fail;
  g_clear_pointer(&fi.raw, g_free);
  g_clear_pointer(&fl.raw, g_free);

  guint n_classes = class_names ? g_strv_length((char **)class_names) : 0;
  int max_label = 0;
  for (guint32 i = 0; i < n; i++) {
    int l = labels[8 + i];
    if (class_names && (guint)l >= n_classes) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s: index %u: label %d is out of range (%u class names)", labels_path, i, l,
                  n_classes);
      goto fail;
    }
    if (l > max_label)
      max_label = l;
  }

  IdxSource *s = g_new0(IdxSource, 1);
  s->base.vt = &idx_vtable;
  if (class_names) {
    s->base.class_names = g_strdupv((char **)class_names);
  } else {
    s->base.class_names = g_new0(char *, (size_t)max_label + 2);
    for (int i = 0; i <= max_label; i++)
      s->base.class_names[i] = g_strdup_printf("%d", i);
  }
  s->images_path = g_strdup(images_path);
  s->images = images;
  s->labels = labels;
  s->n = n;
  s->height = (int)h;
  s->width = (int)w;
  g_free(says_images);
  g_free(says_labels);
  return &s->base;

fail:
  g_free(fi.raw);
  g_free(fl.raw);
  g_free(says_images);
  g_free(says_labels);
  g_free(images);
  g_free(labels);
  return NULL;
}

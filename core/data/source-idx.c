/* source-idx.c: MNIST-format IDX files (gzipped or not) as a labelled
 * source.
 *
 * Both files are read whole into memory at open (and gunzipped there when
 * they start with the gzip signature): Fashion-MNIST's train images are
 * 47 MB raw.  Open validates the magic numbers (0x00000803 for images
 * (N, H, W) u8, 0x00000801 for labels (N) u8), that each file's length is
 * exactly its header's, that both hold N samples, and that every label
 * names a class.  get() copies one image out of the table: it only reads
 * shared memory, so it is safe from any number of threads.
 *
 * CLASS_NAMES: NULL-terminated; NULL means the labels' decimal names
 * "0", "1", ... up to the largest label found. */
#include "config.h"

#include "data/source.h"

#include <errno.h>
#include <string.h>

#include <gio/gio.h>

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

/* The reason in GLib's file errors ("Failed to open file “PATH”: REASON"),
 * so that ours name the path once. */
static const char *
file_error_reason(const GError *e)
{
  const char *r = e->domain == G_FILE_ERROR ? strrchr(e->message, ':') : NULL;
  return r && r[1] == ' ' && r[2] ? r + 2 : e->message;
}

static guint32
read_be32(const guint8 *p)
{
  return ((guint32)p[0] << 24) | ((guint32)p[1] << 16) | ((guint32)p[2] << 8) | (guint32)p[3];
}

/* Gunzips DATA[0..len) into *OUT (transfer full).  A gzip stream that
 * ends early or is corrupt is an error naming PATH. */
static gboolean
gunzip(const char *path, const guint8 *data, size_t len, guint8 **out, size_t *out_len,
       GError **error)
{
  /* The trailer's ISIZE (length mod 2^32) is a good first guess. */
  size_t cap = 1 << 16;
  if (len >= 18) {
    guint32 isize = (guint32)data[len - 4] | ((guint32)data[len - 3] << 8) |
                    ((guint32)data[len - 2] << 16) | ((guint32)data[len - 1] << 24);
    if (isize > cap)
      cap = (size_t)isize + 1;
  }
  guint8 *buf = g_malloc(cap);
  size_t in_pos = 0, out_pos = 0;
  GZlibDecompressor *z = g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP);
  gboolean ok = FALSE;
  for (;;) {
    if (out_pos == cap) {
      cap *= 2;
      buf = g_realloc(buf, cap);
    }
    gsize nread = 0, nwritten = 0;
    GError *zerr = NULL;
    GConverterResult r =
        g_converter_convert(G_CONVERTER(z), data + in_pos, len - in_pos, buf + out_pos,
                            cap - out_pos, G_CONVERTER_INPUT_AT_END, &nread, &nwritten, &zerr);
    in_pos += nread;
    out_pos += nwritten;
    if (r == G_CONVERTER_FINISHED) {
      ok = TRUE;
      break;
    }
    if (r == G_CONVERTER_ERROR) {
      if (g_error_matches(zerr, G_IO_ERROR, G_IO_ERROR_NO_SPACE)) {
        g_error_free(zerr);
        cap *= 2;
        buf = g_realloc(buf, cap);
        continue;
      }
      if (g_error_matches(zerr, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT))
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated gzip data", path);
      else
        g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: corrupt gzip data: %s", path,
                    zerr->message);
      g_error_free(zerr);
      break;
    }
    if (nread == 0 && nwritten == 0 && in_pos == len) {
      /* No progress with all input given: the stream ended early. */
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: truncated gzip data", path);
      break;
    }
  }
  g_object_unref(z);
  if (!ok) {
    g_free(buf);
    return FALSE;
  }
  *out = g_realloc(buf, out_pos ? out_pos : 1);
  *out_len = out_pos;
  return TRUE;
}

/* Reads PATH whole, gunzipping it when it starts with the gzip magic. */
static gboolean
read_idx_file(const char *path, guint8 **out, size_t *out_len, GError **error)
{
  char *raw = NULL;
  gsize raw_len = 0;
  GError *ferr = NULL;
  if (!g_file_get_contents(path, &raw, &raw_len, &ferr)) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", path,
                file_error_reason(ferr));
    g_error_free(ferr);
    return FALSE;
  }
  if (raw_len >= 2 && (guint8)raw[0] == 0x1f && (guint8)raw[1] == 0x8b) {
    gboolean ok = gunzip(path, (const guint8 *)raw, raw_len, out, out_len, error);
    g_free(raw);
    return ok;
  }
  *out = (guint8 *)raw;
  *out_len = raw_len;
  return TRUE;
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

static const CtSourceVTable idx_vtable = { idx_len, idx_get, idx_free };

CtSource *
ct_source_idx_new(const char *images_path, const char *labels_path,
                  const char *const *class_names, GError **error)
{
  g_return_val_if_fail(images_path && labels_path, NULL);
  guint8 *images = NULL, *labels = NULL;
  size_t images_len = 0, labels_len = 0;
  if (!read_idx_file(images_path, &images, &images_len, error))
    return NULL;
  if (!read_idx_file(labels_path, &labels, &labels_len, error)) {
    g_free(images);
    return NULL;
  }

  guint32 n = 0, h = 0, w = 0, nl = 0;
  if (images_len < 16) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: %zu bytes is too short for an IDX images header (16 bytes)", images_path,
                images_len);
    goto fail;
  }
  guint32 magic = read_be32(images);
  if (magic != IDX_IMAGES_MAGIC) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: magic 0x%08x is not IDX u8 images (0x%08x)", images_path, magic,
                IDX_IMAGES_MAGIC);
    goto fail;
  }
  n = read_be32(images + 4);
  h = read_be32(images + 8);
  w = read_be32(images + 12);
  if (h == 0 || w == 0 || h > IDX_MAX_DIM || w > IDX_MAX_DIM) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: bad image size %ux%u", images_path, w,
                h);
    goto fail;
  }
  guint64 want = 16 + (guint64)n * h * w;
  if (want != images_len) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %u images of %ux%u (%" G_GUINT64_FORMAT
                " bytes) but the data is %zu bytes%s",
                images_path, n, w, h, want, images_len,
                want > images_len ? " (truncated)" : "");
    goto fail;
  }

  if (labels_len < 8) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: %zu bytes is too short for an IDX labels header (8 bytes)", labels_path,
                labels_len);
    goto fail;
  }
  magic = read_be32(labels);
  if (magic != IDX_LABELS_MAGIC) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: magic 0x%08x is not IDX u8 labels (0x%08x)", labels_path, magic,
                IDX_LABELS_MAGIC);
    goto fail;
  }
  nl = read_be32(labels + 4);
  if (8 + (guint64)nl != labels_len) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: header says %u labels (%" G_GUINT64_FORMAT
                " bytes) but the data is %zu bytes%s",
                labels_path, nl, 8 + (guint64)nl, labels_len,
                8 + (guint64)nl > labels_len ? " (truncated)" : "");
    goto fail;
  }
  if (nl != n) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: %u labels but %s has %u images",
                labels_path, nl, images_path, n);
    goto fail;
  }
  if (n == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: no images", images_path);
    goto fail;
  }

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
  return &s->base;

fail:
  g_free(images);
  g_free(labels);
  return NULL;
}

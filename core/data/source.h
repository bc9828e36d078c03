/* source.h: where samples come from.  A source is a table of N samples;
 * sample i is an image and either a caption or a class label.  get() must
 * be deterministic in i and safe to call from several threads at once.
 * Every error names the file, and the row, entry or index concerned. */
#ifndef CT_SOURCE_H
#define CT_SOURCE_H

#include <cliptrain/image.h>

typedef struct CtSource CtSource;

typedef struct {
  size_t (*len)(CtSource *src);
  /* *image (transfer full); *caption (transfer full, UTF-8) or NULL when
   * the source has labels; *label >= 0 or -1 when it has captions. */
  gboolean (*get)(CtSource *src, size_t index, CtImage **image, char **caption, int *label,
                  GError **error);
  void (*free)(CtSource *src);
  /* Where sample INDEX comes from, for messages about it that the source
   * does not make itself (a caption too long to tokenize): "FILE:LINE",
   * "SHARD: MEMBER", an image's path.  May be NULL.  (transfer full) */
  char *(*where)(CtSource *src, size_t index);
} CtSourceVTable;

struct CtSource {
  const CtSourceVTable *vt;
  /* For labelled sources: class names, index = label; NULL-terminated. */
  char **class_names;
};

static inline size_t
ct_source_len(CtSource *s)
{
  return s->vt->len(s);
}

static inline gboolean
ct_source_get(CtSource *s, size_t i, CtImage **image, char **caption, int *label,
              GError **error)
{
  return s->vt->get(s, i, image, caption, label, error);
}

/* The vtable's where(), or NULL when the source has none.  (transfer full) */
static inline char *
ct_source_where(CtSource *s, size_t i)
{
  return s->vt->where ? s->vt->where(s, i) : NULL;
}

static inline void
ct_source_free(CtSource *s)
{
  if (s)
    s->vt->free(s);
}

/* source.c: FALSE with CT_ERROR_INVALID naming NAME when INDEX >= N. */
gboolean ct_source_check_index(const char *name, size_t index, size_t n, GError **error);
/* MSG made one line of UTF-8, for errors that quote file names (which may
 * hold any bytes): bad bytes as U+FFFD, control characters as \xNN.
 * (transfer full) */
char *ct_source_one_line(const char *msg);
/* Decode the image file PATH; the error names PATH.  (transfer full) */
CtImage *ct_source_load_image(const char *path, GError **error);

/* MNIST-format IDX files (gzipped or not): images (N, H, W) u8 and labels
 * (N) u8.  Class names are given (Fashion-MNIST's, or digits).
 * (transfer full) */
CtSource *ct_source_idx_new(const char *images_path, const char *labels_path,
                            const char *const *class_names, GError **error);

/* An ImageNet-style folder: ROOT/<class>/<image>.{png,jpg,jpeg} (or, with
 * SPLIT non-NULL, ROOT/<split>/<class>/...: fastai's GrandparentSplitter).
 * Classes are the sorted folder names; files are sorted by path.
 * (transfer full) */
CtSource *ct_source_image_folder_new(const char *root, const char *split, GError **error);

/* CSV or TSV (SEP ',' or '\t') with a header row naming the columns; the
 * image path column and the caption column are chosen by name (open_clip's
 * defaults: filepath, title).  Paths are relative to the file's folder.
 * RFC 4180 quoting for CSV.  A row with the wrong number of columns, or a
 * caption that is not valid UTF-8, is an error naming the file and row.
 * (transfer full) */
CtSource *ct_source_csv_new(const char *path, char sep, const char *image_column,
                            const char *caption_column, GError **error);

/* webdataset .tar shards, read with libarchive.  PATTERN may hold brace
 * ranges (shard-{000..009}.tar) and comma lists of patterns.  Entries are
 * grouped by key (the path up to the first '.' of the basename); a sample
 * takes its image from jpg/jpeg/png and its caption from txt.  The shards
 * are indexed once at open (key -> shard, offsets), so get() can seek.
 * (transfer full) */
CtSource *ct_source_webdataset_new(const char *pattern, GError **error);

#endif

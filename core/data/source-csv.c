/* source-csv.c: a CSV or TSV table of (image path, caption) rows.
 *
 * The first row names the columns; IMAGE_COLUMN and CAPTION_COLUMN pick
 * two of them by exact name (NULL: open_clip's "filepath" and "title").
 * With SEP ',' fields follow RFC 4180: a field that starts with '"' runs
 * to the next lone '"', "" inside it is one quote, and it may hold
 * separators and line breaks; anything but a separator or a line end
 * after the closing quote is an error.  With SEP '\t' the file is IANA
 * text/tab-separated-values: no quoting, '"' is an ordinary character.
 * Lines end with LF or CRLF; blank lines are skipped; a UTF-8 byte order
 * mark is skipped.
 *
 * Open reads the whole file (a regular file of at most CSV_MAX_BYTES)
 * and validates every row: the column count, a non-empty image path, a
 * valid UTF-8 caption, and the limits below (path and caption lengths,
 * the number of rows).  Errors read
 * "FILE:LINE: ...", LINE being the 1-based line where the row starts (the
 * header is line 1).  Relative image paths are relative to the file's
 * folder.  Open does not check that the images exist: get() reads and
 * decodes one, and its errors name the image's path.  get() only reads
 * shared memory and files, so it is safe from any number of threads. */
#include "config.h"

#include "base/file.h"
#include "data/source.h"

#include <limits.h>
#include <string.h>

typedef struct {
  CtSource base;
  char *path;
  GStringChunk *strings;
  char **images;   /* n, in strings */
  char **captions; /* n, in strings */
  int *lines;      /* n: where each row starts, for messages */
  size_t n;
} CsvSource;

/* What a table may hold: lines are counted in an int, so the file stays
 * under 2 GiB; a caption is a few words (and is cut to the context anyway);
 * an image path is a path. */
#define CSV_MAX_BYTES ((size_t)INT_MAX - 1)
#define CSV_MAX_ROWS 100000000u
#define CSV_MAX_CAPTION_BYTES 65536u
#define CSV_MAX_PATH_BYTES 4096u

/* The fields of one record, as slices of BUF. */
typedef struct {
  GString *buf;
  GArray *start; /* size_t */
  GArray *len;   /* size_t */
} Record;

typedef struct {
  const char *p, *end;
  int line; /* of *p, 1-based */
} Cursor;

/* Appends field F (LEN bytes) as an error message shows it: valid UTF-8,
 * control characters (a quoted field may hold line breaks) as \xNN, cut
 * after 40 characters with "...". */
static void
append_shown(GString *g, const char *f, size_t len)
{
  char *valid = g_utf8_make_valid(f, (gssize)len);
  const char *p = valid;
  for (int n = 0; *p && n < 40; n++, p = g_utf8_next_char(p)) {
    if ((guchar)*p < 0x20 || *p == 0x7f)
      g_string_append_printf(g, "\\x%02x", (guchar)*p);
    else
      g_string_append_len(g, p, g_utf8_next_char(p) - p);
  }
  if (*p)
    g_string_append(g, "...");
  g_free(valid);
}

static void
record_end_field(Record *r, size_t start)
{
  size_t len = r->buf->len - start;
  g_string_append_c(r->buf, '\0'); /* each field is a C string too */
  g_array_append_val(r->start, start);
  g_array_append_val(r->len, len);
}

/* Parses the next non-blank record into R.  Returns 1 for a record, 0 at
 * the end of the file, -1 on an error; *LINE is the record's first line. */
static int
next_record(const char *path, Cursor *c, char sep, gboolean quoting, Record *r, int *line,
            GError **error)
{
  for (;;) {
    g_string_truncate(r->buf, 0);
    g_array_set_size(r->start, 0);
    g_array_set_size(r->len, 0);
    if (c->p >= c->end)
      return 0;
    *line = c->line;
    gboolean blank = TRUE;
    for (;;) { /* one field per turn */
      size_t start = r->buf->len;
      gboolean at_record_end = FALSE;
      if (quoting && c->p < c->end && *c->p == '"') {
        blank = FALSE;
        c->p++;
        for (;;) {
          if (c->p >= c->end) {
            g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                        "%s:%d: quoted field is not closed before the end of the file", path,
                        *line);
            return -1;
          }
          if (*c->p == '"') {
            if (c->p + 1 < c->end && c->p[1] == '"') {
              g_string_append_c(r->buf, '"');
              c->p += 2;
              continue;
            }
            c->p++;
            break;
          }
          if (*c->p == '\n')
            c->line++;
          g_string_append_c(r->buf, *c->p);
          c->p++;
        }
        if (c->p >= c->end) {
          at_record_end = TRUE;
        } else if (*c->p == sep) {
          c->p++;
        } else if (*c->p == '\n') {
          c->p++;
          c->line++;
          at_record_end = TRUE;
        } else if (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n') {
          c->p += 2;
          c->line++;
          at_record_end = TRUE;
        } else {
          g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                      "%s:%d: unexpected character after a closing quote (expected '%s' or a "
                      "line end)",
                      path, c->line, sep == '\t' ? "\\t" : (char[]){ sep, 0 });
          return -1;
        }
      } else {
        const char *q = c->p;
        while (q < c->end && *q != sep && *q != '\n')
          q++;
        const char *field_end = q;
        if (q < c->end && *q == '\n' && field_end > c->p && field_end[-1] == '\r')
          field_end--;
        if (field_end > c->p)
          blank = FALSE;
        g_string_append_len(r->buf, c->p, field_end - c->p);
        if (q >= c->end) {
          c->p = q;
          at_record_end = TRUE;
        } else if (*q == sep) {
          c->p = q + 1;
          blank = FALSE;
        } else {
          c->p = q + 1;
          c->line++;
          at_record_end = TRUE;
        }
        if (at_record_end && blank)
          break; /* an empty line: skip it */
      }
      record_end_field(r, start);
      if (at_record_end)
        return 1;
    }
    /* blank line: go on with the next one */
  }
}

static size_t
csv_len(CtSource *src)
{
  return ((CsvSource *)src)->n;
}

static gboolean
csv_get(CtSource *src, size_t index, CtImage **image, char **caption, int *label,
        GError **error)
{
  CsvSource *s = (CsvSource *)src;
  if (!ct_source_check_index(s->path, index, s->n, error))
    return FALSE;
  if (image && !(*image = ct_source_load_image(s->images[index], error)))
    return FALSE;
  if (caption)
    *caption = g_strdup(s->captions[index]);
  if (label)
    *label = -1;
  return TRUE;
}

static void
csv_free(CtSource *src)
{
  CsvSource *s = (CsvSource *)src;
  g_free(s->path);
  g_string_chunk_free(s->strings);
  g_free(s->images);
  g_free(s->captions);
  g_free(s->lines);
  g_free(s);
}

static char *
csv_where(CtSource *src, size_t index)
{
  CsvSource *s = (CsvSource *)src;
  return index < s->n ? g_strdup_printf("%s:%d", s->path, s->lines[index]) : NULL;
}

static const CtSourceVTable csv_vtable = { csv_len, csv_get, csv_free, csv_where };

#define FIELD(r, i) ((r)->buf->str + g_array_index((r)->start, size_t, (i)))
#define FIELD_LEN(r, i) (g_array_index((r)->len, size_t, (i)))

CtSource *
ct_source_csv_new(const char *path, char sep, const char *image_column,
                  const char *caption_column, GError **error)
{
  g_return_val_if_fail(path, NULL);
  g_return_val_if_fail(sep != '"' && sep != '\n' && sep != '\r' && sep != 0, NULL);
  if (!image_column)
    image_column = "filepath";
  if (!caption_column)
    caption_column = "title";

  char *text = NULL;
  size_t text_len = 0;
  if (!ct_file_read_all(path, sep == '\t' ? "a TSV file" : "a CSV file", CSV_MAX_BYTES, &text,
                        &text_len, error))
    return NULL;

  Cursor c = { text, text + text_len, 1 };
  if (text_len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0)
    c.p += 3;
  gboolean quoting = sep != '\t';
  Record r = { g_string_new(NULL), g_array_new(FALSE, FALSE, sizeof(size_t)),
               g_array_new(FALSE, FALSE, sizeof(size_t)) };
  GStringChunk *strings = g_string_chunk_new(1 << 16);
  GPtrArray *images = g_ptr_array_new();
  GPtrArray *captions = g_ptr_array_new();
  GArray *lines = g_array_new(FALSE, FALSE, sizeof(int));
  char *dir = g_path_get_dirname(path);
  CsvSource *s = NULL;

  int line = 0;
  int got = next_record(path, &c, sep, quoting, &r, &line, error);
  if (got < 0)
    goto out;
  if (got == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: empty file, no header row", path);
    goto out;
  }
  guint ncols = r.start->len;
  int image_col = -1, caption_col = -1;
  for (guint i = 0; i < ncols; i++) {
    if (image_col < 0 && strcmp(FIELD(&r, i), image_column) == 0 &&
        strlen(FIELD(&r, i)) == FIELD_LEN(&r, i))
      image_col = (int)i;
    if (caption_col < 0 && strcmp(FIELD(&r, i), caption_column) == 0 &&
        strlen(FIELD(&r, i)) == FIELD_LEN(&r, i))
      caption_col = (int)i;
  }
  if (image_col < 0 || caption_col < 0) {
    /* the header as the message shows it: one line, at most 20 names */
    GString *names = g_string_new(NULL);
    for (guint i = 0; i < ncols && i < 20; i++) {
      g_string_append(names, i ? ", " : "");
      append_shown(names, FIELD(&r, i), FIELD_LEN(&r, i));
    }
    if (ncols > 20)
      g_string_append_printf(names, ", ... (%u in all)", ncols);
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: no column '%s' (columns: %s)", path,
                image_col < 0 ? image_column : caption_column, names->str);
    g_string_free(names, TRUE);
    goto out;
  }

  while ((got = next_record(path, &c, sep, quoting, &r, &line, error)) > 0) {
    if (r.start->len != ncols) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s:%d: row has %u column%s, the header has %u",
                  path, line, r.start->len, r.start->len == 1 ? "" : "s", ncols);
      got = -1;
      break;
    }
    const char *img = FIELD(&r, image_col);
    size_t img_len = FIELD_LEN(&r, image_col);
    if (img_len == 0 || memchr(img, '\0', img_len)) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s:%d: %s image path", path, line,
                  img_len == 0 ? "empty" : "NUL byte in the");
      got = -1;
      break;
    }
    if (img_len > CSV_MAX_PATH_BYTES) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s:%d: image path of %zu bytes is longer than the limit of %u", path, line,
                  img_len, CSV_MAX_PATH_BYTES);
      got = -1;
      break;
    }
    const char *cap = FIELD(&r, caption_col);
    size_t cap_len = FIELD_LEN(&r, caption_col);
    if (cap_len > CSV_MAX_CAPTION_BYTES) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s:%d: caption of %zu bytes is longer than the limit of %u", path, line,
                  cap_len, CSV_MAX_CAPTION_BYTES);
      got = -1;
      break;
    }
    if (images->len >= CSV_MAX_ROWS) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s:%d: more than %u rows; split the table into several files", path, line,
                  CSV_MAX_ROWS);
      got = -1;
      break;
    }
    if (!g_utf8_validate(cap, (gssize)cap_len, NULL)) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s:%d: caption is not valid UTF-8", path,
                  line);
      got = -1;
      break;
    }
    if (g_path_is_absolute(img) || strcmp(dir, ".") == 0) {
      g_ptr_array_add(images, g_string_chunk_insert(strings, img));
    } else {
      char *full = g_build_filename(dir, img, NULL);
      g_ptr_array_add(images, g_string_chunk_insert(strings, full));
      g_free(full);
    }
    g_ptr_array_add(captions, g_string_chunk_insert(strings, cap));
    g_array_append_val(lines, line);
  }
  if (got < 0)
    goto out;
  if (images->len == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: no rows after the header", path);
    goto out;
  }

  s = g_new0(CsvSource, 1);
  s->base.vt = &csv_vtable;
  s->path = g_strdup(path);
  s->strings = strings;
  strings = NULL;
  s->n = images->len;
  s->images = (char **)g_ptr_array_free(images, FALSE);
  s->captions = (char **)g_ptr_array_free(captions, FALSE);
  s->lines = (int *)g_array_free(lines, FALSE);
  images = captions = NULL;
  lines = NULL;

out:
  if (strings)
    g_string_chunk_free(strings);
  if (images)
    g_ptr_array_free(images, TRUE);
  if (captions)
    g_ptr_array_free(captions, TRUE);
  if (lines)
    g_array_free(lines, TRUE);
  g_string_free(r.buf, TRUE);
  g_array_free(r.start, TRUE);
  g_array_free(r.len, TRUE);
  g_free(dir);
  g_free(text);
  return s ? &s->base : NULL;
}

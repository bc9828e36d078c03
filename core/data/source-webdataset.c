/* source-webdataset.c: webdataset .tar shards as a captioned source.
 *
 * PATTERN: one or more shard patterns separated by ',' (outside braces)
 * or "::" (open_clip's separator); each may hold brace ranges
 * shard-{000..009}.tar (zero-padded to the wider bound when either bound
 * has a leading zero) and brace lists {a,b}, nested or several per
 * pattern, expanded in order.  Relative shard paths are relative to the
 * working folder.
 *
 * Open reads every tar header of every shard once (plain tar skips the
 * data with lseek, so this costs one small read per entry), and groups
 * regular files by key: the path up to the first '.' of the basename; the
 * rest is the extension, compared without case as webdataset does.  A
 * sample takes its image from jpg, jpeg or png and its caption from txt;
 * other extensions (json, cls, ...) are ignored.  Keys are grouped within
 * a shard (not only consecutive entries); the same key in two shards makes
 * two samples.  Samples are in shard order, then in order of each key's
 * first entry.  A key with two images, or two captions, is an error, and
 * so is a caption over WDS_MAX_CAPTION bytes or any member over
 * WDS_MAX_MEMBER.  A shard must be a regular file (a FIFO or a device is
 * refused at once).
 *
 * Keys that lack an image or a caption are skipped: open reports how many
 * with one g_message() line, and fails (CT_ERROR_MISSING) only when no
 * sample is left.  A truncated or corrupt shard is an error at open
 * (CT_ERROR_FORMAT) naming the shard and the entry.
 *
 * get() is thread-safe and keeps no state: for each of the sample's two
 * members it opens the shard with its own file descriptor and libarchive
 * handle.  For a plain (uncompressed) shard it seeks straight to the
 * member's header (recorded at open with archive_read_header_position())
 * and parses that one entry: cost = 2 open()s, 2 seeks and reads of about
 * the member's size.  For a compressed shard (.tar.gz, .tar.xz, ...) it
 * has to decompress from the start of the shard and skip the entries
 * before the member: cost O(member's position in the shard), so use plain
 * tar shards for training.  (A pax global header, which applies to all
 * later entries, is not seen when reading one entry of a plain shard.)
 * Helgrind flags one race inside libarchive's tar reader: a static
 * counter that makes up st_ino/st_dev for each entry; we never read
 * those, so it is harmless. */
#include "config.h"

#include "base/file.h"
#include "data/source.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#define WDS_MAX_MEMBER ((gint64)1 << 30)
#define WDS_MAX_CAPTION 65536 /* bytes of a .txt member, as a CSV caption */
#define WDS_MAX_SHARDS 1000000
#define WDS_READ_BLOCK 65536

typedef struct {
  gint64 header_pos; /* of the entry's first header, in the uncompressed stream */
  gint64 size;
  guint32 ordinal; /* entry number in the shard, from 0 */
  gboolean present;
} Member;

typedef struct {
  guint32 shard;
  const char *key;       /* in strings */
  const char *image_ext; /* in strings, as written in the shard */
  const char *text_ext;  /* in strings */
  Member image, text;
} Sample;

typedef struct {
  CtSource base;
  char *pattern;
  char **shards; /* NULL-terminated */
  gboolean *compressed;
  GStringChunk *strings;
  Sample *samples;
  size_t n;
} WdsSource;

/* Sets ERROR to the message made one line of UTF-8: tar names (and shard
 * patterns) are any bytes, so bad ones show as U+FFFD and control
 * characters as \xNN. */
static void G_GNUC_PRINTF(3, 4)
wds_error(GError **error, CtError code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *line = ct_source_one_line(msg);
  g_set_error_literal(error, CT_ERROR, code, line);
  g_free(line);
  g_free(msg);
}

/* ---------------------------------------------------------------- patterns */

static gboolean
is_range(const char *s, size_t len, long *a, long *b, int *width)
{
  const char *dots = g_strstr_len(s, (gssize)len, "..");
  if (!dots)
    return FALSE;
  const char *parts[2] = { s, dots + 2 };
  size_t lens[2] = { (size_t)(dots - s), len - (size_t)(dots + 2 - s) };
  long vals[2];
  int w = 0;
  for (int k = 0; k < 2; k++) {
    const char *p = parts[k];
    size_t n = lens[k], i = 0;
    if (n > 0 && p[0] == '-')
      i = 1;
    if (i == n || n - i > 9)
      return FALSE;
    for (size_t j = i; j < n; j++)
      if (!g_ascii_isdigit(p[j]))
        return FALSE;
    char tmp[16];
    memcpy(tmp, p, n);
    tmp[n] = 0;
    vals[k] = strtol(tmp, NULL, 10);
    if (n - i > 1 && p[i] == '0')
      w = 1;
  }
  *a = vals[0];
  *b = vals[1];
  *width = w ? (int)MAX(lens[0], lens[1]) : 0;
  return TRUE;
}

/* Appends the expansions of S to OUT.  PATTERN is for errors. */
static gboolean
expand_braces(const char *pattern, const char *s, GPtrArray *out, GError **error)
{
  const char *open = strchr(s, '{');
  if (!open) {
    if (strchr(s, '}')) {
      wds_error(error, CT_ERROR_INVALID, "shard pattern '%s': unbalanced '}'",
                  pattern);
      return FALSE;
    }
    if (out->len >= WDS_MAX_SHARDS) {
      wds_error(error, CT_ERROR_INVALID,
                  "shard pattern '%s': more than %d shards", pattern, WDS_MAX_SHARDS);
      return FALSE;
    }
    g_ptr_array_add(out, g_strdup(s));
    return TRUE;
  }
  int depth = 0;
  const char *close = NULL;
  for (const char *p = open; *p; p++) {
    if (*p == '{')
      depth++;
    else if (*p == '}' && --depth == 0) {
      close = p;
      break;
    }
  }
  if (!close) {
    wds_error(error, CT_ERROR_INVALID, "shard pattern '%s': unbalanced '{'",
                pattern);
    return FALSE;
  }
  const char *inner = open + 1;
  size_t inner_len = (size_t)(close - inner);
  int prefix_len = (int)(open - s);
  long a, b;
  int width;
  if (is_range(inner, inner_len, &a, &b, &width)) {
    if (labs(b - a) >= WDS_MAX_SHARDS) {
      wds_error(error, CT_ERROR_INVALID,
                  "shard pattern '%s': more than %d shards", pattern, WDS_MAX_SHARDS);
      return FALSE;
    }
    long step = b >= a ? 1 : -1;
    for (long v = a;; v += step) {
      char *t = g_strdup_printf("%.*s%0*ld%s", prefix_len, s, width, v, close + 1);
      gboolean ok = expand_braces(pattern, t, out, error);
      g_free(t);
      if (!ok)
        return FALSE;
      if (v == b)
        break;
    }
    return TRUE;
  }
  /* A list: split INNER at its top-level commas. */
  GPtrArray *alts = g_ptr_array_new_with_free_func(g_free);
  const char *start = inner;
  depth = 0;
  for (const char *p = inner; p <= close; p++) {
    if (p < close && *p == '{')
      depth++;
    else if (p < close && *p == '}')
      depth--;
    else if (p == close || (*p == ',' && depth == 0)) {
      g_ptr_array_add(alts, g_strndup(start, (size_t)(p - start)));
      start = p + 1;
    }
  }
  if (alts->len < 2) {
    wds_error(error, CT_ERROR_INVALID,
                "shard pattern '%s': '{%.*s}' is neither a range {A..B} nor a list {a,b}",
                pattern, (int)inner_len, inner);
    g_ptr_array_free(alts, TRUE);
    return FALSE;
  }
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < alts->len; i++) {
    char *t = g_strdup_printf("%.*s%s%s", prefix_len, s, (char *)alts->pdata[i], close + 1);
    ok = expand_braces(pattern, t, out, error);
    g_free(t);
  }
  g_ptr_array_free(alts, TRUE);
  return ok;
}

/* The shard paths PATTERN names.  (transfer full) */
static GPtrArray *
expand_pattern(const char *pattern, GError **error)
{
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  const char *start = pattern;
  int depth = 0;
  for (const char *p = pattern;; p++) {
    gboolean end = *p == 0;
    int sep_len = 0;
    if (!end && depth == 0) {
      if (*p == ',')
        sep_len = 1;
      else if (p[0] == ':' && p[1] == ':')
        sep_len = 2;
    }
    if (end || sep_len) {
      if (p > start) {
        char *part = g_strndup(start, (size_t)(p - start));
        gboolean ok = expand_braces(pattern, part, out, error);
        g_free(part);
        if (!ok) {
          g_ptr_array_free(out, TRUE);
          return NULL;
        }
      }
      if (end)
        break;
      p += sep_len - 1;
      start = p + 1;
      continue;
    }
    if (*p == '{')
      depth++;
    else if (*p == '}' && depth > 0)
      depth--;
  }
  if (out->len == 0) {
    wds_error(error, CT_ERROR_INVALID, "shard pattern '%s' names no shard",
                pattern);
    g_ptr_array_free(out, TRUE);
    return NULL;
  }
  return out;
}

/* ---------------------------------------------------------------- archives */

static void
support_filters(struct archive *a)
{
  /* ARCHIVE_WARN (an external program stands in) is fine. */
  archive_read_support_filter_gzip(a);
  archive_read_support_filter_bzip2(a);
  archive_read_support_filter_xz(a);
  archive_read_support_filter_zstd(a);
}

/* "truncated tar data" for libarchive's several ways to say it. */
static const char *
archive_msg(struct archive *a)
{
  const char *m = archive_error_string(a);
  if (!m)
    return "unreadable tar data";
  if (strstr(m, "runcated"))
    return "truncated tar data";
  return m;
}

static gboolean
open_shard_fd(const char *path, int *fd_out, GError **error)
{
  GError *e = NULL;
  int fd = ct_file_open_regular(path, "a tar shard", NULL, &e);
  if (fd < 0) {
    wds_error(error, CT_ERROR_IO, "%s", e->message);
    g_error_free(e);
    return FALSE;
  }
  *fd_out = fd;
  return TRUE;
}

/* 0 for none, else 1 for image, 2 for caption; *EXT_OUT points into NAME. */
static int
classify(const char *name, size_t *key_len, const char **ext_out)
{
  const char *slash = strrchr(name, '/');
  const char *base = slash ? slash + 1 : name;
  const char *dot = strchr(base, '.');
  if (!dot)
    return 0;
  const char *ext = dot + 1;
  *key_len = (size_t)(dot - name);
  *ext_out = ext;
  if (g_ascii_strcasecmp(ext, "jpg") == 0 || g_ascii_strcasecmp(ext, "jpeg") == 0 ||
      g_ascii_strcasecmp(ext, "png") == 0)
    return 1;
  if (g_ascii_strcasecmp(ext, "txt") == 0)
    return 2;
  return 0;
}

/* Reads the headers of shard SHARD_INDEX and appends its samples to
 * SAMPLES (complete or not). */
static gboolean
index_shard(WdsSource *s, guint32 shard_index, GArray *samples, GError **error)
{
  const char *path = s->shards[shard_index];
  int fd;
  if (!open_shard_fd(path, &fd, error))
    return FALSE;
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  support_filters(a);
  gboolean ok = FALSE;
  GHashTable *by_key = g_hash_table_new(g_str_hash, g_str_equal);
  char *prev = NULL;
  guint first = samples->len;

  if (archive_read_open_fd(a, fd, WDS_READ_BLOCK) != ARCHIVE_OK) {
    const char *m = archive_msg(a);
    wds_error(error, CT_ERROR_FORMAT, "%s: %s", path,
                strstr(m, "nrecognized archive format") ? "not a tar file" : m);
    goto out;
  }
  for (guint32 ordinal = 0;; ordinal++) {
    struct archive_entry *e;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF)
      break;
    if (r < ARCHIVE_WARN) {
      if (prev)
        wds_error(error, CT_ERROR_FORMAT, "%s: header after entry '%s': %s", path,
                    prev, archive_msg(a));
      else
        wds_error(error, CT_ERROR_FORMAT, "%s: first header: %s", path,
                    archive_msg(a));
      goto out;
    }
    if (ordinal == 0) /* the filters are known once a header is read */
      s->compressed[shard_index] = archive_filter_count(a) > 1;
    const char *name = archive_entry_pathname(e);
    g_free(prev);
    prev = g_strdup(name ? name : "?");
    size_t key_len;
    const char *ext;
    int kind = 0;
    if (name && archive_entry_filetype(e) == AE_IFREG)
      kind = classify(name, &key_len, &ext);
    if (kind) {
      gint64 size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
      if (size < 0 || size > WDS_MAX_MEMBER) {
        wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s': bad size %" G_GINT64_FORMAT,
                    path, name, size);
        goto out;
      }
      if (kind == 2 && size > WDS_MAX_CAPTION) {
        wds_error(error, CT_ERROR_FORMAT,
                  "%s: entry '%s': caption of %" G_GINT64_FORMAT " bytes is longer than the "
                  "limit of %d", path, name, size, WDS_MAX_CAPTION);
        goto out;
      }
      char *key = g_strndup(name, key_len);
      gpointer idx_p;
      Sample *sm;
      if (g_hash_table_lookup_extended(by_key, key, NULL, &idx_p)) {
        sm = &g_array_index(samples, Sample, GPOINTER_TO_UINT(idx_p));
      } else {
        Sample fresh = { 0 };
        fresh.shard = shard_index;
        fresh.key = g_string_chunk_insert(s->strings, key);
        g_array_append_val(samples, fresh);
        sm = &g_array_index(samples, Sample, samples->len - 1);
        g_hash_table_insert(by_key, (gpointer)sm->key, GUINT_TO_POINTER(samples->len - 1));
      }
      g_free(key);
      Member *m = kind == 1 ? &sm->image : &sm->text;
      const char **m_ext = kind == 1 ? &sm->image_ext : &sm->text_ext;
      if (m->present) {
        wds_error(error, CT_ERROR_FORMAT,
                    "%s: entry '%s': key '%s' already has %s '%s.%s'", path, name, sm->key,
                    kind == 1 ? "an image" : "a caption", sm->key, *m_ext);
        goto out;
      }
      m->present = TRUE;
      m->header_pos = archive_read_header_position(a);
      m->size = size;
      m->ordinal = ordinal;
      *m_ext = g_string_chunk_insert_const(s->strings, ext);
    }
    if (archive_read_data_skip(a) < ARCHIVE_WARN) {
      wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s': %s", path, prev,
                  archive_msg(a));
      goto out;
    }
  }
  ok = TRUE;

out:
  if (!ok)
    g_array_set_size(samples, first);
  g_free(prev);
  g_hash_table_destroy(by_key);
  archive_read_free(a);
  close(fd);
  return ok;
}

typedef struct {
  int fd;
  guint8 buf[WDS_READ_BLOCK];
} ReadCtx;

static la_ssize_t
read_cb(struct archive *a, void *data, const void **buf)
{
  ReadCtx *ctx = data;
  ssize_t n;
  do
    n = read(ctx->fd, ctx->buf, sizeof ctx->buf);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    archive_set_error(a, errno, "read: %s", g_strerror(errno));
  *buf = ctx->buf;
  return n;
}

/* The bytes of member M (named KEY.EXT) of the sample's shard, NUL
 * terminated.  (transfer full) */
static guint8 *
read_member(WdsSource *s, const Sample *sm, const Member *m, const char *ext, GError **error)
{
  const char *path = s->shards[sm->shard];
  gboolean compressed = s->compressed[sm->shard];
  char *want = g_strconcat(sm->key, ".", ext, NULL);
  guint8 *data = NULL;
  ReadCtx *ctx = g_new(ReadCtx, 1);
  if (!open_shard_fd(path, &ctx->fd, error)) {
    g_free(ctx);
    g_free(want);
    return NULL;
  }
  struct archive *a = archive_read_new();
  archive_read_support_format_tar(a);
  if (compressed)
    support_filters(a);
  guint32 skip = compressed ? m->ordinal : 0;
  if (!compressed && lseek(ctx->fd, (off_t)m->header_pos, SEEK_SET) != (off_t)m->header_pos) {
    wds_error(error, CT_ERROR_IO, "%s: entry '%s': seek: %s", path, want,
                g_strerror(errno));
    goto out;
  }
  if (archive_read_open(a, ctx, NULL, read_cb, NULL) != ARCHIVE_OK) {
    wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s': %s", path, want,
                archive_msg(a));
    goto out;
  }
  struct archive_entry *e = NULL;
  for (;;) {
    int r = archive_read_next_header(a, &e);
    if (r < ARCHIVE_WARN || r == ARCHIVE_EOF) {
      wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s': %s", path, want,
                  r == ARCHIVE_EOF ? "not found (the shard changed since it was opened)"
                                   : archive_msg(a));
      goto out;
    }
    if (skip == 0)
      break;
    skip--;
  }
  const char *name = archive_entry_pathname(e);
  if (!name || strcmp(name, want) != 0 || archive_entry_size(e) != m->size) {
    wds_error(error, CT_ERROR_FORMAT,
                "%s: entry '%s': found '%s' instead (the shard changed since it was opened)",
                path, want, name ? name : "?");
    goto out;
  }
  if (!(data = g_try_malloc((size_t)m->size + 1))) {
    wds_error(error, CT_ERROR_IO, "%s: entry '%s': out of memory reading its %" G_GINT64_FORMAT
              " bytes", path, want, m->size);
    goto out;
  }
  size_t got = 0;
  while (got < (size_t)m->size) {
    la_ssize_t n = archive_read_data(a, data + got, (size_t)m->size - got);
    if (n <= 0) {
      wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s': %s", path, want,
                  n == 0 ? "truncated tar data" : archive_msg(a));
      g_clear_pointer(&data, g_free);
      goto out;
    }
    got += (size_t)n;
  }
  data[got] = 0;

out:
  archive_read_free(a);
  close(ctx->fd);
  g_free(ctx);
  g_free(want);
  return data;
}

/* ---------------------------------------------------------------- source */

static size_t
wds_len(CtSource *src)
{
  return ((WdsSource *)src)->n;
}

static gboolean
wds_get(CtSource *src, size_t index, CtImage **image, char **caption, int *label,
        GError **error)
{
  WdsSource *s = (WdsSource *)src;
  if (!ct_source_check_index(s->pattern, index, s->n, error))
    return FALSE;
  const Sample *sm = &s->samples[index];
  char *text = NULL;
  if (caption) {
    text = (char *)read_member(s, sm, &sm->text, sm->text_ext, error);
    if (!text)
      return FALSE;
    if (!g_utf8_validate(text, (gssize)sm->text.size, NULL)) {
      wds_error(error, CT_ERROR_FORMAT, "%s: entry '%s.%s': caption is not valid UTF-8",
                  s->shards[sm->shard], sm->key, sm->text_ext);
      g_free(text);
      return FALSE;
    }
  }
  if (image) {
    guint8 *bytes = read_member(s, sm, &sm->image, sm->image_ext, error);
    if (!bytes) {
      g_free(text);
      return FALSE;
    }
    char *name = g_strdup_printf("%s: entry '%s.%s'", s->shards[sm->shard], sm->key,
                                 sm->image_ext);
    CtImage *im = ct_image_decode(bytes, (size_t)sm->image.size, name, error);
    g_free(name);
    g_free(bytes);
    if (!im) {
      g_free(text);
      return FALSE;
    }
    *image = im;
  }
  if (caption)
    *caption = text;
  if (label)
    *label = -1;
  return TRUE;
}

static void
wds_free(CtSource *src)
{
  WdsSource *s = (WdsSource *)src;
  g_free(s->pattern);
  g_strfreev(s->shards);
  g_free(s->compressed);
  if (s->strings)
    g_string_chunk_free(s->strings);
  g_free(s->samples);
  g_free(s);
}

static char *
wds_where(CtSource *src, size_t index)
{
  WdsSource *s = (WdsSource *)src;
  if (index >= s->n)
    return NULL;
  const Sample *sm = &s->samples[index];
  return g_strdup_printf("%s: entry '%s.%s'", s->shards[sm->shard], sm->key, sm->text_ext);
}

static const CtSourceVTable wds_vtable = { wds_len, wds_get, wds_free, wds_where };

CtSource *
ct_source_webdataset_new(const char *pattern, GError **error)
{
  g_return_val_if_fail(pattern, NULL);
  GPtrArray *shards = expand_pattern(pattern, error);
  if (!shards)
    return NULL;
  WdsSource *s = g_new0(WdsSource, 1);
  s->base.vt = &wds_vtable;
  s->pattern = g_strdup(pattern);
  guint n_shards = shards->len;
  g_ptr_array_add(shards, NULL);
  s->shards = (char **)g_ptr_array_free(shards, FALSE);
  s->compressed = g_new0(gboolean, n_shards);
  s->strings = g_string_chunk_new(1 << 16);

  GArray *all = g_array_new(FALSE, FALSE, sizeof(Sample));
  for (guint i = 0; i < n_shards; i++) {
    if (!index_shard(s, i, all, error)) {
      g_array_free(all, TRUE);
      wds_free(&s->base);
      return NULL;
    }
  }
  /* Keep the complete samples, in order. */
  guint no_image = 0, no_caption = 0, keep = 0;
  for (guint i = 0; i < all->len; i++) {
    Sample *sm = &g_array_index(all, Sample, i);
    if (!sm->image.present)
      no_image++;
    else if (!sm->text.present)
      no_caption++;
    else
      g_array_index(all, Sample, keep++) = *sm;
  }
  g_array_set_size(all, keep);
  if (keep == 0) {
    wds_error(error, CT_ERROR_MISSING,
                "%s: no sample with both an image (jpg, jpeg, png) and a caption (txt) in %u "
                "shard%s (%u key%s without an image, %u without a caption)",
                pattern, n_shards, n_shards == 1 ? "" : "s", no_image, no_image == 1 ? "" : "s",
                no_caption);
    g_array_free(all, TRUE);
    wds_free(&s->base);
    return NULL;
  }
  if (no_image || no_caption)
    g_message("%s: skipped %u key%s without an image and %u without a caption (%u samples kept)",
              pattern, no_image, no_image == 1 ? "" : "s", no_caption, keep);
  s->n = keep;
  s->samples = (Sample *)(void *)g_array_free(all, FALSE);
  return &s->base;
}

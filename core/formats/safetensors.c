/* safetensors.c: reading and writing the safetensors checkpoint format.
 *
 * Reading maps the file, checks that the header is UTF-8 and strict JSON
 * with safetensors-header.c (nesting depth, duplicate keys, integer range,
 * the top-level names in order), then parses it with json-glib and
 * validates every entry before anything is returned.
 *
 * Writing builds the header with json-glib, pads it with spaces so that the
 * data starts on an 8-byte boundary, and replaces PATH atomically through a
 * temporary file in the same folder. */
#include "config.h"

#include "base/file.h"
#include "formats/safetensors-private.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

/* Everything below reads and writes little-endian data in place. */
G_STATIC_ASSERT(G_BYTE_ORDER == G_LITTLE_ENDIAN);
G_STATIC_ASSERT(sizeof(float) == 4 && sizeof(double) == 8);

#define MAX_HEADER_BYTES CT_ST_MAX_HEADER_BYTES
#define METADATA_KEY CT_ST_METADATA_KEY
/* the longest json-glib message quoted in an error */
#define MAX_QUOTED_MESSAGE 200

/* ---------------------------------------------------------------- dtypes */

static const struct {
  const char *name;
  size_t size;
} dtype_table[CT_DTYPE_UNKNOWN] = {
  [CT_DTYPE_F32] = { "F32", 4 },  [CT_DTYPE_F16] = { "F16", 2 },
  [CT_DTYPE_BF16] = { "BF16", 2 }, [CT_DTYPE_I64] = { "I64", 8 },
  [CT_DTYPE_I32] = { "I32", 4 },  [CT_DTYPE_U8] = { "U8", 1 },
  [CT_DTYPE_F64] = { "F64", 8 },  [CT_DTYPE_BOOL] = { "BOOL", 1 },
  [CT_DTYPE_I8] = { "I8", 1 },    [CT_DTYPE_I16] = { "I16", 2 },
  [CT_DTYPE_U16] = { "U16", 2 },  [CT_DTYPE_U32] = { "U32", 4 },
  [CT_DTYPE_U64] = { "U64", 8 },
};

const char *
ct_dtype_name(CtDtype dtype)
{
  if ((unsigned)dtype >= CT_DTYPE_UNKNOWN)
    return "UNKNOWN";
  return dtype_table[dtype].name;
}

size_t
ct_dtype_size(CtDtype dtype)
{
  if ((unsigned)dtype >= CT_DTYPE_UNKNOWN)
    return 0;
  return dtype_table[dtype].size;
}

static CtDtype
dtype_from_name(const char *name)
{
  for (int i = 0; i < CT_DTYPE_UNKNOWN; i++)
    if (strcmp(dtype_table[i].name, name) == 0)
      return (CtDtype)i;
  return CT_DTYPE_UNKNOWN;
}

/* numel and nbytes of a shape; FALSE when either overflows size_t or a dim
 * is negative. */
static gboolean
shape_sizes(int ndim, const int64_t *shape, size_t dsize, size_t *numel, size_t *nbytes)
{
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0 || (uint64_t)shape[i] > SIZE_MAX)
      return FALSE;
    if (__builtin_mul_overflow(n, (size_t)shape[i], &n))
      return FALSE;
  }
  if (__builtin_mul_overflow(n, dsize, nbytes))
    return FALSE;
  *numel = n;
  return TRUE;
}

char *
ct_shape_string(int ndim, const int64_t *shape)
{
  GString *s = g_string_new("[");
  for (int i = 0; i < ndim; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

/* ---------------------------------------------------------------- errors */

char *
ct_st_printable(const char *s)
{
  GString *out = g_string_new(NULL);
  const char *p = s;
  for (; *p && p - s < 200; p = g_utf8_next_char(p)) {
    if ((guchar)*p < 0x20 || *p == 0x7f)
      g_string_append_printf(out, "\\x%02x", (guchar)*p);
    else
      g_string_append_len(out, p, g_utf8_next_char(p) - p);
  }
  if (*p)
    g_string_append(out, "...");
  return g_string_free(out, FALSE);
}

void
ct_st_set_error(GError **error, CtError code, const char *path, const char *name,
                const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_strdelimit(msg, "\r\n", ' ');
  if (name) {
    char *n = ct_st_printable(name);
    g_set_error(error, CT_ERROR, code, "%s: tensor '%s': %s", path, n, msg);
    g_free(n);
  } else {
    g_set_error(error, CT_ERROR, code, "%s: %s", path, msg);
  }
  g_free(msg);
}

#define set_error ct_st_set_error

/* ---------------------------------------------------------------- reader */

typedef struct {
  CtTensorInfo info;                        /* info.shape points at shape */
  int64_t shape[CT_SAFETENSORS_MAX_DIMS];
  size_t begin, end;                        /* offsets into the data section */
} Entry;

struct CtSafetensors {
  char *path;
  GMappedFile *map;      /* NULL for an empty mapping */
  const guint8 *data;    /* start of the data section, inside map */
  size_t data_len;
  Entry *entries;        /* [n] in header order; names owned here */
  size_t n;
  GHashTable *by_name;   /* name (borrowed) -> Entry * */
  GHashTable *metadata;  /* key -> value, both owned */
};

/* Reads an integer member: TRUE and *out when NODE holds a JSON integer. */
static gboolean
node_get_int(JsonNode *node, int64_t *out)
{
  if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int(node);
  return TRUE;
}

static gboolean
parse_metadata(CtSafetensors *st, JsonNode *node, GError **error)
{
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "__metadata__ is not an object");
    return FALSE;
  }
  JsonObject *obj = json_node_get_object(node);
  GList *members = json_object_get_members(obj);
  gboolean ok = TRUE;
  for (GList *l = members; l; l = l->next) {
    JsonNode *v = json_object_get_member(obj, l->data);
    if (!JSON_NODE_HOLDS_VALUE(v) || json_node_get_value_type(v) != G_TYPE_STRING) {
      set_error(error, CT_ERROR_FORMAT, st->path, NULL,
                "__metadata__ value of '%s' is not a string", (const char *)l->data);
      ok = FALSE;
      break;
    }
    g_hash_table_insert(st->metadata, g_strdup(l->data), g_strdup(json_node_get_string(v)));
  }
  g_list_free(members);
  return ok;
}

/* Fills E from the header entry NODE; E->info.name is already set. */
static gboolean
parse_entry(CtSafetensors *st, Entry *e, JsonNode *node, GError **error)
{
  const char *path = st->path, *name = e->info.name;
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    set_error(error, CT_ERROR_FORMAT, path, name, "header entry is not an object");
    return FALSE;
  }
  JsonObject *obj = json_node_get_object(node);

  JsonNode *dn = json_object_get_member(obj, "dtype");
  if (!dn || !JSON_NODE_HOLDS_VALUE(dn) || json_node_get_value_type(dn) != G_TYPE_STRING) {
    set_error(error, CT_ERROR_FORMAT, path, name, "missing or non-string dtype");
    return FALSE;
  }
  e->info.dtype = dtype_from_name(json_node_get_string(dn));
  if (e->info.dtype == CT_DTYPE_UNKNOWN) {
    set_error(error, CT_ERROR_DTYPE, path, name, "unknown dtype '%s'", json_node_get_string(dn));
    return FALSE;
  }

  JsonNode *sn = json_object_get_member(obj, "shape");
  if (!sn || !JSON_NODE_HOLDS_ARRAY(sn)) {
    set_error(error, CT_ERROR_FORMAT, path, name, "missing or non-array shape");
    return FALSE;
  }
  JsonArray *sa = json_node_get_array(sn);
  guint ndim = json_array_get_length(sa);
  if (ndim > CT_SAFETENSORS_MAX_DIMS) {
    set_error(error, CT_ERROR_FORMAT, path, name, "shape has %u dims, at most %d are allowed",
              ndim, CT_SAFETENSORS_MAX_DIMS);
    return FALSE;
  }
  for (guint i = 0; i < ndim; i++) {
    if (!node_get_int(json_array_get_element(sa, i), &e->shape[i]) || e->shape[i] < 0) {
      set_error(error, CT_ERROR_FORMAT, path, name,
                "shape dim %u is not a non-negative integer", i);
      return FALSE;
    }
  }
  e->info.ndim = (int)ndim;
  e->info.shape = e->shape;
  size_t dsize = ct_dtype_size(e->info.dtype);
  if (!shape_sizes(e->info.ndim, e->shape, dsize, &e->info.numel, &e->info.nbytes)) {
    char *ss = ct_shape_string(e->info.ndim, e->shape);
    set_error(error, CT_ERROR_FORMAT, path, name, "shape %s of %s overflows the address space",
              ss, ct_dtype_name(e->info.dtype));
    g_free(ss);
    return FALSE;
  }

  JsonNode *on = json_object_get_member(obj, "data_offsets");
  JsonArray *oa = (on && JSON_NODE_HOLDS_ARRAY(on)) ? json_node_get_array(on) : NULL;
  int64_t b, en;
  if (!oa || json_array_get_length(oa) != 2 ||
      !node_get_int(json_array_get_element(oa, 0), &b) ||
      !node_get_int(json_array_get_element(oa, 1), &en) || b < 0 || en < 0) {
    set_error(error, CT_ERROR_FORMAT, path, name,
              "data_offsets is not a pair [begin, end] of non-negative integers");
    return FALSE;
  }
  if (b > en) {
    set_error(error, CT_ERROR_FORMAT, path, name,
              "data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] begin after they end",
              b, en);
    return FALSE;
  }
  if ((uint64_t)en > st->data_len) {
    set_error(error, CT_ERROR_FORMAT, path, name,
              "data_offsets [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] end beyond the "
              "%zu bytes of data", b, en, st->data_len);
    return FALSE;
  }
  e->begin = (size_t)b;
  e->end = (size_t)en;
  if (e->end - e->begin != e->info.nbytes) {
    char *ss = ct_shape_string(e->info.ndim, e->shape);
    set_error(error, CT_ERROR_FORMAT, path, name,
              "data_offsets [%zu, %zu] hold %zu bytes but shape %s of %s needs %zu",
              e->begin, e->end, e->end - e->begin, ss, ct_dtype_name(e->info.dtype),
              e->info.nbytes);
    g_free(ss);
    return FALSE;
  }
  return TRUE;
}

static int
compare_by_begin(const void *a, const void *b)
{
  const Entry *x = *(Entry *const *)a, *y = *(Entry *const *)b;
  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  return (x->end > y->end) - (x->end < y->end);
}

/* No two non-empty byte ranges may share a byte. */
static gboolean
check_overlaps(CtSafetensors *st, GError **error)
{
  gboolean ok = TRUE;
  Entry **sorted = g_new(Entry *, st->n ? st->n : 1);
  for (size_t i = 0; i < st->n; i++)
    sorted[i] = &st->entries[i];
  qsort(sorted, st->n, sizeof *sorted, compare_by_begin);
  const Entry *last = NULL;  /* the non-empty range reaching furthest so far */
  for (size_t i = 0; i < st->n; i++) {
    const Entry *e = sorted[i];
    if (e->begin == e->end)
      continue;
    if (last && e->begin < last->end) {
      set_error(error, CT_ERROR_FORMAT, st->path, e->info.name,
                "data_offsets [%zu, %zu] overlap those of '%s' [%zu, %zu]",
                e->begin, e->end, last->info.name, last->begin, last->end);
      ok = FALSE;
      break;
    }
    if (!last || e->end > last->end)
      last = e;
  }
  g_free(sorted);
  return ok;
}

/* Parses and validates the header HDR[0..hlen); fills st->entries. */
static gboolean
parse_header(CtSafetensors *st, const char *hdr, size_t hlen, GError **error)
{
  gboolean ok = FALSE;
  GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
  JsonParser *parser = NULL;
  GError *jerr = NULL;

  if (!g_utf8_validate(hdr, (gssize)hlen, NULL)) {
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header is not valid UTF-8");
    goto out;
  }
  size_t first = 0;
  while (first < hlen && (hdr[first] == ' ' || hdr[first] == '\t' || hdr[first] == '\r' ||
                          hdr[first] == '\n'))
    first++;
  if (first == hlen || hdr[first] != '{') {
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header is not a JSON object");
    goto out;
  }
  if (!ct_st_header_check(st->path, hdr, hlen, keys, error))
    goto out;
  /* The text is strict JSON now; json-glib failing on it would be a bug of
   * json-glib's, reported with its message cut short. */
  parser = json_parser_new_immutable();
  if (!json_parser_load_from_data(parser, hdr, (gssize)hlen, &jerr)) {
    char *m = g_utf8_make_valid(jerr->message, -1);
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header is not valid JSON: %.*s%s",
              (int)(g_utf8_offset_to_pointer(m, MIN(g_utf8_strlen(m, -1), MAX_QUOTED_MESSAGE)) - m),
              m, g_utf8_strlen(m, -1) > MAX_QUOTED_MESSAGE ? "..." : "");
    g_free(m);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header is not a JSON object");
    goto out;
  }
  JsonObject *obj = json_node_get_object(root);
  /* Header order and duplicates come from our check: json-glib keeps one
   * of two equal keys.  The counts agree unless the two read a name
   * differently. */
  if (keys->len != json_object_get_size(obj)) {
    set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header names could not be read");
    goto out;
  }

  st->entries = g_new0(Entry, keys->len ? keys->len : 1);
  for (guint i = 0; i < keys->len; i++) {
    const char *k = keys->pdata[i];
    JsonNode *node = json_object_get_member(obj, k);
    if (!node) {
      set_error(error, CT_ERROR_FORMAT, st->path, NULL, "header names could not be read");
      goto out;
    }
    if (strcmp(k, METADATA_KEY) == 0) {
      if (!parse_metadata(st, node, error))
        goto out;
      continue;
    }
    Entry *e = &st->entries[st->n++];
    e->info.name = g_strdup(k);
    if (!parse_entry(st, e, node, error))
      goto out;
    g_hash_table_insert(st->by_name, (gpointer)e->info.name, e);
  }
  ok = check_overlaps(st, error);
out:
  g_clear_error(&jerr);
  g_clear_object(&parser);
  g_ptr_array_unref(keys);
  return ok;
}

CtSafetensors *
ct_safetensors_open(const char *path, GError **error)
{
  GError *merr = NULL;
  CtSafetensors *st = g_new0(CtSafetensors, 1);
  st->path = g_strdup(path);
  st->by_name = g_hash_table_new(g_str_hash, g_str_equal);
  st->metadata = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

  /* a regular file only: a FIFO is refused without blocking */
  int fd = ct_file_open_regular(path, "a safetensors file", NULL, error);
  if (fd < 0)
    goto fail;
  st->map = g_mapped_file_new_from_fd(fd, FALSE, &merr);
  close(fd);
  if (!st->map) {
    set_error(error, CT_ERROR_IO, path, NULL, "cannot map: %s", merr->message);
    g_error_free(merr);
    goto fail;
  }

  const guint8 *bytes = (const guint8 *)g_mapped_file_get_contents(st->map);
  size_t size = g_mapped_file_get_length(st->map);
  if (size < 8) {
    set_error(error, CT_ERROR_FORMAT, path, NULL,
              "file is truncated: %zu bytes, less than the 8-byte header length", size);
    goto fail;
  }
  guint64 hlen;
  memcpy(&hlen, bytes, 8);
  hlen = GUINT64_FROM_LE(hlen);
  if (hlen > MAX_HEADER_BYTES) {
    set_error(error, CT_ERROR_FORMAT, path, NULL,
              "header length %" G_GUINT64_FORMAT " exceeds the limit of %" G_GUINT64_FORMAT
              " bytes (100 MB)", hlen, MAX_HEADER_BYTES);
    goto fail;
  }
  if (hlen < 2) {
    set_error(error, CT_ERROR_FORMAT, path, NULL,
              "header length %" G_GUINT64_FORMAT " is too short for a JSON object (at least 2 "
              "bytes, \"{}\")", hlen);
    goto fail;
  }
  if (hlen > size - 8) {
    set_error(error, CT_ERROR_FORMAT, path, NULL,
              "file is truncated: header says %" G_GUINT64_FORMAT " bytes but only %zu follow",
              hlen, size - 8);
    goto fail;
  }
  st->data = bytes + 8 + hlen;
  st->data_len = size - 8 - (size_t)hlen;
  if (!parse_header(st, (const char *)bytes + 8, (size_t)hlen, error))
    goto fail;
  return st;
fail:
  ct_safetensors_free(st);
  return NULL;
}

void
ct_safetensors_free(CtSafetensors *st)
{
  if (!st)
    return;
  for (size_t i = 0; i < st->n; i++)
    g_free((char *)st->entries[i].info.name);
  g_free(st->entries);
  g_hash_table_destroy(st->by_name);
  g_hash_table_destroy(st->metadata);
  if (st->map)
    g_mapped_file_unref(st->map);
  g_free(st->path);
  g_free(st);
}

const char *
ct_safetensors_path(const CtSafetensors *st)
{
  return st->path;
}

size_t
ct_safetensors_n_tensors(const CtSafetensors *st)
{
  return st->n;
}

const CtTensorInfo *
ct_safetensors_tensor(const CtSafetensors *st, size_t i)
{
  g_return_val_if_fail(i < st->n, NULL);
  return &st->entries[i].info;
}

const CtTensorInfo *
ct_safetensors_find(const CtSafetensors *st, const char *name)
{
  Entry *e = g_hash_table_lookup(st->by_name, name);
  return e ? &e->info : NULL;
}

const void *
ct_safetensors_data(const CtSafetensors *st, const CtTensorInfo *info)
{
  /* info is the first member of its Entry */
  const Entry *e = (const Entry *)info;
  return st->data + e->begin;
}

const char **
ct_safetensors_metadata_keys(const CtSafetensors *st)
{
  return (const char **) g_hash_table_get_keys_as_array(st->metadata, NULL);
}

const char *
ct_safetensors_metadata(const CtSafetensors *st, const char *key)
{
  return g_hash_table_lookup(st->metadata, key);
}

/* IEEE binary16 bits to float, subnormals, infinities and NaNs included. */
static float
half_to_float(uint16_t h)
{
  uint32_t sign = (uint32_t)(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {          /* subnormal: mant * 2^-24, normalised for float */
    int e = -14;
    while (!(mant & 0x400)) {
      mant <<= 1;
      e--;
    }
    bits = sign | ((uint32_t)(e + 127) << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

gboolean
ct_dtype_is_float(CtDtype dt)
{
  return dt == CT_DTYPE_F32 || dt == CT_DTYPE_F16 || dt == CT_DTYPE_BF16 || dt == CT_DTYPE_F64;
}

static gboolean
is_int_dtype(CtDtype dt)
{
  return dt == CT_DTYPE_I64 || dt == CT_DTYPE_I32 || dt == CT_DTYPE_I16 || dt == CT_DTYPE_I8 ||
         dt == CT_DTYPE_U8 || dt == CT_DTYPE_U16 || dt == CT_DTYPE_U32;
}

/* Finds NAME and checks that its dtype passes DTYPE_OK (else "cannot be
 * read as AS") and that it holds N elements.  (transfer none) */
static const Entry *
lookup_for_read(const CtSafetensors *st, const char *name, size_t n,
                gboolean (*dtype_ok)(CtDtype), const char *as, GError **error)
{
  const Entry *e = g_hash_table_lookup(st->by_name, name);
  if (!e) {
    set_error(error, CT_ERROR_MISSING, st->path, name, "no such tensor");
    return NULL;
  }
  if (!dtype_ok(e->info.dtype)) {
    set_error(error, CT_ERROR_DTYPE, st->path, name, "dtype %s cannot be read as %s",
              ct_dtype_name(e->info.dtype), as);
    return NULL;
  }
  if (e->info.numel != n) {
    char *ss = ct_shape_string(e->info.ndim, e->shape);
    set_error(error, CT_ERROR_SHAPE, st->path, name,
              "shape %s holds %zu elements but the destination holds %zu", ss, e->info.numel, n);
    g_free(ss);
    return NULL;
  }
  return e;
}

gboolean
ct_safetensors_read_f32(const CtSafetensors *st, const char *name, float *dst, size_t n,
                        GError **error)
{
  const Entry *e = lookup_for_read(st, name, n, ct_dtype_is_float, "float32", error);
  if (!e)
    return FALSE;
  const guint8 *src = st->data + e->begin;
  uint16_t h;
  uint32_t bits;
  double d;
  switch (e->info.dtype) {
  case CT_DTYPE_F32:
    if (n > 0) /* a 0-element tensor: DST may be NULL (g_new(float, 0)) */
      memcpy(dst, src, n * 4);
    break;
  case CT_DTYPE_F16:
    for (size_t i = 0; i < n; i++) {
      memcpy(&h, src + 2 * i, 2);
      dst[i] = half_to_float(h);
    }
    break;
  case CT_DTYPE_BF16:   /* the top half of a float32 */
    for (size_t i = 0; i < n; i++) {
      memcpy(&h, src + 2 * i, 2);
      bits = (uint32_t)h << 16;
      memcpy(&dst[i], &bits, 4);
    }
    break;
  default:              /* F64 */
    for (size_t i = 0; i < n; i++) {
      memcpy(&d, src + 8 * i, 8);
      dst[i] = (float)d;
    }
    break;
  }
  return TRUE;
}

gboolean
ct_safetensors_read_i64(const CtSafetensors *st, const char *name, int64_t *dst, size_t n,
                        GError **error)
{
  const Entry *e = lookup_for_read(st, name, n, is_int_dtype, "int64", error);
  if (!e)
    return FALSE;
  const guint8 *src = st->data + e->begin;
  CtDtype dt = e->info.dtype;
  if (dt == CT_DTYPE_I64) {
    if (n > 0) /* a 0-element tensor: DST may be NULL */
      memcpy(dst, src, n * 8);
    return TRUE;
  }
  for (size_t i = 0; i < n; i++) {
    switch (dt) {
    case CT_DTYPE_I32: { int32_t v; memcpy(&v, src + 4 * i, 4); dst[i] = v; break; }
    case CT_DTYPE_I16: { int16_t v; memcpy(&v, src + 2 * i, 2); dst[i] = v; break; }
    case CT_DTYPE_I8: dst[i] = (int8_t)src[i]; break;
    case CT_DTYPE_U8: dst[i] = src[i]; break;
    case CT_DTYPE_U16: { uint16_t v; memcpy(&v, src + 2 * i, 2); dst[i] = v; break; }
    default: { uint32_t v; memcpy(&v, src + 4 * i, 4); dst[i] = v; break; }  /* U32 */
    }
  }
  return TRUE;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
  char *name;
  CtDtype dtype;
  int ndim;
  int64_t shape[CT_SAFETENSORS_MAX_DIMS];
  const void *data;   /* borrowed, nbytes long */
  size_t nbytes;
} WriterEntry;

struct CtSafetensorsWriter {
  GArray *entries;      /* of WriterEntry, in added order */
  GHashTable *names;    /* set of names (borrowed from entries) */
  JsonObject *metadata; /* key -> string, in set order */
};

CtSafetensorsWriter *
ct_safetensors_writer_new(void)
{
  CtSafetensorsWriter *w = g_new0(CtSafetensorsWriter, 1);
  w->entries = g_array_new(FALSE, TRUE, sizeof(WriterEntry));
  w->names = g_hash_table_new(g_str_hash, g_str_equal);
  w->metadata = json_object_new();
  return w;
}

void
ct_safetensors_writer_free(CtSafetensorsWriter *w)
{
  if (!w)
    return;
  for (guint i = 0; i < w->entries->len; i++)
    g_free(g_array_index(w->entries, WriterEntry, i).name);
  g_array_unref(w->entries);
  g_hash_table_destroy(w->names);
  json_object_unref(w->metadata);
  g_free(w);
}

gboolean
ct_safetensors_writer_add(CtSafetensorsWriter *w, const char *name, CtDtype dtype, int ndim,
                          const int64_t *shape, const void *data, GError **error)
{
  WriterEntry e = { .dtype = dtype, .ndim = ndim, .data = data };
  size_t numel;
  if (!name || !g_utf8_validate(name, -1, NULL) || strcmp(name, METADATA_KEY) == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "tensor name '%s' is reserved or not UTF-8",
                name ? name : "(null)");
    return FALSE;
  }
  if (g_hash_table_contains(w->names, name)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "tensor '%s': duplicate name", name);
    return FALSE;
  }
  if (ct_dtype_size(dtype) == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_DTYPE, "tensor '%s': unknown dtype %d", name, dtype);
    return FALSE;
  }
  if (ndim < 0 || ndim > CT_SAFETENSORS_MAX_DIMS || (ndim > 0 && !shape)) {
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE, "tensor '%s': %d dims (0 to %d allowed)%s",
                name, ndim, CT_SAFETENSORS_MAX_DIMS, shape ? "" : " and no shape");
    return FALSE;
  }
  if (ndim > 0)
    memcpy(e.shape, shape, (size_t)ndim * sizeof *shape);
  if (!shape_sizes(ndim, e.shape, ct_dtype_size(dtype), &numel, &e.nbytes)) {
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE,
                "tensor '%s': shape has a negative dim or is too large", name);
    return FALSE;
  }
  if (e.nbytes > 0 && !data) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "tensor '%s': no data", name);
    return FALSE;
  }
  e.name = g_strdup(name);
  g_array_append_val(w->entries, e);
  g_hash_table_add(w->names, e.name);
  return TRUE;
}

void
ct_safetensors_writer_set_metadata(CtSafetensorsWriter *w, const char *key, const char *value)
{
  g_return_if_fail(g_utf8_validate(key, -1, NULL) && g_utf8_validate(value, -1, NULL));
  json_object_set_string_member(w->metadata, key, value);
}

/* The header JSON padded with spaces so that 8 + *len is a multiple of 8.
 * (transfer full) */
static char *
writer_header(CtSafetensorsWriter *w, size_t *len)
{
  JsonObject *root = json_object_new();
  if (json_object_get_size(w->metadata) > 0)
    json_object_set_object_member(root, METADATA_KEY, json_object_ref(w->metadata));
  size_t offset = 0;
  for (guint i = 0; i < w->entries->len; i++) {
    const WriterEntry *e = &g_array_index(w->entries, WriterEntry, i);
    JsonObject *t = json_object_new();
    JsonArray *shape = json_array_sized_new((guint)e->ndim);
    JsonArray *offs = json_array_sized_new(2);
    json_object_set_string_member(t, "dtype", ct_dtype_name(e->dtype));
    for (int d = 0; d < e->ndim; d++)
      json_array_add_int_element(shape, e->shape[d]);
    json_object_set_array_member(t, "shape", shape);
    json_array_add_int_element(offs, (gint64)offset);
    json_array_add_int_element(offs, (gint64)(offset + e->nbytes));
    json_object_set_array_member(t, "data_offsets", offs);
    json_object_set_object_member(root, e->name, t);
    offset += e->nbytes;
  }
  JsonNode *node = json_node_init_object(json_node_alloc(), root);
  JsonGenerator *gen = json_generator_new();
  json_generator_set_root(gen, node);
  gsize glen;
  char *text = json_generator_to_data(gen, &glen);
  g_object_unref(gen);
  json_node_unref(node);
  json_object_unref(root);

  size_t pad = (8 - (8 + glen) % 8) % 8;
  text = g_realloc(text, glen + pad + 1);
  memset(text + glen, ' ', pad);
  text[glen + pad] = '\0';
  *len = glen + pad;
  return text;
}

/* write() all of BUF, retrying short writes and EINTR; errno set on failure. */
static gboolean
write_all(int fd, const void *buf, size_t len)
{
  const guint8 *p = buf;
  while (len > 0) {
    ssize_t k = write(fd, p, len);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return FALSE;
    if (k == 0) {
      errno = ENOSPC;
      return FALSE;
    }
    p += k;
    len -= (size_t)k;
  }
  return TRUE;
}

/* The mode a newly created file gets: 0666 less the umask, read without
 * changing it (umask() would race with other threads). */
static mode_t
new_file_mode(void)
{
  char *status = NULL;
  unsigned mask = 022;
  if (g_file_get_contents("/proc/self/status", &status, NULL, NULL)) {
    const char *u = strstr(status, "\nUmask:");
    if (u)
      mask = (unsigned)strtoul(u + 7, NULL, 8);
  }
  g_free(status);
  return (mode_t)(0666 & ~mask);
}

gboolean
ct_safetensors_writer_write(CtSafetensorsWriter *w, const char *path, GError **error)
{
  size_t hlen;
  char *header = writer_header(w, &hlen);
  char *tmp = g_strdup_printf("%s.tmp.XXXXXX", path);
  char *dir = g_path_get_dirname(path);
  gboolean ok = FALSE;
  struct stat sb;
  int dfd = -1, fd = -1;

  /* The temporary file is renamed over PATH: a device or a FIFO there
   * (/dev/full, say) would be replaced by a regular file. */
  if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
    set_error(error, CT_ERROR_IO, path, NULL,
              "not a regular file; safetensors files are written whole and renamed into "
              "place");
    goto out;
  }
  fd = mkstemp(tmp);
  if (fd < 0) {
    set_error(error, CT_ERROR_IO, path, NULL, "cannot create temporary file: %s",
              g_strerror(errno));
    goto out;
  }
  /* Keep the mode of the file being replaced, else the usual one. */
  if (fchmod(fd, stat(path, &sb) == 0 ? (sb.st_mode & 07777) : new_file_mode()) < 0)
    goto io_error;
  guint64 le = GUINT64_TO_LE((guint64)hlen);
  if (!write_all(fd, &le, 8) || !write_all(fd, header, hlen))
    goto io_error;
  for (guint i = 0; i < w->entries->len; i++) {
    const WriterEntry *e = &g_array_index(w->entries, WriterEntry, i);
    if (e->nbytes > 0 && !write_all(fd, e->data, e->nbytes))
      goto io_error;
  }
  if (fsync(fd) < 0)
    goto io_error;
  int rc = close(fd);
  fd = -1;
  if (rc < 0 || rename(tmp, path) < 0)
    goto io_error;
  /* The rename is done; syncing the folder makes it durable. */
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || (fsync(dfd) < 0 && errno != EINVAL)) {
    set_error(error, CT_ERROR_IO, path, NULL, "cannot sync folder '%s': %s", dir,
              g_strerror(errno));
    goto out;
  }
  ok = TRUE;
  goto out;

io_error:
  set_error(error, CT_ERROR_IO, path, NULL, "write failed: %s", g_strerror(errno));
  if (fd >= 0)
    close(fd);
  fd = -1;
  unlink(tmp);
out:
  if (dfd >= 0)
    close(dfd);
  g_free(dir);
  g_free(tmp);
  g_free(header);
  return ok;
}

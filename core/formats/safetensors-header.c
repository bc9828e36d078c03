/* safetensors-header.c: a strict check of a safetensors header's JSON
 * before json-glib parses it.
 *
 * json-glib is lenient (comments, single-quoted strings, hexadecimal and
 * leading-zero numbers, trailing commas), wraps integers beyond int64
 * (-9223372036854775809 reads as INT64_MAX), keeps one of two equal keys
 * silently, truncates strings at an escaped NUL and recurses once per
 * nesting level.  This walk accepts exactly RFC 8259 JSON, with an explicit
 * stack of at most CT_ST_MAX_HEADER_DEPTH levels, so that json-glib only
 * ever sees text whose meaning is unambiguous. */
#include "config.h"

#include "formats/safetensors-private.h"

#include <string.h>

typedef struct {
  const char *path;
  const char *s;      /* the header text, len bytes, valid UTF-8 */
  size_t len, i;      /* i: the next byte to read */
  int depth;          /* open containers; open[1 .. depth] */
  char open[CT_ST_MAX_HEADER_DEPTH + 1];
  GHashTable *seen[CT_ST_MAX_HEADER_DEPTH + 1]; /* keys of the object open at each level */
  GString *str;       /* the last key read, decoded */
  char *entry;        /* the top-level key whose value is being read, or NULL */
  GPtrArray *keys;    /* the caller's */
} Scan;

/* Sets ERROR for a fault at header byte AT, naming the entry being read. */
static gboolean G_GNUC_PRINTF(4, 5)
fail(Scan *sc, GError **error, size_t at, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  gboolean meta = sc->entry && strcmp(sc->entry, CT_ST_METADATA_KEY) == 0;
  ct_st_set_error(error, CT_ERROR_FORMAT, sc->path, meta ? NULL : sc->entry,
                  "%sheader JSON, byte %zu: %s", meta ? "__metadata__: " : "", at, msg);
  g_free(msg);
  return FALSE;
}

static void
skip_ws(Scan *sc)
{
  while (sc->i < sc->len && (sc->s[sc->i] == ' ' || sc->s[sc->i] == '\t' ||
                             sc->s[sc->i] == '\r' || sc->s[sc->i] == '\n'))
    sc->i++;
}

static int
hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Reads the 4 hex digits of a \u escape at s[i]; -1 if they are not. */
static long
read_hex4(Scan *sc)
{
  if (sc->len - sc->i < 4)
    return -1;
  long u = 0;
  for (int k = 0; k < 4; k++) {
    int h = hex_value(sc->s[sc->i + k]);
    if (h < 0)
      return -1;
    u = u * 16 + h;
  }
  sc->i += 4;
  return u;
}

/* Reads the string starting at s[i] == '"', decoded into OUT when OUT is
 * not NULL. */
static gboolean
scan_string(Scan *sc, GString *out, GError **error)
{
  size_t start = sc->i++;
  if (out)
    g_string_truncate(out, 0);
  for (;;) {
    if (sc->i >= sc->len)
      return fail(sc, error, start, "string is not closed");
    guchar c = (guchar)sc->s[sc->i];
    if (c == '"') {
      sc->i++;
      return TRUE;
    }
    if (c < 0x20)
      return fail(sc, error, sc->i, "raw control character 0x%02x in a string", c);
    if (c != '\\') {
      if (out)
        g_string_append_c(out, (char)c);
      sc->i++;
      continue;
    }
    size_t esc = sc->i;
    if (sc->i + 1 >= sc->len)
      return fail(sc, error, start, "string is not closed");
    char e = sc->s[sc->i + 1];
    sc->i += 2;
    char plain;
    switch (e) {
    case '"': plain = '"'; break;
    case '\\': plain = '\\'; break;
    case '/': plain = '/'; break;
    case 'b': plain = '\b'; break;
    case 'f': plain = '\f'; break;
    case 'n': plain = '\n'; break;
    case 'r': plain = '\r'; break;
    case 't': plain = '\t'; break;
    case 'u': plain = 0; break;
    default: return fail(sc, error, esc, "invalid escape in a string");
    }
    if (plain) {
      if (out)
        g_string_append_c(out, plain);
      continue;
    }
    long u = read_hex4(sc);
    if (u < 0)
      return fail(sc, error, esc, "\\u is not followed by 4 hex digits");
    if (u >= 0xD800 && u <= 0xDBFF) {
      long lo = -1;
      if (sc->len - sc->i >= 2 && sc->s[sc->i] == '\\' && sc->s[sc->i + 1] == 'u') {
        sc->i += 2;
        lo = read_hex4(sc);
      }
      if (lo < 0xDC00 || lo > 0xDFFF)
        return fail(sc, error, esc, "\\u%04lX is a lone surrogate", u);
      u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    } else if (u >= 0xDC00 && u <= 0xDFFF) {
      return fail(sc, error, esc, "\\u%04lX is a lone surrogate", u);
    } else if (u == 0) {
      return fail(sc, error, esc, "\\u0000 (a NUL character) in a string");
    }
    if (out)
      g_string_append_unichar(out, (gunichar)u);
  }
}

static gboolean
is_digit(const Scan *sc, size_t at)
{
  return at < sc->len && sc->s[at] >= '0' && sc->s[at] <= '9';
}

/* Reads the number starting at s[i]; integers must fit in int64. */
static gboolean
scan_number(Scan *sc, GError **error)
{
  size_t start = sc->i;
  gboolean neg = sc->s[sc->i] == '-', integer = TRUE;
  if (neg)
    sc->i++;
  size_t d0 = sc->i;
  if (!is_digit(sc, sc->i))
    return fail(sc, error, start, "'-' is not followed by a digit");
  if (sc->s[sc->i] == '0' && is_digit(sc, sc->i + 1))
    return fail(sc, error, start, "number with a leading zero");
  while (is_digit(sc, sc->i))
    sc->i++;
  size_t nd = sc->i - d0;
  if (sc->i < sc->len && sc->s[sc->i] == '.') {
    integer = FALSE;
    if (!is_digit(sc, ++sc->i))
      return fail(sc, error, start, "no digit after a decimal point");
    while (is_digit(sc, sc->i))
      sc->i++;
  }
  if (sc->i < sc->len && (sc->s[sc->i] == 'e' || sc->s[sc->i] == 'E')) {
    integer = FALSE;
    sc->i++;
    if (sc->i < sc->len && (sc->s[sc->i] == '+' || sc->s[sc->i] == '-'))
      sc->i++;
    if (!is_digit(sc, sc->i))
      return fail(sc, error, start, "no digit in an exponent");
    while (is_digit(sc, sc->i))
      sc->i++;
  }
  /* int64: up to 9223372036854775807, down to -9223372036854775808 */
  if (integer && (nd > 19 || (nd == 19 && memcmp(sc->s + d0, neg ? "9223372036854775808" :
                                                 "9223372036854775807", 19) > 0)))
    return fail(sc, error, start, "integer %s%.*s%s does not fit in 64 bits", neg ? "-" : "",
                (int)MIN(nd, 40), sc->s + d0, nd > 40 ? "..." : "");
  return TRUE;
}

/* Reads "KEY" : at s[i] into the object open at this depth. */
static gboolean
scan_key(Scan *sc, GError **error)
{
  size_t at = sc->i;
  if (at >= sc->len || sc->s[at] != '"')
    return fail(sc, error, at, "expected a string key");
  if (sc->depth == 1)
    g_clear_pointer(&sc->entry, g_free); /* between entries */
  if (!scan_string(sc, sc->str, error))
    return FALSE;
  GHashTable **seen = &sc->seen[sc->depth];
  if (!*seen)
    *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (!g_hash_table_add(*seen, g_strdup(sc->str->str))) {
    if (sc->depth > 1) {
      char *k = ct_st_printable(sc->str->str);
      fail(sc, error, at, "key '%s' appears twice in one object", k);
      g_free(k);
    } else if (strcmp(sc->str->str, CT_ST_METADATA_KEY) == 0) {
      ct_st_set_error(error, CT_ERROR_FORMAT, sc->path, NULL, "__metadata__ appears twice");
    } else {
      ct_st_set_error(error, CT_ERROR_FORMAT, sc->path, sc->str->str,
                      "name appears more than once");
    }
    return FALSE;
  }
  if (sc->depth == 1) {
    sc->entry = g_strdup(sc->str->str);
    g_ptr_array_add(sc->keys, g_strdup(sc->str->str));
  }
  skip_ws(sc);
  if (sc->i >= sc->len || sc->s[sc->i] != ':')
    return fail(sc, error, sc->i, "expected ':' after a key");
  sc->i++;
  return TRUE;
}

/* Reads the value starting at s[i]: a scalar, or the opening of a
 * container (and its first key).  *OPENED tells which. */
static gboolean
scan_value(Scan *sc, gboolean *opened, GError **error)
{
  *opened = FALSE;
  if (sc->i >= sc->len)
    return fail(sc, error, sc->i, "a value is missing");
  char c = sc->s[sc->i];
  if (c == '{' || c == '[') {
    if (sc->depth == CT_ST_MAX_HEADER_DEPTH)
      return fail(sc, error, sc->i, "nested deeper than %d levels", CT_ST_MAX_HEADER_DEPTH);
    sc->open[++sc->depth] = c;
    if (sc->seen[sc->depth])
      g_hash_table_remove_all(sc->seen[sc->depth]);
    sc->i++;
    skip_ws(sc);
    if (sc->i < sc->len && sc->s[sc->i] == (c == '{' ? '}' : ']')) {
      sc->i++;
      sc->depth--;
      return TRUE;
    }
    *opened = TRUE;
    return c == '[' || scan_key(sc, error);
  }
  if (c == '"')
    return scan_string(sc, NULL, error);
  if (c == '-' || (c >= '0' && c <= '9'))
    return scan_number(sc, error);
  static const char *const literals[] = { "true", "false", "null" };
  for (size_t k = 0; k < G_N_ELEMENTS(literals); k++) {
    size_t n = strlen(literals[k]);
    if (sc->len - sc->i >= n && memcmp(sc->s + sc->i, literals[k], n) == 0) {
      sc->i += n;
      return TRUE;
    }
  }
  if ((guchar)c < 0x80 && g_ascii_isprint(c))
    return fail(sc, error, sc->i, "unexpected character '%c'", c);
  return fail(sc, error, sc->i, "unexpected character");
}

gboolean
ct_st_header_check(const char *path, const char *text, size_t len, GPtrArray *keys,
                   GError **error)
{
  Scan sc = { .path = path, .s = text, .len = len, .keys = keys, .str = g_string_new(NULL) };
  gboolean ok = FALSE, want_value = TRUE, opened;
  for (;;) {
    skip_ws(&sc);
    if (want_value) {
      if (!scan_value(&sc, &opened, error))
        goto out;
      want_value = opened;
      continue;
    }
    if (sc.depth == 0) {
      if (sc.i != sc.len) {
        fail(&sc, error, sc.i, "more data after the end of the JSON value");
        goto out;
      }
      ok = TRUE;
      goto out;
    }
    char close = sc.open[sc.depth] == '{' ? '}' : ']';
    if (sc.i >= sc.len) {
      fail(&sc, error, sc.i, "the text ends before a closing '%c'", close);
      goto out;
    }
    if (sc.s[sc.i] == close) {
      sc.i++;
      if (--sc.depth == 0)
        g_clear_pointer(&sc.entry, g_free);
    } else if (sc.s[sc.i] == ',') {
      sc.i++;
      if (close == '}') {
        skip_ws(&sc);
        if (!scan_key(&sc, error))
          goto out;
      }
      want_value = TRUE;
    } else {
      fail(&sc, error, sc.i, "expected ',' or '%c'", close);
      goto out;
    }
  }
out:
  for (int d = 0; d <= CT_ST_MAX_HEADER_DEPTH; d++)
    if (sc.seen[d])
      g_hash_table_destroy(sc.seen[d]);
  g_free(sc.entry);
  g_string_free(sc.str, TRUE);
  return ok;
}

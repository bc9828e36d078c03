/* tokenizer.c: OpenAI CLIP's SimpleTokenizer (clip/simple_tokenizer.py) and
 * clip.tokenize, reproduced exactly.
 *
 * Pipeline of encode(), each step matching the Python it replaces:
 *   1. html.unescape twice: named references from the HTML5 list and numeric
 *      ones with Python's replacements (tables in html-entities.c, generated
 *      from Python by tests/torch/gen_tokenizer_tables.py);
 *   2. strip, and runs of whitespace to one space: "whitespace" is str.isspace
 *      (what Python's re \s and str.strip use);
 *   3. str.lower(): the generated table of Python's lowercase mappings,
 *      including U+0130 -> "i\u0307" and the Greek final sigma rule;
 *   4. OpenAI's regex (the third-party "regex" module, IGNORECASE)
 *        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d
 *        |[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *      by hand: letters and numbers are GLib's general categories L* and N*.
 *      IGNORECASE matters only for two code points once the text is lower
 *      case: U+017F (long s) matches the 's' of "'s" and of "<|startoftext|>",
 *      and U+0345 (combining ypogegrammeni, which folds to a letter) matches
 *      none of the alternatives, so it is skipped like whitespace;
 *   5. each piece's UTF-8 bytes as byte symbols, BPE by merge rank, ids.
 * Symbols are vocabulary ids throughout: a string maps to one id (the last,
 * as OpenAI's encoder dict), so comparing ids is comparing strings. */
#include "config.h"

#include <cliptrain/tokenizer.h>

#include "base/file.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>

/* html-entities.c (generated) */
extern const char *const ct_html5_names[];
extern const char *const ct_html5_values[];
extern const size_t ct_html5_len;
extern const uint32_t ct_html_invalid_charrefs[][2];
extern const size_t ct_html_invalid_charrefs_len;
extern const uint32_t ct_html_invalid_codepoints[];
extern const size_t ct_html_invalid_codepoints_len;
extern const uint32_t ct_lower_map[][3];
extern const size_t ct_lower_map_len;
extern const uint32_t ct_case_ignorable[][2];
extern const size_t ct_case_ignorable_len;
extern const uint32_t ct_cased[][2];
extern const size_t ct_cased_len;

#define SOT_STRING "<|startoftext|>"
#define EOT_STRING "<|endoftext|>"
#define EOW "</w>"
/* OpenAI reads merges = lines[1 : 49152 - 256 - 2 + 1]. */
#define OPENAI_MAX_MERGES (49152 - 256 - 2)
/* The most a merges file may hold, gzipped or inflated: OpenAI's is
 * 1.4 MB inflated, and only its first OPENAI_MAX_MERGES lines are read. */
#define VOCAB_MAX_BYTES ((size_t) 64 << 20)
/* Pieces whose BPE is remembered; beyond this the cache stops growing. */
#define CACHE_MAX_ENTRIES (1 << 18)

/* (left id, right id) -> (rank, merged id), open addressing. */
typedef struct {
  uint64_t key; /* EMPTY_KEY when free */
  int32_t rank;
  int32_t result;
} RankSlot;
#define EMPTY_KEY UINT64_MAX

typedef struct {
  size_t n;
  int32_t ids[];
} CacheEntry;

struct _CtTokenizer {
  int n_vocab;
  char **vocab;          /* n_vocab symbols, byte-level code points in UTF-8 */
  GBytes **vocab_bytes;  /* the bytes each symbol stands for, for decode */
  GHashTable *encoder;   /* symbol (borrowed from vocab) -> id + 1 */
  char **merges;         /* n_merges lines, parts joined by one space */
  size_t n_merges;
  RankSlot *ranks;
  size_t ranks_mask;     /* capacity - 1, capacity a power of two */
  int32_t byte_id[256];     /* id of byte b's symbol */
  int32_t byte_id_eow[256]; /* id of byte b's symbol + "</w>" */
  GRWLock cache_lock;
  GHashTable *cache;     /* piece (UTF-8) -> CacheEntry */
};

/* ------------------------------------------------------------ byte symbols */

/* OpenAI's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes, in order, for U+0100 + n. */
static gunichar
byte_to_cp(guint8 b)
{
  if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
    return b;
  if (b <= 32)
    return 256 + b;
  if (b <= 160)
    return 256 + 33 + (b - 127);
  return 256 + 67; /* 173, the soft hyphen */
}

/* The byte a byte-level code point stands for, or -1. */
static int
cp_to_byte(gunichar c)
{
  if (c < 256)
    return byte_to_cp((guint8) c) == c ? (int) c : -1;
  if (c < 256 + 33)
    return (int) (c - 256);
  if (c < 256 + 67)
    return (int) (c - 256 - 33 + 127);
  if (c == 256 + 67)
    return 173;
  return -1;
}

char *
ct_tokenizer_bytes_to_unicode(const guint8 *bytes, size_t n)
{
  GString *s = g_string_sized_new(2 * n + 1);
  for (size_t i = 0; i < n; i++)
    g_string_append_unichar(s, byte_to_cp(bytes[i]));
  return g_string_free(s, FALSE);
}

/* ---------------------------------------------------------- character classes */

/* str.isspace(), which Python's re \s and str.strip() use. */
static gboolean
py_isspace(gunichar c)
{
  if (c < 0x80)
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20);
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028
         || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

static gboolean
in_ranges(const uint32_t (*r)[2], size_t n, gunichar c)
{
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c < r[mid][0])
      hi = mid;
    else if (c > r[mid][1])
      lo = mid + 1;
    else
      return TRUE;
  }
  return FALSE;
}

static gboolean
in_sorted(const uint32_t *v, size_t n, uint32_t c)
{
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c < v[mid])
      hi = mid;
    else if (c > v[mid])
      lo = mid + 1;
    else
      return TRUE;
  }
  return FALSE;
}

/* Python's handle_capital_sigma: U+03A3 at u[i] lowers to the final form when
 * a cased letter precedes it and none follows, skipping case-ignorables. */
static gboolean
final_sigma(const gunichar *u, size_t n, size_t i)
{
  size_t j = i;
  gboolean found = FALSE;
  gunichar c = 0;
  while (j > 0) {
    c = u[--j];
    if (!in_ranges(ct_case_ignorable, ct_case_ignorable_len, c)) {
      found = TRUE;
      break;
    }
  }
  if (!found || !in_ranges(ct_cased, ct_cased_len, c))
    return FALSE;
  for (j = i + 1; j < n; j++) {
    c = u[j];
    if (!in_ranges(ct_case_ignorable, ct_case_ignorable_len, c))
      return !in_ranges(ct_cased, ct_cased_len, c);
  }
  return TRUE;
}

/* str.lower() of u[0..n) into out (room for 2n); returns the new length. */
static size_t
py_lower(const gunichar *u, size_t n, gunichar *out)
{
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    gunichar c = u[i];
    if (c < 0x80) {
      out[k++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
      continue;
    }
    if (c == 0x3A3) {
      out[k++] = final_sigma(u, n, i) ? 0x3C2 : 0x3C3;
      continue;
    }
    size_t lo = 0, hi = ct_lower_map_len;
    gboolean mapped = FALSE;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (c < ct_lower_map[mid][0])
        hi = mid;
      else if (c > ct_lower_map[mid][0])
        lo = mid + 1;
      else {
        out[k++] = ct_lower_map[mid][1];
        if (ct_lower_map[mid][2])
          out[k++] = ct_lower_map[mid][2];
        mapped = TRUE;
        break;
      }
    }
    if (!mapped)
      out[k++] = c;
  }
  return k;
}

enum { CLS_SPACE, CLS_LETTER, CLS_NUMBER, CLS_OTHER, CLS_SKIP };

/* Which alternative of OpenAI's regex a code point of lowered text falls in. */
static int
classify(gunichar c)
{
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      return CLS_LETTER;
    if (c >= '0' && c <= '9')
      return CLS_NUMBER;
    return py_isspace(c) ? CLS_SPACE : CLS_OTHER;
  }
  if (py_isspace(c))
    return CLS_SPACE;
  if (c == 0x345) /* see the top of this file */
    return CLS_SKIP;
  switch (g_unichar_type(c)) {
  case G_UNICODE_LOWERCASE_LETTER:
  case G_UNICODE_UPPERCASE_LETTER:
  case G_UNICODE_TITLECASE_LETTER:
  case G_UNICODE_MODIFIER_LETTER:
  case G_UNICODE_OTHER_LETTER:
    return CLS_LETTER;
  case G_UNICODE_DECIMAL_NUMBER:
  case G_UNICODE_LETTER_NUMBER:
  case G_UNICODE_OTHER_NUMBER:
    return CLS_NUMBER;
  default:
    return CLS_OTHER;
  }
}

/* ------------------------------------------------------------- html.unescape */

static int
name_cmp(const char *name, const char *s, size_t len)
{
  int c = strncmp(name, s, len);
  if (c != 0)
    return c;
  return name[len] == '\0' ? 0 : 1;
}

/* The replacement of the named reference s[0..len), or NULL. */
static const char *
html5_lookup(const char *s, size_t len)
{
  size_t lo = 0, hi = ct_html5_len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = name_cmp(ct_html5_names[mid], s, len);
    if (c == 0)
      return ct_html5_values[mid];
    if (c > 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

/* Python's _replace_charref for a numeric reference. */
static void
append_numeric(GString *out, uint32_t num)
{
  for (size_t i = 0; i < ct_html_invalid_charrefs_len; i++)
    if (ct_html_invalid_charrefs[i][0] == num) {
      g_string_append_unichar(out, ct_html_invalid_charrefs[i][1]);
      return;
    }
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
    g_string_append_unichar(out, 0xFFFD);
    return;
  }
  if (in_sorted(ct_html_invalid_codepoints, ct_html_invalid_codepoints_len, num))
    return;
  g_string_append_unichar(out, num);
}

/* q follows an '&'.  Appends the replacement of the reference Python's
 * _charref regex matches at q,
 *   #[0-9]+;? | #[xX][0-9a-fA-F]+;? | [^\t\n\f <&#;]{1,32};?
 * and returns how many bytes of q it replaces; 0 when nothing matches or the
 * reference is left as it is. */
static size_t
replace_charref(const char *q, GString *out)
{
  if (q[0] == '#') {
    size_t j;
    uint32_t num = 0;
    if (g_ascii_isdigit(q[1])) {
      for (j = 1; g_ascii_isdigit(q[j]); j++)
        num = MIN(num * 10 + (uint32_t) (q[j] - '0'), 0x110000u);
    } else if ((q[1] == 'x' || q[1] == 'X') && g_ascii_isxdigit(q[2])) {
      for (j = 2; g_ascii_isxdigit(q[j]); j++)
        num = MIN(num * 16 + (uint32_t) g_ascii_xdigit_value(q[j]), 0x110000u);
    } else
      return 0;
    if (q[j] == ';')
      j++;
    append_numeric(out, num);
    return j;
  }
  /* a name: up to 32 code points, then an optional ';' */
  size_t offs[33]; /* byte offset of each code point */
  size_t ncp = 0;
  const char *e = q;
  while (*e && ncp < 32 && !strchr("\t\n\f <&#;", *e)) {
    offs[ncp++] = (size_t) (e - q);
    e = g_utf8_next_char(e);
  }
  if (ncp == 0)
    return 0;
  offs[ncp] = (size_t) (e - q);
  size_t len = offs[ncp] + (*e == ';' ? 1 : 0);
  const char *v = html5_lookup(q, len);
  if (v) {
    g_string_append(out, v);
    return len;
  }
  /* the longest prefix of at least 2 code points that is a name; the rest
   * of the reference, which holds no '&', is then copied as text */
  size_t total = ncp + (*e == ';' ? 1 : 0);
  for (size_t x = total - 1; x >= 2; x--) {
    v = html5_lookup(q, offs[x]);
    if (v) {
      g_string_append(out, v);
      return offs[x];
    }
  }
  return 0;
}

char *
ct_html_unescape(const char *text)
{
  const char *amp = strchr(text, '&');
  if (!amp)
    return g_strdup(text);
  GString *out = g_string_sized_new(strlen(text) + 1);
  const char *p = text;
  while ((amp = strchr(p, '&'))) {
    g_string_append_len(out, p, amp - p);
    size_t used = replace_charref(amp + 1, out);
    if (used == 0) {
      g_string_append_c(out, '&');
      p = amp + 1;
    } else
      p = amp + 1 + used;
  }
  g_string_append(out, p);
  return g_string_free(out, FALSE);
}

/* ------------------------------------------------------------ clean and split */

/* TEXT as an error message quotes it: valid UTF-8 (bad bytes as U+FFFD),
 * control characters as \xNN so the message stays one line, cut after
 * 200 characters with "...".  (transfer full) */
static char *
shown_text(const char *text)
{
  g_autofree char *valid = g_utf8_make_valid(text, -1);
  GString *out = g_string_new(NULL);
  const char *p = valid;
  for (int n = 0; *p && n < 200; n++, p = g_utf8_next_char(p)) {
    if ((guchar) *p < 0x20 || *p == 0x7f)
      g_string_append_printf(out, "\\x%02x", (guchar) *p);
    else
      g_string_append_len(out, p, g_utf8_next_char(p) - p);
  }
  if (*p)
    g_string_append(out, "...");
  return g_string_free(out, FALSE);
}

static gboolean
check_utf8(const char *text, GError **error)
{
  const char *end;
  if (g_utf8_validate(text, -1, &end))
    return TRUE;
  g_autofree char *shown = shown_text(text);
  g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
              "caption \"%s\" is not valid UTF-8 (bad byte 0x%02x at offset %zu)", shown,
              (guint8) *end, (size_t) (end - text));
  return FALSE;
}

/* basic_clean, whitespace_clean and lower() of valid UTF-8 text, as code
 * points.  (transfer full) */
static gunichar *
clean_ucs4(const char *text, size_t *n_out)
{
  gunichar *u;
  glong len;
  if (!strchr(text, '&'))
    u = g_utf8_to_ucs4_fast(text, -1, &len);
  else {
    char *once = ct_html_unescape(text);
    char *twice = ct_html_unescape(once);
    u = g_utf8_to_ucs4_fast(twice, -1, &len);
    g_free(once);
    g_free(twice);
  }
  /* strip, and each run of whitespace to one space */
  size_t n = 0;
  gboolean pending = FALSE;
  for (glong i = 0; i < len; i++) {
    if (py_isspace(u[i])) {
      pending = n > 0;
      continue;
    }
    if (pending)
      u[n++] = ' ';
    pending = FALSE;
    u[n++] = u[i];
  }
  gunichar *low = g_new(gunichar, 2 * n + 1);
  *n_out = py_lower(u, n, low);
  g_free(u);
  return low;
}

/* Does u[0..n) start with the special token pat (ASCII, lower case) under
 * IGNORECASE?  Lowered text can only differ by U+017F for 's'. */
static gboolean
match_special(const gunichar *u, size_t n, const char *pat)
{
  size_t m = strlen(pat);
  if (n < m)
    return FALSE;
  for (size_t i = 0; i < m; i++)
    if (u[i] != (gunichar) pat[i] && !(pat[i] == 's' && u[i] == 0x17F))
      return FALSE;
  return TRUE;
}

/* The next piece re.findall finds from *pos: [*start, *end).  FALSE at the end. */
static gboolean
next_piece(const gunichar *u, size_t n, size_t *pos, size_t *start, size_t *end)
{
  size_t i = *pos;
  while (i < n) {
    gunichar c = u[i];
    size_t m = 0;
    if (c == '<') {
      if (match_special(u + i, n - i, SOT_STRING))
        m = strlen(SOT_STRING);
      else if (match_special(u + i, n - i, EOT_STRING))
        m = strlen(EOT_STRING);
    } else if (c == '\'' && i + 1 < n) {
      gunichar d = u[i + 1], e = i + 2 < n ? u[i + 2] : 0;
      if (d == 's' || d == 0x17F || d == 't' || d == 'm' || d == 'd')
        m = 2;
      else if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l'))
        m = 3;
    }
    if (m) {
      *start = i;
      *end = *pos = i + m;
      return TRUE;
    }
    int cls = classify(c);
    if (cls == CLS_SPACE || cls == CLS_SKIP) {
      i++;
      continue;
    }
    size_t j = i + 1;
    if (cls != CLS_NUMBER)
      while (j < n && classify(u[j]) == cls)
        j++;
    *start = i;
    *end = *pos = j;
    return TRUE;
  }
  *pos = n;
  return FALSE;
}

char *
ct_tokenizer_clean(const char *text, GError **error)
{
  g_return_val_if_fail(text != NULL, NULL);
  if (!check_utf8(text, error))
    return NULL;
  size_t n;
  gunichar *u = clean_ucs4(text, &n);
  char *s = g_ucs4_to_utf8(u, (glong) n, NULL, NULL, NULL);
  g_free(u);
  return s;
}

gboolean
ct_tokenizer_pre_tokenize(const char *text, GPtrArray *pieces, GError **error)
{
  g_return_val_if_fail(text != NULL && pieces != NULL, FALSE);
  if (!check_utf8(text, error))
    return FALSE;
  size_t n, pos = 0, a, b;
  gunichar *u = clean_ucs4(text, &n);
  while (next_piece(u, n, &pos, &a, &b))
    g_ptr_array_add(pieces, g_ucs4_to_utf8(u + a, (glong) (b - a), NULL, NULL, NULL));
  g_free(u);
  return TRUE;
}

/* ---------------------------------------------------------------- building */

static inline uint64_t
pair_key(int32_t a, int32_t b)
{
  return ((uint64_t) (uint32_t) a << 32) | (uint32_t) b;
}

static inline size_t
pair_hash(uint64_t key)
{
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return (size_t) key;
}

static RankSlot *
rank_slot(const CtTokenizer *tok, uint64_t key)
{
  size_t i = pair_hash(key) & tok->ranks_mask;
  while (tok->ranks[i].key != key && tok->ranks[i].key != EMPTY_KEY)
    i = (i + 1) & tok->ranks_mask;
  return &tok->ranks[i];
}

static int32_t
encoder_get(const CtTokenizer *tok, const char *s)
{
  return GPOINTER_TO_INT(g_hash_table_lookup(tok->encoder, s)) - 1;
}

/* Python's str.split(): the parts of s between runs of whitespace. */
static char **
split_ws(const char *s)
{
  GPtrArray *parts = g_ptr_array_new();
  const char *p = s;
  while (*p) {
    while (*p && py_isspace(g_utf8_get_char(p)))
      p = g_utf8_next_char(p);
    if (!*p)
      break;
    const char *q = p;
    while (*q && !py_isspace(g_utf8_get_char(q)))
      q = g_utf8_next_char(q);
    g_ptr_array_add(parts, g_strndup(p, (gsize) (q - p)));
    p = q;
  }
  g_ptr_array_add(parts, NULL);
  return (char **) g_ptr_array_free(parts, FALSE);
}

static void
cache_entry_free(gpointer p)
{
  g_free(p);
}

/* OpenAI's vocabulary from merge lines (valid UTF-8), as SimpleTokenizer's
 * constructor builds it: byte symbols, byte symbols + "</w>", each merge's
 * parts joined, the two special tokens; ranks by line. */
static CtTokenizer *
build(const char *const *lines, size_t n_merges)
{
  CtTokenizer *tok = g_new0(CtTokenizer, 1);
  tok->n_merges = n_merges;
  tok->n_vocab = (int) (512 + n_merges + 2);
  tok->vocab = g_new0(char *, (size_t) tok->n_vocab + 1);
  tok->merges = g_new0(char *, n_merges + 1);
  tok->encoder = g_hash_table_new(g_str_hash, g_str_equal);
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int b = 0; b < 256; b++) /* the printable bytes first, as OpenAI */
      if ((byte_to_cp((guint8) b) == (gunichar) b) == (pass == 0)) {
        char buf[8] = { 0 };
        g_unichar_to_utf8(byte_to_cp((guint8) b), buf);
        tok->vocab[k] = g_strdup(buf);
        tok->vocab[k + 256] = g_strconcat(buf, EOW, NULL);
        k++;
      }
  char ***parts = g_new0(char **, n_merges + 1);
  for (size_t i = 0; i < n_merges; i++) {
    parts[i] = split_ws(lines[i]);
    tok->merges[i] = g_strjoinv(" ", parts[i]);
    tok->vocab[512 + i] = g_strjoinv("", parts[i]);
  }
  tok->vocab[tok->n_vocab - 2] = g_strdup(SOT_STRING);
  tok->vocab[tok->n_vocab - 1] = g_strdup(EOT_STRING);
  for (int i = 0; i < tok->n_vocab; i++) /* a repeated symbol keeps its last id */
    g_hash_table_insert(tok->encoder, tok->vocab[i], GINT_TO_POINTER(i + 1));
  for (int b = 0; b < 256; b++) {
    char buf[16] = { 0 };
    g_unichar_to_utf8(byte_to_cp((guint8) b), buf);
    tok->byte_id[b] = encoder_get(tok, buf);
    strcat(buf, EOW);
    tok->byte_id_eow[b] = encoder_get(tok, buf);
  }
  size_t cap = 16;
  while (cap < 2 * n_merges + 16)
    cap *= 2;
  tok->ranks = g_new(RankSlot, cap);
  tok->ranks_mask = cap - 1;
  for (size_t i = 0; i < cap; i++)
    tok->ranks[i].key = EMPTY_KEY;
  for (size_t i = 0; i < n_merges; i++) {
    if (g_strv_length(parts[i]) != 2)
      continue; /* a pair of BPE symbols can never equal it */
    int32_t a = encoder_get(tok, parts[i][0]), b = encoder_get(tok, parts[i][1]);
    if (a < 0 || b < 0)
      continue; /* a part that is no symbol: it never occurs in a word */
    RankSlot *s = rank_slot(tok, pair_key(a, b));
    s->key = pair_key(a, b);
    s->rank = (int32_t) i; /* a repeated merge keeps its last rank, as a dict */
    s->result = encoder_get(tok, tok->vocab[512 + i]);
  }
  for (size_t i = 0; i < n_merges; i++)
    g_strfreev(parts[i]);
  g_free(parts);
  tok->vocab_bytes = g_new(GBytes *, (size_t) tok->n_vocab);
  for (int i = 0; i < tok->n_vocab; i++) {
    GByteArray *bytes = g_byte_array_new();
    for (const char *p = tok->vocab[i]; *p; p = g_utf8_next_char(p)) {
      gunichar c = g_utf8_get_char(p);
      int byte = cp_to_byte(c);
      if (byte >= 0) {
        guint8 v = (guint8) byte;
        g_byte_array_append(bytes, &v, 1);
      } else /* not a byte symbol (only in hand-made files): its own UTF-8 */
        g_byte_array_append(bytes, (const guint8 *) p, (guint) (g_utf8_next_char(p) - p));
    }
    tok->vocab_bytes[i] = g_byte_array_free_to_bytes(bytes);
  }
  g_rw_lock_init(&tok->cache_lock);
  tok->cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, cache_entry_free);
  return tok;
}

CtTokenizer *
ct_tokenizer_new_from_merges(const char *const *merges, size_t n, GError **error)
{
  g_return_val_if_fail(merges != NULL || n == 0, NULL);
  if (n > (size_t) (G_MAXINT / 2)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "%zu merges are too many", n);
    return NULL;
  }
  for (size_t i = 0; i < n; i++)
    if (!g_utf8_validate(merges[i], -1, NULL)) {
      g_autofree char *shown = shown_text(merges[i]);
      g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "merge %zu (\"%s\") is not valid UTF-8", i,
                  shown);
      return NULL;
    }
  return build(merges, n);
}

/* Runs data through a zlib compressor.  (transfer full) */
static GBytes *
convert_all(GConverter *conv, const guint8 *data, gsize len, GError **error)
{
  GByteArray *out = g_byte_array_new();
  guint8 *buf = g_malloc(1 << 16);
  gboolean ok = TRUE;
  for (;;) {
    gsize used = 0, made = 0;
    GConverterResult r = g_converter_convert(conv, data, len, buf, 1 << 16,
                                             G_CONVERTER_INPUT_AT_END, &used, &made, error);
    if (r == G_CONVERTER_ERROR) {
      ok = FALSE;
      break;
    }
    g_byte_array_append(out, buf, (guint) made);
    data += used;
    len -= used;
    if (r == G_CONVERTER_FINISHED) {
      if (len == 0)
        break;
      g_converter_reset(conv);
    }
  }
  g_free(buf);
  if (!ok) {
    g_byte_array_unref(out);
    return NULL;
  }
  return g_byte_array_free_to_bytes(out);
}

/* g_strsplit(S, "\n", MAX) over the N bytes of S, with memchr.  Under
 * AddressSanitizer g_strsplit is quadratic (its strstr interceptor takes
 * the strlen of the rest for every line: minutes for OpenAI's 262,000
 * lines).  (transfer full) */
static char **
split_lines(const char *s, size_t n, size_t max)
{
  GPtrArray *a = g_ptr_array_new();
  const char *end = s + n;
  while (a->len + 1 < max) {
    const char *nl = memchr(s, '\n', (size_t) (end - s));
    if (!nl)
      break;
    g_ptr_array_add(a, g_strndup(s, (gsize) (nl - s)));
    s = nl + 1;
  }
  g_ptr_array_add(a, g_strndup(s, (gsize) (end - s)));
  g_ptr_array_add(a, NULL);
  return (char **) g_ptr_array_free(a, FALSE);
}

CtTokenizer *
ct_tokenizer_new_from_file(const char *path, GError **error)
{
  g_return_val_if_fail(path != NULL, NULL);
  char *data = NULL;
  size_t len = 0;
  GError *err = NULL;
  errno = 0;
  if (!ct_file_read_all(path, "a vocabulary file", VOCAB_MAX_BYTES, &data, &len, &err)) {
    if (errno == ENOENT)
      err->code = CT_ERROR_MISSING;
    g_propagate_error(error, err);
    return NULL;
  }
  GBytes *text;
  if (ct_is_gzip(data, len)) {
    guint8 *plain = NULL;
    size_t plain_len = 0;
    gboolean ok = ct_gunzip(path, "a vocabulary file", (const guint8 *) data, len,
                            VOCAB_MAX_BYTES, FALSE, &plain, &plain_len, error);
    g_free(data);
    if (!ok)
      return NULL;
    text = g_bytes_new_take(plain, plain_len);
  } else
    text = g_bytes_new_take(data, len);
  gsize n;
  const char *s = g_bytes_get_data(text, &n);
  CtTokenizer *tok = NULL;
  const char *bad;
  if (n == 0)
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: the vocabulary file is empty", path);
  else if (memchr(s, '\0', n))
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: not a merges file (it holds NUL bytes)",
                path);
  else if (!g_utf8_validate(s, (gssize) n, &bad))
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: not valid UTF-8 at byte %zu", path,
                (size_t) (bad - s));
  else {
    char **lines = split_lines(s, n, OPENAI_MAX_MERGES + 2);
    size_t nl = g_strv_length(lines);
    size_t n_merges = MIN(nl - 1, (size_t) OPENAI_MAX_MERGES);
    tok = build((const char *const *) lines + 1, n_merges);
    g_strfreev(lines);
  }
  g_bytes_unref(text);
  return tok;
}

void
ct_tokenizer_free(CtTokenizer *tok)
{
  if (!tok)
    return;
  g_hash_table_destroy(tok->cache);
  g_rw_lock_clear(&tok->cache_lock);
  g_hash_table_destroy(tok->encoder);
  for (int i = 0; i < tok->n_vocab; i++)
    g_bytes_unref(tok->vocab_bytes[i]);
  g_free(tok->vocab_bytes);
  g_strfreev(tok->vocab);
  g_strfreev(tok->merges);
  g_free(tok->ranks);
  g_free(tok);
}

gboolean
ct_tokenizer_save(const CtTokenizer *tok, const char *path, GError **error)
{
  g_return_val_if_fail(tok != NULL && path != NULL, FALSE);
  /* one merge per line after the header, no newline after the last line:
   * a trailing one would read back as an empty merge */
  GString *s = g_string_new("#version: 0.2");
  for (size_t i = 0; i < tok->n_merges; i++) {
    g_string_append_c(s, '\n');
    g_string_append(s, tok->merges[i]);
  }
  GBytes *bytes = g_string_free_to_bytes(s);
  if (g_str_has_suffix(path, ".gz")) {
    GZlibCompressor *comp = g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP, 9);
    gsize len;
    const guint8 *plain = g_bytes_get_data(bytes, &len);
    GError *err = NULL;
    GBytes *gz = convert_all(G_CONVERTER(comp), plain, len, &err);
    g_object_unref(comp);
    g_bytes_unref(bytes);
    if (!gz) {
      g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "%s: cannot compress: %s", path,
                  err->message);
      g_error_free(err);
      return FALSE;
    }
    bytes = gz;
  }
  gsize n;
  const char *data = g_bytes_get_data(bytes, &n);
  GError *err = NULL;
  /* written to a temporary file, fsynced and renamed, folder included */
  gboolean ok = g_file_set_contents_full(path, data, (gssize) n,
                                         G_FILE_SET_CONTENTS_CONSISTENT |
                                           G_FILE_SET_CONTENTS_DURABLE,
                                         0666, &err);
  g_bytes_unref(bytes);
  if (!ok) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "cannot write the vocabulary: %s", err->message);
    g_error_free(err);
  }
  return ok;
}

int
ct_tokenizer_vocab_size(const CtTokenizer *tok)
{
  return tok->n_vocab;
}

size_t
ct_tokenizer_n_merges(const CtTokenizer *tok)
{
  return tok->n_merges;
}

int32_t
ct_tokenizer_sot(const CtTokenizer *tok)
{
  return tok->n_vocab - 2;
}

int32_t
ct_tokenizer_eot(const CtTokenizer *tok)
{
  return tok->n_vocab - 1;
}

const char *
ct_tokenizer_id_to_token(const CtTokenizer *tok, int32_t id)
{
  return id >= 0 && id < tok->n_vocab ? tok->vocab[id] : NULL;
}

int32_t
ct_tokenizer_token_to_id(const CtTokenizer *tok, const char *token)
{
  return encoder_get(tok, token);
}

/* ---------------------------------------------------------------- encoding */

/* SimpleTokenizer.bpe on the symbols w[0..*n): merge the adjacent pair of
 * lowest rank, every occurrence left to right, until no pair has a rank. */
static void
bpe(const CtTokenizer *tok, int32_t *w, size_t *n)
{
  size_t len = *n;
  while (len > 1) {
    int32_t best = G_MAXINT32, left = 0, right = 0, result = 0;
    for (size_t i = 0; i + 1 < len; i++) {
      const RankSlot *s = rank_slot(tok, pair_key(w[i], w[i + 1]));
      if (s->key != EMPTY_KEY && s->rank < best) {
        best = s->rank;
        left = w[i];
        right = w[i + 1];
        result = s->result;
      }
    }
    if (best == G_MAXINT32)
      break;
    size_t j = 0;
    for (size_t i = 0; i < len;) {
      if (i + 1 < len && w[i] == left && w[i + 1] == right) {
        w[j++] = result;
        i += 2;
      } else
        w[j++] = w[i++];
    }
    len = j;
  }
  *n = len;
}

/* Appends the ids of one piece, bytes p[0..len). */
static void
encode_piece(const CtTokenizer *tok, const char *p, size_t len, GArray *ids)
{
  if (len == strlen(SOT_STRING) && memcmp(p, SOT_STRING, len) == 0) {
    int32_t id = ct_tokenizer_sot(tok);
    g_array_append_val(ids, id);
    return;
  }
  if (len == strlen(EOT_STRING) && memcmp(p, EOT_STRING, len) == 0) {
    int32_t id = ct_tokenizer_eot(tok);
    g_array_append_val(ids, id);
    return;
  }
  if (len == 1) {
    int32_t id = tok->byte_id_eow[(guint8) p[0]];
    g_array_append_val(ids, id);
    return;
  }
  CtTokenizer *mtok = (CtTokenizer *) tok; /* the cache is behind its lock */
  g_rw_lock_reader_lock(&mtok->cache_lock);
  const CacheEntry *hit = g_hash_table_lookup(tok->cache, p);
  if (hit)
    g_array_append_vals(ids, hit->ids, (guint) hit->n);
  g_rw_lock_reader_unlock(&mtok->cache_lock);
  if (hit)
    return;
  CacheEntry *e = g_malloc(sizeof(CacheEntry) + len * sizeof(int32_t));
  for (size_t i = 0; i + 1 < len; i++)
    e->ids[i] = tok->byte_id[(guint8) p[i]];
  e->ids[len - 1] = tok->byte_id_eow[(guint8) p[len - 1]];
  e->n = len;
  bpe(tok, e->ids, &e->n);
  g_array_append_vals(ids, e->ids, (guint) e->n);
  g_rw_lock_writer_lock(&mtok->cache_lock);
  if (g_hash_table_size(tok->cache) < CACHE_MAX_ENTRIES && !g_hash_table_contains(tok->cache, p)) {
    g_hash_table_insert(tok->cache, g_strndup(p, len), e);
    e = NULL;
  }
  g_rw_lock_writer_unlock(&mtok->cache_lock);
  g_free(e);
}

gboolean
ct_tokenizer_encode(const CtTokenizer *tok, const char *text, GArray *ids, GError **error)
{
  g_return_val_if_fail(tok != NULL && text != NULL && ids != NULL, FALSE);
  g_return_val_if_fail(g_array_get_element_size(ids) == sizeof(int32_t), FALSE);
  if (!check_utf8(text, error))
    return FALSE;
  size_t n, pos = 0, a, b;
  gunichar *u = clean_ucs4(text, &n);
  char small[256];
  char *buf = n * 4 + 1 <= sizeof small ? small : g_malloc(n * 4 + 1);
  while (next_piece(u, n, &pos, &a, &b)) {
    size_t len = 0;
    for (size_t i = a; i < b; i++)
      len += (size_t) g_unichar_to_utf8(u[i], buf + len);
    buf[len] = '\0';
    encode_piece(tok, buf, len, ids);
  }
  if (buf != small)
    g_free(buf);
  g_free(u);
  return TRUE;
}

gboolean
ct_tokenizer_tokenize(const CtTokenizer *tok, const char *text, int context_length,
                      gboolean truncate, int32_t *out, GError **error)
{
  g_return_val_if_fail(tok != NULL && text != NULL && out != NULL, FALSE);
  if (context_length < 1) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "context length %d is not positive",
                context_length);
    return FALSE;
  }
  GArray *ids = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint) context_length);
  int32_t sot = ct_tokenizer_sot(tok), eot = ct_tokenizer_eot(tok);
  g_array_append_val(ids, sot);
  if (!ct_tokenizer_encode(tok, text, ids, error)) {
    g_array_unref(ids);
    return FALSE;
  }
  g_array_append_val(ids, eot);
  size_t n = ids->len, ctx = (size_t) context_length;
  if (n > ctx && !truncate) {
    g_autofree char *shown = shown_text(text);
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "caption \"%s\" is too long for context length %d: %zu tokens with the start "
                "and end tokens",
                shown, context_length, n);
    g_array_unref(ids);
    return FALSE;
  }
  if (n > ctx) {
    memcpy(out, ids->data, ctx * sizeof(int32_t));
    out[ctx - 1] = eot;
  } else {
    memcpy(out, ids->data, n * sizeof(int32_t));
    memset(out + n, 0, (ctx - n) * sizeof(int32_t));
  }
  g_array_unref(ids);
  return TRUE;
}

gboolean
ct_tokenizer_tokenize_batch(const CtTokenizer *tok, const char *const *texts, size_t n,
                            int context_length, gboolean truncate, int32_t *out, GError **error)
{
  for (size_t i = 0; i < n; i++)
    if (!ct_tokenizer_tokenize(tok, texts[i], context_length, truncate,
                               out + i * (size_t) MAX(context_length, 0), error)) {
      g_prefix_error(error, "text %zu: ", i);
      return FALSE;
    }
  return TRUE;
}

/* ---------------------------------------------------------------- decoding */

/* bytes decoded as UTF-8 with errors="replace": each maximal subpart of an
 * ill-formed sequence becomes one U+FFFD, as Python's decoder does. */
static void
append_utf8_replace(GString *out, const guint8 *s, size_t n)
{
  size_t i = 0;
  while (i < n) {
    guint8 b = s[i];
    if (b < 0x80) {
      g_string_append_c(out, (char) b);
      i++;
      continue;
    }
    int need;
    guint8 lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF)
      need = 1;
    else if (b == 0xE0) {
      need = 2;
      lo = 0xA0;
    } else if (b == 0xED) {
      need = 2;
      hi = 0x9F;
    } else if (b >= 0xE1 && b <= 0xEF)
      need = 2;
    else if (b == 0xF0) {
      need = 3;
      lo = 0x90;
    } else if (b == 0xF4) {
      need = 3;
      hi = 0x8F;
    } else if (b >= 0xF1 && b <= 0xF3)
      need = 3;
    else {
      g_string_append(out, "\xEF\xBF\xBD");
      i++;
      continue;
    }
    size_t j = i + 1;
    int got = 0;
    while (got < need && j < n) {
      guint8 c = s[j];
      if (got == 0 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF))
        break;
      got++;
      j++;
    }
    if (got == need)
      g_string_append_len(out, (const char *) s + i, (gssize) (j - i));
    else
      g_string_append(out, "\xEF\xBF\xBD");
    i = j;
  }
}

char *
ct_tokenizer_decode(const CtTokenizer *tok, const int32_t *ids, size_t n)
{
  g_return_val_if_fail(tok != NULL && (ids != NULL || n == 0), NULL);
  GByteArray *raw = g_byte_array_new();
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || ids[i] >= tok->n_vocab) {
      g_byte_array_append(raw, (const guint8 *) "\xEF\xBF\xBD", 3);
      continue;
    }
    gsize len;
    const guint8 *b = g_bytes_get_data(tok->vocab_bytes[ids[i]], &len);
    g_byte_array_append(raw, b, (guint) len);
  }
  GString *text = g_string_sized_new(raw->len + 1);
  append_utf8_replace(text, raw->data, raw->len);
  g_byte_array_unref(raw);
  /* .replace('</w>', ' ') */
  GString *out = g_string_sized_new(text->len + 1);
  const char *p = text->str, *end = text->str + text->len, *q;
  while ((q = memmem(p, (size_t) (end - p), EOW, strlen(EOW)))) {
    g_string_append_len(out, p, q - p);
    g_string_append_c(out, ' ');
    p = q + strlen(EOW);
  }
  g_string_append_len(out, p, end - p);
  g_string_free(text, TRUE);
  return g_string_free(out, FALSE);
}

/* test-tokenizer: OpenAI CLIP's BPE tokenizer against OpenAI's ids, the text
 * cleaning (html.unescape, whitespace, str.lower) against Python's, decode,
 * clip.tokenize's padding and truncation, BPE learning and merges files.
 *
 * The tests that need OpenAI's merges file read it from $CT_TEST_VOCAB and
 * are skipped, with a message, when it is unset or missing. */
#include "config.h"

#include <cliptrain/cliptrain.h>

#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <string.h>

static char *tmpdir;
static CtTokenizer *openai; /* NULL when $CT_TEST_VOCAB is missing */
static char *openai_skip;   /* why */

typedef struct {
  char *text;
  GArray *ids;
} Case;
static GPtrArray *cases; /* Case */

static void
case_free(gpointer p)
{
  Case *c = p;
  g_free(c->text);
  g_array_unref(c->ids);
  g_free(c);
}

/* OpenAI's merges file: $CT_TEST_VOCAB, else the copy in shared/ beside the
 * checkout (tests/data is $CT_TEST_DATA). */
static const char *
vocab_path(void)
{
  static char *path;
  const char *env = g_getenv("CT_TEST_VOCAB");
  if (env && *env)
    return env;
  const char *data = g_getenv("CT_TEST_DATA");
  if (!path && data)
    path = g_build_filename(data, "..", "..", "..", "shared", "vocab",
                            "bpe_simple_vocab_16e6.txt.gz", NULL);
  return path;
}

static void
load_openai(void)
{
  const char *path = vocab_path();
  if (!path || !*path) {
    openai_skip = g_strdup("CT_TEST_VOCAB is not set: OpenAI's bpe_simple_vocab_16e6.txt.gz "
                           "is needed");
    return;
  }
  if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
    openai_skip = g_strdup_printf("OpenAI's merges file %s (CT_TEST_VOCAB) does not exist", path);
    return;
  }
  GError *error = NULL;
  openai = ct_tokenizer_new_from_file(path, &error);
  g_assert_no_error(error);
}

static gboolean
need_openai(void)
{
  if (openai)
    return TRUE;
  g_test_skip(openai_skip);
  return FALSE;
}

static void
load_cases(void)
{
  const char *dir = g_getenv("CT_TEST_DATA");
  g_autofree char *path =
    g_build_filename(dir ? dir : "tests/data", "tokenizer_cases.jsonl", NULL);
  g_autofree char *data = NULL;
  GError *error = NULL;
  g_assert_true(g_file_get_contents(path, &data, NULL, &error));
  g_assert_no_error(error);
  cases = g_ptr_array_new_with_free_func(case_free);
  char **lines = g_strsplit(data, "\n", -1);
  JsonParser *parser = json_parser_new();
  for (char **l = lines; *l; l++) {
    if (!**l)
      continue;
    g_assert_true(json_parser_load_from_data(parser, *l, -1, &error));
    g_assert_no_error(error);
    JsonObject *o = json_node_get_object(json_parser_get_root(parser));
    Case *c = g_new0(Case, 1);
    c->text = g_strdup(json_object_get_string_member(o, "text"));
    c->ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    JsonArray *a = json_object_get_array_member(o, "ids");
    for (guint i = 0; i < json_array_get_length(a); i++) {
      int32_t id = (int32_t) json_array_get_int_element(a, i);
      g_array_append_val(c->ids, id);
    }
    g_ptr_array_add(cases, c);
  }
  g_object_unref(parser);
  g_strfreev(lines);
  g_assert_cmpuint(cases->len, >=, 190);
}

static GArray *
encode(const CtTokenizer *tok, const char *text)
{
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  GError *error = NULL;
  g_assert_true(ct_tokenizer_encode(tok, text, ids, &error));
  g_assert_no_error(error);
  return ids;
}

static void
assert_ids(const GArray *got, const GArray *want, const char *text)
{
  if (got->len != want->len
      || (want->len && memcmp(got->data, want->data, want->len * sizeof(int32_t)) != 0)) {
    GString *g = g_string_new(NULL), *w = g_string_new(NULL);
    for (guint i = 0; i < got->len; i++)
      g_string_append_printf(g, " %d", g_array_index(got, int32_t, i));
    for (guint i = 0; i < want->len; i++)
      g_string_append_printf(w, " %d", g_array_index(want, int32_t, i));
    g_error("\"%s\": ids [%s ] instead of OpenAI's [%s ]", text, g->str, w->str);
  }
}

/* ------------------------------------------------------------------ OpenAI */

static void
test_vocab(void)
{
  if (!need_openai())
    return;
  g_assert_cmpint(ct_tokenizer_vocab_size(openai), ==, 49408);
  g_assert_cmpuint(ct_tokenizer_n_merges(openai), ==, 48894);
  g_assert_cmpint(ct_tokenizer_sot(openai), ==, 49406);
  g_assert_cmpint(ct_tokenizer_eot(openai), ==, 49407);
  g_assert_cmpstr(ct_tokenizer_id_to_token(openai, 0), ==, "!");
  g_assert_cmpstr(ct_tokenizer_id_to_token(openai, 256), ==, "!</w>");
  g_assert_cmpstr(ct_tokenizer_id_to_token(openai, 320), ==, "a</w>");
  g_assert_cmpstr(ct_tokenizer_id_to_token(openai, 1125), ==, "photo</w>");
  g_assert_cmpstr(ct_tokenizer_id_to_token(openai, 49406), ==, "<|startoftext|>");
  g_assert_null(ct_tokenizer_id_to_token(openai, 49408));
  g_assert_null(ct_tokenizer_id_to_token(openai, -1));
  g_assert_cmpint(ct_tokenizer_token_to_id(openai, "photo</w>"), ==, 1125);
  g_assert_cmpint(ct_tokenizer_token_to_id(openai, "no such symbol"), ==, -1);
  /* the space byte is U+0120 in OpenAI's byte symbols, byte 0 U+0100 */
  g_autofree char *sym = ct_tokenizer_bytes_to_unicode((const guint8 *) " \0A\xff", 4);
  g_assert_cmpstr(sym, ==, "\xc4\xa0\xc4\x80" "A\xc3\xbf");
}

/* Every case of tokenizer_cases.jsonl gives OpenAI's ids. */
static void
test_golden(void)
{
  if (!need_openai())
    return;
  for (guint i = 0; i < cases->len; i++) {
    const Case *c = g_ptr_array_index(cases, i);
    GArray *ids = encode(openai, c->text);
    assert_ids(ids, c->ids, c->text);
    g_array_unref(ids);
  }
  g_test_message("%u cases match OpenAI's ids", cases->len);
}

static char *
strip_spaces(const char *s)
{
  GString *out = g_string_new(NULL);
  for (; *s; s++)
    if (*s != ' ')
      g_string_append_c(out, *s);
  return g_string_free(out, FALSE);
}

static char *
decode_array(const CtTokenizer *tok, const GArray *ids)
{
  return ct_tokenizer_decode(tok, (const int32_t *) ids->data, ids->len);
}

/* decode(encode(x)) is the cleaned, lowered text with a space after every
 * piece, as OpenAI's decode gives it. */
static void
test_roundtrip(void)
{
  if (!need_openai())
    return;
  for (guint i = 0; i < cases->len; i++) {
    const Case *c = g_ptr_array_index(cases, i);
    g_autofree char *decoded = decode_array(openai, c->ids);
    g_autofree char *clean = ct_tokenizer_clean(c->text, NULL);
    g_autofree char *a = strip_spaces(decoded);
    g_autofree char *b = strip_spaces(clean);
    g_assert_cmpstr(a, ==, b);
    /* and piece by piece */
    GPtrArray *pieces = g_ptr_array_new_with_free_func(g_free);
    g_assert_true(ct_tokenizer_pre_tokenize(c->text, pieces, NULL));
    GString *want = g_string_new(NULL);
    for (guint k = 0; k < pieces->len; k++) {
      const char *p = g_ptr_array_index(pieces, k);
      g_string_append(want, p);
      if (strcmp(p, "<|startoftext|>") != 0 && strcmp(p, "<|endoftext|>") != 0)
        g_string_append_c(want, ' ');
    }
    g_assert_cmpstr(decoded, ==, want->str);
    g_string_free(want, TRUE);
    g_ptr_array_unref(pieces);
  }
  /* OpenAI's own outputs (computed with clip/simple_tokenizer.py) */
  static const struct {
    const char *text, *decoded;
  } known[] = {
    { "a photo of a cat.", "a photo of a cat . " },
    { "Caf\xc3\xa9 d\xc3\xa9j\xc3\xa0 vu", "caf\xc3\xa9 d\xc3\xa9j\xc3\xa0 vu " },
    { "<|startoftext|>hello<|endoftext|>", "<|startoftext|>hello <|endoftext|>" },
    { "it's", "it 's " },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(known); i++) {
    GArray *ids = encode(openai, known[i].text);
    g_autofree char *d = decode_array(openai, ids);
    g_assert_cmpstr(d, ==, known[i].decoded);
    g_array_unref(ids);
  }
  /* a lone UTF-8 lead byte is replaced; ids outside the vocabulary too */
  int32_t lead[] = { 127 };          /* byte 0xC3 */
  int32_t pair[] = { 127, 358 };     /* bytes 0xC3 0xA9 + </w> */
  int32_t bad[] = { 320, 49408, -5 };
  g_autofree char *d1 = ct_tokenizer_decode(openai, lead, 1);
  g_autofree char *d2 = ct_tokenizer_decode(openai, pair, 2);
  g_autofree char *d3 = ct_tokenizer_decode(openai, bad, 3);
  g_autofree char *d4 = ct_tokenizer_decode(openai, NULL, 0);
  g_assert_cmpstr(d1, ==, "\xef\xbf\xbd");
  g_assert_cmpstr(d2, ==, "\xc3\xa9 ");
  g_assert_cmpstr(d3, ==, "a \xef\xbf\xbd\xef\xbf\xbd");
  g_assert_cmpstr(d4, ==, "");
}

/* A caption with line breaks, or a huge one, keeps the error one short
 * line (found by tests/fuzz/fuzz_tokenizer): breaks as \x0a, invalid
 * bytes as U+FFFD, cut after 200 characters.  Any vocabulary will do. */
static void
test_error_text(void)
{
  const char *captions[] = { "a cat" };
  CtTokenizer *tok = ct_tokenizer_train(captions, 1, CT_TOKENIZER_MIN_VOCAB + 8, NULL);
  g_assert_nonnull(tok);
  int32_t out[20];
  GError *error = NULL;
  GString *lines = g_string_new(NULL);
  for (int i = 0; i < 500; i++)
    g_string_append(lines, "a cat\n");
  g_assert_false(ct_tokenizer_tokenize(tok, lines->str, 20, FALSE, out, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_test_message("%s", error->message);
  g_assert_null(strchr(error->message, '\n'));
  g_assert_true(g_str_has_prefix(error->message, "caption \"a cat\\x0aa cat\\x0a"));
  g_assert_nonnull(strstr(error->message, "...\" is too long for context length 20"));
  g_assert_cmpuint(strlen(error->message), <, 400);
  g_clear_error(&error);
  g_string_append(lines, "\xff");
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  g_assert_false(ct_tokenizer_encode(tok, lines->str, ids, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_null(strchr(error->message, '\n'));
  g_assert_true(g_utf8_validate(error->message, -1, NULL));
  g_assert_nonnull(strstr(error->message, "...\" is not valid UTF-8 (bad byte 0xff at offset 3000)"));
  g_clear_error(&error);
  g_array_unref(ids);
  g_string_free(lines, TRUE);
  ct_tokenizer_free(tok);
}

/* clip.tokenize: start, ids, end, zero padding; too long fails or truncates. */
static void
test_tokenize(void)
{
  if (!need_openai())
    return;
  int32_t out[77];
  GError *error = NULL;
  g_assert_true(ct_tokenizer_tokenize(openai, "a photo of a cat.", 77, FALSE, out, &error));
  g_assert_no_error(error);
  static const int32_t want[] = { 49406, 320, 1125, 539, 320, 2368, 269, 49407 };
  for (int i = 0; i < 77; i++)
    g_assert_cmpint(out[i], ==, i < (int) G_N_ELEMENTS(want) ? want[i] : 0);
  /* the empty caption */
  g_assert_true(ct_tokenizer_tokenize(openai, "   ", 77, FALSE, out, NULL));
  g_assert_cmpint(out[0], ==, 49406);
  g_assert_cmpint(out[1], ==, 49407);
  g_assert_cmpint(out[2], ==, 0);
  /* exactly the context length fits */
  g_assert_true(ct_tokenizer_tokenize(openai, "a photo of a cat.", 8, FALSE, out, NULL));
  g_assert_cmpint(out[7], ==, 49407);
  /* one more is too long: the error names the caption and its length */
  g_assert_false(ct_tokenizer_tokenize(openai, "a photo of a cat.", 7, FALSE, out, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "\"a photo of a cat.\""));
  g_assert_nonnull(strstr(error->message, "8 tokens"));
  g_assert_nonnull(strstr(error->message, "context length 7"));
  g_clear_error(&error);
  /* the 200 x's: 50 ids, 52 with start and end */
  const Case *xs = NULL;
  for (guint i = 0; i < cases->len && !xs; i++)
    if (g_str_has_prefix(((const Case *) g_ptr_array_index(cases, i))->text, "xxxxxxxxxx"))
      xs = g_ptr_array_index(cases, i);
  g_assert_nonnull(xs);
  g_assert_cmpuint(xs->ids->len, ==, 50);
  g_assert_false(ct_tokenizer_tokenize(openai, xs->text, 20, FALSE, out, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, xs->text));
  g_assert_nonnull(strstr(error->message, "52 tokens"));
  g_clear_error(&error);
  memset(out, 0x55, sizeof out);
  g_assert_true(ct_tokenizer_tokenize(openai, xs->text, 20, TRUE, out, &error));
  g_assert_no_error(error);
  g_assert_cmpint(out[0], ==, 49406);
  for (int i = 1; i < 19; i++)
    g_assert_cmpint(out[i], ==, g_array_index(xs->ids, int32_t, i - 1));
  g_assert_cmpint(out[19], ==, 49407);
  g_assert_cmpint(out[20], ==, 0x55555555); /* nothing written past the context */
  /* a context of one holds only the end token */
  g_assert_true(ct_tokenizer_tokenize(openai, "cat", 1, TRUE, out, NULL));
  g_assert_cmpint(out[0], ==, 49407);
  g_assert_false(ct_tokenizer_tokenize(openai, "cat", 0, TRUE, out, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  /* batches */
  const char *texts[] = { "a photo of a cat.", "three", xs->text };
  int32_t batch[3 * 10];
  g_assert_true(ct_tokenizer_tokenize_batch(openai, texts, 2, 10, FALSE, batch, NULL));
  g_assert_cmpint(batch[6], ==, 269);
  g_assert_cmpint(batch[10], ==, 49406);
  g_assert_cmpint(batch[11], ==, 2097);
  g_assert_cmpint(batch[12], ==, 49407);
  g_assert_cmpint(batch[19], ==, 0);
  g_assert_false(ct_tokenizer_tokenize_batch(openai, texts, 3, 10, FALSE, batch, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_true(g_str_has_prefix(error->message, "text 2: "));
  g_clear_error(&error);
}

typedef struct {
  const CtTokenizer *tok;
  int rounds;
  gboolean ok;
} ThreadArg;

static gpointer
encode_thread(gpointer p)
{
  ThreadArg *a = p;
  a->ok = TRUE;
  for (int r = 0; r < a->rounds; r++)
    for (guint i = 0; i < cases->len; i++) {
      const Case *c = g_ptr_array_index(cases, i);
      GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
      if (!ct_tokenizer_encode(a->tok, c->text, ids, NULL) || ids->len != c->ids->len
          || (ids->len && memcmp(ids->data, c->ids->data, ids->len * sizeof(int32_t)) != 0))
        a->ok = FALSE;
      g_array_unref(ids);
    }
  return NULL;
}

/* encode from several threads at once, on a fresh cache */
static void
test_threads(void)
{
  if (!need_openai())
    return;
  CtTokenizer *tok = ct_tokenizer_new_from_file(vocab_path(), NULL);
  g_assert_nonnull(tok);
  ThreadArg args[4];
  GThread *threads[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (ThreadArg) { tok, 20, FALSE };
    threads[i] = g_thread_new("encode", encode_thread, &args[i]);
  }
  for (int i = 0; i < 4; i++) {
    g_thread_join(threads[i]);
    g_assert_true(args[i].ok);
  }
  ct_tokenizer_free(tok);
}

/* ---------------------------------------------------------- text cleaning */

static void
test_html(void)
{
  /* {input, html.unescape(input)}, from Python 3.11 */
  static const struct {
    const char *in, *once;
  } cases_[] = {
    { "&amp;amp;", "&amp;" },
    { "&lt;b&gt;", "<b>" },
    { "&#39;", "'" },
    { "&#x27;", "'" },
    { "&#X27;", "'" },
    { "&eacute", "\xc3\xa9" },          /* a legacy name without ';' */
    { "&Eacute;t&eacute;", "\xc3\x89t\xc3\xa9" },
    { "&#0;", "\xef\xbf\xbd" },          /* invalid: U+FFFD */
    { "&#128;", "\xe2\x82\xac" },        /* Windows-1252's euro sign */
    { "&#13;", "\r" },
    { "&#xD800;", "\xef\xbf\xbd" },      /* a surrogate */
    { "&#1114112;", "\xef\xbf\xbd" },    /* past U+10FFFF */
    { "&#99999999999999999999999;", "\xef\xbf\xbd" },
    { "a&#11;b", "ab" },                 /* a control character: removed */
    { "&#xFFFF;", "" },                  /* a non-character: removed */
    { "&#65abc", "Aabc" },
    { "&notit;", "\xc2\xacit;" },        /* the longest name that is a prefix */
    { "&ampx", "&x" },
    { "&amp", "&" },
    { "&acE;", "\xe2\x88\xbe\xcc\xb3" }, /* two code points */
    { "a & b", "a & b" },
    { "&", "&" },
    { "&#", "&#" },
    { "&#x;", "&#x;" },
    { "&#xZ;", "&#xZ;" },
    { "&nosuchentity;", "&nosuchentity;" },
    { "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;" },
    { "&&amp;;", "&&;" },
    { "caf\xc3\xa9 &copy; 2024", "caf\xc3\xa9 \xc2\xa9 2024" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases_); i++) {
    g_autofree char *got = ct_html_unescape(cases_[i].in);
    g_assert_cmpstr(got, ==, cases_[i].once);
  }
  /* OpenAI's cleaning unescapes twice */
  g_autofree char *twice = ct_tokenizer_clean("&amp;amp; &amp;lt;", NULL);
  g_assert_cmpstr(twice, ==, "& <");
}

static void
test_clean(void)
{
  /* {input, whitespace_clean(basic_clean(input)).lower()}, from Python 3.11 */
  static const struct {
    const char *in, *out;
  } cases_[] = {
    { "   lots   of\t\twhite\nspace  ", "lots of white space" },
    { "a\x1c" "b\xc2\x85" "c\xe3\x80\x80" "d", "a b c d" },        /* str.isspace */
    { "a\xe2\x80\x8b" "b", "a\xe2\x80\x8b" "b" },                 /* ZWSP is no space */
    { "A PHOTO", "a photo" },
    { "\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82" }, /* final sigma */
    { "\xce\xa3", "\xcf\x83" },                                    /* a lone sigma */
    { "\xce\xa3\xce\x91\xce\xa3.", "\xcf\x83\xce\xb1\xcf\x82." },
    { "\xc4\xb0stanbul", "i\xcc\x87stanbul" },                     /* U+0130 */
    { "\xe2\x85\xab", "\xe2\x85\xbb" },                            /* roman numeral XII */
    { "\xe2\x92\xb6", "\xe2\x93\x90" },                            /* circled A */
    { "\xc7\x85" "emal", "\xc7\x86" "emal" },                      /* titlecase dz */
    { "&lt;B&gt;", "<b>" },
    { "", "" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases_); i++) {
    GError *error = NULL;
    g_autofree char *got = ct_tokenizer_clean(cases_[i].in, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(got, ==, cases_[i].out);
  }
}

static void
assert_pieces(const char *text, const char *const *want)
{
  GPtrArray *pieces = g_ptr_array_new_with_free_func(g_free);
  g_assert_true(ct_tokenizer_pre_tokenize(text, pieces, NULL));
  guint n = g_strv_length((char **) want);
  g_assert_cmpuint(pieces->len, ==, n);
  for (guint i = 0; i < n; i++)
    g_assert_cmpstr(g_ptr_array_index(pieces, i), ==, want[i]);
  g_ptr_array_unref(pieces);
}

/* OpenAI's regex, re.findall as the "regex" module runs it */
static void
test_split(void)
{
  assert_pieces("It's 2 o'clock", (const char *const[]) { "it", "'s", "2", "o", "'", "clock", NULL });
  assert_pieces("don't", (const char *const[]) { "don", "'t", NULL });
  assert_pieces("''s", (const char *const[]) { "''", "s", NULL });
  assert_pieces("x1234y!?b", (const char *const[]) { "x", "1", "2", "3", "4", "y", "!?", "b", NULL });
  assert_pieces("<|startoftext|>hi<|endoftext|>",
                (const char *const[]) { "<|startoftext|>", "hi", "<|endoftext|>", NULL });
  assert_pieces("<<|endoftext|>", (const char *const[]) { "<<|", "endoftext", "|>", NULL });
  /* IGNORECASE: the long s matches 's' */
  assert_pieces("it'\xc5\xbf <|\xc5\xbftartoftext|>",
                (const char *const[]) { "it", "'\xc5\xbf", "<|\xc5\xbftartoftext|>", NULL });
  /* and U+0345, which folds to a letter, matches nothing */
  assert_pieces("a\xcd\x85" "b", (const char *const[]) { "a", "b", NULL });
  /* a combining mark is not a letter */
  assert_pieces("e\xcc\x81t\xc3\xa9", (const char *const[]) { "e", "\xcc\x81", "t\xc3\xa9", NULL });
  assert_pieces("", (const char *const[]) { NULL });
}

static void
test_invalid_utf8(void)
{
  const char *texts[] = { "a photo of a cat" };
  CtTokenizer *tok = ct_tokenizer_train(texts, 1, 520, NULL);
  g_assert_nonnull(tok);
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int32_t one = 7;
  g_array_append_val(ids, one);
  GError *error = NULL;
  g_assert_false(ct_tokenizer_encode(tok, "caf\xc3 au lait", ids, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "caf"));
  g_assert_nonnull(strstr(error->message, "au lait"));
  g_assert_nonnull(strstr(error->message, "UTF-8"));
  g_clear_error(&error);
  g_assert_cmpuint(ids->len, ==, 1); /* unchanged */
  int32_t out[8];
  g_assert_false(ct_tokenizer_tokenize(tok, "\xff\xfe", 8, TRUE, out, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  g_assert_null(ct_tokenizer_clean("\xed\xa0\x80", &error)); /* an encoded surrogate */
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_clear_error(&error);
  const char *bad[] = { "fine", "not \xc0\xaf fine" };
  g_assert_null(ct_tokenizer_train(bad, 2, 600, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_true(g_str_has_prefix(error->message, "text 1: "));
  g_clear_error(&error);
  g_array_unref(ids);
  ct_tokenizer_free(tok);
}

/* ------------------------------------------------------------ BPE learning */

static GPtrArray *
fashion_captions(void)
{
  static const char *const classes[] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot" };
  static const char *const templates[] = { "a photo of a %s.", "a blurry photo of a %s.",
                                           "a black and white photo of the %s.",
                                           "a low resolution photo of a %s.",
                                           "a photo of the small %s.", "a good photo of a %s.",
                                           "itap of a %s.", "a photo of one %s." };
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (size_t t = 0; t < G_N_ELEMENTS(templates); t++)
    for (size_t c = 0; c < G_N_ELEMENTS(classes); c++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
      g_ptr_array_add(out, g_strdup_printf(templates[t], classes[c]));
#pragma GCC diagnostic pop
    }
  return out;
}

static size_t
count_tokens(const CtTokenizer *tok, GPtrArray *texts)
{
  size_t n = 0;
  for (guint i = 0; i < texts->len; i++) {
    GArray *ids = encode(tok, g_ptr_array_index(texts, i));
    n += ids->len;
    g_array_unref(ids);
  }
  return n;
}

static void
assert_same_vocab(const CtTokenizer *a, const CtTokenizer *b)
{
  g_assert_cmpint(ct_tokenizer_vocab_size(a), ==, ct_tokenizer_vocab_size(b));
  for (int32_t i = 0; i < ct_tokenizer_vocab_size(a); i++)
    g_assert_cmpstr(ct_tokenizer_id_to_token(a, i), ==, ct_tokenizer_id_to_token(b, i));
}

static void
assert_same_encodings(const CtTokenizer *a, const CtTokenizer *b, GPtrArray *texts)
{
  for (guint i = 0; i < texts->len; i++) {
    const char *t = g_ptr_array_index(texts, i);
    GArray *x = encode(a, t), *y = encode(b, t);
    assert_ids(x, y, t);
    g_array_unref(x);
    g_array_unref(y);
  }
}

static void
test_train(void)
{
  GPtrArray *texts = fashion_captions();
  const char *const *tv = (const char *const *) texts->pdata;
  GError *error = NULL;
  CtTokenizer *bytes = ct_tokenizer_train(tv, texts->len, CT_TOKENIZER_MIN_VOCAB, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ct_tokenizer_vocab_size(bytes), ==, 514);
  g_assert_cmpint(ct_tokenizer_sot(bytes), ==, 512);
  CtTokenizer *tok = ct_tokenizer_train(tv, texts->len, 600, &error);
  g_assert_no_error(error);
  int vs = ct_tokenizer_vocab_size(tok);
  g_assert_cmpint(vs, >, 514 + 30);
  g_assert_cmpint(vs, <=, 600);
  g_assert_cmpint(ct_tokenizer_eot(tok), ==, vs - 1);
  size_t n_bytes = count_tokens(bytes, texts), n_bpe = count_tokens(tok, texts);
  g_test_message("%u captions: %zu byte tokens, %zu with %d ids", texts->len, n_bytes, n_bpe,
                 vs);
  g_assert_cmpuint(n_bpe * 2, <, n_bytes);
  /* it stopped below 600 ids because every word had become one symbol */
  size_t n_pieces = 0;
  for (guint i = 0; i < texts->len; i++) {
    GPtrArray *pieces = g_ptr_array_new_with_free_func(g_free);
    g_assert_true(ct_tokenizer_pre_tokenize(tv[i], pieces, NULL));
    n_pieces += pieces->len;
    g_ptr_array_unref(pieces);
  }
  g_assert_cmpuint(n_bpe, ==, n_pieces);
  /* with fewer ids, fewer merges, more tokens, but still fewer than bytes */
  CtTokenizer *small = ct_tokenizer_train(tv, texts->len, 540, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ct_tokenizer_vocab_size(small), ==, 540);
  size_t n_small = count_tokens(small, texts);
  g_assert_cmpuint(n_small, >, n_bpe);
  g_assert_cmpuint(n_small, <, n_bytes);
  ct_tokenizer_free(small);
  /* every training word is one token */
  GArray *ids = encode(tok, "a blurry photo of the small ankle boot.");
  g_assert_cmpuint(ids->len, ==, 9);
  g_autofree char *dec = decode_array(tok, ids);
  g_assert_cmpstr(dec, ==, "a blurry photo of the small ankle boot . ");
  g_array_unref(ids);
  /* a word never seen still encodes, byte by byte at worst */
  ids = encode(tok, "zebra \xe2\x9c\x93");
  g_assert_cmpuint(ids->len, >=, 2);
  g_autofree char *dec2 = decode_array(tok, ids);
  g_assert_cmpstr(dec2, ==, "zebra \xe2\x9c\x93 ");
  g_array_unref(ids);

  /* deterministic: again, and with the captions in another order */
  CtTokenizer *again = ct_tokenizer_train(tv, texts->len, 600, NULL);
  assert_same_vocab(tok, again);
  ct_tokenizer_free(again);
  GPtrArray *rev = g_ptr_array_new();
  for (guint i = texts->len; i-- > 0;)
    g_ptr_array_add(rev, g_ptr_array_index(texts, i));
  again = ct_tokenizer_train((const char *const *) rev->pdata, rev->len, 600, NULL);
  assert_same_vocab(tok, again);
  ct_tokenizer_free(again);
  g_ptr_array_unref(rev);

  /* save and load, plain and gzipped */
  const char *names[] = { "merges.txt", "merges.txt.gz" };
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *path = g_build_filename(tmpdir, names[i], NULL);
    g_assert_true(ct_tokenizer_save(tok, path, &error));
    g_assert_no_error(error);
    g_autofree char *raw = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &raw, &len, NULL));
    g_assert_cmpint((guint8) raw[0] == 0x1f && (guint8) raw[1] == 0x8b, ==, i == 1);
    if (i == 0) {
      g_assert_true(g_str_has_prefix(raw, "#version: 0.2\n"));
      g_assert_cmpint(raw[len - 1], !=, '\n'); /* no empty merge for OpenAI's reader */
      char **lines = g_strsplit(raw, "\n", -1);
      g_assert_cmpuint(g_strv_length(lines), ==, ct_tokenizer_n_merges(tok) + 1);
      g_strfreev(lines);
    }
    CtTokenizer *loaded = ct_tokenizer_new_from_file(path, &error);
    g_assert_no_error(error);
    assert_same_vocab(tok, loaded);
    assert_same_encodings(tok, loaded, texts);
    ct_tokenizer_free(loaded);
  }
  /* No merges at all: the file is the header line alone.  A newline after
   * it read back as one empty merge, vocabulary 515 instead of 514, here
   * as in OpenAI's reader (found by tests/fuzz/fuzz_tokenizer). */
  g_assert_cmpuint(ct_tokenizer_n_merges(bytes), ==, 0);
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *path = g_build_filename(tmpdir, names[i], NULL);
    g_assert_true(ct_tokenizer_save(bytes, path, &error));
    g_assert_no_error(error);
    g_autofree char *raw = NULL;
    g_assert_true(g_file_get_contents(path, &raw, NULL, NULL));
    if (i == 0)
      g_assert_cmpstr(raw, ==, "#version: 0.2");
    CtTokenizer *loaded = ct_tokenizer_new_from_file(path, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(ct_tokenizer_n_merges(loaded), ==, 0);
    g_assert_cmpint(ct_tokenizer_vocab_size(loaded), ==, CT_TOKENIZER_MIN_VOCAB);
    assert_same_vocab(bytes, loaded);
    ct_tokenizer_free(loaded);
  }
  /* too small a vocabulary */
  g_assert_null(ct_tokenizer_train(tv, texts->len, 513, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_INVALID);
  g_assert_nonnull(strstr(error->message, "514"));
  g_clear_error(&error);
  ct_tokenizer_free(bytes);
  ct_tokenizer_free(tok);
  g_ptr_array_unref(texts);
}

/* the documented tie rule, and counting by occurrences */
static void
test_train_ties(void)
{
  /* "ab" and "cd" both twice: "a b</w>" sorts before "c d</w>" */
  const char *t1[] = { "cd ab cd ab" };
  CtTokenizer *tok = ct_tokenizer_train(t1, 1, 515, NULL);
  g_assert_cmpuint(ct_tokenizer_n_merges(tok), ==, 1);
  g_assert_cmpstr(ct_tokenizer_id_to_token(tok, 512), ==, "ab</w>");
  ct_tokenizer_free(tok);
  /* "cd" three times beats "ab" twice */
  const char *t2[] = { "cd ab", "cd ab cd" };
  tok = ct_tokenizer_train(t2, 2, 515, NULL);
  g_assert_cmpstr(ct_tokenizer_id_to_token(tok, 512), ==, "cd</w>");
  ct_tokenizer_free(tok);
  /* it stops when every word is one symbol */
  tok = ct_tokenizer_train(t2, 2, 10000, NULL);
  g_assert_cmpuint(ct_tokenizer_n_merges(tok), ==, 2);
  g_assert_cmpint(ct_tokenizer_vocab_size(tok), ==, 516);
  ct_tokenizer_free(tok);
  /* no captions: the byte vocabulary */
  tok = ct_tokenizer_train(NULL, 0, 600, NULL);
  g_assert_cmpint(ct_tokenizer_vocab_size(tok), ==, 514);
  ct_tokenizer_free(tok);
}

/* merges in memory, and files that are not merges files */
static void
test_files(void)
{
  const char *merges[] = { "h e", "l l", "he ll", "hell o</w>" };
  GError *error = NULL;
  CtTokenizer *tok = ct_tokenizer_new_from_merges(merges, 4, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ct_tokenizer_vocab_size(tok), ==, 518);
  GArray *ids = encode(tok, "Hello hell");
  g_assert_cmpuint(ids->len, ==, 4);
  g_assert_cmpint(g_array_index(ids, int32_t, 0), ==, 515); /* hello</w> */
  /* "hell" ends in "l</w>", which no merge joins */
  g_assert_cmpstr(ct_tokenizer_id_to_token(tok, g_array_index(ids, int32_t, 1)), ==, "he");
  g_assert_cmpstr(ct_tokenizer_id_to_token(tok, g_array_index(ids, int32_t, 2)), ==, "l");
  g_assert_cmpstr(ct_tokenizer_id_to_token(tok, g_array_index(ids, int32_t, 3)), ==, "l</w>");
  g_array_unref(ids);
  ct_tokenizer_free(tok);

  g_autofree char *missing = g_build_filename(tmpdir, "missing.txt.gz", NULL);
  g_assert_null(ct_tokenizer_new_from_file(missing, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_MISSING);
  g_assert_nonnull(strstr(error->message, "missing.txt.gz"));
  g_clear_error(&error);
  g_autofree char *badgz = g_build_filename(tmpdir, "bad.gz", NULL);
  g_assert_true(g_file_set_contents(badgz, "\x1f\x8b\x08\x00garbage", 11, NULL));
  g_assert_null(ct_tokenizer_new_from_file(badgz, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
  g_assert_nonnull(strstr(error->message, "bad.gz"));
  g_clear_error(&error);
  g_autofree char *empty = g_build_filename(tmpdir, "empty.txt", NULL);
  g_assert_true(g_file_set_contents(empty, "", 0, NULL));
  g_assert_null(ct_tokenizer_new_from_file(empty, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
  g_clear_error(&error);
  g_autofree char *latin1 = g_build_filename(tmpdir, "latin1.txt", NULL);
  g_assert_true(g_file_set_contents(latin1, "#version: 0.2\n\xe9 t", -1, NULL));
  g_assert_null(ct_tokenizer_new_from_file(latin1, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_FORMAT);
  g_clear_error(&error);
  /* a header alone: the byte vocabulary */
  g_autofree char *header = g_build_filename(tmpdir, "header.txt", NULL);
  g_assert_true(g_file_set_contents(header, "#version: 0.2", -1, NULL));
  tok = ct_tokenizer_new_from_file(header, &error);
  g_assert_no_error(error);
  g_assert_cmpint(ct_tokenizer_vocab_size(tok), ==, 514);
  ct_tokenizer_free(tok);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  tmpdir = g_dir_make_tmp("ct-tokenizer-XXXXXX", NULL);
  g_assert_nonnull(tmpdir);
  load_openai();
  load_cases();
  g_test_add_func("/tokenizer/vocab", test_vocab);
  g_test_add_func("/tokenizer/golden", test_golden);
  g_test_add_func("/tokenizer/roundtrip", test_roundtrip);
  g_test_add_func("/tokenizer/tokenize", test_tokenize);
  g_test_add_func("/tokenizer/error-text", test_error_text);
  g_test_add_func("/tokenizer/threads", test_threads);
  g_test_add_func("/tokenizer/html", test_html);
  g_test_add_func("/tokenizer/clean", test_clean);
  g_test_add_func("/tokenizer/split", test_split);
  g_test_add_func("/tokenizer/invalid-utf8", test_invalid_utf8);
  g_test_add_func("/tokenizer/train", test_train);
  g_test_add_func("/tokenizer/train-ties", test_train_ties);
  g_test_add_func("/tokenizer/files", test_files);
  int status = g_test_run();
  const char *names[] = { "merges.txt", "merges.txt.gz", "bad.gz", "empty.txt", "latin1.txt",
                          "header.txt" };
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *p = g_build_filename(tmpdir, names[i], NULL);
    g_unlink(p);
  }
  g_rmdir(tmpdir);
  g_free(tmpdir);
  ct_tokenizer_free(openai);
  g_free(openai_skip);
  g_ptr_array_unref(cases);
  return status;
}

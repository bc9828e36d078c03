/* fuzz_tokenizer.c: OpenAI's tokenizer on any bytes.
 *
 * The vocabulary is OpenAI's merges file from $CT_FUZZ_VOCAB, else
 * ../shared/vocab/bpe_simple_vocab_16e6.txt.gz beside the checkout; without
 * it, one learned here from a few captions.  The first byte picks what the
 * rest goes through: encode, clip.tokenize (with and without truncation)
 * and decode of the ids; or, as captions, learning merges (which must save
 * and load back); or, as a merges file, building a tokenizer (which then
 * encodes a fixed text). */
#include <cliptrain/tokenizer.h>

#include "fuzz-util.h"

#include <string.h>

static CtTokenizer *tok;

/* ASan's strstr() interceptor measures the whole haystack on every call,
 * which makes g_strsplit() of the 1.3 MB merges file quadratic (hours). */
const char *__asan_default_options(void);
const char *
__asan_default_options(void)
{
  return "intercept_strstr=0";
}

static CtTokenizer *
load_vocab(void)
{
  const char *env = g_getenv("CT_FUZZ_VOCAB");
  char *path = env ? g_strdup(env)
                   : g_build_filename(CT_FUZZ_SRCDIR, "..", "shared", "vocab",
                                      "bpe_simple_vocab_16e6.txt.gz", NULL);
  CtTokenizer *t = ct_tokenizer_new_from_file(path, NULL);
  g_free(path);
  if (t)
    return t;
  static const char *const captions[] = {
    "a photo of a cat.", "A PHOTO OF A DOG!", "une photo d'un chien", "ein Foto 🐱 &amp; &lt;",
    "the the the quick brown fox", "12345 67.89 <|endoftext|>", "我的猫", "naïve café",
  };
  t = ct_tokenizer_train(captions, G_N_ELEMENTS(captions), 700, NULL);
  if (!t)
    abort();
  return t;
}

static void
encode(const char *text)
{
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  GError *err = NULL;
  if (!ct_tokenizer_encode(tok, text, ids, &err)) {
    fuzz_check_error(&err, NULL);
  } else {
    int32_t vocab = ct_tokenizer_vocab_size(tok);
    for (guint i = 0; i < ids->len; i++)
      if (g_array_index(ids, int32_t, i) < 0 || g_array_index(ids, int32_t, i) >= vocab)
        abort();
    g_free(ct_tokenizer_decode(tok, (const int32_t *)ids->data, ids->len));
    int32_t out[CT_TOKENIZER_CONTEXT_LENGTH];
    if (!ct_tokenizer_tokenize(tok, text, CT_TOKENIZER_CONTEXT_LENGTH, TRUE, out, NULL))
      abort(); /* valid UTF-8 always tokenizes with truncation */
    if (!ct_tokenizer_tokenize(tok, text, CT_TOKENIZER_CONTEXT_LENGTH, FALSE, out, &err))
      fuzz_check_error(&err, NULL);
  }
  g_array_free(ids, TRUE);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
  tok = load_vocab();
  return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  char *text = g_strndup((const char *)data + 1, size - 1); /* stops at a NUL */
  if (data[0] % 4 < 2) {
    encode(text);
  } else if (data[0] % 4 == 2) {
    /* captions, one per line, to learn merges from */
    char **lines = g_strsplit(text, "\n", 64);
    CtTokenizer *t = ct_tokenizer_train((const char *const *)lines, g_strv_length(lines),
                                        CT_TOKENIZER_MIN_VOCAB + 64, NULL);
    if (t) {
      char *saved = fuzz_path("learned.txt");
      CtTokenizer *back = NULL;
      if (!ct_tokenizer_save(t, saved, NULL) ||
          !(back = ct_tokenizer_new_from_file(saved, NULL)) ||
          ct_tokenizer_n_merges(back) != ct_tokenizer_n_merges(t))
        abort(); /* a learned vocabulary must save and load back whole */
      ct_tokenizer_free(back);
      g_free(saved);
      ct_tokenizer_free(t);
    }
    g_strfreev(lines);
  } else {
    /* a merges file: header line, then "left right" lines */
    char *path = fuzz_write("merges.txt", data + 1, size - 1);
    GError *err = NULL;
    CtTokenizer *t = ct_tokenizer_new_from_file(path, &err);
    if (!t)
      fuzz_check_error(&err, path);
    g_free(path);
    if (t) {
      GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
      ct_tokenizer_encode(t, "a photo of a cat, naïve 🐱", ids, NULL);
      g_array_free(ids, TRUE);
      ct_tokenizer_free(t);
    }
  }
  g_free(text);
  return 0;
}

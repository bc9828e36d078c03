/* tokenizer-train.c: learn BPE merges from captions (ct_tokenizer_train).
 *
 * Classic BPE: the captions are cleaned and split exactly as encode does;
 * each distinct piece is a word of byte symbols (the last with "</w>"), with
 * its number of occurrences.  Each step picks the adjacent pair occurring
 * most often over all words, ties going to the pair whose left symbol, then
 * right symbol, sorts first by strcmp of the symbols as written in the merges
 * file; it merges every occurrence left to right, as SimpleTokenizer.bpe
 * does, so that encoding a training word replays the training.  Symbols are
 * identified by their string, as in SimpleTokenizer.
 *
 * Pair counts are kept up to date incrementally (only the words holding the
 * merged pair are rescanned), and the best pair comes from a max-heap whose
 * outdated entries are skipped when popped. */
#include "config.h"

#include <cliptrain/tokenizer.h>

#include <string.h>

#define EOW "</w>"

typedef struct {
  GArray *syms; /* int32 symbol ids */
  gint64 freq;
  guint stamp;  /* last merge step that visited the word */
} Word;

typedef struct {
  gint64 count;
  GArray *where; /* int32 indices of words that held the pair (may repeat) */
  guint touched; /* last merge step that changed the count */
} PairInfo;

typedef struct {
  gint64 count;
  int32_t a, b;
} HeapEntry;

typedef struct {
  GPtrArray *sym;       /* id -> symbol string */
  GHashTable *sym_ids;  /* symbol string -> id + 1 */
  GArray *words;        /* Word */
  GHashTable *pairs;    /* gint64 key -> PairInfo */
  GArray *heap;         /* HeapEntry, max-heap by better() */
  GArray *touched;      /* gint64 keys changed in this step */
  guint step;
} Trainer;

static gint64
key_of(int32_t a, int32_t b)
{
  return (gint64) (((guint64) (guint32) a << 32) | (guint32) b);
}

static int32_t
intern(Trainer *t, const char *s)
{
  gpointer v = g_hash_table_lookup(t->sym_ids, s);
  if (v)
    return GPOINTER_TO_INT(v) - 1;
  char *copy = g_strdup(s);
  g_ptr_array_add(t->sym, copy);
  int32_t id = (int32_t) t->sym->len - 1;
  g_hash_table_insert(t->sym_ids, copy, GINT_TO_POINTER(id + 1));
  return id;
}

/* Is x a better merge than y: more occurrences, then the smaller symbols. */
static gboolean
better(const Trainer *t, const HeapEntry *x, const HeapEntry *y)
{
  if (x->count != y->count)
    return x->count > y->count;
  int c = strcmp(g_ptr_array_index(t->sym, x->a), g_ptr_array_index(t->sym, y->a));
  if (c == 0)
    c = strcmp(g_ptr_array_index(t->sym, x->b), g_ptr_array_index(t->sym, y->b));
  return c < 0;
}

static void
heap_push(Trainer *t, HeapEntry e)
{
  g_array_append_val(t->heap, e);
  HeapEntry *h = (HeapEntry *) t->heap->data;
  size_t i = t->heap->len - 1;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!better(t, &h[i], &h[parent]))
      break;
    HeapEntry tmp = h[i];
    h[i] = h[parent];
    h[parent] = tmp;
    i = parent;
  }
}

static HeapEntry
heap_pop(Trainer *t)
{
  HeapEntry *h = (HeapEntry *) t->heap->data;
  HeapEntry top = h[0];
  size_t n = t->heap->len - 1;
  h[0] = h[n];
  g_array_set_size(t->heap, (guint) n);
  h = (HeapEntry *) t->heap->data;
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, best = i;
    if (l < n && better(t, &h[l], &h[best]))
      best = l;
    if (r < n && better(t, &h[r], &h[best]))
      best = r;
    if (best == i)
      break;
    HeapEntry tmp = h[i];
    h[i] = h[best];
    h[best] = tmp;
    i = best;
  }
  return top;
}

static void
pair_info_free(gpointer p)
{
  PairInfo *info = p;
  g_array_unref(info->where);
  g_free(info);
}

/* Adds delta occurrences of the pair (a, b), held by word w. */
static void
count_pair(Trainer *t, int32_t a, int32_t b, gint64 delta, int32_t w)
{
  gint64 key = key_of(a, b);
  PairInfo *info = g_hash_table_lookup(t->pairs, &key);
  if (!info) {
    info = g_new0(PairInfo, 1);
    info->where = g_array_new(FALSE, FALSE, sizeof(int32_t));
    gint64 *k = g_new(gint64, 1);
    *k = key;
    g_hash_table_insert(t->pairs, k, info);
  }
  info->count += delta;
  if (delta > 0)
    g_array_append_val(info->where, w);
  if (info->touched != t->step) {
    info->touched = t->step;
    g_array_append_val(t->touched, key);
  }
}

static void
count_word(Trainer *t, int32_t w, gint64 sign)
{
  Word *word = &g_array_index(t->words, Word, w);
  const int32_t *s = (const int32_t *) word->syms->data;
  for (guint i = 0; i + 1 < word->syms->len; i++)
    count_pair(t, s[i], s[i + 1], sign * word->freq, w);
}

/* Merges every occurrence of (a, b) in word w, left to right; FALSE if none. */
static gboolean
merge_word(Trainer *t, int32_t w, int32_t a, int32_t b, int32_t ab)
{
  Word *word = &g_array_index(t->words, Word, w);
  int32_t *s = (int32_t *) word->syms->data;
  guint n = word->syms->len, j = 0;
  gboolean found = FALSE;
  for (guint i = 0; i + 1 < n; i++)
    if (s[i] == a && s[i + 1] == b)
      found = TRUE;
  if (!found)
    return FALSE;
  count_word(t, w, -1);
  for (guint i = 0; i < n;) {
    if (i + 1 < n && s[i] == a && s[i + 1] == b) {
      s[j++] = ab;
      i += 2;
    } else
      s[j++] = s[i++];
  }
  g_array_set_size(word->syms, j);
  count_word(t, w, +1);
  return TRUE;
}

/* Pushes the current count of every pair the step changed. */
static void
push_touched(Trainer *t)
{
  for (guint i = 0; i < t->touched->len; i++) {
    gint64 key = g_array_index(t->touched, gint64, i);
    PairInfo *info = g_hash_table_lookup(t->pairs, &key);
    if (info->count > 0)
      heap_push(t, (HeapEntry) { info->count, (int32_t) (key >> 32), (int32_t) (key & 0xffffffff) });
  }
  g_array_set_size(t->touched, 0);
}

static int
cmp_str(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *) a, *(const char *const *) b);
}

CtTokenizer *
ct_tokenizer_train(const char *const *texts, size_t n, int vocab_size, GError **error)
{
  g_return_val_if_fail(texts != NULL || n == 0, NULL);
  if (vocab_size < CT_TOKENIZER_MIN_VOCAB) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "vocab_size %d is below the minimum %d (512 byte symbols and 2 special tokens)",
                vocab_size, CT_TOKENIZER_MIN_VOCAB);
    return NULL;
  }
  /* distinct pieces and their counts */
  GHashTable *counts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  GPtrArray *pieces = g_ptr_array_new_with_free_func(g_free);
  for (size_t i = 0; i < n; i++) {
    g_ptr_array_set_size(pieces, 0);
    if (!ct_tokenizer_pre_tokenize(texts[i], pieces, error)) {
      g_prefix_error(error, "text %zu: ", i);
      g_ptr_array_unref(pieces);
      g_hash_table_destroy(counts);
      return NULL;
    }
    for (guint k = 0; k < pieces->len; k++) {
      const char *p = g_ptr_array_index(pieces, k);
      if (strcmp(p, "<|startoftext|>") == 0 || strcmp(p, "<|endoftext|>") == 0)
        continue;
      gint64 *c = g_hash_table_lookup(counts, p);
      if (!c) {
        c = g_new0(gint64, 1);
        g_hash_table_insert(counts, g_strdup(p), c);
      }
      (*c)++;
    }
  }
  g_ptr_array_unref(pieces);

  Trainer t = { 0 };
  t.sym = g_ptr_array_new();
  t.sym_ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  t.words = g_array_new(FALSE, FALSE, sizeof(Word));
  t.pairs = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, pair_info_free);
  t.heap = g_array_new(FALSE, FALSE, sizeof(HeapEntry));
  t.touched = g_array_new(FALSE, FALSE, sizeof(gint64));
  t.step = 1;

  /* words in sorted order, so that nothing depends on hash order */
  guint n_words;
  const char **keys = (const char **) g_hash_table_get_keys_as_array(counts, &n_words);
  qsort(keys, n_words, sizeof *keys, cmp_str);
  for (guint w = 0; w < n_words; w++) {
    char *chars = ct_tokenizer_bytes_to_unicode((const guint8 *) keys[w], strlen(keys[w]));
    Word word = { g_array_new(FALSE, FALSE, sizeof(int32_t)),
                  *(gint64 *) g_hash_table_lookup(counts, keys[w]), 0 };
    for (const char *p = chars; *p;) {
      const char *next = g_utf8_next_char(p);
      char *s = *next ? g_strndup(p, (gsize) (next - p)) : g_strconcat(p, EOW, NULL);
      int32_t id = intern(&t, s);
      g_free(s);
      g_array_append_val(word.syms, id);
      p = next;
    }
    g_free(chars);
    g_array_append_val(t.words, word);
  }
  g_free(keys);
  g_hash_table_destroy(counts);
  for (guint w = 0; w < t.words->len; w++)
    count_word(&t, (int32_t) w, +1);
  push_touched(&t);

  GPtrArray *merges = g_ptr_array_new_with_free_func(g_free);
  size_t want = (size_t) vocab_size - CT_TOKENIZER_MIN_VOCAB;
  while (merges->len < want && t.heap->len > 0) {
    HeapEntry e = heap_pop(&t);
    gint64 key = key_of(e.a, e.b);
    PairInfo *info = g_hash_table_lookup(t.pairs, &key);
    if (info->count != e.count)
      continue; /* outdated: a fresher entry holds its count */
    const char *a = g_ptr_array_index(t.sym, e.a), *b = g_ptr_array_index(t.sym, e.b);
    g_ptr_array_add(merges, g_strconcat(a, " ", b, NULL));
    char *joined = g_strconcat(a, b, NULL);
    int32_t ab = intern(&t, joined);
    g_free(joined);
    t.step++;
    /* the words to rescan: a copy, since merging appends to pairs' lists */
    GArray *where = g_array_copy(info->where);
    for (guint i = 0; i < where->len; i++) {
      int32_t w = g_array_index(where, int32_t, i);
      Word *word = &g_array_index(t.words, Word, w);
      if (word->stamp == t.step)
        continue;
      word->stamp = t.step;
      merge_word(&t, w, e.a, e.b, ab);
    }
    g_array_unref(where);
    /* the merged pair is gone; forget where it was */
    info = g_hash_table_lookup(t.pairs, &key);
    g_array_set_size(info->where, 0);
    push_touched(&t);
  }

  CtTokenizer *tok =
    ct_tokenizer_new_from_merges((const char *const *) merges->pdata, merges->len, error);
  g_ptr_array_unref(merges);
  for (guint w = 0; w < t.words->len; w++)
    g_array_unref(g_array_index(t.words, Word, w).syms);
  g_array_unref(t.words);
  g_hash_table_destroy(t.pairs);
  g_array_unref(t.heap);
  g_array_unref(t.touched);
  g_hash_table_destroy(t.sym_ids);
  g_ptr_array_unref(t.sym);
  return tok;
}

/* tokenizer.h: OpenAI CLIP's byte-level BPE tokenizer, exactly.
 *
 * Reproduces clip/simple_tokenizer.py (SimpleTokenizer) and clip.tokenize:
 *
 *   text -> html.unescape twice -> strip -> runs of whitespace to one space
 *        -> Python's str.lower() -> split with OpenAI's regex
 *        -> each piece's UTF-8 bytes as byte-level symbols -> BPE -> ids
 *
 * ftfy.fix_text, the first step of OpenAI's cleaning, is the identity here.
 * A vocabulary is a merges file in OpenAI's format (bpe_simple_vocab_16e6.txt.gz:
 * a header line, then one "left right" merge per line, gzipped or not), or
 * one learned from captions with ct_tokenizer_train().  Its ids are OpenAI's:
 * 256 byte symbols, the same 256 with "</w>" appended, one per merge, then
 * <|startoftext|> and <|endoftext|>; OpenAI's file gives 49408 ids.
 *
 * Symbols are shown as OpenAI shows them: each byte as one printable code
 * point (bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * others to U+0100 + n), a word's last symbol followed by "</w>".
 *
 * A CtTokenizer is immutable once built, apart from an internal cache behind
 * a lock: every function taking a const CtTokenizer may be called from
 * several threads at once. */
#ifndef CLIPTRAIN_TOKENIZER_H
#define CLIPTRAIN_TOKENIZER_H

#include <cliptrain/ct-common.h>

G_BEGIN_DECLS

typedef struct _CtTokenizer CtTokenizer;

/* OpenAI's context length for CLIP's text tower. */
#define CT_TOKENIZER_CONTEXT_LENGTH 77

/* The smallest vocabulary: 512 byte symbols and the two special tokens. */
#define CT_TOKENIZER_MIN_VOCAB 514

/* Reads a merges file as OpenAI does: line 0 is a header and is skipped;
 * lines 1 .. 48894 (at most) are merges; the rest of the file is ignored.
 * gzip is detected by its magic bytes.  (transfer full: ct_tokenizer_free) */
CT_API CtTokenizer *ct_tokenizer_new_from_file(const char *path, GError **error);

/* The same from merges already in memory: n lines "left right" (no header),
 * in rank order.  (transfer full; merges: transfer none) */
CT_API CtTokenizer *ct_tokenizer_new_from_merges(const char *const *merges, size_t n,
                                                 GError **error);

/* Learns merges from n captions (cleaned and split as encode does) until the
 * vocabulary has vocab_size ids (>= CT_TOKENIZER_MIN_VOCAB), or until every
 * word of the captions is a single symbol, whichever comes first.  Each step
 * merges the adjacent pair that occurs most often (counting every word as
 * often as it occurs); ties go to the pair whose left symbol, then right
 * symbol, sorts first by strcmp of the symbols as written in the merges file.
 * The result is deterministic: it depends only on the multiset of captions.
 * (transfer full; texts: transfer none) */
CT_API CtTokenizer *ct_tokenizer_train(const char *const *texts, size_t n, int vocab_size,
                                       GError **error);

/* Writes the merges in OpenAI's format: the header "#version: 0.2", then one
 * merge per line, with no newline after the last merge (so that OpenAI's
 * SimpleTokenizer, which splits on '\n', reads the same vocabulary).  Gzipped
 * when path ends in ".gz".  Replaces path atomically. */
CT_API gboolean ct_tokenizer_save(const CtTokenizer *tok, const char *path, GError **error);

CT_API void ct_tokenizer_free(CtTokenizer *tok);

/* Number of ids: 512 + merges + 2 (49408 for OpenAI's file). */
CT_API int ct_tokenizer_vocab_size(const CtTokenizer *tok);
/* Number of merges. */
CT_API size_t ct_tokenizer_n_merges(const CtTokenizer *tok);
/* Ids of <|startoftext|> and <|endoftext|>: vocab_size - 2 and - 1. */
CT_API int32_t ct_tokenizer_sot(const CtTokenizer *tok);
CT_API int32_t ct_tokenizer_eot(const CtTokenizer *tok);

/* The symbol an id stands for (e.g. "photo</w>"), or NULL when id is out of
 * range.  (transfer none: valid as long as tok) */
CT_API const char *ct_tokenizer_id_to_token(const CtTokenizer *tok, int32_t id);
/* The id of a symbol, or -1.  When a vocabulary holds a symbol twice, its
 * last id (as OpenAI's encoder dict). */
CT_API int32_t ct_tokenizer_token_to_id(const CtTokenizer *tok, const char *token);

/* Appends the ids of text to ids (a GArray of int32_t), without start or end
 * tokens: SimpleTokenizer.encode.  "<|startoftext|>" and "<|endoftext|>" in
 * the text become their ids.  Fails with CT_ERROR_INVALID, naming the text,
 * when it is not valid UTF-8; ids is then unchanged. */
CT_API gboolean ct_tokenizer_encode(const CtTokenizer *tok, const char *text, GArray *ids,
                                    GError **error);

/* clip.tokenize for one text: out[0 .. context_length) = start token, the
 * ids of text, end token, then zeros.  When that is longer than
 * context_length: with truncate, the first context_length ids with the last
 * one replaced by the end token; without, CT_ERROR_INVALID naming the text
 * and its length.  (out: caller-allocated, context_length int32s) */
CT_API gboolean ct_tokenizer_tokenize(const CtTokenizer *tok, const char *text,
                                      int context_length, gboolean truncate, int32_t *out,
                                      GError **error);

/* The same for n texts into out[n * context_length]; stops at the first
 * failure, whose message also gives the text's index. */
CT_API gboolean ct_tokenizer_tokenize_batch(const CtTokenizer *tok, const char *const *texts,
                                            size_t n, int context_length, gboolean truncate,
                                            int32_t *out, GError **error);

/* SimpleTokenizer.decode: the symbols joined, mapped back to bytes, decoded
 * as UTF-8 with errors="replace" (one U+FFFD per maximal invalid subpart, as
 * Python), then every "</w>" replaced by a space.  The special tokens give
 * their names.  An id outside the vocabulary (Python raises KeyError) gives
 * U+FFFD.  Only the ids of byte 0 can put a NUL in the text, which then ends
 * the C string early.  (transfer full: g_free) */
CT_API char *ct_tokenizer_decode(const CtTokenizer *tok, const int32_t *ids, size_t n);

/* The text encode splits: OpenAI's basic_clean and whitespace_clean, then
 * str.lower().  NULL with CT_ERROR_INVALID when text is not valid UTF-8.
 * (transfer full: g_free) */
CT_API char *ct_tokenizer_clean(const char *text, GError **error);

/* Appends to pieces (a GPtrArray with g_free as its free function) the pieces
 * OpenAI's regex finds in the cleaned text, as UTF-8 strings: re.findall(pat,
 * clean(text)).  Fails as ct_tokenizer_clean. */
CT_API gboolean ct_tokenizer_pre_tokenize(const char *text, GPtrArray *pieces, GError **error);

/* Python's html.unescape (once) of valid UTF-8 text: named references from the
 * HTML5 list (longest prefix when the ';' is missing), decimal and hex
 * numeric references with Python's replacements.  (transfer full: g_free) */
CT_API char *ct_html_unescape(const char *text);

/* The n bytes as OpenAI's byte-level symbols (bytes_to_unicode), one code
 * point per byte, UTF-8 encoded.  (transfer full: g_free) */
CT_API char *ct_tokenizer_bytes_to_unicode(const guint8 *bytes, size_t n);

G_END_DECLS

#endif

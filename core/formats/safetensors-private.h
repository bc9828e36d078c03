/* safetensors-private.h: what safetensors.c and safetensors-header.c share. */
#ifndef CT_SAFETENSORS_PRIVATE_H
#define CT_SAFETENSORS_PRIVATE_H

#include <cliptrain/safetensors.h>

/* The header limits.  100,000,000 bytes is the reference implementation's
 * MAX_HEADER_SIZE; 64 levels of nesting is far more than a header needs (a
 * tensor entry is 3 deep) and keeps every walk of the tree shallow. */
#define CT_ST_MAX_HEADER_BYTES ((guint64)100 * 1000 * 1000)
#define CT_ST_MAX_HEADER_DEPTH 64
#define CT_ST_METADATA_KEY "__metadata__"

/* Sets ERROR to "PATH: tensor 'NAME': MESSAGE", or "PATH: MESSAGE" when NAME
 * is NULL.  Always one line of valid UTF-8: line breaks in MESSAGE become
 * spaces, control characters in NAME are written as \xNN, and a NAME longer
 * than 200 bytes is cut (with "...") so that a hostile name cannot flood a
 * terminal. */
void ct_st_set_error(GError **error, CtError code, const char *path, const char *name,
                     const char *fmt, ...) G_GNUC_PRINTF(5, 6);

/* S for an error message: control characters as \xNN, cut after 200
 * bytes (at a character boundary) with "...".  (transfer full) */
char *ct_st_printable(const char *s);

/* Checks that TEXT[0..LEN) (already valid UTF-8) is one strict RFC 8259
 * JSON value with nothing but whitespace after it, without recursion:
 * no comments, single quotes, hexadecimal or leading-zero numbers or
 * trailing commas (all of which json-glib accepts); strings without raw
 * control characters, lone surrogates or \u0000; integers within int64
 * (json-glib wraps larger ones); nesting at most CT_ST_MAX_HEADER_DEPTH;
 * no key twice in one object.  The top-level object's keys are appended
 * to KEYS (owned UTF-8 strings), decoded, in header order.  Errors name
 * PATH, the byte offset in the header, and the tensor whose entry holds
 * the fault. */
gboolean ct_st_header_check(const char *path, const char *text, size_t len, GPtrArray *keys,
                            GError **error);

#endif

/* ct-common.h: export macro, error domain and small shared types.
 *
 * Every public cliptrain symbol carries the ct_/Ct/CT_ prefix.  Functions
 * that can fail return gboolean (or a pointer, NULL on failure) and take a
 * trailing GError **error whose message names the file, the tensor or the
 * plugin concerned. */
#ifndef CLIPTRAIN_CT_COMMON_H
#define CLIPTRAIN_CT_COMMON_H

#include <glib.h>
#include <stddef.h>
#include <stdint.h>

G_BEGIN_DECLS

#if defined(CT_COMPILATION)
#define CT_API __attribute__((visibility("default")))
#else
#define CT_API
#endif

#define CT_ERROR (ct_error_quark())

typedef enum {
  CT_ERROR_FAILED,  /* anything not listed below */
  CT_ERROR_IO,      /* open, read, write, fsync or rename failed */
  CT_ERROR_FORMAT,  /* a file is malformed: truncated, lying header, bad JSON */
  CT_ERROR_DTYPE,   /* a tensor's dtype is not one we read */
  CT_ERROR_MISSING, /* a tensor, key or file that must exist does not */
  CT_ERROR_SHAPE,   /* a tensor's shape is not the expected one */
  CT_ERROR_CONFIG,  /* a model config is invalid or does not match weights */
  CT_ERROR_INVALID, /* an argument is out of range */
} CtError;

CT_API GQuark ct_error_quark(void);

/* TMPL with its first "{label}" replaced by LABEL, as the data captions
 * labelled samples and zero_shot fills its prompts (TMPL as it is
 * without one).  (transfer full) */
CT_API char *ct_template_fill(const char *tmpl, const char *label);
/* SECONDS as "mm:ss", or "h:mm:ss" from an hour on (0 for a negative or
 * non-finite value), into BUF; returns BUF. */
CT_API const char *ct_format_duration(char *buf, size_t size, double seconds);

/* The SHA-256 of a file's bytes, in hex.  (transfer full) */
CT_API char *ct_file_sha256(const char *path, GError **error);

/* The library's version string, e.g. "0.1.0".  (transfer none) */
CT_API const char *ct_version(void);

/* Threads for a process's numerics: one pool runs the matrix products
 * (ct_sgemm), attention and the element-wise kernels; OpenBLAS itself is
 * kept single-threaded, so the two never compete for a core.  1 until
 * set.  Results do not depend on it: each value is computed by one
 * thread in a fixed order, and products are cut only where OpenBLAS
 * computes the same bits whole or cut. */
CT_API void ct_set_num_threads(int n);

/* Row-major C (M, N) = ALPHA op(A) op(B) + BETA C, op() transposing when
 * TRANS_A / TRANS_B: A is (M, K), or (K, M) when transposed; B is (K, N),
 * or (N, K).  cblas_sgemm's arguments in its order, shared out over the
 * threads of ct_set_num_threads.  Plugins use it for their products:
 * cblas_sgemm called directly runs on one thread under cliptrain. */
CT_API void ct_sgemm(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta, float *C,
                     int ldc);

G_END_DECLS

#endif

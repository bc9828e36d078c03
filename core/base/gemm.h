/* gemm.h: matrix products on the pool, several at once.  Not installed;
 * ct_sgemm (ct-common.h) is the public one. */
#ifndef CT_GEMM_H
#define CT_GEMM_H

#include <glib.h>

/* One row-major product C (M, N) = ALPHA op(A) op(B) + BETA C, with
 * ct_sgemm's arguments. */
typedef struct {
  gboolean ta, tb;
  int M, N, K;
  float alpha;
  const float *A; /* (M, K), or (K, M) when ta */
  int lda;
  const float *B; /* (K, N), or (N, K) when tb */
  int ldb;
  float beta;
  float *C; /* (M, N) */
  int ldc;
  /* (N) or NULL: each row of C is set to it before the product (BETA must
   * then be 1), by the thread that computes the row, so a bias broadcast
   * costs no pass of its own on one thread */
  const float *bias;
} CtGemm;

#define CT_GEMM_MANY_MAX 4

/* N (1 to CT_GEMM_MANY_MAX) independent products, none writing what
 * another reads.  With at least N threads they run side by side, the
 * threads shared out between them: two products of one thread each run
 * at a single thread's full rate, which a product cut in two does not
 * reach (each half packs all of B).  Each block is cut as ct_sgemm cuts,
 * so the bits are those of the products one after the other. */
void ct_sgemm_many(const CtGemm *g, int n);

/* The reference rate of a fit's MFU figure, in FLOP/s: ct_sgemm on the
 * pool's threads, as training runs it, on square products grown from 256
 * until one takes 20 ms (at most 2048), the best of those timed within
 * about SECONDS (two at least).  Allocates its operands for the
 * measurement only. */
double ct_sgemm_rate(double seconds);

#endif

/* gemm.c: every matrix product, on cliptrain's own threads.
 *
 * OpenBLAS runs single-threaded under cliptrain (ct_set_num_threads); a
 * product large enough to share is cut into blocks of rows of C, one block
 * a pool thread, each an ordinary single-threaded cblas_sgemm.  So there
 * is one set of threads: OpenBLAS's own never spin on a core that the
 * element-wise kernels need, and a product called from inside a pool task
 * (attention's per-head products) runs inline instead of nesting.
 *
 * The cuts keep the bits of one whole call, so that results do not depend
 * on the thread count (tests/test-ops checks it under each OpenBLAS core
 * type, through tests/blas-kernels.sh):
 * - only rows are cut: OpenBLAS computes row-major C transposed, so rows
 *   are its columns, which its kernels tile the same way whole or cut as
 *   long as a cut falls on a tile edge.  Tiles are 4 (SkylakeX), 12
 *   (Haswell) and so on rows wide; cuts fall on multiples of 48;
 * - each block stays large (2^23 multiply-adds or more), above the sizes
 *   where OpenBLAS switches to its direct or small-matrix kernels (up to
 *   28 x 512 x 512 in 0.3.21), which round differently. */
#include "config.h"

#include "parallel.h"

#include <cliptrain/ct-common.h>

#include <cblas.h>



/* The smallest block worth a thread, in multiply-adds; see above. */
#define CT_GEMM_BLOCK_MNK (1u << 23)
/* Rows of C are cut at multiples of this. */
#define CT_GEMM_ROWS 48

typedef struct {
  gboolean ta, tb;
  int M, N, K, parts, lda, ldb, ldc;
  float alpha, beta;
  const float *A; /* (M, K), or (K, M) when ta */
  const float *B; /* (K, N), or (N, K) when tb */
  float *C;       /* (M, N) */
} GemmJob;

static int
cut(int dim, int parts, int p)
{
  if (p >= parts)
    return dim;
  int at = (int) ((long long) dim * p / parts);
  return at / CT_GEMM_ROWS * CT_GEMM_ROWS;
}

static void
gemm_block(const GemmJob *j, int lo, int hi)
{
  if (hi <= lo)
    return;
  CBLAS_TRANSPOSE ta = j->ta ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = j->tb ? CblasTrans : CblasNoTrans;
  const float *a = j->ta ? j->A + lo : j->A + (size_t) lo * j->lda;
  cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, j->N, j->K, j->alpha, a, j->lda, j->B, j->ldb,
              j->beta, j->C + (size_t) lo * j->ldc, j->ldc);
}

static void
gemm_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const GemmJob *j = ctx;
  for (size_t p = begin; p < end; p++)
    gemm_block(j, cut(j->M, j->parts, (int) p), cut(j->M, j->parts, (int) p + 1));
}

void
ct_sgemm(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha, const float *A,
         int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  GemmJob j = { .ta = trans_a, .tb = trans_b, .M = M, .N = N, .K = K,
                .lda = lda, .ldb = ldb, .ldc = ldc, .alpha = alpha, .beta = beta,
                .A = A, .B = B, .C = C, .parts = 1 };
  /* as many parts as threads, while the thinnest block stays large */
  for (int parts = MIN(ct_parallel_threads(), M / CT_GEMM_ROWS); parts > 1; parts--) {
    int thinnest = M;
    for (int p = 0; p < parts; p++)
      thinnest = MIN(thinnest, cut(M, parts, p + 1) - cut(M, parts, p));
    if ((double) thinnest * N * K >= CT_GEMM_BLOCK_MNK) {
      j.parts = parts;
      break;
    }
  }
  if (j.parts == 1) {
    gemm_block(&j, 0, M);
    return;
  }
  ct_parallel_for((size_t) j.parts, 1, gemm_range, &j);
}

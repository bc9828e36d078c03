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
 * on the thread count (tests/unit/test-ops checks it under each OpenBLAS core
 * type, through tests/cli/blas-kernels.sh):
 * - only rows are cut: OpenBLAS computes row-major C transposed, so rows
 *   are its columns, which its kernels tile the same way whole or cut as
 *   long as a cut falls on a tile edge.  The edge depends on the kernels
 *   (row_grain below): SkylakeX's, Cooperlake's and Sandybridge's give the
 *   same bits cut anywhere, so cuts fall on multiples of 4; Haswell's and
 *   Zen's only on multiples of 12; any other core type's on multiples of
 *   48, a multiple of every tile seen;
 * - each block stays large (2^23 multiply-adds or more), above the sizes
 *   where OpenBLAS switches to its direct or small-matrix kernels (up to
 *   28 x 512 x 512 in 0.3.21), which round differently.
 * Cuts fall at the multiple nearest to an even share, so vitb32's 800 and
 * 1232 rows split 400/400 and 616/616 on SkylakeX (multiples of 48 gave
 * 384/416 and 576/656: one thread idled for 4-6% of every product). */
#include "config.h"

#include "base/gemm.h"
#include "base/parallel.h"

#include <cliptrain/ct-common.h>

#include <cblas.h>
#include <string.h>

/* The smallest block worth a thread, in multiply-adds; see above. */
#define CT_GEMM_BLOCK_MNK (1u << 23)
/* Rows of C are cut at multiples of this for core types not named in
 * row_grain. */
#define CT_GEMM_ROWS 48

/* The multiple of rows at which the loaded OpenBLAS kernels may be cut
 * without changing bits (measured per core type; see above).  The core
 * type is fixed once OpenBLAS has loaded. */
static int
row_grain(void)
{
  static gsize grain;
  if (g_once_init_enter(&grain)) {
    static const struct {
      const char *core;
      int rows;
    } known[] = {
      { "SkylakeX", 4 }, { "Cooperlake", 4 }, { "Sandybridge", 4 }, { "Haswell", 12 }, { "Zen", 12 },
    };
    const char *core = openblas_get_corename();
    int rows = CT_GEMM_ROWS;
    for (gsize i = 0; core && i < G_N_ELEMENTS(known); i++)
      if (g_ascii_strcasecmp(core, known[i].core) == 0)
        rows = known[i].rows;
    g_once_init_leave(&grain, (gsize) rows);
  }
  return (int) grain;
}

/* Where block P of PARTS starts among DIM rows: the multiple of the grain
 * nearest to an even share. */
static int
cut(int dim, int parts, int p)
{
  if (p <= 0)
    return 0;
  if (p >= parts)
    return dim;
  int g = row_grain();
  long long at = ((long long) dim * p + parts / 2) / parts;
  return (int) MIN((at + g / 2) / g * g, dim);
}

/* The most blocks, up to WANT, that product G may be cut into. */
static int
max_parts(const CtGemm *g, int want)
{
  for (int parts = MIN(want, g->M / row_grain()); parts > 1; parts--) {
    int thinnest = g->M;
    for (int p = 0; p < parts; p++)
      thinnest = MIN(thinnest, cut(g->M, parts, p + 1) - cut(g->M, parts, p));
    if ((double) thinnest * g->N * g->K >= CT_GEMM_BLOCK_MNK)
      return parts;
  }
  return 1;
}

static void
gemm_block(const CtGemm *g, int lo, int hi)
{
  if (hi <= lo)
    return;
  CBLAS_TRANSPOSE ta = g->ta ? CblasTrans : CblasNoTrans;
  CBLAS_TRANSPOSE tb = g->tb ? CblasTrans : CblasNoTrans;
  const float *a = g->ta ? g->A + lo : g->A + (size_t) lo * g->lda;
  if (g->bias)
    for (int r = lo; r < hi; r++)
      memcpy(g->C + (size_t) r * g->ldc, g->bias, sizeof(float) * (size_t) g->N);
  cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, g->N, g->K, g->alpha, a, g->lda, g->B, g->ldb,
              g->beta, g->C + (size_t) lo * g->ldc, g->ldc);
}

typedef struct {
  const CtGemm *g;
  int parts[CT_GEMM_MANY_MAX]; /* blocks of each product; tasks count them all */
} ManyJob;

static void
many_range(void *ctx, size_t begin, size_t end, int thread)
{
  (void) thread;
  const ManyJob *j = ctx;
  for (size_t t = begin; t < end; t++) {
    int i = 0, p = (int) t;
    while (p >= j->parts[i])
      p -= j->parts[i++];
    const CtGemm *g = &j->g[i];
    gemm_block(g, cut(g->M, j->parts[i], p), cut(g->M, j->parts[i], p + 1));
  }
}

void
ct_sgemm_many(const CtGemm *g, int n)
{
  g_assert(n >= 1 && n <= CT_GEMM_MANY_MAX);
  int threads = ct_parallel_threads();
  if (n > 1 && threads < n) { /* too few threads to run them side by side */
    for (int i = 0; i < n; i++)
      ct_sgemm_many(&g[i], 1);
    return;
  }
  ManyJob j = { .g = g };
  int tasks = 0;
  for (int i = 0; i < n; i++) {
    /* the threads shared out, the first products taking the remainder */
    int share = threads / n + (i < threads % n);
    j.parts[i] = max_parts(&g[i], share);
    tasks += j.parts[i];
  }
  if (tasks == 1)
    gemm_block(g, 0, g->M);
  else
    ct_parallel_for((size_t) tasks, 1, many_range, &j);
}

void
ct_sgemm(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha, const float *A,
         int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
  CtGemm g = { trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL };
  ct_sgemm_many(&g, 1);
}

/* One N x N x N product on A, B, C, in seconds. */
static double
time_product(const float *a, const float *b, float *c, int n)
{
  gint64 t0 = g_get_monotonic_time();
  ct_sgemm(FALSE, FALSE, n, n, n, 1, a, n, b, n, 0, c, n);
  return (g_get_monotonic_time() - t0) / 1e6;
}

double
ct_sgemm_rate(double seconds)
{
  float *a = NULL, *b = NULL, *c = NULL; /* (n, n) each */
  double t = 0, best = 0;
  gint64 start = g_get_monotonic_time();
  int n = 256;
  for (;; n *= 2) { /* grow the product until it takes 20 ms or more */
    size_t nn = (size_t) n * n;
    g_free(a);
    g_free(b);
    g_free(c);
    a = g_new(float, nn);
    b = g_new(float, nn);
    c = g_new(float, nn);
    for (size_t i = 0; i < nn; i++) { /* any finite values: the rate does not depend on them */
      a[i] = (float) (i % 7) * 0.25f - 0.75f;
      b[i] = (float) (i % 5) * 0.5f - 1.0f;
    }
    t = time_product(a, b, c, n); /* a warm-up too: the pages are touched */
    if (t >= 0.02 || n >= 2048)
      break;
  }
  double flop = 2.0 * n * n * (double) n;
  for (int i = 0; i < 2 || (g_get_monotonic_time() - start) / 1e6 < seconds; i++) {
    t = time_product(a, b, c, n);
    if (t > 0)
      best = MAX(best, flop / t);
  }
  g_free(a);
  g_free(b);
  g_free(c);
  return best;
}

/* test-metrics.c: the ranking math of plugins/retrieval_at_k.c against a
 * brute-force N x N argsort, with ties and chunk boundaries; hit: class's
 * grouped ranks too.  The plugin's
 * source is included so that its static functions are reachable. */
#include "../../plugins/retrieval_at_k.c"

#include <glib.h>

/* Features whose dot products are exact in float whatever the summation
 * order: multiples of 1/Q with small E, so sgemm and the brute force agree
 * bit for bit and ties are real ties. */
static void
fill_features(float *x, size_t n, int e, int q, GRand *rng)
{
  for (size_t i = 0; i < n * (size_t) e; i++)
    x[i] = (float) g_rand_int_range(rng, -q, q + 1) / (float) q;
}

static const double *sort_row;

/* descending by score, ascending by index: a stable argsort(-s) */
static int
cmp_desc(const void *a, const void *b)
{
  size_t x = *(const size_t *) a, y = *(const size_t *) b;
  if (sort_row[x] != sort_row[y])
    return sort_row[x] > sort_row[y] ? -1 : 1;
  return (x > y) - (x < y);
}

/* the full N x N matrix, each row argsorted */
static void
brute_ranks(const float *q, const float *k, size_t n, int e, int64_t *ranks)
{
  double *s = g_new(double, n);
  size_t *idx = g_new(size_t, n);
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < n; j++) {
      double d = 0;
      for (int c = 0; c < e; c++)
        d += (double) q[i * e + c] * k[j * e + c];
      s[j] = d;
      idx[j] = j;
    }
    sort_row = s;
    qsort(idx, n, sizeof *idx, cmp_desc);
    for (size_t p = 0; p < n; p++)
      if (idx[p] == i)
        ranks[i] = (int64_t) p;
  }
  g_free(s);
  g_free(idx);
}

static void
check_case(size_t n, int e, int q, size_t chunk, gboolean duplicate, guint32 seed)
{
  GRand *rng = g_rand_new_with_seed(seed);
  float *img = g_new(float, n * e), *txt = g_new(float, n * e);
  fill_features(img, n, e, q, rng);
  fill_features(txt, n, e, q, rng);
  if (duplicate) /* repeated captions and images, as labelled data has */
    for (size_t i = 0; i < n; i++)
      if (g_rand_boolean(rng)) {
        size_t j = (size_t) g_rand_int_range(rng, 0, (gint32) n);
        memcpy(txt + i * e, txt + j * e, sizeof(float) * e);
        memcpy(img + i * e, img + j * e, sizeof(float) * e);
      }
  int64_t *want = g_new(int64_t, n), *got = g_new(int64_t, n);
  float *buf = g_new(float, chunk * n);
  for (int dir = 0; dir < 2; dir++) {
    const float *a = dir ? txt : img, *b = dir ? img : txt;
    brute_ranks(a, b, n, e, want);
    memset(got, 0xff, sizeof(int64_t) * n);
    compute_ranks(a, b, n, e, chunk, buf, got);
    for (size_t i = 0; i < n; i++)
      if (got[i] != want[i])
        g_error("n %zu e %d q %d chunk %zu dup %d dir %d: rank of %zu is %" G_GINT64_FORMAT
                ", brute force %" G_GINT64_FORMAT,
                n, e, q, chunk, duplicate, dir, i, got[i], want[i]);
  }
  g_free(img);
  g_free(txt);
  g_free(want);
  g_free(got);
  g_free(buf);
  g_rand_free(rng);
}

static void
test_ranks_vs_brute_force(void)
{
  static const size_t ns[] = { 1, 2, 7, 255, 256, 257, 300, 513 };
  static const size_t chunks[] = { 1, 3, 256, 1000 };
  guint32 seed = 1;
  for (size_t a = 0; a < G_N_ELEMENTS(ns); a++)
    for (size_t c = 0; c < G_N_ELEMENTS(chunks); c++) {
      check_case(ns[a], 16, 64, chunks[c], FALSE, seed++); /* few ties */
      check_case(ns[a], 3, 1, chunks[c], FALSE, seed++);   /* {-1, 0, 1}: many ties */
      check_case(ns[a], 8, 4, chunks[c], TRUE, seed++);    /* duplicated rows */
    }
}

/* hit: class: for each query, the number of keys of other groups before
 * the first key of its own group in the argsorted row */
static void
test_grouped_vs_brute_force(void)
{
  static const size_t ns[] = { 1, 2, 7, 257, 300 };
  static const size_t chunks[] = { 1, 3, 256 };
  for (size_t a = 0; a < G_N_ELEMENTS(ns); a++)
    for (size_t c = 0; c < G_N_ELEMENTS(chunks); c++)
      for (int q = 1; q <= 4; q *= 4) {
        size_t n = ns[a], chunk = chunks[c];
        int e = 3;
        GRand *rng = g_rand_new_with_seed((guint32) (n * 31 + chunk * 7 + q));
        float *img = g_new(float, n * e), *txt = g_new(float, n * e);
        fill_features(img, n, e, q, rng);
        fill_features(txt, n, e, q, rng);
        int64_t *grp = g_new(int64_t, n), *got = g_new(int64_t, n);
        for (size_t i = 0; i < n; i++)
          grp[i] = g_rand_int_range(rng, 0, 5); /* 5 classes */
        float *buf = g_new(float, chunk * n);
        compute_ranks_grouped(img, txt, grp, n, e, chunk, buf, got);
        double *s = g_new(double, n);
        size_t *idx = g_new(size_t, n);
        for (size_t i = 0; i < n; i++) {
          for (size_t j = 0; j < n; j++) {
            s[j] = 0;
            for (int d = 0; d < e; d++)
              s[j] += (double) img[i * e + d] * txt[j * e + d];
            idx[j] = j;
          }
          sort_row = s;
          qsort(idx, n, sizeof *idx, cmp_desc);
          int64_t want = 0;
          for (size_t p = 0; grp[idx[p]] != grp[i]; p++)
            want++;
          if (got[i] != want)
            g_error("grouped n %zu chunk %zu q %d: rank of %zu is %" G_GINT64_FORMAT
                    ", brute force %" G_GINT64_FORMAT, n, chunk, q, i, got[i], want);
        }
        g_free(s);
        g_free(idx);
        g_free(img);
        g_free(txt);
        g_free(grp);
        g_free(got);
        g_free(buf);
        g_rand_free(rng);
      }
}

static void
test_all_tied(void)
{
  /* identical features: rank is the index, as a stable argsort gives */
  size_t n = 300;
  float *x = g_new(float, n * 2);
  for (size_t i = 0; i < n * 2; i++)
    x[i] = 0.5f;
  int64_t *r = g_new(int64_t, n);
  float *buf = g_new(float, 256 * n);
  compute_ranks(x, x, n, 2, 256, buf, r);
  for (size_t i = 0; i < n; i++)
    g_assert_cmpint(r[i], ==, (int64_t) i);
  g_assert_cmpfloat(rank_stat(r, n, 1), ==, 1.0 / n);
  g_assert_cmpfloat(rank_stat(r, n, RANK_K_MEAN), ==, (n - 1) / 2.0 + 1);
  g_free(x);
  g_free(r);
  g_free(buf);
}

static void
test_rank_stat(void)
{
  int64_t odd[] = { 10, 0, 3, 1, 2 };
  g_assert_cmpfloat(rank_stat(odd, 5, 3), ==, 3.0 / 5);  /* 0, 1, 2 */
  g_assert_cmpfloat(rank_stat(odd, 5, 1), ==, 1.0 / 5);
  g_assert_cmpfloat(rank_stat(odd, 5, 100), ==, 1.0);
  g_assert_cmpfloat(rank_stat(odd, 5, RANK_K_MEAN), ==, 16.0 / 5 + 1);
  g_assert_cmpfloat(rank_stat(odd, 5, RANK_K_MEDIAN), ==, 3.0); /* median 2 */
  int64_t even[] = { 5, 0, 4, 1 };
  g_assert_cmpfloat(rank_stat(even, 4, RANK_K_MEDIAN), ==, 3.0); /* floor(2.5) + 1 */
  int64_t even2[] = { 3, 1 };
  g_assert_cmpfloat(rank_stat(even2, 2, RANK_K_MEDIAN), ==, 3.0); /* floor(2) + 1 */
  g_assert_true(isnan(rank_stat(odd, 0, 5)));
}

static void
test_chunk_budget(void)
{
  g_assert_cmpuint(rank_chunk(0), ==, RANK_CHUNK);
  g_assert_cmpuint(rank_chunk(10000), ==, RANK_CHUNK);
  g_assert_cmpuint(rank_chunk(1000000), ==, 16);
  g_assert_cmpuint(rank_chunk((size_t) 1 << 30), ==, 1);
}

static void
test_append_grows(void)
{
  Retrieval s = { 0 };
  int E = 5;
  float img[7 * 5], txt[7 * 5];
  int64_t grp[7];
  CtComm *single = ct_comm_new(NULL, NULL, NULL); /* one process: a copy */
  for (int round = 0; round < 100; round++) {
    for (int i = 0; i < 7 * E; i++) {
      img[i] = (float) (round * 1000 + i);
      txt[i] = -img[i];
    }
    for (int i = 0; i < 7; i++)
      grp[i] = round * 7 + i;
    g_assert_true(append(&s, single, img, txt, grp, 7, E, NULL));
  }
  g_assert_cmpuint(s.n, ==, 700);
  g_assert_cmpuint(s.cap, >=, 700);
  for (size_t r = 0; r < 700; r++)
    for (int c = 0; c < E; c++) {
      float want = (float) ((r / 7) * 1000 + (r % 7) * E + c);
      g_assert_cmpfloat(s.img[r * E + c], ==, want);
      g_assert_cmpfloat(s.txt[r * E + c], ==, -want);
      g_assert_cmpint(s.group[r], ==, (int64_t) r);
    }
  g_free(s.img);
  g_free(s.txt);
  g_free(s.group);
  ct_comm_free(single);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/metrics/ranks-vs-brute-force", test_ranks_vs_brute_force);
  g_test_add_func("/metrics/all-tied", test_all_tied);
  g_test_add_func("/metrics/grouped-vs-brute-force", test_grouped_vs_brute_force);
  g_test_add_func("/metrics/rank-stat", test_rank_stat);
  g_test_add_func("/metrics/chunk-budget", test_chunk_budget);
  g_test_add_func("/metrics/append-grows", test_append_grows);
  return g_test_run();
}

/* test-shard: the distributed sampler (ct_loader_set_shard) and the loss
 * of a rank's rows (ct_clip_loss_rows), without MPI.
 *
 * Sharding: for every world size, every epoch and every batch, the ranks'
 * batches put together in rank order are the batch that one process with
 * the global batch gets, sample for sample; every rank has the same number
 * of batches; epochs differ; a short last batch is split evenly, dropped
 * in training when it cannot give every rank a sample, kept with empty
 * shares in validation.
 *
 * Loss: the ranks' rows against the whole batch add up to ct_clip_loss(),
 * loss and gradients; and the rows' gradients match central finite
 * differences. */
#include "config.h"

#include "data/loader.h"

#include <cliptrain/cliptrain.h>
#include <math.h>
#include <string.h>

#define BS 3 /* per rank */

/* TOKENS of every batch of EPOCH from loader LD: (n_batches, bs, ctx),
 * with each batch's size in SIZES. */
static int32_t *
epoch_tokens(CtLoader *ld, const CtConfig *cfg, int bs, int epoch, int *sizes)
{
  int nb = ct_loader_n_batches(ld), ctx = cfg->context_length;
  size_t npix = (size_t) 3 * cfg->image_resolution * cfg->image_resolution;
  int32_t *all = g_new0(int32_t, (size_t) MAX(nb, 1) * bs * ctx);
  float *img = g_new(float, (size_t) bs * npix);
  ct_loader_start(ld, epoch);
  for (int b = 0; b < nb; b++)
    g_assert_true(ct_loader_next(ld, img, all + (size_t) b * bs * ctx, &sizes[b], NULL));
  ct_loader_stop(ld);
  g_free(img);
  return all;
}

static void
check_world(int N, int W, gboolean drop_last, gboolean allow_empty)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  int ctx = cfg.context_length, G = BS * W;
  CtDataset *ds = ct_dataset_new_synthetic(&cfg, (size_t) N, 5, 0, 0);
  CtLoader *one = ct_loader_new(ds, &cfg, G, TRUE, drop_last, 0, 1, 9);
  int nb = ct_loader_n_batches(one);
  /* a short last batch that cannot give each rank a sample: training drops it */
  int rest = drop_last ? 0 : N % G;
  if (rest > 0 && rest < W && !allow_empty)
    nb--;
  CtLoader **ranks = g_new(CtLoader *, W);
  for (int r = 0; r < W; r++) {
    ranks[r] = ct_loader_new(ds, &cfg, BS, TRUE, drop_last, r % 2, 2, 9);
    ct_loader_set_shard(ranks[r], r, W, allow_empty);
    g_assert_cmpint(ct_loader_n_batches(ranks[r]), ==, nb);
  }
  int32_t *first_epoch = NULL;
  for (int epoch = 0; epoch < 2; epoch++) {
    int *gsz = g_new0(int, ct_loader_n_batches(one) + 1);
    int32_t *want = epoch_tokens(one, &cfg, G, epoch, gsz);
    int **sz = g_new(int *, W);
    int32_t **got = g_new(int32_t *, W);
    for (int r = 0; r < W; r++) {
      sz[r] = g_new0(int, nb + 1);
      got[r] = epoch_tokens(ranks[r], &cfg, BS, epoch, sz[r]);
    }
    for (int b = 0; b < nb; b++) {
      int at = 0, lo = BS, hi = 0;
      for (int r = 0; r < W; r++) {
        g_assert_cmpmem(got[r] + (size_t) b * BS * ctx, sz[r][b] * ctx * sizeof(int32_t),
                        want + ((size_t) b * G + at) * ctx, sz[r][b] * ctx * sizeof(int32_t));
        at += sz[r][b];
        lo = MIN(lo, sz[r][b]);
        hi = MAX(hi, sz[r][b]);
      }
      g_assert_cmpint(at, ==, gsz[b]);   /* together, the whole global batch */
      g_assert_cmpint(hi - lo, <=, 1);   /* split evenly */
      if (!allow_empty)
        g_assert_cmpint(lo, >=, 1);
    }
    if (epoch == 0)
      first_epoch = g_memdup2(got[0], sizeof(int32_t) * BS * ctx);
    else /* rank 0's first batch is another one in the next epoch */
      g_assert_true(memcmp(first_epoch, got[0], sizeof(int32_t) * BS * ctx) != 0);
    for (int r = 0; r < W; r++) {
      g_free(sz[r]);
      g_free(got[r]);
    }
    g_free(sz);
    g_free(got);
    g_free(gsz);
    g_free(want);
  }
  g_free(first_epoch);
  for (int r = 0; r < W; r++)
    ct_loader_free(ranks[r]);
  g_free(ranks);
  ct_loader_free(one);
  ct_dataset_free(ds);
}

static void
test_shards(void)
{
  for (int W = 1; W <= 4; W++) {
    check_world(25, W, TRUE, FALSE);  /* training, drop_last */
    check_world(25, W, FALSE, FALSE); /* training without drop_last */
    check_world(25, W, FALSE, TRUE);  /* validation */
    check_world(3 * W + 1, W, FALSE, TRUE); /* a last batch of 1: empty shares */
  }
}

static void
test_empty_share(void)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  /* 7 samples, 2 ranks of 3: global batches of 6, then 1 sample */
  CtDataset *ds = ct_dataset_new_synthetic(&cfg, 7, 5, 1, 0);
  for (int r = 0; r < 2; r++) {
    CtLoader *ld = ct_loader_new(ds, &cfg, 3, FALSE, FALSE, 0, 1, 9);
    ct_loader_set_shard(ld, r, 2, TRUE);
    g_assert_cmpint(ct_loader_n_batches(ld), ==, 2);
    int sizes[2];
    g_free(epoch_tokens(ld, &cfg, 3, 0, sizes));
    g_assert_cmpint(sizes[0], ==, 3);
    g_assert_cmpint(sizes[1], ==, r == 0 ? 1 : 0);
    ct_loader_set_shard(ld, r, 2, FALSE); /* training: the 1-sample batch goes */
    g_assert_cmpint(ct_loader_n_batches(ld), ==, 1);
    ct_loader_free(ld);
  }
  ct_dataset_free(ds);
}

/* ---------------------------------------------------------------- loss rows */

static void
fill(float *x, size_t n, unsigned seed)
{
  CtRng rng;
  ct_rng_init_stream(&rng, seed, 1);
  for (size_t i = 0; i < n; i++)
    x[i] = (float) (ct_rng_uniform(&rng) * 2 - 1);
}

static void
test_rows_sum_to_clip_loss(void)
{
  enum { B = 6, E = 5, W = 3 };
  float img[B * E], txt[B * E], logits[B * B], scratch[B * B];
  float di[B * E], dt[B * E], ds;
  fill(img, B * E, 1);
  fill(txt, B * E, 2);
  double want = ct_clip_loss(logits, di, dt, &ds, scratch, img, txt, 1.3f, B, E);
  /* W ranks of 2 rows: each its images against all texts, and texts
   * against all images, with d wrt the gathered keys summed back */
  double got = 0;
  float gi[B * E] = { 0 }, gt[B * E] = { 0 }, gs = 0;
  for (int r = 0; r < W; r++) {
    int b = B / W, off = r * b;
    float dq[B * E], dk[B * E], s1, s2;
    got += ct_clip_loss_rows(logits, dq, dk, &s1, scratch, img + off * E, txt, off, 1.3f,
                             0.5 / B, b, B, E);
    for (int i = 0; i < b * E; i++)
      gi[off * E + i] += dq[i];
    for (int i = 0; i < B * E; i++)
      gt[i] += dk[i];
    got += ct_clip_loss_rows(logits, dq, dk, &s2, scratch, txt + off * E, img, off, 1.3f,
                             0.5 / B, b, B, E);
    for (int i = 0; i < b * E; i++)
      gt[off * E + i] += dq[i];
    for (int i = 0; i < B * E; i++)
      gi[i] += dk[i];
    gs += s1 + s2;
  }
  g_assert_cmpfloat_with_epsilon(got, want, 1e-6);
  g_assert_cmpfloat_with_epsilon(gs, ds, 1e-5);
  for (int i = 0; i < B * E; i++) {
    g_assert_cmpfloat_with_epsilon(gi[i], di[i], 1e-6);
    g_assert_cmpfloat_with_epsilon(gt[i], dt[i], 1e-6);
  }
  /* no rows: no loss, zero key gradient */
  float dk[B * E];
  fill(dk, B * E, 3);
  g_assert_cmpfloat(ct_clip_loss_rows(logits, NULL, dk, &ds, scratch, img, txt, 0, 1.3f, 1.0,
                                      0, B, E), ==, 0.0);
  for (int i = 0; i < B * E; i++)
    g_assert_cmpfloat(dk[i], ==, 0.0f);
}

static void
test_rows_finite_differences(void)
{
  enum { B = 3, G = 7, E = 4 };
  const int off = 2;
  const double w = 0.37;
  float q[B * E], k[G * E], logits[B * G], scratch[B * G], dq[B * E], dk[G * E], ds;
  fill(q, B * E, 4);
  fill(k, G * E, 5);
  float s = 0.8f;
  ct_clip_loss_rows(logits, dq, dk, &ds, scratch, q, k, off, s, w, B, G, E);
  const float h = 1e-3f;
  float *xs[3] = { q, k, &s };
  float *gs[3] = { dq, dk, &ds };
  size_t ns[3] = { B * E, G * E, 1 };
  for (int t = 0; t < 3; t++)
    for (size_t i = 0; i < ns[t]; i++) {
      float keep = xs[t][i];
      xs[t][i] = keep + h;
      double up = ct_clip_loss_rows(logits, NULL, NULL, NULL, scratch, q, k, off, s, w, B, G, E);
      xs[t][i] = keep - h;
      double dn = ct_clip_loss_rows(logits, NULL, NULL, NULL, scratch, q, k, off, s, w, B, G, E);
      xs[t][i] = keep;
      double fd = (up - dn) / (2 * h);
      g_assert_cmpfloat(fabs(fd - gs[t][i]), <=, 2e-3 * fmax(1.0, fabs(fd)));
    }
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/shard/global-batches", test_shards);
  g_test_add_func("/shard/empty-share", test_empty_share);
  g_test_add_func("/loss-rows/sum-to-clip-loss", test_rows_sum_to_clip_loss);
  g_test_add_func("/loss-rows/finite-differences", test_rows_finite_differences);
  return g_test_run();
}

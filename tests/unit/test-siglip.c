/* test-siglip: SigLIP's sigmoid loss (ct_siglip_loss).
 *
 * The loss against its definition computed here in double, for batches of
 * 1, 3, 7 and 16 and a rank's rows against a larger gathered batch; every
 * gradient (images, texts, logit_scale, logit_bias) against central finite
 * differences; bit-identical results for every chunk size; the rows of
 * ranks adding up to the whole batch's loss and gradients; and no rows at
 * all.  The model's logit_bias: its place after logit_scale, its
 * initialisation, saving and loading with and without it.  The PyTorch
 * parity of the loss is tests/torch/siglip.sh. */
#include "config.h"

#include "test-util.h"
#include "train/plugin-loader.h"

#include <cliptrain/cliptrain.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

static CtRng rng;

typedef struct {
  int B, G, E, offset, chunk;
  float *img, *txt, t, b, *logits;
  double weight;
} Ctx;

static Ctx
ctx_new(int B, int G, int E, int offset, int chunk)
{
  Ctx c = { .B = B, .G = G, .E = E, .offset = offset, .chunk = chunk, .t = 1.3f, .b = -2.0f,
            .weight = 1.0 / G };
  c.img = ct_test_randn(&rng, (size_t) MAX(B, 1) * E, 0.5);
  c.txt = ct_test_randn(&rng, (size_t) G * E, 0.5);
  c.logits = g_new(float, (size_t) CT_SIGLIP_CHUNK_ROWS(chunk) * G);
  return c;
}

static void
ctx_free(Ctx *c)
{
  g_free(c->img), g_free(c->txt), g_free(c->logits);
}

static double
loss_only(void *p)
{
  Ctx *c = p;
  return ct_siglip_loss(c->logits, NULL, NULL, NULL, NULL, c->img, c->txt, c->offset, c->t, c->b,
                        c->weight, c->B, c->G, c->E, c->chunk);
}

/* The definition, in double. */
static double
reference(const Ctx *c)
{
  double s = exp(c->t), sum = 0;
  for (int i = 0; i < c->B; i++)
    for (int j = 0; j < c->G; j++) {
      double z = s * ct_test_dot(c->img + (size_t) i * c->E, c->txt + (size_t) j * c->E, c->E) +
                 c->b;
      double y = j == c->offset + i ? 1 : -1;
      sum += log1p(exp(-y * z)); /* -log sigmoid(y z); small z here */
    }
  return c->weight * sum;
}

static void
test_reference(void)
{
  static const int sizes[] = { 1, 3, 7, 16 };
  for (size_t k = 0; k < G_N_ELEMENTS(sizes); k++) {
    Ctx c = ctx_new(sizes[k], sizes[k], 8, 0, 4);
    double got = loss_only(&c), want = reference(&c);
    g_test_message("B %d: loss %.9g, reference %.9g", c.B, got, want);
    g_assert_cmpfloat(fabs(got - want), <=, 1e-5 * fabs(want));
    ctx_free(&c);
  }
  /* a rank's 3 rows, its captions at 4..6 of 9 gathered */
  Ctx c = ctx_new(3, 9, 8, 4, 2);
  g_assert_cmpfloat(fabs(loss_only(&c) - reference(&c)), <=, 1e-5 * reference(&c));
  ctx_free(&c);
  /* large logits: the log-sigmoid does not overflow */
  c = ctx_new(4, 4, 8, 0, 4);
  c.t = 6.0f, c.b = 30.0f;
  double big = loss_only(&c);
  g_assert_true(isfinite(big) && big > 10);
  ctx_free(&c);
}

static void
check_fd(int B, int G, int offset)
{
  Ctx c = ctx_new(B, G, 6, offset, 2);
  float *dimg = g_new(float, (size_t) B * c.E), *dtxt = g_new(float, (size_t) G * c.E), dt, db;
  ct_siglip_loss(c.logits, dimg, dtxt, &dt, &db, c.img, c.txt, c.offset, c.t, c.b, c.weight, B,
                 G, c.E, c.chunk);
  ct_test_check_grad("siglip d_img", c.img, dimg, (size_t) B * c.E, loss_only, &c, 1e-3, 1e-5,
                     2e-3);
  ct_test_check_grad("siglip d_txt", c.txt, dtxt, (size_t) G * c.E, loss_only, &c, 1e-3, 1e-5,
                     2e-3);
  ct_test_check_grad("siglip d_logit_scale", &c.t, &dt, 1, loss_only, &c, 1e-3, 1e-5, 2e-3);
  ct_test_check_grad("siglip d_logit_bias", &c.b, &db, 1, loss_only, &c, 1e-3, 1e-5, 2e-3);
  g_free(dimg), g_free(dtxt);
  ctx_free(&c);
}

static void
test_finite_differences(void)
{
  check_fd(5, 5, 0);
  check_fd(1, 1, 0);
  check_fd(3, 7, 2); /* a rank's rows */
}

typedef struct {
  double loss;
  float *dimg, *dtxt, dt, db;
} Out;

static Out
run(Ctx *c, int chunk)
{
  Out o = { 0 };
  o.dimg = g_new(float, (size_t) MAX(c->B, 1) * c->E);
  o.dtxt = g_new(float, (size_t) c->G * c->E);
  float *logits = g_new(float, (size_t) CT_SIGLIP_CHUNK_ROWS(chunk) * c->G);
  o.loss = ct_siglip_loss(logits, o.dimg, o.dtxt, &o.dt, &o.db, c->img, c->txt, c->offset, c->t,
                          c->b, c->weight, c->B, c->G, c->E, chunk);
  g_free(logits);
  return o;
}

static void
out_free(Out *o)
{
  g_free(o->dimg), g_free(o->dtxt);
}

static void
test_chunks(void)
{
  /* sizes past OpenBLAS's small-matrix kernels, and odd ones */
  static const int shapes[][3] = { { 37, 37, 0 }, { 5, 23, 11 }, { 130, 130, 0 },
                                   { 300, 300, 0 } };
  static const int chunks[] = { 1, 2, 3, 5, 16, 17, 33, 64, 1000 };
  for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++) {
    Ctx c = ctx_new(shapes[s][0], shapes[s][1], 48, shapes[s][2], 1);
    Out base = run(&c, chunks[0]);
    for (size_t k = 1; k < G_N_ELEMENTS(chunks); k++) {
      Out o = run(&c, chunks[k]);
      g_assert_true(memcmp(&o.loss, &base.loss, sizeof o.loss) == 0);
      g_assert_true(memcmp(o.dimg, base.dimg, sizeof(float) * c.B * c.E) == 0);
      g_assert_true(memcmp(o.dtxt, base.dtxt, sizeof(float) * c.G * c.E) == 0);
      g_assert_true(memcmp(&o.dt, &base.dt, sizeof o.dt) == 0);
      g_assert_true(memcmp(&o.db, &base.db, sizeof o.db) == 0);
      out_free(&o);
    }
    out_free(&base);
    ctx_free(&c);
  }
}

/* Three ranks of 4, 3 and 0 rows against the 7 gathered: their terms add
 * up to the whole batch's, and each rank's image rows' gradients are the
 * whole batch's rows' (within rounding: the rank's products have other
 * shapes). */
static void
test_ranks(void)
{
  Ctx all = ctx_new(7, 7, 16, 0, 3);
  Out whole = run(&all, 3);
  static const int rows[] = { 4, 3, 0 };
  double loss = 0, dt = 0, db = 0;
  double *dtxt = g_new0(double, 7 * 16);
  int off = 0;
  for (size_t r = 0; r < G_N_ELEMENTS(rows); r++) {
    Ctx c = all;
    c.B = rows[r], c.offset = off, c.img = all.img + off * 16;
    Out o = run(&c, 2);
    loss += o.loss, dt += o.dt, db += o.db;
    for (int k = 0; k < 7 * 16; k++)
      dtxt[k] += o.dtxt[k];
    for (int k = 0; k < rows[r] * 16; k++)
      g_assert_cmpfloat(fabs(o.dimg[k] - whole.dimg[off * 16 + k]), <=, 1e-6);
    if (rows[r] == 0)
      g_assert_cmpfloat(o.loss, ==, 0.0);
    off += rows[r];
    out_free(&o);
  }
  g_assert_cmpfloat(fabs(loss - whole.loss), <=, 1e-12 * whole.loss);
  g_assert_cmpfloat(fabs(dt - whole.dt), <=, 1e-5 * (fabs(whole.dt) + 1e-3));
  g_assert_cmpfloat(fabs(db - whole.db), <=, 1e-5 * (fabs(whole.db) + 1e-3));
  for (int k = 0; k < 7 * 16; k++)
    g_assert_cmpfloat(fabs(dtxt[k] - whole.dtxt[k]), <=, 1e-6);
  g_free(dtxt);
  out_free(&whole);
  ctx_free(&all);
}

/* The model's logit_bias (CT_MODEL_LOGIT_BIAS): after logit_scale,
 * initialised to -10, saved with config.logit_bias and found again by
 * ct_model_new_from_file; a file without it (CLIP weights) loads into a
 * model with it, which keeps its value; a model without it refuses a
 * file with it, naming siglip_trainer. */
static void
test_model_bias(void)
{
  CtConfig cfg;
  GError *error = NULL;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  g_autofree char *dir = g_dir_make_tmp("ct-test-siglip-XXXXXX", NULL);
  g_autofree char *with = g_build_filename(dir, "with.safetensors", NULL);
  g_autofree char *without = g_build_filename(dir, "without.safetensors", NULL);
  CtModel *a = ct_model_new_extras(&cfg, 2, CT_MODEL_LOGIT_BIAS, &error);
  CtModel *b = ct_model_new(&cfg, 2, &error);
  g_assert_no_error(error);
  g_assert_true(ct_model_logit_bias(b) == NULL && ct_model_find(b, "logit_bias") == NULL);
  g_assert_cmpuint(ct_model_n_params(a), ==, ct_model_n_params(b) + 1);
  g_assert_cmpstr(ct_model_tensor(a, 3)->name, ==, "logit_bias");
  g_assert_cmpstr(ct_model_tensor(a, 2)->name, ==, "logit_scale");
  ct_model_init_weights(a, 1);
  ct_model_init_weights(b, 1);
  g_assert_cmpfloat(*ct_model_logit_bias(a), ==, -10.0f);
  *ct_model_logit_bias(a) = -3.25f;
  g_assert_true(ct_model_save(a, with, NULL, &error));
  g_assert_true(ct_model_save(b, without, NULL, &error));
  CtModel *c = ct_model_new_from_file(with, 2, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(ct_model_extras(c), ==, CT_MODEL_LOGIT_BIAS);
  g_assert_cmpfloat(*ct_model_logit_bias(c), ==, -3.25f);
  g_assert_true(memcmp(ct_model_params(a), ct_model_params(c),
                       sizeof(float) * ct_model_n_params(a)) == 0);
  CtModel *d = ct_model_new_from_file(without, 2, &error);
  g_assert_no_error(error);
  g_assert_cmpuint(ct_model_extras(d), ==, 0);
  g_assert_true(ct_model_load(a, without, &error)); /* CLIP weights: the bias stays */
  g_assert_no_error(error);
  g_assert_cmpfloat(*ct_model_logit_bias(a), ==, -3.25f);
  g_assert_cmpfloat(*ct_model_logit_scale(a), ==, *ct_model_logit_scale(b));
  g_assert_false(ct_model_load(b, with, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "siglip_trainer"));
  g_clear_error(&error);
  ct_model_free(a), ct_model_free(b), ct_model_free(c), ct_model_free(d);
  g_unlink(with), g_unlink(without), g_rmdir(dir);
}

static int init_calls;

static void
count_init(void *state, CtModel *model)
{
  init_calls++;
}

/* model_extras and init_model are read from ABI 1.4 on: before it their
 * bytes were reserved, and are ignored whatever they hold. */
static void
test_descriptor(void)
{
  CtPluginDescriptor d = { .abi_major = CT_PLUGIN_ABI_MAJOR, .abi_minor = 3,
                           .struct_size = sizeof(CtPluginDescriptor), .name = "x",
                           .model_extras = CT_MODEL_LOGIT_BIAS, .init_model = count_init };
  g_assert_cmpuint(ct_plugin_desc_model_extras(&d), ==, 0);
  ct_plugin_desc_init_model(&d, NULL, NULL);
  g_assert_cmpint(init_calls, ==, 0);
  d.abi_minor = 4;
  g_assert_cmpuint(ct_plugin_desc_model_extras(&d), ==, CT_MODEL_LOGIT_BIAS);
  ct_plugin_desc_init_model(&d, NULL, NULL);
  g_assert_cmpint(init_calls, ==, 1);
  d.init_model = NULL;
  ct_plugin_desc_init_model(&d, NULL, NULL); /* optional */
  g_assert_cmpint(init_calls, ==, 1);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  ct_rng_init(&rng, 24);
  g_test_add_func("/siglip/reference", test_reference);
  g_test_add_func("/siglip/finite-differences", test_finite_differences);
  g_test_add_func("/siglip/chunks-bit-identical", test_chunks);
  g_test_add_func("/siglip/ranks", test_ranks);
  g_test_add_func("/siglip/model-logit-bias", test_model_bias);
  g_test_add_func("/siglip/descriptor", test_descriptor);
  return g_test_run();
}

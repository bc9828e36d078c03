/* bench.c: `cliptrain bench`, the yardstick for performance work.
 *
 * Times whole training steps (forward, CLIP loss, backward, AdamW) on
 * seeded synthetic data after one warm-up step, and prints one JSON line.
 * With --sgemm N it instead measures cblas_sgemm on N x N x N products, the
 * machine's ceiling for the model's GFLOP/s. */
#include "config.h"

#include "cli/cli.h"
#include "model/model-config-private.h"
#include "setup/run.h"
#include <cliptrain/rng.h>

#include <cliptrain/cliptrain.h>

#include <cblas.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

static double
peak_rss_mib(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB on Linux */
}

static int
cmp_double(const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void
print_json(JsonBuilder *b)
{
  JsonNode *root = json_builder_get_root(b);
  JsonGenerator *gen = json_generator_new();
  json_generator_set_root(gen, root);
  g_autofree char *s = json_generator_to_data(gen, NULL);
  printf("%s\n", s);
  fflush(stdout);
  g_object_unref(gen);
  json_node_unref(root);
}

/* --step-in-backward: each block stepped as soon as its gradients are
 * final, from the model's block scratch, as the learner's fused step
 * does. */
typedef struct {
  CtModel *m;
  CtOptimizer *opt;
} StepAhead;

static void
step_ahead(void *data, size_t offset, size_t n)
{
  StepAhead *a = data;
  ct_optimizer_step_range_from(a->opt, offset, n, ct_model_ready_grads(a->m));
}

/* The median seconds of REPS products N x N x N, after one warm-up:
 * cblas_sgemm on OpenBLAS's own THREADS threads (the machine's reference
 * rate), or, with OURS, ct_sgemm on cliptrain's pool as training runs. */
static double
time_sgemm(const float *a, const float *b, float *c, int n, int reps, int threads,
           gboolean ours)
{
  double *t = g_new(double, reps);
  openblas_set_num_threads(ours ? 1 : threads);
  for (int i = -1; i < reps; i++) {
    gint64 t0 = g_get_monotonic_time();
    if (ours)
      ct_sgemm(FALSE, FALSE, n, n, n, 1, a, n, b, n, 0, c, n);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    if (i >= 0)
      t[i] = (g_get_monotonic_time() - t0) / 1e6;
  }
  openblas_set_num_threads(1);
  double s = median(t, reps);
  g_free(t);
  return s;
}

static int
bench_sgemm(int n, int reps, int threads)
{
  size_t nn = (size_t) n * n;
  float *a = g_new(float, nn), *b = g_new(float, nn), *c = g_new(float, nn);
  CtRng rng;
  ct_rng_init(&rng, 1);
  ct_rng_uniform_fill(&rng, a, nn, -1, 1);
  ct_rng_uniform_fill(&rng, b, nn, -1, 1);
  double flop = 2.0 * n * n * (double) n;
  /* ours first: OpenBLAS's threads spin for a while after their last
   * product, and would take a core from the pool's */
  double s_ours = time_sgemm(a, b, c, n, reps, threads, TRUE);
  double s = time_sgemm(a, b, c, n, reps, threads, FALSE);
  JsonBuilder *jb = json_builder_new();
  json_builder_begin_object(jb);
  json_builder_set_member_name(jb, "sgemm_n");
  json_builder_add_int_value(jb, n);
  json_builder_set_member_name(jb, "threads");
  json_builder_add_int_value(jb, threads);
  json_builder_set_member_name(jb, "blas_core");
  json_builder_add_string_value(jb, openblas_get_corename());
  json_builder_set_member_name(jb, "sgemm_gflop_per_s");
  json_builder_add_double_value(jb, round(flop / s / 1e9 * 10) / 10);
  json_builder_set_member_name(jb, "ct_sgemm_gflop_per_s");
  json_builder_add_double_value(jb, round(flop / s_ours / 1e9 * 10) / 10);
  json_builder_end_object(jb);
  print_json(jb);
  g_object_unref(jb);
  g_free(a);
  g_free(b);
  g_free(c);
  return CT_EXIT_OK;
}

static int
bench_loader(const char *recipe, int batches)
{
  CtRunOptions o = { .recipe = recipe };
  CtLoaderBench res = { 0 };
  GError *error = NULL;
  int rc = ct_run_loader_bench(&o, batches, &res, &error);
  if (rc != 0) {
    ct_cli_error("bench: %s", error ? error->message : "the loader failed");
    g_clear_error(&error);
    return rc;
  }
  JsonBuilder *jb = json_builder_new();
  json_builder_begin_object(jb);
  json_builder_set_member_name(jb, "loader");
  json_builder_add_string_value(jb, recipe);
  json_builder_set_member_name(jb, "workers");
  json_builder_add_int_value(jb, res.workers);
  json_builder_set_member_name(jb, "batch");
  json_builder_add_int_value(jb, res.batch_size);
  json_builder_set_member_name(jb, "batches");
  json_builder_add_int_value(jb, res.batches);
  json_builder_set_member_name(jb, "images");
  json_builder_add_int_value(jb, res.images);
  json_builder_set_member_name(jb, "images_per_s");
  json_builder_add_double_value(jb, round(res.images / MAX(res.seconds, 1e-9)));
  json_builder_set_member_name(jb, "peak_rss_mib");
  json_builder_add_double_value(jb, round(peak_rss_mib()));
  json_builder_end_object(jb);
  print_json(jb);
  g_object_unref(jb);
  return CT_EXIT_OK;
}

/* Synthetic captions: start token, random ids, end token at position
 * len - 1, zero padding.  tokens: (B, T) */
static void
fill_tokens(int32_t *tokens, CtRng *rng, int B, int T, int V, int len)
{
  for (int b = 0; b < B; b++) {
    int32_t *row = tokens + (size_t) b * T;
    memset(row, 0, sizeof(int32_t) * T);
    row[0] = V - 2;
    for (int t = 1; t < len - 1; t++)
      row[t] = 1 + (int32_t) ct_rng_below(rng, V - 3);
    row[len - 1] = V - 1;
  }
}

int
ct_cli_bench(int argc, char **argv)
{
  /* GOption does not free a string default it replaces: defaults are NULL */
  g_autofree char *preset_arg = NULL, *precision_arg = NULL, *state_arg = NULL;
  int batch = 16, steps = 3, threads = 2, caption_tokens = 0, sgemm = 0;
  gint64 seed = 0;
  g_autofree char *loader = NULL;
  double patch_dropout = 0;
  int loader_batches = 0, checkpoint = 0, lock_image = -1, lock_text = -1;
  gboolean profile = FALSE, no_trim = FALSE, no_prune = FALSE, in_backward = TRUE, whole_step = FALSE;
  GOptionEntry entries[] = {
    { "loader", 0, 0, G_OPTION_ARG_FILENAME, &loader, "Instead, time the data loader of RECIPE alone: images per second", "RECIPE" },
    { "loader-batches", 0, 0, G_OPTION_ARG_INT, &loader_batches, "With --loader: batches to time (default: one epoch)", "N" },
    { "preset", 'p', 0, G_OPTION_ARG_STRING, &preset_arg, "Model preset (vitb32, vitl14, small, tiny, fashion, rn50, rn101, rn50x4, rn)", "NAME" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Samples per step (16)", "N" },
    { "steps", 's', 0, G_OPTION_ARG_INT, &steps, "Timed steps after one warm-up step (3)", "N" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "BLAS threads (2)", "N" },
    { "caption-tokens", 0, 0, G_OPTION_ARG_INT, &caption_tokens, "Caption length with start and end tokens (default: fill the context)", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of weights and data (0)", "N" },
    { "precision", 0, 0, G_OPTION_ARG_STRING, &precision_arg, "Products and saved activations in fp32, bf16 or fp16 (fp32)", "NAME" },
    { "optimizer-state", 0, 0, G_OPTION_ARG_STRING, &state_arg, "AdamW's moments in fp32 or bf16 (fp32)", "NAME" },
    { "checkpoint", 0, 0, G_OPTION_ARG_INT, &checkpoint, "Activation checkpointing with N segments a tower (0: off)", "N" },
    { "step-in-backward", 0, 0, G_OPTION_ARG_NONE, &in_backward, "Step each block inside backward from a one-block gradient scratch, as fit does by default (optimizer.step_in_backward: auto); the default", NULL },
    { "whole-step", 0, 0, G_OPTION_ARG_NONE, &whole_step, "Instead, step after backward, the whole gradient buffer resident (optimizer.step_in_backward: false)", NULL },
    { "no-trim", 0, 0, G_OPTION_ARG_NONE, &no_trim, "Run the text tower over the whole context even for short captions", NULL },
    { "patch-dropout", 0, 0, G_OPTION_ARG_DOUBLE, &patch_dropout, "FLIP patch dropout: drop this fraction of each image's patch tokens, in [0, 1) (0: off; a ViT only)", "P" },
    { "no-prune", 0, 0, G_OPTION_ARG_NONE, &no_prune, "Run the towers' last blocks for every row, not only the rows they read", NULL },
    { "lock-image", 0, 0, G_OPTION_ARG_INT, &lock_image, "Lock the image tower but its top N lock groups (optimizer.lock_image: {unlocked_groups: N}; 0: all of it): its locked part runs no backward", "N" },
    { "lock-text", 0, 0, G_OPTION_ARG_INT, &lock_text, "Lock the text tower but its top N lock groups (optimizer.lock_text: {unlocked_layers: N})", "N" },
    { "profile", 0, 0, G_OPTION_ARG_NONE, &profile, "Also report where the time goes: ms per step and % by kind of work", NULL },
    { "sgemm", 0, 0, G_OPTION_ARG_INT, &sgemm, "Instead, time cblas_sgemm on N x N x N products", "N" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(&argc, &argv, entries, "- time CLIP training steps", NULL, &error);
  if (!ok) {
    ct_cli_error("bench: %s", error->message);
    g_error_free(error);
    return CT_EXIT_USAGE;
  }
  if (argc > 1) {
    ct_cli_error("bench: unexpected argument '%s'", argv[1]);
    return CT_EXIT_USAGE;
  }
  if (whole_step)
    in_backward = FALSE;
  if (threads < 1 || steps < 1 || batch < 1 || sgemm < 0 || checkpoint < 0) {
    ct_cli_error("bench: --threads, --steps and --batch must be at least 1, --checkpoint at "
                 "least 0");
    return CT_EXIT_USAGE;
  }
  if (lock_image < -1 || lock_text < -1) {
    ct_cli_error("bench: --lock-image and --lock-text take a count of unlocked groups, at "
                 "least 0");
    return CT_EXIT_USAGE;
  }
  const char *preset = preset_arg ? preset_arg : "vitb32";
  const char *precision = precision_arg ? precision_arg : "fp32";
  CtPrecision prec;
  if (!ct_precision_from_name(precision, &prec, &error)) {
    ct_cli_error("bench: --precision: %s", error->message);
    g_error_free(error);
    return CT_EXIT_USAGE;
  }
  CtPrecision state_prec;
  if (!ct_precision_from_name(state_arg ? state_arg : "fp32", &state_prec, &error)) {
    ct_cli_error("bench: --optimizer-state: %s", error->message);
    g_error_free(error);
    return CT_EXIT_USAGE;
  }
  ct_set_num_threads(threads);
  if (sgemm > 0)
    return bench_sgemm(sgemm, MAX(steps, 5), threads);
  if (loader)
    return bench_loader(loader, loader_batches);

  CtConfig cfg;
  if (!ct_config_preset(preset, &cfg, &error)) {
    ct_cli_error("bench: %s", error->message);
    g_error_free(error);
    return CT_EXIT_USAGE;
  }
  int T = cfg.context_length, V = cfg.vocab_size, E = cfg.embed_dim;
  int R = cfg.image_resolution;
  if (caption_tokens == 0)
    caption_tokens = T;
  if (caption_tokens < 2 || caption_tokens > T) {
    ct_cli_error("bench: --caption-tokens %d must be between 2 and the context length %d",
                 caption_tokens, T);
    return CT_EXIT_USAGE;
  }
  CtModel *m = ct_model_new(&cfg, batch, &error);
  if (m && !ct_model_set_memory(m, prec, checkpoint, &error))
    g_clear_pointer(&m, ct_model_free);
  if (!m) {
    ct_cli_error("bench: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  ct_model_init_weights(m, (uint64_t) seed);
  ct_model_set_trim_text(m, !no_trim);
  ct_model_set_prune_readout(m, !no_prune);
  if (!ct_model_set_patch_dropout(m, patch_dropout, (uint64_t) seed, &error)) {
    ct_cli_error("bench: --patch-dropout: %s", error->message);
    g_error_free(error);
    ct_model_free(m);
    return CT_EXIT_USAGE;
  }
  /* open_clip's AdamW defaults (betas 0.9, 0.98, eps 1e-6, wd 0.2) */
  CtOptimizer *opt = ct_optimizer_new(m, "adamw", &error);
  if (!opt || !ct_optimizer_set(opt, "lr", 1e-4, &error) ||
      !ct_optimizer_set_state_precision(opt, state_prec, &error)) {
    ct_cli_error("bench: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  /* a lock as the recipe's: the optimizer freezes, the model skips */
  const struct {
    const char *tower;
    int unlocked;
  } locks[] = { { "image", lock_image }, { "text", lock_text } };
  for (size_t t = 0; t < G_N_ELEMENTS(locks); t++)
    if (locks[t].unlocked >= 0 &&
        (!ct_optimizer_lock_groups(opt, locks[t].tower, locks[t].unlocked, FALSE, &error) ||
         !ct_model_set_frozen_groups(m, locks[t].tower,
                                     ct_optimizer_frozen_groups(opt, locks[t].tower), &error))) {
      ct_cli_error("bench: --lock-%s: %s", locks[t].tower, error->message);
      g_error_free(error);
      return CT_EXIT_USAGE;
    }

  /* everything a step touches is allocated here, before the first step */
  size_t nimg = (size_t) batch * 3 * R * R;
  float *images = g_new(float, nimg);           /* (B, 3, R, R) */
  int32_t *tokens = g_new(int32_t, (size_t) batch * T); /* (B, T) */
  float *logits = g_new(float, (size_t) batch * batch); /* (B, B) */
  float *scratch = g_new(float, (size_t) batch * batch);
  float *d_img = g_new(float, (size_t) batch * E); /* (B, E) */
  float *d_txt = g_new(float, (size_t) batch * E);
  double *times = g_new(double, steps);
  CtRng rng;
  ct_rng_init_stream(&rng, (uint64_t) seed, 0xda7a);
  ct_rng_normal_fill(&rng, images, nimg, 1.0);
  fill_tokens(tokens, &rng, batch, T, V, caption_tokens);

  double loss_first = 0, loss_last = 0;
  float *ls = ct_model_logit_scale(m);
  StepAhead ahead = { m, opt };
  if (in_backward) {
    ct_model_set_backward_hook(m, step_ahead, &ahead);
    if (!ct_model_set_block_grads_scratch(m, TRUE, &error)) {
      ct_cli_error("bench: %s", error->message);
      g_error_free(error);
      return CT_EXIT_FAILURE;
    }
  }
  float *dls = ct_model_grads(m) + ct_model_find(m, "logit_scale")->offset;
  for (int s = -1; s < steps; s++) {
    if (s == 0 && profile) { /* the warm-up step is not profiled */
      ct_profile_reset();
      ct_profile_enable(TRUE);
    }
    gint64 t0 = g_get_monotonic_time();
    ct_model_set_patch_dropout_key(m, (uint64_t) (s + 1)); /* other patches each step */
    if (!ct_model_forward(m, images, tokens, batch, &error)) {
      ct_cli_error("bench: %s", error->message);
      g_error_free(error);
      return CT_EXIT_FAILURE;
    }
    float d_scale;
    double loss = ct_clip_loss(logits, d_img, d_txt, &d_scale, scratch,
                               ct_model_image_features(m), ct_model_text_features(m), *ls,
                               batch, E);
    if (in_backward)
      ct_model_release_grads(m, 0, ct_model_n_params(m));
    else
      ct_model_zero_grad(m);
    ct_model_backward(m, d_img, d_txt);
    *dls += d_scale;
    ct_optimizer_step(opt);
    *ls = CLAMP(*ls, 0.0f, logf(100.0f));
    if (s >= 0)
      times[s] = (g_get_monotonic_time() - t0) / 1e6;
    if (s == -1)
      loss_first = loss;
    loss_last = loss;
  }
  ct_profile_enable(FALSE);
  double total = 0;
  for (int s = 0; s < steps; s++)
    total += times[s];
  double sec = median(times, steps);
  /* the work done: trimming runs the text tower over caption_tokens only,
   * readout pruning the last blocks' products after in_proj for one row */
  int text_tokens = no_trim ? T : caption_tokens;
  double flops = ct_config_step_flops(&cfg, batch, text_tokens);
  if (!no_prune)
    flops -= ct_config_readout_saving(&cfg, batch, text_tokens);
  int kept = 0;
  if (patch_dropout > 0 && ct_model_kept_patches(m, &kept))
    flops -= ct_config_patch_dropout_saving(&cfg, batch, kept, !no_prune);

  JsonBuilder *jb = json_builder_new();
  json_builder_begin_object(jb);
#define MEMBER(name, kind, value)                \
  do {                                           \
    json_builder_set_member_name(jb, name);      \
    json_builder_add_##kind##_value(jb, value);  \
  } while (0)
  MEMBER("impl", string, "cliptrain");
  MEMBER("version", string, ct_version());
  MEMBER("preset", string, preset);
  MEMBER("batch", int, batch);
  MEMBER("threads", int, threads);
  MEMBER("steps", int, steps);
  MEMBER("blas_core", string, openblas_get_corename());
  MEMBER("caption_tokens", int, caption_tokens);
  MEMBER("trim_text", boolean, !no_trim);
  MEMBER("prune_readout", boolean, !no_prune);
  MEMBER("patch_dropout", double, patch_dropout);
  if (kept > 0)
    MEMBER("patches_kept", int, kept);
  MEMBER("precision", string, precision);
  MEMBER("checkpoint", int, checkpoint);
  MEMBER("optimizer_state", string, ct_precision_name(state_prec));
  MEMBER("step_in_backward", boolean, in_backward);
  MEMBER("lock_image", int, lock_image); /* unlocked groups; -1: not locked */
  MEMBER("lock_text", int, lock_text);
  MEMBER("params", int, (gint64) ct_model_n_params(m));
  MEMBER("samples_per_s", double, round(batch / sec * 1000) / 1000);
  MEMBER("step_ms", double, round(sec * 1e4) / 10);
  MEMBER("gflop_per_s", double, round(flops / sec / 1e9 * 10) / 10);
  /* the model's FLOPs as PyTorch's reference counts them (whole context,
   * no pruning): a rate proportional to samples/s, like for like */
  MEMBER("model_gflop_per_s", double,
         round(ct_config_step_flops(&cfg, batch, T) / sec / 1e9 * 10) / 10);
  MEMBER("peak_rss_mib", double, round(peak_rss_mib()));
  MEMBER("activation_mib", double, round(ct_model_activation_bytes(m) / 1048576.0));
  if (profile) {
    /* the mean step's time by kind of work; "other" is what no counter saw */
    double seen = 0;
    json_builder_set_member_name(jb, "profile_ms");
    json_builder_begin_object(jb);
    for (int k = 0; k < CT_PROF_N; k++) {
      seen += ct_profile_seconds(k);
      MEMBER(ct_profile_name(k), double, round(ct_profile_seconds(k) / steps * 1e4) / 10);
    }
    MEMBER("other", double, round((total - seen) / steps * 1e4) / 10);
    json_builder_end_object(jb);
    json_builder_set_member_name(jb, "profile_pct");
    json_builder_begin_object(jb);
    for (int k = 0; k < CT_PROF_N; k++)
      MEMBER(ct_profile_name(k), double, round(ct_profile_seconds(k) / total * 1000) / 10);
    MEMBER("other", double, round((total - seen) / total * 1000) / 10);
    json_builder_end_object(jb);
  }
  MEMBER("loss_first", double, loss_first);
  MEMBER("loss_last", double, loss_last);
#undef MEMBER
  json_builder_end_object(jb);
  print_json(jb);
  g_object_unref(jb);

  g_free(images);
  g_free(tokens);
  g_free(logits);
  g_free(scratch);
  g_free(d_img);
  g_free(d_txt);
  g_free(times);
  ct_optimizer_free(opt);
  ct_model_free(m);
  return CT_EXIT_OK;
}

/* test-loop: the training loop keeps fastai's semantics: event order,
 * what each cancel status skips and what still runs, callback order and
 * ties, training/validation restriction, errors naming the callback. */
#include "config.h"

#include "train/learner-private.h"
#include "train/plugin-loader.h"

#include <cliptrain/cliptrain.h>

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- a spy */

typedef struct {
  GString *log;      /* shared event log */
  const char *tag;   /* prefix in the log, NULL: no logging */
  CtEvent cancel_at; /* return STATUS at this event ... */
  CtStatus status;
  int when_iter;     /* ... when iter == when_iter (-1: any) */
  gboolean when_training;
  int fired;
  gboolean loss;     /* compute the CLIP loss (as clip_trainer) */
} Spy;

static CtStatus
spy_event(void *state, CtLearner *L, CtEvent ev, GError **error)
{
  Spy *s = state;
  if (s->loss && ev == CT_EVENT_AFTER_PRED) {
    int B = ct_learner_batch_size(L), E = ct_model_config(ct_learner_model(L))->embed_dim;
    ct_learner_set_loss(L, ct_clip_loss(ct_learner_scratch_bb(L, 0),
                                        ct_learner_d_image_features(L),
                                        ct_learner_d_text_features(L),
                                        ct_learner_d_logit_scale(L), ct_learner_scratch_bb(L, 1),
                                        ct_learner_image_features(L),
                                        ct_learner_text_features(L),
                                        *ct_model_logit_scale(ct_learner_model(L)), B, E));
  }
  if (s->tag)
    g_string_append_printf(s->log, "%s%s%s ", s->tag, *s->tag ? ":" : "", ct_event_name(ev));
  if (ev == s->cancel_at && !s->fired &&
      (s->when_iter < 0 || (ct_learner_iter(L) == s->when_iter &&
                            ct_learner_training(L) == s->when_training))) {
    s->fired = 1;
    if (s->status == CT_STATUS_ERROR) {
      g_set_error(error, CT_ERROR, CT_ERROR_FAILED, "spy gave up");
    }
    return s->status;
  }
  return CT_STATUS_OK;
}

static CtPluginDescriptor spy_desc = {
  .abi_major = CT_PLUGIN_ABI_MAJOR, .abi_minor = CT_PLUGIN_ABI_MINOR,
  .struct_size = sizeof(CtPluginDescriptor), .name = "spy", .version = "1", .doc = "test",
  .order = 0, .events = ~(uint64_t) 0 & ~CT_EVENT_BIT(CT_EVENT_AFTER_LAYER_BACKWARD),
  .run = 0, .on_event = spy_event,
};

static CtCallback *
spy_callback(void *s, const CtPluginDescriptor *d, int order)
{
  CtCallback *cb = g_new0(CtCallback, 1);
  cb->desc = d;
  cb->label = g_strdup_printf("%s (test)", d->name);
  cb->order = order;
  cb->state = s; /* no destroy: owned by the test */
  return cb;
}

/* tiny model, 4 training samples in batches of 2, 2 validation samples */
static CtLearner *
make_learner(int n_epoch, int n_valid)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, 2, NULL);
  ct_model_init_weights(m, 1);
  CtOptimizer *opt = ct_optimizer_new(m, "adamw", NULL);
  ct_optimizer_set(opt, "lr", 1e-3, NULL);
  CtDataset *tr = ct_dataset_new_synthetic(&cfg, 4, 7, 0, 0);
  CtDataset *va = n_valid ? ct_dataset_new_synthetic(&cfg, n_valid, 7, 1, 0) : NULL;
  CtLoader *tl = ct_loader_new(tr, &cfg, 2, TRUE, TRUE, 1, 2, 7);
  CtLoader *vl = va ? ct_loader_new(va, &cfg, 2, FALSE, FALSE, 0, 1, 7) : NULL;
  GError *error = NULL;
  CtLearner *L = ct_learner_new(m, opt, tl, vl, 2, n_epoch, 7, NULL, &error);
  g_assert_no_error(error);
  return L;
}

/* Runs one epoch with a logging spy (which also computes the loss) and a
 * canceller; returns the log with the spy's tag stripped. */
static char *
run_with(CtEvent at, CtStatus status, int when_iter, gboolean training, gboolean *ok,
         char **message)
{
  CtLearner *L = make_learner(1, 2);
  GString *log = g_string_new(NULL);
  Spy spy = { log, "", CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  Spy canceller = { log, NULL, at, status, when_iter, training, 0, FALSE };
  static CtPluginDescriptor cdesc;
  cdesc = spy_desc;
  cdesc.name = "canceller";
  ct_learner_add_callback(L, spy_callback(&spy, &spy_desc, 0));
  ct_learner_add_callback(L, spy_callback(&canceller, &cdesc, 1));
  GError *error = NULL;
  *ok = ct_learner_fit(L, &error);
  if (message)
    *message = error ? g_strdup(error->message) : NULL;
  g_clear_error(&error);
  ct_learner_free(L);
  return g_strchomp(g_string_free(log, FALSE));
}

#define TRAIN_BATCH                                                                        \
  "before_batch after_pred after_loss before_backward after_backward before_step "         \
  "after_step after_batch"
#define VALID_BATCH "before_batch after_pred after_loss after_batch"

static void
test_event_order(void)
{
  gboolean ok;
  g_autofree char *log = run_with(CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, &ok, NULL);
  g_assert_true(ok);
  g_assert_cmpstr(log, ==,
                  "before_fit before_epoch before_train " TRAIN_BATCH " " TRAIN_BATCH
                  " after_train before_validate " VALID_BATCH
                  " after_validate after_epoch after_fit");
}

static const struct {
  const char *what;
  CtEvent at;
  CtStatus status;
  int iter;
  gboolean training;
  const char *expect;
} cancels[] = {
  { "CancelBatch in after_pred skips the rest of the batch and the step",
    CT_EVENT_AFTER_PRED, CT_STATUS_CANCEL_BATCH, 0, TRUE,
    "before_fit before_epoch before_train before_batch after_pred after_cancel_batch "
    "after_batch " TRAIN_BATCH " after_train before_validate " VALID_BATCH
    " after_validate after_epoch after_fit" },
  { "CancelBackward skips backward; after_backward and the step still run",
    CT_EVENT_BEFORE_BACKWARD, CT_STATUS_CANCEL_BACKWARD, 0, TRUE,
    "before_fit before_epoch before_train before_batch after_pred after_loss "
    "before_backward after_cancel_backward after_backward before_step after_step "
    "after_batch " TRAIN_BATCH " after_train before_validate " VALID_BATCH
    " after_validate after_epoch after_fit" },
  { "CancelStep skips the step; after_step still runs",
    CT_EVENT_BEFORE_STEP, CT_STATUS_CANCEL_STEP, 1, TRUE,
    "before_fit before_epoch before_train " TRAIN_BATCH " before_batch after_pred "
    "after_loss before_backward after_backward before_step after_cancel_step after_step "
    "after_batch after_train before_validate " VALID_BATCH
    " after_validate after_epoch after_fit" },
  { "CancelTrain ends training; validation still runs",
    CT_EVENT_AFTER_BATCH, CT_STATUS_CANCEL_TRAIN, 0, TRUE,
    "before_fit before_epoch before_train " TRAIN_BATCH
    " after_cancel_train after_train before_validate " VALID_BATCH
    " after_validate after_epoch after_fit" },
  { "CancelValid ends validation",
    CT_EVENT_BEFORE_BATCH, CT_STATUS_CANCEL_VALID, 0, FALSE,
    "before_fit before_epoch before_train " TRAIN_BATCH " " TRAIN_BATCH
    " after_train before_validate before_batch after_cancel_validate after_validate "
    "after_epoch after_fit" },
  { "CancelEpoch ends the epoch; after_epoch runs",
    CT_EVENT_AFTER_STEP, CT_STATUS_CANCEL_EPOCH, 0, TRUE,
    "before_fit before_epoch before_train before_batch after_pred after_loss "
    "before_backward after_backward before_step after_step after_cancel_epoch after_epoch "
    "after_fit" },
  { "CancelFit ends everything; after_fit runs",
    CT_EVENT_AFTER_LOSS, CT_STATUS_CANCEL_FIT, 0, FALSE,
    "before_fit before_epoch before_train " TRAIN_BATCH " " TRAIN_BATCH
    " after_train before_validate before_batch after_pred after_loss after_cancel_fit "
    "after_fit" },
};

static void
test_cancels(void)
{
  for (size_t i = 0; i < G_N_ELEMENTS(cancels); i++) {
    gboolean ok;
    g_autofree char *log = run_with(cancels[i].at, cancels[i].status, cancels[i].iter,
                                    cancels[i].training, &ok, NULL);
    g_test_message("%s", cancels[i].what);
    g_assert_true(ok);
    g_assert_cmpstr(log, ==, cancels[i].expect);
  }
}

static void
test_error_names_callback(void)
{
  gboolean ok;
  char *msg = NULL;
  g_autofree char *log = run_with(CT_EVENT_AFTER_LOSS, CT_STATUS_ERROR, 1, TRUE, &ok, &msg);
  g_assert_false(ok);
  g_assert_nonnull(strstr(msg, "canceller (test)"));
  g_assert_nonnull(strstr(msg, "after_loss"));
  g_assert_nonnull(strstr(msg, "spy gave up"));
  /* a real error stops at once: no after_batch, no after_fit */
  g_assert_true(g_str_has_suffix(log, "after_pred after_loss"));
  g_free(msg);
}

/* The reserved range is never a cancel nor a stop: a callback that
 * returns one of its values (the core's own STOP included) fails the run. */
static void
test_reserved_status(void)
{
  const CtStatus reserved[] = { CT_STATUS_CUSTOM_FIRST, CT_STATUS_STOP, CT_STATUS_CUSTOM_PLUGIN,
                                CT_STATUS_CUSTOM_PLUGIN + 7 };
  g_assert_cmpint(CT_STATUS_STOP, >=, CT_STATUS_CUSTOM_FIRST);
  g_assert_cmpint(CT_STATUS_STOP, <, CT_STATUS_CUSTOM_PLUGIN);
  g_assert_cmpstr(ct_status_name(CT_STATUS_CUSTOM_PLUGIN), ==, "custom");
  g_assert_cmpstr(ct_status_name((CtStatus) 50), ==, "invalid");
  g_assert_cmpstr(ct_status_name(CT_STATUS_CANCEL_FIT), ==, "cancel_fit");
  for (size_t i = 0; i < G_N_ELEMENTS(reserved); i++) {
    gboolean ok;
    char *msg = NULL;
    g_autofree char *log = run_with(CT_EVENT_AFTER_LOSS, reserved[i], 1, TRUE, &ok, &msg);
    g_assert_false(ok);
    g_assert_nonnull(strstr(msg, "canceller (test) failed in after_loss"));
    g_assert_nonnull(strstr(msg, "it returned an invalid status"));
    g_assert_true(g_str_has_suffix(log, "after_pred after_loss"));
    g_free(msg);
  }
}

static const CtCommOps *
no_comm(void *state)
{
  return state;
}

/* Optional members read through their accessors: each minor's field only
 * from that minor on, with the defaults before it. */
static void
test_desc_accessors(void)
{
  static const CtCommOps ops = { .struct_size = sizeof(CtCommOps) };
  CtPluginDescriptor d = spy_desc;
  d.comm = no_comm;
  d.grads = CT_GRADS_UNUSED;
  d.run = 0;
  d.abi_minor = 0;
  g_assert_null(ct_plugin_desc_comm(&d, (void *) &ops));
  g_assert_cmpint(ct_plugin_desc_grads(&d), ==, CT_GRADS_UNDECLARED);
  g_assert_cmpuint(ct_plugin_desc_run(&d), ==, CT_RUN_TRAIN | CT_RUN_VALID);
  d.abi_minor = 1;
  g_assert_true(ct_plugin_desc_comm(&d, (void *) &ops) == &ops);
  g_assert_cmpint(ct_plugin_desc_grads(&d), ==, CT_GRADS_UNDECLARED);
  d.abi_minor = 2;
  d.run = CT_RUN_VALID;
  g_assert_cmpint(ct_plugin_desc_grads(&d), ==, CT_GRADS_UNUSED);
  g_assert_cmpuint(ct_plugin_desc_run(&d), ==, CT_RUN_VALID);
  d.comm = NULL;
  g_assert_null(ct_plugin_desc_comm(&d, (void *) &ops));
}

static void
test_no_loss(void)
{
  CtLearner *L = make_learner(1, 0);
  GString *log = g_string_new(NULL);
  Spy spy = { log, "", CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, FALSE };
  ct_learner_add_callback(L, spy_callback(&spy, &spy_desc, 0));
  GError *error = NULL;
  g_assert_false(ct_learner_fit(L, &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_CONFIG);
  g_assert_nonnull(strstr(error->message, "clip_trainer"));
  g_error_free(error);
  g_string_free(log, TRUE);
  ct_learner_free(L);
}

/* ascending order; ties keep the order in which callbacks were added */
static void
test_callback_order(void)
{
  CtLearner *L = make_learner(1, 0);
  GString *log = g_string_new(NULL);
  static CtPluginDescriptor d[4];
  Spy s[4];
  const char *tags[] = { "a", "b", "c", "d" };
  int orders[] = { 10, -5, 10, 0 };
  for (int i = 0; i < 4; i++) {
    d[i] = spy_desc;
    d[i].events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT);
    s[i] = (Spy) { log, tags[i], CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, FALSE };
    ct_learner_add_callback(L, spy_callback(&s[i], &d[i], orders[i]));
  }
  static CtPluginDescriptor lossd;
  lossd = spy_desc;
  lossd.events = CT_EVENT_BIT(CT_EVENT_AFTER_PRED);
  Spy loss = { log, NULL, CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  ct_learner_add_callback(L, spy_callback(&loss, &lossd, 0));
  g_assert_true(ct_learner_fit(L, NULL));
  g_assert_cmpstr(log->str, ==, "b:before_fit d:before_fit a:before_fit c:before_fit ");
  g_string_free(log, TRUE);
  ct_learner_free(L);
}

/* a callback restricted to training skips validation's inner events */
static void
test_run_in(void)
{
  CtLearner *L = make_learner(1, 2);
  GString *log = g_string_new(NULL);
  static CtPluginDescriptor d;
  d = spy_desc;
  d.events = CT_EVENT_BIT(CT_EVENT_AFTER_BATCH) | CT_EVENT_BIT(CT_EVENT_AFTER_VALIDATE);
  d.run = CT_RUN_TRAIN;
  Spy s = { log, "t", CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  /* the loss spy must run in validation too: use a second one */
  static CtPluginDescriptor lossd;
  lossd = spy_desc;
  lossd.events = CT_EVENT_BIT(CT_EVENT_AFTER_PRED);
  Spy loss = { log, NULL, CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  s.loss = FALSE;
  ct_learner_add_callback(L, spy_callback(&loss, &lossd, 0));
  ct_learner_add_callback(L, spy_callback(&s, &d, 0));
  g_assert_true(ct_learner_fit(L, NULL));
  /* two training batches; validation's after_batch skipped; after_validate
   * is not an inner event, so it runs */
  g_assert_cmpstr(log->str, ==, "t:after_batch t:after_batch t:after_validate ");
  g_string_free(log, TRUE);
  ct_learner_free(L);
}

/* the recorder: smoothed loss debiased with beta 0.98, per-epoch rows */
static void
test_recorder(void)
{
  CtLearner *L = make_learner(2, 2);
  GString *log = g_string_new(NULL);
  Spy loss = { log, NULL, CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  ct_learner_add_callback(L, spy_callback(&loss, &spy_desc, 0));
  g_assert_true(ct_learner_fit(L, NULL));
  CtRecorder *rec = ct_learner_recorder(L);
  size_t n;
  const double *losses = ct_recorder_losses(rec, &n);
  g_assert_cmpuint(n, ==, 4);
  double raw = 0;
  for (size_t i = 0; i < n; i++)
    raw = 0.98 * raw + 0.02 * losses[i];
  g_assert_cmpfloat_with_epsilon(ct_recorder_smooth_loss(rec), raw / (1 - pow(0.98, 4)), 1e-12);
  g_assert_cmpint(ct_recorder_n_epochs(rec), ==, 2);
  double v;
  g_assert_true(ct_recorder_get(rec, 1, "train_loss", &v));
  g_assert_true(ct_recorder_get(rec, 1, "valid_loss", &v));
  g_assert_true(v > 0);
  g_assert_true(ct_recorder_get(rec, 0, "time", &v));
  g_assert_cmpint(ct_learner_step_count(L), ==, 4);
  g_string_free(log, TRUE);
  ct_learner_free(L);
}

/* ---------------------------------------------------------------- loading */

static void
test_plugin_abi(void)
{
  const char *dir = g_getenv("CT_TEST_PLUGINS");
  if (!dir) {
    g_test_skip("CT_TEST_PLUGINS is not set");
    return;
  }
  struct {
    const char *file;
    const char *expect;
  } rows[] = {
    { "abi_future.so", "plugin ABI 1.99 does not match cliptrain's 1.4" },
    { "abi_old_major.so", "plugin ABI 0.3 does not match cliptrain's 1.4" },
    { "no_symbol.so", "no symbol ct_plugin_descriptor" },
  };
  for (size_t i = 0; i < G_N_ELEMENTS(rows); i++) {
    g_autofree char *path = g_build_filename(dir, rows[i].file, NULL);
    GError *error = NULL;
    g_assert_null(ct_plugin_open(path, &error));
    g_assert_nonnull(error);
    g_test_message("%s", error->message);
    g_assert_true(g_str_has_prefix(error->message, path));
    g_assert_nonnull(strstr(error->message, rows[i].expect));
    g_error_free(error);
  }
  GError *error = NULL;
  g_assert_null(ct_plugin_open("/nonexistent/x.so", &error));
  g_assert_error(error, CT_ERROR, CT_ERROR_IO);
  g_error_free(error);
}

/* ---------------------------------------------------------------- accumulation */

typedef struct {
  float *grads; /* copy of the gradients at the (last) step */
  int steps;
} GradSpy;

static CtStatus
grad_spy_event(void *state, CtLearner *L, CtEvent ev, GError **error)
{
  GradSpy *g = state;
  CtModel *m = ct_learner_model(L);
  memcpy(g->grads, ct_model_grads(m), sizeof(float) * ct_model_n_params(m));
  g->steps++;
  return CT_STATUS_OK;
}

static CtPluginDescriptor grad_spy_desc = {
  .abi_major = CT_PLUGIN_ABI_MAJOR, .abi_minor = CT_PLUGIN_ABI_MINOR,
  .struct_size = sizeof(CtPluginDescriptor), .name = "grad_spy", .version = "1", .doc = "test",
  .order = 100, .events = CT_EVENT_BIT(CT_EVENT_BEFORE_STEP), .on_event = grad_spy_event,
};

/* One step over 32 samples: as one batch, or as 4 micro-batches of 8 with
 * grad_accumulation.  Returns the gradients at the step. */
static float *
accumulated_grads(int batch, const CtPluginDescriptor *accum, double pdrop, int *steps)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, batch, NULL);
  ct_model_init_weights(m, 3);
  g_assert_true(ct_model_set_patch_dropout(m, pdrop, 7, NULL));
  CtOptimizer *opt = ct_optimizer_new(m, "adamw", NULL);
  CtDataset *tr = ct_dataset_new_synthetic(&cfg, 32, 7, 0, 0);
  CtLoader *tl = ct_loader_new(tr, &cfg, batch, TRUE, TRUE, 0, 1, 7);
  CtLearner *L = ct_learner_new(m, opt, tl, NULL, batch, 1, 7, NULL, NULL);
  static CtPluginDescriptor lossd;
  lossd = spy_desc;
  lossd.events = CT_EVENT_BIT(CT_EVENT_AFTER_PRED);
  Spy loss = { NULL, NULL, CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  ct_learner_add_callback(L, spy_callback(&loss, &lossd, 0));
  GradSpy g = { g_new0(float, ct_model_n_params(m)), 0 };
  ct_learner_add_callback(L, spy_callback(&g, &grad_spy_desc, 100));
  if (accum) {
    CtParams *p = ct_params_new(accum->params);
    ct_params_set(p, "n", "4", TRUE);
    CtCallback *cb = g_new0(CtCallback, 1);
    cb->desc = accum;
    cb->label = g_strdup("grad_accumulation (test)");
    cb->order = accum->order;
    cb->params = p;
    cb->state = accum->create(p, NULL);
    ct_learner_add_callback(L, cb);
  }
  GError *error = NULL;
  g_assert_true(ct_learner_fit(L, &error));
  g_assert_no_error(error);
  *steps = g.steps;
  ct_learner_free(L);
  return g.grads;
}

/* The built grad_accumulation plugin, or NULL with the test skipped
 * when CT_BUILDDIR (the build tree) is not set. */
static const CtPluginDescriptor *
open_grad_accumulation(void)
{
  const char *dir = g_getenv("CT_BUILDDIR");
  if (!dir) {
    g_test_skip("CT_BUILDDIR is not set");
    return NULL;
  }
  g_autofree char *path = g_build_filename(dir, "plugins", ".libs", "grad_accumulation.so", NULL);
  GError *error = NULL;
  const CtPluginDescriptor *accum = ct_plugin_open(path, &error);
  g_assert_no_error(error);
  return accum;
}

static void
test_grad_accumulation(void)
{
  const CtPluginDescriptor *accum = open_grad_accumulation();
  if (!accum)
    return;
  int s1, s4;
  g_autofree float *full = accumulated_grads(32, NULL, 0, &s1);
  g_autofree float *acc = accumulated_grads(8, accum, 0, &s4);
  g_assert_cmpint(s1, ==, 1);
  g_assert_cmpint(s4, ==, 1); /* one step for four micro-batches */
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  size_t n = ct_config_n_params(&cfg);
  double maxg = 0, maxd = 0;
  for (size_t i = 0; i < n; i++) {
    maxg = fmax(maxg, fabs(full[i]));
    maxd = fmax(maxd, fabs((double) full[i] - acc[i]));
  }
  g_test_message("4 x 8 accumulated vs 32: max |difference| %.3g, max |gradient| %.3g", maxd,
                 maxg);
  g_assert_cmpfloat(maxg, >, 0);
  g_assert_cmpfloat(maxd, <=, 1e-5 * maxg);
}

/* Under patch dropout: the step's gradients as grad_accumulation must give
 * them, by hand.  Micro-batch k of 8 is drawn under its training step k
 * (the learner's key); the loss is over the 32 features; each micro-batch's
 * backward runs on the activations of its own draw, so an earlier
 * micro-batch re-run at step 3 must keep the patches of its step. */
static float *
accumulated_by_hand(double pdrop)
{
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  CtModel *m = ct_model_new(&cfg, 8, NULL);
  ct_model_init_weights(m, 3);
  g_assert_true(ct_model_set_patch_dropout(m, pdrop, 7, NULL));
  CtDataset *tr = ct_dataset_new_synthetic(&cfg, 32, 7, 0, 0);
  CtLoader *tl = ct_loader_new(tr, &cfg, 8, TRUE, TRUE, 0, 1, 7);
  size_t npix = (size_t) 3 * cfg.image_resolution * cfg.image_resolution;
  int E = cfg.embed_dim, T = cfg.context_length, B;
  g_autofree float *images = g_new(float, 32 * npix);
  g_autofree int32_t *tokens = g_new(int32_t, 32 * T);
  g_autofree float *img = g_new(float, 32 * E), *txt = g_new(float, 32 * E);
  g_autofree float *di = g_new(float, 32 * E), *dt = g_new(float, 32 * E);
  g_autofree float *logits = g_new(float, 32 * 32), *scr = g_new(float, 32 * 32);
  ct_loader_start_at(tl, 0, 0);
  for (int k = 0; k < 4; k++) {
    g_assert_true(ct_loader_next(tl, images + k * 8 * npix, tokens + k * 8 * T, &B, NULL));
    g_assert_cmpint(B, ==, 8);
    ct_model_set_patch_dropout_key(m, k);
    g_assert_true(ct_model_forward(m, images + k * 8 * npix, tokens + k * 8 * T, 8, NULL));
    memcpy(img + k * 8 * E, ct_model_image_features(m), sizeof(float) * 8 * E);
    memcpy(txt + k * 8 * E, ct_model_text_features(m), sizeof(float) * 8 * E);
  }
  float ds;
  ct_clip_loss(logits, di, dt, &ds, scr, img, txt, *ct_model_logit_scale(m), 32, E);
  ct_model_zero_grad(m);
  for (int k = 0; k < 4; k++) {
    ct_model_set_patch_dropout_key(m, k);
    g_assert_true(ct_model_forward(m, images + k * 8 * npix, tokens + k * 8 * T, 8, NULL));
    ct_model_backward(m, di + k * 8 * E, dt + k * 8 * E);
  }
  ct_model_grads(m)[ct_model_find(m, "logit_scale")->offset] += ds;
  float *g = g_memdup2(ct_model_grads(m), sizeof(float) * ct_model_n_params(m));
  ct_loader_stop(tl);
  ct_loader_free(tl);
  ct_dataset_free(tr);
  ct_model_free(m);
  return g;
}

static void
test_grad_accumulation_patch_dropout(void)
{
  const CtPluginDescriptor *accum = open_grad_accumulation();
  if (!accum)
    return;
  int s4;
  g_autofree float *acc = accumulated_grads(8, accum, 0.5, &s4);
  g_autofree float *ref = accumulated_by_hand(0.5);
  g_autofree float *none = accumulated_grads(8, accum, 0, &s4);
  CtConfig cfg;
  g_assert_true(ct_config_preset("tiny", &cfg, NULL));
  size_t n = ct_config_n_params(&cfg);
  double maxg = 0, maxd = 0, maxo = 0;
  for (size_t i = 0; i < n; i++) {
    maxg = fmax(maxg, fabs(ref[i]));
    maxd = fmax(maxd, fabs((double) ref[i] - acc[i]));
    maxo = fmax(maxo, fabs((double) ref[i] - none[i]));
  }
  g_test_message("patch dropout 0.5, 4 x 8 accumulated vs by hand: max |difference| %.3g, "
                 "max |gradient| %.3g; without patch dropout %.3g apart", maxd, maxg, maxo);
  g_assert_cmpfloat(maxg, >, 0);
  g_assert_cmpfloat(maxd, <=, 1e-5 * maxg);
  g_assert_cmpfloat(maxo, >, 1e-3 * maxg); /* the patches dropped do matter */
}

/* ---------------------------------------------------------------- modes */

typedef struct {
  int checked, wrong;
} ModeSpy;

static CtStatus
mode_event(void *state, CtLearner *L, CtEvent ev, GError **error)
{
  (void) error;
  ModeSpy *s = state;
  gboolean model = ct_model_training(ct_learner_model(L));
  if (ev == CT_EVENT_AFTER_PRED || ev == CT_EVENT_BEFORE_BATCH) {
    s->checked++;
    s->wrong += model != ct_learner_training(L);
  } else if (ev == CT_EVENT_BEFORE_VALIDATE || ev == CT_EVENT_AFTER_VALIDATE) {
    s->checked++;
    s->wrong += model; /* eval mode through the whole validation */
  } else if (ev == CT_EVENT_BEFORE_TRAIN) {
    s->checked++;
    s->wrong += !model;
  }
  return CT_STATUS_OK;
}

/* The learner trains in training mode and validates in eval mode
 * (BatchNorm's running statistics), and leaves the model training. */
static void
test_train_eval_mode(void)
{
  CtLearner *L = make_learner(2, 2);
  Spy spy = { NULL, NULL, CT_N_EVENTS, CT_STATUS_OK, -1, TRUE, 0, TRUE };
  ModeSpy ms = { 0, 0 };
  static CtPluginDescriptor mdesc;
  mdesc = spy_desc;
  mdesc.name = "mode";
  mdesc.on_event = mode_event;
  ct_learner_add_callback(L, spy_callback(&spy, &spy_desc, 0));
  ct_learner_add_callback(L, spy_callback(&ms, &mdesc, 1));
  ct_model_set_training(ct_learner_model(L), FALSE);
  GError *error = NULL;
  g_assert_true(ct_learner_fit(L, &error));
  g_assert_no_error(error);
  g_assert_cmpint(ms.checked, >, 10);
  g_assert_cmpint(ms.wrong, ==, 0);
  g_assert_true(ct_model_training(ct_learner_model(L)));
  ct_learner_free(L);
}

int
main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/loop/event-order", test_event_order);
  g_test_add_func("/loop/cancels", test_cancels);
  g_test_add_func("/loop/error-names-callback", test_error_names_callback);
  g_test_add_func("/loop/reserved-status", test_reserved_status);
  g_test_add_func("/loop/plugin-desc-accessors", test_desc_accessors);
  g_test_add_func("/loop/no-loss", test_no_loss);
  g_test_add_func("/loop/callback-order", test_callback_order);
  g_test_add_func("/loop/run-in", test_run_in);
  g_test_add_func("/loop/recorder", test_recorder);
  g_test_add_func("/loop/plugin-abi", test_plugin_abi);
  g_test_add_func("/loop/grad-accumulation", test_grad_accumulation);
  g_test_add_func("/loop/grad-accumulation-patch-dropout", test_grad_accumulation_patch_dropout);
  g_test_add_func("/loop/train-eval-mode", test_train_eval_mode);
  return g_test_run();
}

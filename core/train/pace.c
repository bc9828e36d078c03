/* pace.c: how fast the fit goes, and the periodic log line that says so.
 *
 * Each training batch is timed from before its data is loaded to after
 * its callbacks (validation and the epoch's own callbacks are outside);
 * samples a second are the ratio of two moving averages (a step's seconds
 * and its samples, beta 0.9), so they follow the recent steps.  The MFU
 * figure divides the model's training FLOPs a second by the rate of
 * ct_sgemm at the fit's threads, measured once (about 0.2 s), when first
 * asked for.
 *
 * Rank 0 prints, on stderr, one line every output.log_every_steps training
 * steps or output.log_every_seconds seconds, whichever comes first, unless
 * a live display (the progress plugin's bar on a terminal) shows the same
 * figures:
 *
 *   epoch 0/3  step 40/125 (40)  loss 3.9123  lr 5.00e-04  samples/s 812.4  mfu 31.2%
 *     elapsed 00:05  eta 00:41          (one line)
 *
 * The line is built in a buffer on the stack: nothing is allocated per
 * step. */
#include "config.h"

#include "train/learner-private.h"
#include "base/gemm.h"
#include "model/model-config-private.h"
#include "model/model-private.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#define EMA_BETA 0.9
#define SGEMM_SECONDS 0.2

void
ct_learner_set_log_every(CtLearner *L, int64_t steps, double seconds)
{
  L->pace.every_steps = MAX(steps, 0);
  L->pace.every_seconds = MAX(seconds, 0);
}

void
ct_pace_fit_start(CtLearner *L)
{
  CtPace *p = &L->pace;
  const CtConfig *c = ct_model_config(L->model);
  p->fit_start = p->last_log = g_get_monotonic_time();
  p->steps = 0;
  p->ema_s = p->ema_n = 0;
  /* the model's FLOPs as bench's model_gflop_per_s counts them: the whole
   * context, no pruning, at the fit's batch size */
  p->flops_per_sample =
    ct_config_step_flops(c, L->batch_size, c->context_length) / L->batch_size;
  L->planned = L->planned_train = L->n_train_batches;
}

void
ct_pace_step_start(CtLearner *L)
{
  L->pace.step_start = g_get_monotonic_time();
}

static void
print_line(CtLearner *L)
{
  char line[320], t0[16], t1[16], lr[24] = "-", sps[24] = "-", mfu[24] = "-";
  double v;
  if (ct_learner_get_hparam(L, "lr", &v))
    g_snprintf(lr, sizeof lr, "%.2e", v);
  if (isfinite(v = ct_learner_samples_per_s(L)))
    g_snprintf(sps, sizeof sps, "%.1f", v);
  if (isfinite(v = ct_learner_mfu(L)))
    g_snprintf(mfu, sizeof mfu, "%.1f%%", 100 * v);
  g_snprintf(line, sizeof line,
             "epoch %d/%d  step %d/%d (%" G_GINT64_FORMAT ")  loss %.4f  lr %s  samples/s %s  "
             "mfu %s  elapsed %s  eta %s",
             L->epoch, L->n_epoch, L->iter + 1, L->planned, L->train_iter,
             ct_recorder_smooth_loss(&L->rec), lr, sps, mfu,
             ct_format_duration(t0, sizeof t0, ct_learner_elapsed(L)),
             ct_format_duration(t1, sizeof t1, ct_learner_eta(L)));
  ct_learner_log(L, "%s", line);
}

void
ct_pace_step_end(CtLearner *L)
{
  CtPace *p = &L->pace;
  gint64 now = g_get_monotonic_time();
  p->ema_s = EMA_BETA * p->ema_s + (1 - EMA_BETA) * ((now - p->step_start) / 1e6);
  p->ema_n = EMA_BETA * p->ema_n + (1 - EMA_BETA) * L->B;
  p->steps++;
  if (ct_comm_rank(L->comm) != 0 || L->display_clear)
    return;
  gboolean due = (p->every_steps > 0 && L->train_iter % p->every_steps == 0) ||
                 (p->every_seconds > 0 && (now - p->last_log) / 1e6 >= p->every_seconds);
  if (!due)
    return;
  print_line(L);
  p->last_log = g_get_monotonic_time();
}

/* ---------------------------------------------------------------- accessors */

double
ct_learner_elapsed(const CtLearner *L)
{
  return L->pace.fit_start ? (g_get_monotonic_time() - L->pace.fit_start) / 1e6 : 0;
}

double
ct_learner_samples_per_s(const CtLearner *L)
{
  const CtPace *p = &L->pace;
  if (p->steps == 0 || p->ema_s <= 0)
    return NAN;
  return p->ema_n / p->ema_s * ct_comm_size(L->comm);
}

double
ct_learner_mfu(CtLearner *L)
{
  CtPace *p = &L->pace;
  if (p->steps == 0 || p->ema_s <= 0)
    return NAN;
  if (p->sgemm_rate <= 0) {
    /* a display may ask inside a step (progress, in after_batch): the
     * measurement is no part of the step's time */
    gint64 t0 = g_get_monotonic_time();
    p->sgemm_rate = ct_sgemm_rate(SGEMM_SECONDS);
    p->step_start += g_get_monotonic_time() - t0;
  }
  if (p->sgemm_rate <= 0)
    return NAN;
  /* under patch dropout the image tower runs on the kept tokens: the
   * model's FLOPs are those of the shorter sequence (unmasked_tuning may
   * turn it off during the fit, so this follows the current value) */
  double flops = p->flops_per_sample, pd = ct_model_patch_dropout(L->model);
  const CtConfig *c = ct_model_config(L->model);
  if (pd > 0) {
    int G = c->image_resolution / c->vision_patch_size;
    flops -= ct_config_patch_dropout_saving(c, 1, ct_patch_dropout_count(G * G, pd), FALSE);
  }
  return flops * (p->ema_n / p->ema_s) / p->sgemm_rate;
}

double
ct_learner_eta(const CtLearner *L)
{
  const CtPace *p = &L->pace;
  if (p->steps == 0)
    return NAN;
  int64_t total = (int64_t) L->n_epoch * L->planned_train;
  int64_t left = MAX(total - L->train_iter, 0);
  return ct_learner_elapsed(L) / p->steps * left;
}

int
ct_learner_planned_iter(const CtLearner *L)
{
  return L->planned;
}

void
ct_learner_set_planned_iter(CtLearner *L, int n)
{
  g_return_if_fail(L != NULL);
  L->planned = CLAMP(n, 1, MAX(L->n_iter, 1));
  if (L->training)
    L->planned_train = L->planned;
}

void
ct_learner_set_display(CtLearner *L, CtDisplayClear clear, void *data)
{
  g_return_if_fail(L != NULL);
  L->display_clear = clear;
  L->display_data = clear ? data : NULL;
}

void
ct_learner_log(CtLearner *L, const char *format, ...)
{
  g_return_if_fail(L != NULL && format != NULL);
  if (L->display_clear)
    L->display_clear(L->display_data);
  va_list ap;
  va_start(ap, format);
  vfprintf(stderr, format, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

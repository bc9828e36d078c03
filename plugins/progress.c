/* progress: fastai's ProgressCallback, on stderr.  On a terminal, a live
 * bar (epoch e/n, phase, batch i/n of the batches the phase will run, so
 * short_epoch's, the phase's elapsed<remaining, then the smoothed loss,
 * lr, samples a second, MFU and the whole fit's ETA, as the core's log
 * line), redrawn in place at most ten times a second; on a terminal or
 * not, one line per epoch with the recorder's values (train_loss,
 * valid_loss, the metrics, time) under a header printed once (again if new
 * names appear).  Epochs count from 0 in both, as fastai's table.  The
 * bar registers itself as the learner's live display: lines printed with
 * ct_learner_log() clear it first, and the core's periodic log lines are
 * left out while it shows.  Runs after the recorder (order 50) and before
 * the trackers (60) that may cancel the fit, so the last epoch's line is
 * printed too.  Nothing is allocated per batch. */
#include <cliptrain/plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define BAR_WIDTH 24
#define REDRAW_US 100000 /* at most ten redraws a second */

typedef struct {
  gboolean tty;
  gboolean drawn;     /* a bar is on the current line */
  gint64 phase_start; /* microseconds, monotonic */
  gint64 last_draw;
  int header_n;       /* names in the header printed, 0 before */
  CtLearner *shown;   /* the learner whose display the bar is, or NULL */
} Progress;

/* V with FORMAT, or "-" when V is not a number (before the first step) */
static const char *
fmt_num(char *buf, size_t size, const char *format, double v)
{
  if (isfinite(v))
    snprintf(buf, size, format, v);
  else
    g_strlcpy(buf, "-", size);
  return buf;
}

static void
clear_bar(Progress *s)
{
  if (s->drawn)
    fputs("\r\033[K", stderr);
  s->drawn = FALSE;
}

static void
display_clear(void *data)
{
  clear_bar(data);
}

/* At most every REDRAW_US, and always at the phase's end (FINAL) */
static void
draw_bar(Progress *s, CtLearner *L, gboolean final)
{
  gint64 now = g_get_monotonic_time();
  int i = MIN(ct_learner_iter(L) + 1, ct_learner_n_iter(L)), n = ct_learner_planned_iter(L);
  if (now - s->last_draw < REDRAW_US && i < n && !final)
    return;
  s->last_draw = now;
  double elapsed = (now - s->phase_start) / 1e6;
  double left = n > i && i > 0 ? elapsed * (n - i) / i : 0;
  int fill = n > 0 ? (int) ((long) BAR_WIDTH * i / n) : 0;
  fill = MIN(fill, BAR_WIDTH);
  char bar[BAR_WIDTH + 1], t0[16], t1[16], t2[16], lr[24] = "-", sps[24], mfu[24], line[320];
  memset(bar, '#', (size_t) fill);
  memset(bar + fill, '-', (size_t) (BAR_WIDTH - fill));
  bar[BAR_WIDTH] = 0;
  double v;
  if (ct_learner_get_hparam(L, "lr", &v))
    snprintf(lr, sizeof lr, "%.2e", v);
  snprintf(line, sizeof line,
           "\repoch %d/%d %s [%s] %d/%d %s<%s loss %.4f lr %s %s samples/s mfu %s eta %s\033[K",
           ct_learner_epoch(L), ct_learner_n_epoch(L),
           ct_learner_training(L) ? "train" : "valid", bar, i, n,
           ct_format_duration(t0, sizeof t0, elapsed), ct_format_duration(t1, sizeof t1, left),
           ct_recorder_smooth_loss(ct_learner_recorder(L)), lr,
           fmt_num(sps, sizeof sps, "%.1f", ct_learner_samples_per_s(L)),
           fmt_num(mfu, sizeof mfu, "%.1f%%", 100 * ct_learner_mfu(L)),
           ct_format_duration(t2, sizeof t2, ct_learner_eta(L)));
  fputs(line, stderr);
  s->drawn = TRUE;
}

static int
col_width(const char *name)
{
  return MAX((int) strlen(name), 10);
}

static void
print_epoch(Progress *s, CtLearner *L)
{
  CtRecorder *rec = ct_learner_recorder(L);
  const char *const *names = ct_recorder_names(rec);
  int n = (int) g_strv_length((char **) names);
  int epoch = ct_learner_epoch(L);
  clear_bar(s);
  if (n != s->header_n) {
    fprintf(stderr, "%-6s", "epoch");
    for (int k = 0; k < n; k++)
      fprintf(stderr, "  %-*s", k + 1 < n ? col_width(names[k]) : 0, names[k]);
    fputc('\n', stderr);
    s->header_n = n;
  }
  fprintf(stderr, "%-6d", epoch);
  for (int k = 0; k < n; k++) {
    char buf[32] = "";
    double v;
    if (ct_recorder_get(rec, epoch, names[k], &v)) {
      if (strcmp(names[k], "time") == 0)
        ct_format_duration(buf, sizeof buf, v);
      else
        snprintf(buf, sizeof buf, "%.6f", v);
    }
    fprintf(stderr, "  %-*s", k + 1 < n ? col_width(names[k]) : 0, buf);
  }
  fputc('\n', stderr);
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Progress *s = state;
  if (ct_learner_rank(L) != 0)
    return CT_STATUS_OK; /* rank 0 speaks for every rank */
  switch (event) {
  case CT_EVENT_BEFORE_FIT:
    s->tty = isatty(fileno(stderr));
    s->header_n = 0;
    if (s->tty) {
      ct_learner_set_display(L, display_clear, s);
      s->shown = L;
    }
    break;
  case CT_EVENT_BEFORE_TRAIN:
  case CT_EVENT_BEFORE_VALIDATE:
    s->phase_start = g_get_monotonic_time();
    s->last_draw = 0;
    break;
  case CT_EVENT_AFTER_BATCH:
    if (s->tty)
      draw_bar(s, L, FALSE);
    break;
  /* the phase's last batch, whose after_batch may not reach us: a callback
   * before us (short_epoch) may have cancelled the phase in it */
  case CT_EVENT_AFTER_TRAIN:
  case CT_EVENT_AFTER_VALIDATE:
    if (s->tty && ct_learner_iter(L) >= 0)
      draw_bar(s, L, TRUE);
    break;
  case CT_EVENT_AFTER_EPOCH:
    print_epoch(s, L);
    break;
  case CT_EVENT_AFTER_FIT:
    clear_bar(s);
    if (s->shown)
      ct_learner_set_display(s->shown, NULL, NULL);
    s->shown = NULL;
    break;
  default:
    break;
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  return g_new0(Progress, 1);
}

/* a run that fails leaves no half-drawn bar before the error line */
static void
destroy(void *state)
{
  Progress *s = state;
  clear_bar(s);
  if (s->shown) /* a fit that failed before after_fit */
    ct_learner_set_display(s->shown, NULL, NULL);
  g_free(s);
}

CT_PLUGIN_DEFINE(.name = "progress", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Progress bar on a terminal and one line per epoch on stderr (fastai ProgressCallback)",
                 .order = 55,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_BEFORE_TRAIN) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_VALIDATE) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_BATCH) | CT_EVENT_BIT(CT_EVENT_AFTER_TRAIN) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_VALIDATE) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = NULL, .create = create,
                 .destroy = destroy, .on_event = on_event)

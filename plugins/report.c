/* report: a self-contained HTML report of the run, OUT/FNAME (default
 * report.html), rewritten after each epoch (every_epoch, the default) and
 * always after the fit.  Inline SVG charts: the training loss per batch,
 * raw and smoothed (fastai's EMA, beta 0.98, debiased, recomputed from the
 * raw losses, non-finite ones skipped), the learning rate per batch, and
 * one small chart per recorded per-epoch value (train_loss, valid_loss,
 * metrics), then a table of those values.  No scripts, no external
 * resources; each chart is <svg class="chart" data-name="NAME"> with a
 * <title>.  Written atomically (temporary file, fsync, rename).  Runs after
 * the recorder and csv_logger (order 62). */
#include <cliptrain/plugin.h>

#include <math.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define SMOOTH_BETA 0.98

typedef struct {
  char *fname;
  gboolean every_epoch;
  char *path;
} Report;

typedef struct {
  const double *y;
  size_t n;
  const char *label, *color;
  double width;
  gboolean dots; /* a circle at every point, not only at isolated ones */
} Series;

/* append V as C-locale text */
static void
num(GString *h, const char *fmt, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_string_append(h, g_ascii_formatd(buf, sizeof buf, fmt, v));
}

static void
esc(GString *h, const char *text)
{
  g_autofree char *e = g_markup_escape_text(text, -1);
  g_string_append(h, e);
}

/* a round step (1, 2 or 5 times a power of ten) cutting RANGE into about N */
static double
nice_step(double range, int n)
{
  double raw = range / n, mag = pow(10, floor(log10(raw))), f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

/* One chart: series plotted against x = X0, X0 + 1, ... */
static void
chart(GString *h, const char *name, const char *title, const char *xlabel, int x0, int w, int ht,
      const Series *s, int ns)
{
  const double ml = 64, mr = 16, mt = 30, mb = 42, pw = w - ml - mr, ph = ht - mt - mb;
  double xlo = x0, xhi = x0, ylo = INFINITY, yhi = -INFINITY;
  for (int k = 0; k < ns; k++) {
    if (s[k].n > 0)
      xhi = MAX(xhi, x0 + (double) s[k].n - 1);
    for (size_t i = 0; i < s[k].n; i++)
      if (isfinite(s[k].y[i]))
        ylo = MIN(ylo, s[k].y[i]), yhi = MAX(yhi, s[k].y[i]);
  }
  double xpad = xhi - xlo < 1 ? 0.5 : (xhi - xlo) * 0.03; /* one point: half a step */
  xlo -= xpad, xhi += xpad;
  gboolean empty = !(ylo <= yhi);
  if (empty)
    ylo = 0, yhi = 1;
  if (yhi - ylo <= fabs(yhi) * 1e-12) {
    double pad = ylo == 0 ? 1 : fabs(ylo) * 0.1;
    ylo -= pad, yhi += pad;
  }
  double ys = nice_step(yhi - ylo, 5), xs = MAX(1, round(nice_step(xhi - xlo, 8)));
  ylo = floor(ylo / ys) * ys, yhi = ceil(yhi / ys) * ys;
#define PX(x) (ml + ((x) - xlo) / (xhi - xlo) * pw)
#define PY(y) (mt + (yhi - (y)) / (yhi - ylo) * ph)

  g_string_append_printf(h, "<svg class=\"chart\" data-name=\"");
  esc(h, name);
  g_string_append_printf(h,
                         "\" width=\"%d\" height=\"%d\" "
                         "viewBox=\"0 0 %d %d\" role=\"img\">\n<title>",
                         w, ht, w, ht);
  esc(h, title);
  g_string_append_printf(h, "</title>\n<text class=\"t\" x=\"%d\" y=\"19\">", w / 2);
  esc(h, title);
  g_string_append(h, "</text>\n");
  /* y ticks and grid */
  for (double k = ceil(ylo / ys - 1e-9); k <= floor(yhi / ys + 1e-9); k++) {
    double y = PY(k * ys);
    g_string_append(h, "<line class=\"g\" x1=\"");
    num(h, "%.1f", ml);
    g_string_append(h, "\" x2=\"");
    num(h, "%.1f", ml + pw);
    g_string_append(h, "\" y1=\"");
    num(h, "%.1f", y);
    g_string_append(h, "\" y2=\"");
    num(h, "%.1f", y);
    g_string_append(h, "\"/><text class=\"yt\" x=\"");
    num(h, "%.1f", ml - 6);
    g_string_append(h, "\" y=\"");
    num(h, "%.1f", y + 4);
    g_string_append(h, "\">");
    num(h, "%g", k == 0 ? 0 : k * ys);
    g_string_append(h, "</text>\n");
  }
  /* x ticks */
  for (double k = ceil(xlo / xs - 1e-9); k <= floor(xhi / xs + 1e-9); k++) {
    double x = PX(k * xs);
    g_string_append(h, "<line class=\"a\" x1=\"");
    num(h, "%.1f", x);
    g_string_append(h, "\" x2=\"");
    num(h, "%.1f", x);
    g_string_append_printf(h, "\" y1=\"%g\" y2=\"%g\"/><text class=\"xt\" x=\"", mt + ph,
                           mt + ph + 5);
    num(h, "%.1f", x);
    g_string_append_printf(h, "\" y=\"%g\">%.0f</text>\n", mt + ph + 18, k * xs + 0.0);
  }
  g_string_append_printf(h, "<path class=\"a\" d=\"M%g,%gV%gH%g\"/>\n", ml, mt, mt + ph, ml + pw);
  g_string_append_printf(h, "<text class=\"xl\" x=\"%g\" y=\"%d\">", ml + pw / 2, ht - 6);
  esc(h, xlabel);
  g_string_append(h, "</text>\n");
  if (empty)
    g_string_append_printf(h, "<text class=\"xt\" x=\"%g\" y=\"%g\">no data</text>\n",
                           ml + pw / 2, mt + ph / 2);
  /* the data: a path broken at non-finite values; circles at isolated points */
  for (int k = 0; k < ns; k++) {
    GString *d = g_string_new(NULL), *dots = g_string_new(NULL);
    size_t run = 0;
    for (size_t i = 0; i <= s[k].n; i++) {
      gboolean fin = i < s[k].n && isfinite(s[k].y[i]);
      if (!fin && run == 1 && !s[k].dots) { /* a lone point */
        g_string_append(dots, "<circle r=\"2.5\" cx=\"");
        num(dots, "%.1f", PX(x0 + (double) i - 1));
        g_string_append(dots, "\" cy=\"");
        num(dots, "%.1f", PY(s[k].y[i - 1]));
        g_string_append(dots, "\"/>");
      }
      if (!fin) {
        run = 0;
        continue;
      }
      g_string_append_c(d, run++ ? 'L' : 'M');
      num(d, "%.1f", PX(x0 + (double) i));
      g_string_append_c(d, ',');
      num(d, "%.1f", PY(s[k].y[i]));
      if (s[k].dots) {
        g_string_append(dots, "<circle r=\"3.5\" cx=\"");
        num(dots, "%.1f", PX(x0 + (double) i));
        g_string_append(dots, "\" cy=\"");
        num(dots, "%.1f", PY(s[k].y[i]));
        g_string_append(dots, "\"/>");
      }
    }
    g_string_append_printf(h, "<g class=\"s\" stroke=\"%s\" fill=\"%s\"><desc>", s[k].color,
                           s[k].color);
    esc(h, s[k].label);
    g_string_append(h, "</desc>");
    if (d->len) {
      g_string_append(h, "<path fill=\"none\" stroke-width=\"");
      num(h, "%g", s[k].width);
      g_string_append_printf(h, "\" d=\"%s\"/>", d->str);
    }
    g_string_append_printf(h, "%s</g>\n", dots->str);
    g_string_free(d, TRUE);
    g_string_free(dots, TRUE);
  }
  /* a legend when there is more than one series */
  for (int k = 0; ns > 1 && k < ns; k++) {
    double lx = ml + pw - 130, ly = mt + 12 + 18 * k;
    if (k == 0)
      g_string_append_printf(h, "<rect x=\"%g\" y=\"%g\" width=\"124\" height=\"%d\" "
                                "fill=\"#fff\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
                             lx - 6, ly - 10, 18 * ns + 2);
    g_string_append_printf(h,
                           "<line x1=\"%g\" x2=\"%g\" y1=\"%g\" y2=\"%g\" stroke=\"%s\" "
                           "stroke-width=\"%d\"/><text class=\"lg\" x=\"%g\" y=\"%g\">",
                           lx, lx + 22, ly, ly, s[k].color, s[k].width > 2 ? 3 : 2, lx + 28, ly + 4);
    esc(h, s[k].label);
    g_string_append(h, "</text>\n");
  }
  g_string_append(h, "</svg>\n");
#undef PX
#undef PY
}

static const char style[] =
  "body{font-family:sans-serif;margin:24px;color:#222;background:#fff}"
  "h1{font-size:22px;margin:0 0 4px}p.meta{color:#555;margin:0 0 16px}"
  "h2{font-size:17px;margin:20px 0 8px}.row{display:flex;flex-wrap:wrap;gap:12px}"
  "svg.chart{border:1px solid #ddd;background:#fff;max-width:100%;height:auto}"
  "svg text{font-size:11px;fill:#333}svg text.t{font-size:13px;font-weight:bold;"
  "text-anchor:middle}svg text.yt{text-anchor:end}svg text.xt,svg text.xl{text-anchor:middle}"
  ".a{stroke:#444;fill:none}.g{stroke:#eee}.s circle{stroke:none}"
  "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;"
  "text-align:right}th{background:#f3f3f3}";

static GString *
build(CtLearner *L)
{
  CtRecorder *rec = ct_learner_recorder(L);
  size_t nl, nr;
  const double *losses = ct_recorder_losses(rec, &nl), *lrs = ct_recorder_lrs(rec, &nr);
  int ne = ct_recorder_n_epochs(rec);
  const char *const *names = ct_recorder_names(rec);
  const char *out = ct_learner_out_dir(L) ? ct_learner_out_dir(L) : ".";
  g_autofree char *canon = g_canonicalize_filename(out, NULL);
  g_autofree char *run = g_path_get_basename(canon);
  g_autoptr(GDateTime) now = g_date_time_new_now_local();
  g_autofree char *date = g_date_time_format(now, "%Y-%m-%d %H:%M:%S %z");

  /* fastai's smoothed loss, skipping non-finite losses */
  double *smooth = g_new(double, MAX(nl, 1)), avg = 0;
  int count = 0;
  for (size_t i = 0; i < nl; i++) {
    if (!isfinite(losses[i])) {
      smooth[i] = NAN;
      continue;
    }
    avg = SMOOTH_BETA * avg + (1 - SMOOTH_BETA) * losses[i];
    smooth[i] = avg / (1 - pow(SMOOTH_BETA, ++count));
  }

  GString *h = g_string_new("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n"
                            "<title>cliptrain report: ");
  esc(h, run);
  g_string_append_printf(h, "</title>\n<style>%s</style>\n</head>\n<body>\n<h1>Training report: ",
                         style);
  esc(h, run);
  g_string_append(h, "</h1>\n<p class=\"meta\">Run folder <code>");
  esc(h, canon);
  g_string_append(h, "</code> &#183; written ");
  esc(h, date);
  g_string_append_printf(h, " &#183; %d of %d epochs, %zu training batches</p>\n", ne,
                         ct_learner_n_epoch(L), nl);

  g_string_append(h, "<h2>Per batch</h2>\n<div class=\"row\">\n");
  Series loss[2] = { { losses, nl, "raw", "#9ecae1", 1, FALSE },
                     { smooth, nl, "smoothed", "#08519c", 2.2, FALSE } };
  chart(h, "loss", "Training loss", "batch", 1, 560, 320, loss, 2);
  Series lr = { lrs, nr, "lr", "#e6550d", 2, FALSE };
  chart(h, "lr", "Learning rate", "batch", 1, 560, 320, &lr, 1);
  g_string_append(h, "</div>\n<h2>Per epoch</h2>\n<div class=\"row\">\n");
  double *vals = g_new(double, MAX(ne, 1));
  for (const char *const *nm = names; *nm; nm++) {
    if (strcmp(*nm, "time") == 0) /* in the table only */
      continue;
    for (int e = 0; e < ne; e++)
      if (!ct_recorder_get(rec, e, *nm, &vals[e]))
        vals[e] = NAN;
    Series sv = { vals, (size_t) ne, *nm, "#31a354", 2, TRUE };
    chart(h, *nm, *nm, "epoch", 0, 360, 240, &sv, 1);
  }
  g_free(vals);
  g_free(smooth);

  g_string_append(h, "</div>\n<h2>Per-epoch values</h2>\n<table>\n<tr><th>epoch</th>");
  for (const char *const *nm = names; *nm; nm++) {
    g_string_append(h, "<th>");
    esc(h, *nm);
    g_string_append(h, "</th>");
  }
  g_string_append(h, "</tr>\n");
  for (int e = 0; e < ne; e++) {
    g_string_append_printf(h, "<tr><td>%d</td>", e);
    for (const char *const *nm = names; *nm; nm++) {
      double v;
      g_string_append(h, "<td>");
      if (ct_recorder_get(rec, e, *nm, &v))
        num(h, "%.6g", v);
      g_string_append(h, "</td>");
    }
    g_string_append(h, "</tr>\n");
  }
  g_string_append(h, "</table>\n</body>\n</html>\n");
  return h;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Report *s = state;
  if (ct_learner_rank(L) != 0)
    return CT_STATUS_OK; /* rank 0 speaks for every rank */
  if (event == CT_EVENT_BEFORE_FIT) {
    const char *out = ct_learner_out_dir(L);
    g_free(s->path);
    s->path = g_path_is_absolute(s->fname) || !out ? g_strdup(s->fname)
                                                   : g_build_filename(out, s->fname, NULL);
    /* a folder it cannot write into fails the run now, not after an epoch */
    g_autofree char *dir = g_path_get_dirname(s->path);
    if (!g_file_test(dir, G_FILE_TEST_IS_DIR) || access(dir, W_OK) != 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "report: %s: cannot write into %s: %s", s->path,
                  dir, g_file_test(dir, G_FILE_TEST_IS_DIR) ? g_strerror(errno)
                                                            : "no such folder");
      return CT_STATUS_ERROR;
    }
    return CT_STATUS_OK;
  }
  if (event == CT_EVENT_AFTER_EPOCH && !s->every_epoch)
    return CT_STATUS_OK;
  GString *h = build(L);
  /* a temporary file in the same folder, fsynced, renamed over the path */
  gboolean ok = g_file_set_contents_full(s->path, h->str, (gssize) h->len,
                                         G_FILE_SET_CONTENTS_CONSISTENT |
                                           G_FILE_SET_CONTENTS_DURABLE,
                                         0644, error);
  g_string_free(h, TRUE);
  return ok ? CT_STATUS_OK : CT_STATUS_ERROR;
}

static void *
create(const CtParams *params, GError **error)
{
  Report *s = g_new0(Report, 1);
  s->fname = g_strdup(ct_params_get_string(params, "fname"));
  s->every_epoch = ct_params_get_bool(params, "every_epoch");
  if (!*s->fname) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "fname must not be empty");
    g_free(s->fname);
    g_free(s);
    return NULL;
  }
  return s;
}

static void
destroy(void *state)
{
  Report *s = state;
  g_free(s->fname);
  g_free(s->path);
  g_free(s);
}

static const CtParamSpec schema[] = {
  CT_PARAM("fname", CT_PARAM_STRING, "report.html", "file, relative to the run folder", 0, 0,
           NULL),
  CT_PARAM("every_epoch", CT_PARAM_BOOL, "true",
           "rewrite the report after each epoch, not only after the fit", 0, 0, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "report", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Writes a self-contained HTML report with SVG charts of the run",
                 .order = 62,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = schema, .create = create,
                 .destroy = destroy, .on_event = on_event)

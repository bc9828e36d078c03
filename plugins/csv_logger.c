/* csv_logger: fastai's CSVLogger.  Writes one row per epoch (epoch, then
 * every value the recorder logged: train_loss, valid_loss, metrics, time)
 * to OUT/FNAME.  The columns are those logged by the end of the first
 * epoch; the header is written once, and not again when appending to a
 * file that already has content.  append=false empties the file when the
 * fit starts.  Runs just after the recorder (order 51, as in fastai), so
 * that a tracker cancelling the fit at order 60 does not lose the row. */
#include <cliptrain/plugin.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char *fname;
  gboolean append;
  FILE *file;
  char *path;
  GStrv columns; /* fixed at the first row */
} CsvLogger;

static CtStatus
io_error(CsvLogger *s, GError **error)
{
  g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", s->path, g_strerror(errno));
  return CT_STATUS_ERROR;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  CsvLogger *s = state;
  if (event == CT_EVENT_BEFORE_FIT) {
    g_free(s->path);
    const char *out = ct_learner_out_dir(L);
    s->path = g_path_is_absolute(s->fname) || !out ? g_strdup(s->fname)
                                                   : g_build_filename(out, s->fname, NULL);
    if (s->file)
      fclose(s->file);
    g_clear_pointer(&s->columns, g_strfreev);
    /* a resumed fit continues the file it wrote before */
    s->file = fopen(s->path, s->append || ct_learner_resumed(L) ? "a" : "w");
    return s->file ? CT_STATUS_OK : io_error(s, error);
  }
  if (event == CT_EVENT_AFTER_FIT) {
    FILE *f = s->file;
    s->file = NULL;
    return f && fclose(f) != 0 ? io_error(s, error) : CT_STATUS_OK;
  }
  /* after_epoch */
  if (!s->file)
    return CT_STATUS_OK;
  CtRecorder *rec = ct_learner_recorder(L);
  int epoch = ct_learner_epoch(L);
  if (!s->columns) {
    s->columns = g_strdupv((char **) ct_recorder_names(rec));
    if (fseek(s->file, 0, SEEK_END) != 0 || ftell(s->file) <= 0) {
      fputs("epoch", s->file);
      for (char **c = s->columns; *c; c++)
        fprintf(s->file, ",%s", *c);
      fputc('\n', s->file);
    }
  }
  fprintf(s->file, "%d", epoch);
  for (char **c = s->columns; *c; c++) {
    double v;
    char buf[G_ASCII_DTOSTR_BUF_SIZE] = "";
    if (ct_recorder_get(rec, epoch, *c, &v))
      g_ascii_formatd(buf, sizeof buf, "%.6g", v);
    fprintf(s->file, ",%s", buf);
  }
  fputc('\n', s->file);
  return fflush(s->file) == 0 ? CT_STATUS_OK : io_error(s, error);
}

static void *
create(const CtParams *params, GError **error)
{
  CsvLogger *s = g_new0(CsvLogger, 1);
  s->fname = g_strdup(ct_params_get_string(params, "fname"));
  s->append = ct_params_get_bool(params, "append");
  return s;
}

static void
destroy(void *state)
{
  CsvLogger *s = state;
  if (s->file)
    fclose(s->file);
  g_strfreev(s->columns);
  g_free(s->path);
  g_free(s->fname);
  g_free(s);
}

static const CtParamSpec schema[] = {
  CT_PARAM("fname", CT_PARAM_STRING, "log.csv", "file, relative to the run folder", 0, 0, NULL),
  CT_PARAM("append", CT_PARAM_BOOL, "false", "append to the file instead of emptying it", 0, 0,
           NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "csv_logger", .version = "1.0",
                 .doc = "Writes each epoch's recorded values to a CSV file (fastai CSVLogger)",
                 .order = 51,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .params = schema, .create = create, .destroy = destroy, .on_event = on_event)

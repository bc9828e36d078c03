/* csv_logger: fastai's CSVLogger.  Writes one row per epoch (epoch, then
 * every value the recorder logged: train_loss, valid_loss, metrics, time)
 * to OUT/FNAME.  The columns are those logged by the end of the first
 * epoch; the header is written once, and not again when appending to a
 * file that already has content.  append=false empties the file when the
 * fit starts.  Runs just after the recorder (order 51, as in fastai), so
 * that a tracker cancelling the fit at order 60 does not lose the row. */
#include <cliptrain/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  char *fname;
  gboolean append;
  int fd;        /* -1 when closed */
  char *path;
  GStrv columns; /* fixed at the first row */
} CsvLogger;

static CtStatus
io_error(CsvLogger *s, int err, GError **error)
{
  g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", s->path, g_strerror(err));
  return CT_STATUS_ERROR;
}

/* Append TEXT whole or not at all: a failed write (a full disk) is cut
 * back off, so that the file never ends in half a row. */
static CtStatus
append(CsvLogger *s, const GString *text, GError **error)
{
  off_t size = lseek(s->fd, 0, SEEK_END);
  if (size < 0)
    return io_error(s, errno, error);
  for (size_t off = 0; off < text->len;) {
    ssize_t k = write(s->fd, text->str + off, text->len - off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0) {
      int err = k < 0 ? errno : ENOSPC;
      if (ftruncate(s->fd, size) != 0)
        err = errno;
      g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: write failed: %s", s->path, g_strerror(err));
      return CT_STATUS_ERROR;
    }
    off += (size_t) k;
  }
  return CT_STATUS_OK;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  CsvLogger *s = state;
  if (ct_learner_rank(L) != 0)
    return CT_STATUS_OK; /* rank 0 speaks for every rank */
  if (event == CT_EVENT_BEFORE_FIT) {
    g_free(s->path);
    const char *out = ct_learner_out_dir(L);
    s->path = g_path_is_absolute(s->fname) || !out ? g_strdup(s->fname)
                                                   : g_build_filename(out, s->fname, NULL);
    if (s->fd >= 0)
      close(s->fd);
    g_clear_pointer(&s->columns, g_strfreev);
    /* a resumed fit continues the file it wrote before */
    int mode = s->append || ct_learner_resumed(L) ? O_APPEND : O_TRUNC;
    s->fd = open(s->path, O_WRONLY | O_CREAT | O_CLOEXEC | mode, 0644);
    return s->fd >= 0 ? CT_STATUS_OK : io_error(s, errno, error);
  }
  if (event == CT_EVENT_AFTER_FIT) {
    int fd = s->fd;
    s->fd = -1;
    return fd >= 0 && (fsync(fd) != 0 || close(fd) != 0) ? io_error(s, errno, error)
                                                          : CT_STATUS_OK;
  }
  /* after_epoch */
  if (s->fd < 0)
    return CT_STATUS_OK;
  CtRecorder *rec = ct_learner_recorder(L);
  int epoch = ct_learner_epoch(L);
  GString *text = g_string_new(NULL);
  if (!s->columns) {
    s->columns = g_strdupv((char **) ct_recorder_names(rec));
    if (lseek(s->fd, 0, SEEK_END) <= 0) {
      g_string_append(text, "epoch");
      for (char **c = s->columns; *c; c++)
        g_string_append_printf(text, ",%s", *c);
      g_string_append_c(text, '\n');
    }
  }
  g_string_append_printf(text, "%d", epoch);
  for (char **c = s->columns; *c; c++) {
    double v;
    char buf[G_ASCII_DTOSTR_BUF_SIZE] = "";
    if (ct_recorder_get(rec, epoch, *c, &v))
      g_ascii_formatd(buf, sizeof buf, "%.6g", v);
    g_string_append_printf(text, ",%s", buf);
  }
  g_string_append_c(text, '\n');
  CtStatus st = append(s, text, error);
  g_string_free(text, TRUE);
  return st;
}

/* The file's length when the training state is saved: a resume cuts off
 * rows written after it (by a run killed later), which it writes again. */
static GBytes *
state_save(void *state)
{
  CsvLogger *s = state;
  struct stat sb;
  gint64 len = s->fd >= 0 && fstat(s->fd, &sb) == 0 ? (gint64) sb.st_size : -1;
  char *text = g_strdup_printf("%" G_GINT64_FORMAT, len);
  return g_bytes_new_take(text, strlen(text));
}

static gboolean
state_load(void *state, GBytes *bytes, GError **error)
{
  CsvLogger *s = state;
  gsize n;
  const char *data = g_bytes_get_data(bytes, &n);
  g_autofree char *text = g_strndup(data, n);
  char *end;
  gint64 len = g_ascii_strtoll(text, &end, 10);
  if (end == text || *end) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "csv_logger: bad saved state '%s'", text);
    return FALSE;
  }
  struct stat sb;
  if (len >= 0 && s->fd >= 0 && fstat(s->fd, &sb) == 0 && sb.st_size > len &&
      ftruncate(s->fd, (off_t) len) != 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", s->path, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

static void *
create(const CtParams *params, GError **error)
{
  CsvLogger *s = g_new0(CsvLogger, 1);
  s->fname = g_strdup(ct_params_get_string(params, "fname"));
  s->append = ct_params_get_bool(params, "append");
  s->fd = -1;
  return s;
}

static void
destroy(void *state)
{
  CsvLogger *s = state;
  if (s->fd >= 0)
    close(s->fd);
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

CT_PLUGIN_DEFINE(.name = "csv_logger", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Writes each epoch's recorded values to a CSV file (fastai CSVLogger)",
                 .order = 51,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .params = schema, .create = create, .destroy = destroy, .on_event = on_event,
                 .state_save = state_save, .state_load = state_load)

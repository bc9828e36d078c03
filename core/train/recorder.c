/* recorder.c: fastai's Recorder as a built-in callback (order 50): the
 * smoothed loss, losses and learning rates per batch, and one row per
 * epoch (train_loss, valid_loss, metrics, time), written to
 * OUT/metrics.jsonl (appended) and OUT/history.csv (rewritten) by the loop
 * once every after_epoch callback has run, so values logged by callbacks
 * of any order reach the files. */
#include "config.h"

#include "train/learner-private.h"
#include "base/file-write.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CT_SMOOTH_BETA 0.98

void
ct_recorder_init(CtRecorder *rec, const char *out_dir)
{
  memset(rec, 0, sizeof *rec);
  rec->losses = g_array_new(FALSE, FALSE, sizeof(double));
  rec->lrs = g_array_new(FALSE, FALSE, sizeof(double));
  rec->names = g_ptr_array_new_with_free_func(g_free);
  rec->declared = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(rec->names, NULL); /* keeps the array NULL-terminated */
  rec->rows = g_array_new(FALSE, TRUE, sizeof(GHashTable *));
  rec->out_dir = g_strdup(out_dir);
  rec->smooth = NAN;
}

void
ct_recorder_clear(CtRecorder *rec)
{
  g_array_free(rec->losses, TRUE);
  g_array_free(rec->lrs, TRUE);
  g_ptr_array_free(rec->names, TRUE);
  g_ptr_array_free(rec->declared, TRUE);
  for (guint i = 0; i < rec->rows->len; i++)
    g_hash_table_destroy(g_array_index(rec->rows, GHashTable *, i));
  g_array_free(rec->rows, TRUE);
  g_free(rec->out_dir);
}

double
ct_recorder_smooth_loss(const CtRecorder *rec)
{
  return rec->smooth;
}

const double *
ct_recorder_losses(const CtRecorder *rec, size_t *n)
{
  *n = rec->losses->len;
  return (const double *) rec->losses->data;
}

const double *
ct_recorder_lrs(const CtRecorder *rec, size_t *n)
{
  *n = rec->lrs->len;
  return (const double *) rec->lrs->data;
}

int
ct_recorder_n_epochs(const CtRecorder *rec)
{
  return rec->n_epochs;
}

const char *const *
ct_recorder_names(const CtRecorder *rec)
{
  return (const char *const *) rec->names->pdata;
}

static GHashTable *
row(CtRecorder *rec, int epoch)
{
  while ((int) rec->rows->len <= epoch) {
    GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_array_append_val(rec->rows, h);
  }
  return g_array_index(rec->rows, GHashTable *, epoch);
}

static int current_epoch(const CtRecorder *rec);

void
ct_recorder_log(CtRecorder *rec, const char *name, double value)
{
  ct_recorder_log_at(rec, current_epoch(rec), name, value);
}

void
ct_recorder_log_at(CtRecorder *rec, int epoch, const char *name, double value)
{
  gboolean known = FALSE;
  for (guint i = 0; i + 1 < rec->names->len; i++)
    if (strcmp(g_ptr_array_index(rec->names, i), name) == 0)
      known = TRUE;
  if (!known) {
    g_ptr_array_index(rec->names, rec->names->len - 1) = g_strdup(name);
    g_ptr_array_add(rec->names, NULL);
  }
  double *v = g_new(double, 1);
  *v = value;
  g_hash_table_replace(row(rec, epoch), g_strdup(name), v);
}

gboolean
ct_recorder_get(const CtRecorder *rec, int epoch, const char *name, double *value)
{
  if (epoch < 0 || epoch >= (int) rec->rows->len)
    return FALSE;
  double *v = g_hash_table_lookup(g_array_index(rec->rows, GHashTable *, epoch), name);
  if (v)
    *value = *v;
  return v != NULL;
}

/* The epoch being recorded: set by the callback at before_epoch. */
static int
current_epoch(const CtRecorder *rec)
{
  return rec->rows->len ? (int) rec->rows->len - 1 : 0;
}

gboolean
ct_recorder_monitor(CtLearner *L, const char *monitor, double *value, GError **error)
{
  CtRecorder *rec = ct_learner_recorder(L);
  if (ct_recorder_get(rec, ct_learner_epoch(L), monitor, value))
    return TRUE;
  g_autofree char *names = g_strjoinv(", ", (char **) ct_recorder_names(rec));
  g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
              "monitor '%s' was not logged in epoch %d (logged: %s)", monitor,
              ct_learner_epoch(L), *names ? names : "nothing");
  return FALSE;
}

void
ct_recorder_declare(CtRecorder *rec, const char *name)
{
  g_return_if_fail(rec != NULL && name != NULL);
  for (guint i = 0; i < rec->declared->len; i++)
    if (strcmp(rec->declared->pdata[i], name) == 0)
      return;
  g_ptr_array_add(rec->declared, g_strdup(name));
}

gboolean
ct_recorder_check_monitor(CtLearner *L, const char *monitor, GError **error)
{
  CtRecorder *rec = ct_learner_recorder(L);
  gboolean valid = ct_learner_n_valid(L) > 0;
  GString *known = g_string_new(valid ? "train_loss, valid_loss" : "train_loss");
  gboolean ok = strcmp(monitor, "train_loss") == 0 || (valid && strcmp(monitor, "valid_loss") == 0);
  for (guint i = 0; i < rec->declared->len; i++) {
    ok = ok || strcmp(rec->declared->pdata[i], monitor) == 0;
    g_string_append_printf(known, ", %s", (const char *) rec->declared->pdata[i]);
  }
  if (!ok) {
    const char *why = !valid && strcmp(monitor, "valid_loss") == 0
                        ? " (the recipe's data has no validation set)" : "";
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "monitor '%s' will not be logged%s; the run logs %s", monitor, why, known->str);
  }
  g_string_free(known, TRUE);
  return ok;
}

gboolean
ct_monitor_less_is_better(const char *comp, const char *monitor)
{
  if (strcmp(comp, "auto") == 0)
    return strstr(monitor, "loss") || strstr(monitor, "error");
  return strcmp(comp, "less") == 0;
}

/* ---------------------------------------------------------------- files */

/* Epoch EPOCH's row as one JSON line, without the newline.  (transfer full) */
static char *
jsonl_line(CtRecorder *rec, int epoch)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "epoch");
  json_builder_add_int_value(b, epoch);
  for (guint i = 0; i + 1 < rec->names->len; i++) {
    const char *name = g_ptr_array_index(rec->names, i);
    double v;
    if (!ct_recorder_get(rec, epoch, name, &v))
      continue;
    json_builder_set_member_name(b, name);
    if (isfinite(v))
      json_builder_add_double_value(b, v);
    else
      json_builder_add_null_value(b);
  }
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  char *line = json_generator_to_data(gen, NULL);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  return line;
}

static gboolean
append_jsonl(CtRecorder *rec, int epoch, GError **error)
{
  g_autofree char *line = jsonl_line(rec, epoch);
  g_autofree char *path = g_build_filename(rec->out_dir, "metrics.jsonl", NULL);
  g_autofree char *text = g_strconcat(line, "\n", NULL);
  /* a failed append (a full disk) is cut back off, leaving no partial line */
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  struct stat sb;
  gboolean ok = fd >= 0 && fstat(fd, &sb) == 0;
  off_t size = ok ? sb.st_size : 0;
  for (size_t off = 0, len = strlen(text); ok && off < len;) {
    ssize_t k = write(fd, text + off, len - off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k == 0)
      errno = ENOSPC;
    ok = k > 0;
    off += ok ? (size_t) k : 0;
  }
  ok = ok && fsync(fd) == 0;
  int err = errno;
  if (!ok && fd >= 0 && ftruncate(fd, size) == 0)
    fsync(fd);
  if (fd >= 0 && close(fd) != 0 && ok) {
    ok = FALSE;
    err = errno;
  }
  if (!ok)
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: write failed: %s", path,
                g_strerror(err));
  return ok;
}

static gboolean
write_history(CtRecorder *rec, GError **error)
{
  GString *s = g_string_new("epoch");
  for (guint i = 0; i + 1 < rec->names->len; i++)
    g_string_append_printf(s, ",%s", (char *) g_ptr_array_index(rec->names, i));
  g_string_append_c(s, '\n');
  for (int e = 0; e <= current_epoch(rec) && e < (int) rec->rows->len; e++) {
    g_string_append_printf(s, "%d", e);
    for (guint i = 0; i + 1 < rec->names->len; i++) {
      double v;
      char buf[G_ASCII_DTOSTR_BUF_SIZE] = "";
      if (ct_recorder_get(rec, e, g_ptr_array_index(rec->names, i), &v))
        g_ascii_formatd(buf, sizeof buf, "%.6g", v);
      g_string_append_printf(s, ",%s", buf);
    }
    g_string_append_c(s, '\n');
  }
  g_autofree char *path = g_build_filename(rec->out_dir, "history.csv", NULL);
  gboolean ok = ct_file_write_atomic(path, s->str, s->len, error);
  g_string_free(s, TRUE);
  return ok;
}

gboolean
ct_recorder_rewrite(CtRecorder *rec, GError **error)
{
  if (!rec->out_dir)
    return TRUE;
  GString *s = g_string_new(NULL);
  for (int e = 0; e < rec->n_epochs && e < (int) rec->rows->len; e++) {
    g_autofree char *line = jsonl_line(rec, e);
    g_string_append_printf(s, "%s\n", line);
  }
  g_autofree char *path = g_build_filename(rec->out_dir, "metrics.jsonl", NULL);
  gboolean ok = ct_file_write_atomic(path, s->str, s->len, error);
  g_string_free(s, TRUE);
  return ok && write_history(rec, error);
}

gboolean
ct_recorder_flush(CtRecorder *rec, int epoch, GError **error)
{
  if (!rec->out_dir || epoch >= (int) rec->rows->len)
    return TRUE;
  return append_jsonl(rec, epoch, error) && write_history(rec, error);
}

/* ---------------------------------------------------------------- callback */

static CtStatus
recorder_event(void *state, CtLearner *L, CtEvent ev, GError **error)
{
  CtRecorder *rec = ct_learner_recorder(L);
  switch (ev) {
  case CT_EVENT_BEFORE_EPOCH:
    row(rec, ct_learner_epoch(L));
    rec->epoch_start = g_get_monotonic_time();
    rec->valid_sum = rec->valid_n = 0;
    break;
  case CT_EVENT_AFTER_BATCH:
    if (!ct_learner_has_loss(L) || ct_learner_batch_size(L) == 0)
      break;
    if (ct_learner_training(L)) {
      double loss = ct_learner_loss(L), lr = 0;
      rec->smooth_raw = CT_SMOOTH_BETA * rec->smooth_raw + (1 - CT_SMOOTH_BETA) * loss;
      rec->count++;
      rec->smooth = rec->smooth_raw / (1 - pow(CT_SMOOTH_BETA, (double) rec->count));
      ct_learner_get_hparam(L, "lr", &lr);
      g_array_append_val(rec->losses, loss);
      g_array_append_val(rec->lrs, lr);
    } else {
      rec->valid_sum += ct_learner_loss(L) * ct_learner_batch_size(L);
      rec->valid_n += ct_learner_batch_size(L);
    }
    break;
  case CT_EVENT_AFTER_EPOCH: {
    int epoch = ct_learner_epoch(L);
    double smooth = rec->smooth, time = (g_get_monotonic_time() - rec->epoch_start) / 1e6;
    double valid_sum = rec->valid_sum, valid_n = rec->valid_n;
    CtComm *comm = ct_learner_comm(L);
    int W = ct_comm_size(comm);
    if (W > 1) { /* every rank logs the same row, so that trackers decide alike */
      double sums[3] = { smooth, valid_sum, valid_n };
      if (!ct_comm_allreduce(comm, sums, 3, CT_COMM_F64, CT_COMM_SUM, error) ||
          !ct_comm_allreduce(comm, &time, 1, CT_COMM_F64, CT_COMM_MAX, error))
        return CT_STATUS_ERROR;
      smooth = sums[0] / W; /* the ranks' smoothed losses, averaged */
      valid_sum = sums[1];
      valid_n = sums[2];
    }
    if (!L->validate_only) /* ct_learner_validate trains nothing */
      ct_recorder_log(rec, "train_loss", smooth);
    if (valid_n > 0)
      ct_recorder_log(rec, "valid_loss", valid_sum / valid_n);
    ct_recorder_log(rec, "time", time);
    rec->n_epochs = epoch + 1;
    break; /* the files are written when every after_epoch callback has run */
  }
  default:
    break;
  }
  return CT_STATUS_OK;
}

static const CtPluginDescriptor recorder_descriptor = {
  .abi_major = CT_PLUGIN_ABI_MAJOR,
  .abi_minor = CT_PLUGIN_ABI_MINOR,
  .struct_size = sizeof(CtPluginDescriptor),
  .name = "recorder",
  .version = PACKAGE_VERSION,
  .doc = "Records losses, learning rates and per-epoch values (built in)",
  .order = 50,
  .events = CT_EVENT_BIT(CT_EVENT_BEFORE_EPOCH) | CT_EVENT_BIT(CT_EVENT_AFTER_BATCH) |
            CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH),
  .run = CT_RUN_TRAIN | CT_RUN_VALID,
  .on_event = recorder_event,
};

CtCallback *
ct_recorder_callback_new(void)
{
  CtCallback *cb = g_new0(CtCallback, 1);
  cb->desc = &recorder_descriptor;
  cb->label = g_strdup("recorder (built in)");
  cb->order = recorder_descriptor.order;
  return cb;
}

/* early_stopping: fastai's EarlyStoppingCallback.  After each epoch, reads
 * MONITOR from the recorder; when it has not improved on the best value
 * (by more than min_delta, in the direction COMP) for PATIENCE epochs in a
 * row, cancels the fit, giving the learner its reason ("valid_loss has
 * not improved since epoch E (best B)"), which the learner prints with
 * the plugin's name.  The best value and the count survive a resume. */
#include <cliptrain/plugin.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char *monitor;
  gboolean less;     /* lower is better */
  double min_delta;
  int patience;
  double best;
  int wait;          /* epochs since the last improvement */
} EarlyStopping;

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  EarlyStopping *s = state;
  double v;
  if (event == CT_EVENT_BEFORE_FIT) /* a monitor that is never logged: before any step */
    return ct_recorder_check_monitor(L, s->monitor, error) ? CT_STATUS_OK : CT_STATUS_ERROR;
  if (!ct_recorder_monitor(L, s->monitor, &v, error))
    return CT_STATUS_ERROR;
  gboolean better = s->less ? v + s->min_delta < s->best : v - s->min_delta > s->best;
  if (better) {
    s->best = v;
    s->wait = 0;
    return CT_STATUS_OK;
  }
  if (++s->wait < s->patience)
    return CT_STATUS_OK;
  ct_learner_cancel_reason(L, "%s has not improved since epoch %d (best %g, patience %d)",
                           s->monitor, ct_learner_epoch(L) - s->wait, s->best, s->patience);
  return CT_STATUS_CANCEL_FIT;
}

static void *
create(const CtParams *params, GError **error)
{
  EarlyStopping *s = g_new0(EarlyStopping, 1);
  s->monitor = g_strdup(ct_params_get_string(params, "monitor"));
  s->less = ct_monitor_less_is_better(ct_params_get_string(params, "comp"), s->monitor);
  s->min_delta = ct_params_get_double(params, "min_delta");
  s->patience = (int) ct_params_get_int(params, "patience");
  s->best = s->less ? INFINITY : -INFINITY;
  return s;
}

static void
destroy(void *state)
{
  EarlyStopping *s = state;
  g_free(s->monitor);
  g_free(s);
}

/* "BEST WAIT" as text, BEST in C-locale round-trip form */
static GBytes *
state_save(void *state)
{
  EarlyStopping *s = state;
  char best[G_ASCII_DTOSTR_BUF_SIZE];
  char *text = g_strdup_printf("%s %d", g_ascii_dtostr(best, sizeof best, s->best), s->wait);
  return g_bytes_new_take(text, strlen(text) + 1);
}

static gboolean
state_load(void *state, GBytes *bytes, GError **error)
{
  EarlyStopping *s = state;
  gsize len;
  const char *data = g_bytes_get_data(bytes, &len);
  g_autofree char *text = g_strndup(data, len);
  char *end;
  double best = g_ascii_strtod(text, &end);
  gint64 wait = end != text && *end == ' ' ? g_ascii_strtoll(end + 1, &end, 10) : -1;
  if (wait < 0 || *end) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "early_stopping: bad saved state '%s'", text);
    return FALSE;
  }
  s->best = best;
  s->wait = (int) wait;
  return TRUE;
}

static const CtParamSpec schema[] = {
  CT_PARAM("monitor", CT_PARAM_STRING, "valid_loss", "recorded value to watch", 0, 0, NULL),
  CT_PARAM("comp", CT_PARAM_STRING, "auto",
           "better is less or greater; auto: less for names with loss or error", 0, 0,
           "auto|less|greater"),
  CT_PARAM("min_delta", CT_PARAM_DOUBLE, "0", "smallest change that counts as improvement", 0, 1e30,
           NULL),
  CT_PARAM("patience", CT_PARAM_INT, "1", "epochs without improvement before stopping", 1, 1e9,
           NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "early_stopping", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Stops the fit when a monitored value stops improving (fastai EarlyStoppingCallback)",
                 .order = 60, .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH), .params = schema,
                 .create = create, .destroy = destroy, .on_event = on_event,
                 .state_save = state_save, .state_load = state_load)

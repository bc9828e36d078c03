/* save_model: fastai's SaveModelCallback.  After each epoch, reads MONITOR
 * from the recorder and, when it improved on the best value (by more than
 * min_delta, in the direction COMP), writes OUT/FNAME.safetensors (and
 * with with_opt, the optimizer state to OUT/FNAME.opt.safetensors).  With
 * every_epoch it writes OUT/FNAME_<epoch>.safetensors every epoch instead;
 * with at_end, OUT/FNAME.safetensors once, after the fit.  The weights'
 * metadata holds the epoch and the monitored value.  With several ranks,
 * rank 0 writes the weights (every rank decides alike: the recorder's rows
 * are the same on all); an optimizer sharded by ddp's zero is written by
 * every rank to OUT/FNAME.opt.rank-R.safetensors. */
#include <cliptrain/plugin.h>

#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char *monitor, *fname;
  gboolean less, every_epoch, at_end, with_opt;
  double min_delta;
  double best;
  int last_epoch; /* last epoch whose after_epoch we saw, -1 before */
} SaveModel;

/* Write OUT/NAME.safetensors (and OUT/NAME.opt.safetensors); EPOCH < 0
 * leaves the epoch out of the metadata, and so does a missing monitor. */
static gboolean
save(SaveModel *s, CtLearner *L, const char *name, int epoch, GError **error)
{
  const char *out = ct_learner_out_dir(L) ? ct_learner_out_dir(L) : ".";
  g_autofree char *leaf = g_strconcat(name, ".safetensors", NULL);
  g_autofree char *opt_leaf = g_strconcat(name, ".opt.safetensors", NULL);
  g_autofree char *path = g_build_filename(out, leaf, NULL);
  g_autofree char *opt_path = g_build_filename(out, opt_leaf, NULL);
  /* the run's recipe, step and tokenizer, then ours */
  GHashTable *meta = ct_learner_checkpoint_metadata(L);
  double v;
  g_hash_table_remove(meta, "epoch");
  if (epoch >= 0) {
    g_hash_table_insert(meta, g_strdup("epoch"), g_strdup_printf("%d", epoch));
    if (ct_recorder_get(ct_learner_recorder(L), epoch, s->monitor, &v)) {
      char buf[G_ASCII_DTOSTR_BUF_SIZE];
      g_hash_table_insert(meta, g_strdup("monitor"), g_strdup(s->monitor));
      g_hash_table_insert(meta, g_strdup(s->monitor), g_strdup(g_ascii_dtostr(buf, sizeof buf, v)));
    }
  }
  /* the ranks hold the same weights: rank 0 writes them; a sharded
   * optimizer (ddp's zero) is written by every rank, its own part */
  size_t soff, sn;
  ct_optimizer_shard(ct_learner_optimizer(L), &soff, &sn);
  gboolean sharded = sn != ct_model_n_params(ct_learner_model(L));
  if (sharded && ct_learner_world_size(L) > 1) {
    g_free(opt_path);
    g_autofree char *rank_leaf = g_strdup_printf("%s.opt.rank-%d.safetensors", name,
                                                 ct_learner_rank(L));
    opt_path = g_build_filename(out, rank_leaf, NULL);
  }
  gboolean wrote = ct_learner_rank(L) == 0;
  gboolean model_ok = !wrote || ct_model_save(ct_learner_model(L), path, meta, error);
  gboolean ok = model_ok && (!s->with_opt || (!sharded && ct_learner_rank(L) != 0) ||
                             ct_learner_save_optimizer(L, opt_path, error));
  g_hash_table_destroy(meta);
  /* the optimizer's file failed after the weights were written: neither
   * the new weights nor an older optimizer file is left, so that no half
   * of a pair is taken for the whole */
  if (!ok && model_ok && wrote && error && *error) {
    g_unlink(path);
    g_unlink(opt_path);
    char *msg = g_strdup_printf("%s; %s, written before it, was removed with it",
                                (*error)->message, path);
    g_free((*error)->message);
    (*error)->message = msg;
  }
  return ok;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  SaveModel *s = state;
  if (event == CT_EVENT_BEFORE_FIT) /* a monitor that is never logged: before any step */
    return s->every_epoch || s->at_end || ct_recorder_check_monitor(L, s->monitor, error)
             ? CT_STATUS_OK : CT_STATUS_ERROR;
  if (event == CT_EVENT_AFTER_FIT)
    return s->at_end && !save(s, L, s->fname, s->last_epoch, error) ? CT_STATUS_ERROR
                                                                     : CT_STATUS_OK;
  int epoch = s->last_epoch = ct_learner_epoch(L);
  if (s->every_epoch) {
    g_autofree char *name = g_strdup_printf("%s_%d", s->fname, epoch);
    return save(s, L, name, epoch, error) ? CT_STATUS_OK : CT_STATUS_ERROR;
  }
  if (s->at_end)
    return CT_STATUS_OK;
  double v;
  if (!ct_recorder_monitor(L, s->monitor, &v, error))
    return CT_STATUS_ERROR;
  if (s->less ? !(v + s->min_delta < s->best) : !(v - s->min_delta > s->best))
    return CT_STATUS_OK;
  s->best = v;
  if (ct_learner_rank(L) == 0)
    ct_learner_log(L, "Better model found at epoch %d with %s value: %g.", epoch, s->monitor, v);
  return save(s, L, s->fname, epoch, error) ? CT_STATUS_OK : CT_STATUS_ERROR;
}

static void *
create(const CtParams *params, GError **error)
{
  SaveModel *s = g_new0(SaveModel, 1);
  s->monitor = g_strdup(ct_params_get_string(params, "monitor"));
  s->fname = g_strdup(ct_params_get_string(params, "fname"));
  s->less = ct_monitor_less_is_better(ct_params_get_string(params, "comp"), s->monitor);
  s->min_delta = ct_params_get_double(params, "min_delta");
  s->every_epoch = ct_params_get_bool(params, "every_epoch");
  s->at_end = ct_params_get_bool(params, "at_end");
  s->with_opt = ct_params_get_bool(params, "with_opt");
  s->best = s->less ? INFINITY : -INFINITY;
  s->last_epoch = -1;
  if (!*s->fname || strchr(s->fname, '/')) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "fname '%s' must be a plain file name (it is written into the run folder)",
                s->fname);
    g_free(s->monitor);
    g_free(s->fname);
    g_free(s);
    return NULL;
  }
  return s;
}

static void
destroy(void *state)
{
  SaveModel *s = state;
  g_free(s->monitor);
  g_free(s->fname);
  g_free(s);
}

/* the best value, as C-locale text that round-trips */
static GBytes *
state_save(void *state)
{
  SaveModel *s = state;
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  char *text = g_strdup(g_ascii_dtostr(buf, sizeof buf, s->best));
  return g_bytes_new_take(text, strlen(text) + 1);
}

static gboolean
state_load(void *state, GBytes *bytes, GError **error)
{
  SaveModel *s = state;
  gsize len;
  const char *data = g_bytes_get_data(bytes, &len);
  g_autofree char *text = g_strndup(data, len);
  char *end;
  double best = g_ascii_strtod(text, &end);
  if (end == text || *end) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "save_model: bad saved state '%s'", text);
    return FALSE;
  }
  s->best = best;
  return TRUE;
}

static const CtParamSpec schema[] = {
  CT_PARAM("monitor", CT_PARAM_STRING, "valid_loss", "recorded value to watch", 0, 0, NULL),
  CT_PARAM("comp", CT_PARAM_STRING, "auto",
           "better is less or greater; auto: less for names with loss or error", 0, 0,
           "auto|less|greater"),
  CT_PARAM("min_delta", CT_PARAM_DOUBLE, "0", "smallest change that counts as improvement", 0,
           1e30, NULL),
  CT_PARAM("fname", CT_PARAM_STRING, "model", "file name in the run folder, without extension",
           0, 0, NULL),
  CT_PARAM("every_epoch", CT_PARAM_BOOL, "false", "save FNAME_<epoch> after every epoch", 0, 0,
           NULL),
  CT_PARAM("at_end", CT_PARAM_BOOL, "false", "save once after the fit, not the best", 0, 0, NULL),
  CT_PARAM("with_opt", CT_PARAM_BOOL, "false", "also save the optimizer state (FNAME.opt)", 0, 0,
           NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "save_model", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Saves the model when a monitored value improves (fastai SaveModelCallback)",
                 .order = 60,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_FIT),
                 .params = schema, .create = create, .destroy = destroy, .on_event = on_event,
                 .state_save = state_save, .state_load = state_load)

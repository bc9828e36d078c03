/* zero_shot: CLIP's zero-shot classification accuracy on the validation set.
 *
 * before_fit tokenizes every prompt and every class's validation caption,
 * so that a prompt too long for the context (or two classes whose captions
 * are the same) stops the run before its first step.  before_validate
 * builds one vector per class: every template filled with the class's
 * label is encoded by the text tower (at most max_batch prompts at a time), the normalised features are averaged over the templates and
 * normalised again, giving a (C, E) matrix.  (This overwrites the model's
 * text activations, which is harmless before the first validation batch.)
 *
 * The loop hands out tokens, not labels, so each validation sample's class
 * is found from its caption: labelled data (idx, image_folder) captions
 * validation samples with the data's FIRST template, so LABEL_TEMPLATE
 * (default: data.templates[0]) filled with each label is tokenized as the
 * data does, and every validation token row must equal exactly one of them.
 * A class's label is its entry in class_names, mapped through the recipe's
 * data.captions when that has the name as a key (as the data does).
 *
 * Synthetic data has no tokenizer: the run then fails in before_fit.
 *
 * Per batch, logits = 100 image . class^T; a sample counts for top-k when
 * its class's 0-based position in a stable descending sort of its logits
 * is below k.  Logs zero_shot_top1 and zero_shot_top<top_k>. */
#include <cliptrain/plugin.h>
#include <cliptrain/tokenizer.h>

#include <string.h>

typedef struct {
  char **class_names, **templates, *label_template;
  int top_k;
  char *topk_name;
  int C, E, T;
  float *classes;   /* (C, E) */
  int32_t *labels;  /* (C, T) tokens of each class's validation caption */
  int32_t *prompts; /* (C * NT, T) tokens of every class's prompts, NT templates */
  float *logits;    /* (max_batch, C) */
  int64_t n, top1, topk;
} ZeroShot;

/* Tokenize every class's validation caption and prompts (before_fit). */
static gboolean
tokenize_classes(ZeroShot *s, CtLearner *L, GError **error)
{
  CtTokenizer *tok = ct_learner_tokenizer(L);
  CtModel *m = ct_learner_model(L);
  const char *tr = ct_learner_recipe_value(L, "data.truncate");
  gboolean truncate = tr && strcmp(tr, "true") == 0;
  const char *lt = *s->label_template ? s->label_template
                   : ct_learner_recipe_value(L, "data.templates.0")
                     ? ct_learner_recipe_value(L, "data.templates.0")
                     : s->templates[0];
  int C = s->C, NT = (int) g_strv_length(s->templates), P = C * NT;
  int T = s->T = ct_model_config(m)->context_length;
  s->labels = g_renew(int32_t, s->labels, (size_t) C * T);
  s->prompts = g_renew(int32_t, s->prompts, (size_t) P * T);
  gboolean ok = TRUE;
  for (int c = 0; c < C && ok; c++) {
    g_autofree char *key = g_strconcat("data.captions.", s->class_names[c], NULL);
    const char *label = ct_learner_recipe_value(L, key) ? ct_learner_recipe_value(L, key)
                                                        : s->class_names[c];
    g_autofree char *caption = ct_template_fill(lt, label);
    ok = ct_tokenizer_tokenize(tok, caption, T, truncate, s->labels + (size_t) c * T, error);
    for (int t = 0; t < NT && ok; t++) {
      g_autofree char *prompt = ct_template_fill(s->templates[t], label);
      ok = ct_tokenizer_tokenize(tok, prompt, T, truncate,
                                 s->prompts + ((size_t) c * NT + t) * T, error);
    }
    for (int d = 0; d < c && ok; d++)
      if (memcmp(s->labels + (size_t) d * T, s->labels + (size_t) c * T, sizeof(int32_t) * T) == 0) {
        g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                    "classes '%s' and '%s' give the same caption '%s': labels cannot be told apart",
                    s->class_names[d], s->class_names[c], caption);
        ok = FALSE;
      }
  }
  if (!ok) {
    g_prefix_error(error, "zero_shot: ");
    const char *vocab = ct_learner_recipe_value(L, "data.vocab");
    if (g_str_has_prefix((*error)->message, "zero_shot: caption") && (!vocab || !*vocab)) {
      /* a learned vocabulary splits words the captions lack into bytes */
      char *msg = g_strconcat((*error)->message, " (the BPE merges were learned from the "
                            "training captions, data.templates: a word they lack takes a token a "
                            "byte; add it to the data's templates, or set data.vocab)", NULL);
      g_free((*error)->message);
      (*error)->message = msg;
    }
  }
  return ok;
}

/* The (C, E) class vectors from the prompts (before_validate). */
static gboolean
build_classes(ZeroShot *s, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  int C = s->C, NT = (int) g_strv_length(s->templates);
  int E = s->E = ct_model_config(m)->embed_dim;
  s->classes = g_renew(float, s->classes, (size_t) C * E);
  s->logits = g_renew(float, s->logits, (size_t) ct_model_max_batch(m) * C);
  if (ct_model_class_vectors(m, s->prompts, C, NT, s->classes, error))
    return TRUE;
  g_prefix_error(error, "zero_shot: ");
  return FALSE;
}

/* Score one validation batch. */
static gboolean
score_batch(ZeroShot *s, CtLearner *L, GError **error)
{
  int B = ct_learner_batch_size(L), C = s->C, T = s->T, E = s->E;
  if (B == 0)
    return TRUE; /* this rank's share of a short last batch */
  const int32_t *tokens = ct_learner_tokens(L);
  ct_sgemm(FALSE, TRUE, B, C, E, 100.0f,
              ct_learner_image_features(L), E, s->classes, E, 0.0f, s->logits, C);
  for (int b = 0; b < B; b++) {
    const int32_t *row = tokens + (size_t) b * T;
    int truth = 0;
    while (truth < C && memcmp(row, s->labels + (size_t) truth * T, sizeof(int32_t) * T) != 0)
      truth++;
    if (truth == C) {
      CtTokenizer *tok = ct_learner_tokenizer(L);
      int len = 1; /* the text between the start and end tokens */
      while (len < T && row[len] != ct_tokenizer_eot(tok) && row[len] != 0)
        len++;
      g_autofree char *text = ct_tokenizer_decode(tok, row + 1, (size_t) (len - 1));
      g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                  "validation batch %d, sample %d: caption '%s' is none of the classes' "
                  "captions; zero_shot needs labelled validation data whose captions are the "
                  "label template filled with one of class_names",
                  ct_learner_iter(L), b, g_strstrip(text));
      return FALSE;
    }
    int r = ct_class_rank(s->logits + (size_t) b * C, C, truth);
    s->top1 += r == 0;
    s->topk += r < s->top_k;
  }
  s->n += B;
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  ZeroShot *s = state;
  if (event == CT_EVENT_BEFORE_FIT) {
    if (!ct_learner_tokenizer(L)) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "zero_shot needs labelled data with a tokenizer (dataset idx or image_folder), "
                  "not synthetic data");
      return CT_STATUS_ERROR;
    }
    ct_recorder_declare(ct_learner_recorder(L), "zero_shot_top1");
    if (s->top_k > 1)
      ct_recorder_declare(ct_learner_recorder(L), s->topk_name);
    return tokenize_classes(s, L, error) ? CT_STATUS_OK : CT_STATUS_ERROR;
  } else if (event == CT_EVENT_BEFORE_VALIDATE) {
    s->n = s->top1 = s->topk = 0;
    if (!build_classes(s, L, error))
      return CT_STATUS_ERROR;
  } else if (event == CT_EVENT_AFTER_PRED) {
    if (!ct_learner_training(L) && !score_batch(s, L, error))
      return CT_STATUS_ERROR;
  } else if (event == CT_EVENT_AFTER_VALIDATE) {
    /* the counts of every rank's shard */
    int64_t counts[3] = { s->n, s->top1, s->topk };
    if (!ct_comm_allreduce(ct_learner_comm(L), counts, 3, CT_COMM_I64, CT_COMM_SUM, error))
      return CT_STATUS_ERROR;
    s->n = counts[0];
    s->top1 = counts[1];
    s->topk = counts[2];
    if (s->n == 0)
      return CT_STATUS_OK;
    CtRecorder *rec = ct_learner_recorder(L);
    ct_recorder_log(rec, "zero_shot_top1", (double) s->top1 / s->n);
    if (s->top_k > 1)
      ct_recorder_log(rec, s->topk_name, (double) s->topk / s->n);
  }
  return CT_STATUS_OK;
}

static void
destroy(void *state)
{
  ZeroShot *s = state;
  g_strfreev(s->class_names);
  g_strfreev(s->templates);
  g_free(s->label_template);
  g_free(s->topk_name);
  g_free(s->classes);
  g_free(s->labels);
  g_free(s->prompts);
  g_free(s->logits);
  g_free(s);
}

static void *
create(const CtParams *params, GError **error)
{
  ZeroShot *s = g_new0(ZeroShot, 1);
  s->class_names = g_strdupv((char **) ct_params_get_list(params, "class_names"));
  s->templates = g_strdupv((char **) ct_params_get_list(params, "templates"));
  s->label_template = g_strdup(ct_params_get_string(params, "label_template"));
  s->top_k = (int) ct_params_get_int(params, "top_k");
  s->topk_name = g_strdup_printf("zero_shot_top%d", s->top_k);
  s->C = (int) g_strv_length(s->class_names);
  const char *bad = NULL;
  for (char **t = s->templates; *t && !bad; t++)
    if (!strstr(*t, "{label}"))
      bad = *t;
  if (s->C == 0)
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "class_names: the list is empty");
  else if (!s->templates[0])
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "templates: the list is empty");
  else if (bad)
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "templates: '%s' has no {label}", bad);
  else if (*s->label_template && !strstr(s->label_template, "{label}"))
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "label_template: '%s' has no {label}",
                s->label_template);
  else
    return s;
  destroy(s);
  return NULL;
}

static const CtParamSpec schema[] = {
  CT_PARAM("class_names", CT_PARAM_LIST, NULL,
           "the labels, as the data names its classes (mapped through data.captions)", 0, 0, NULL),
  CT_PARAM("templates", CT_PARAM_LIST, "['a photo of a {label}.']",
           "prompts averaged per class", 0, 0, NULL),
  CT_PARAM("label_template", CT_PARAM_STRING, "",
           "the validation captions' template (empty: the data's first)", 0, 0, NULL),
  CT_PARAM("top_k", CT_PARAM_INT, "5", "also log top-k accuracy", 1, 1e6, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "zero_shot", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Zero-shot top-1 and top-k accuracy of the validation images from class prompts",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_VALIDATE) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_VALIDATE),
                 .run = CT_RUN_VALID, .params = schema, .create = create, .destroy = destroy,
                 .on_event = on_event)

/* retrieval_at_k: the fastai/self_supervised CLIP module's RetrievalAtK,
 * over the whole validation set.
 *
 * Collects the validation image and text features (after_pred), then in
 * after_validate ranks, for each image i, its own caption among all the
 * captions by similarity s_ij = img_i . txt_j (text_to_image: each caption's
 * own image among all the images).  The 0-based rank is i's position in a
 * stable descending sort of row i, as the fastai/self_supervised CLIP
 * module's argsort:
 *
 *   r_i = #{j : s_ij > s_ii} + #{j < i : s_ij == s_ii}
 *
 * so a caption tied with the true one counts as ahead only when it comes
 * first in the validation set.  Rows are scored CHUNK at a time into a
 * (chunk, N) buffer; no N x N matrix is ever held.
 *
 *   k = K (>= 1): R@K = mean(r < K)            retrieval_at_K
 *   k = mean:     mean(r) + 1                   mean_retrieval_ranking
 *   k = median:   floor(median(r)) + 1          median_retrieval_ranking
 *
 * With a direction, open_clip's names: image_to_text_R@K,
 * image_to_text_mean_rank, image_to_text_median_rank (text_to_image_...).
 *
 * hit: exact counts only the sample's own caption (or image).  hit: class
 * counts every sample whose caption has the same token ids as its own:
 * labelled data (idx, image_folder) captions validation samples with the
 * first template filled with the class, so that is a sample of the same
 * class, and r_i is the rank of the best-placed one.  Its names start
 * with class_ (class_retrieval_at_5, image_to_text_class_R@5).  auto
 * (the default) is class for idx and image_folder data, else exact.
 * Captions are compared by a 64-bit FNV-1a hash of their token ids.
 * Non-finite features give NaN (null in metrics.jsonl).  With several ranks
 * each batch's rows are all-gathered in rank order, which is the order of
 * the global batch: every rank ranks the same set as one process would. */
#include <cliptrain/plugin.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RANK_K_MEAN 0
#define RANK_K_MEDIAN (-1)
#define RANK_CHUNK 256
#define RANK_BUF_FLOATS ((size_t) 1 << 24) /* 64 MiB of scores at most */

enum { HIT_AUTO, HIT_EXACT, HIT_CLASS };

typedef struct {
  int k; /* >= 1, RANK_K_MEAN or RANK_K_MEDIAN */
  gboolean t2i;
  int hit;          /* HIT_EXACT or HIT_CLASS once before_fit has run */
  char *dir;        /* the direction parameter */
  char *name;       /* what the recorder logs */
  float *img, *txt; /* (cap, E) each; n rows used */
  int64_t *group;   /* (cap): hash of each sample's caption tokens */
  size_t n, cap;
  int E;
} Retrieval;

/* Rows of (CHUNK, N) scores that fit the buffer budget. */
static size_t
rank_chunk(size_t n)
{
  return MAX((size_t) 1, MIN((size_t) RANK_CHUNK, RANK_BUF_FLOATS / MAX(n, (size_t) 1)));
}

/* ranks[i] = position of key i in the stable descending sort of
 * q_i . k_j over j.  Q and K are (n, e); BUF holds chunk * n floats.
 * With GROUP (n), every key of i's group is a hit: the rank of the
 * best-placed one, h (highest score, first on ties), is the number of
 * keys of other groups ahead of it. */
static void
compute_ranks_grouped(const float *q, const float *k, const int64_t *group, size_t n, int e,
                      size_t chunk, float *buf, int64_t *ranks)
{
  for (size_t r0 = 0; r0 < n; r0 += chunk) {
    size_t m = MIN(chunk, n - r0);
    ct_sgemm(FALSE, TRUE, (int) m, (int) n, e, 1.0f,
                q + r0 * (size_t) e, e, k, e, 0.0f, buf, (int) n);
    for (size_t a = 0; a < m; a++) {
      const float *s = buf + a * n;
      size_t i = r0 + a, h = i;
      for (size_t j = 0; j < n; j++)
        if (group[j] == group[i] && (s[j] > s[h] || (s[j] == s[h] && j < h)))
          h = j;
      float d = s[h];
      int64_t r = 0;
      for (size_t j = 0; j < n; j++)
        if (group[j] != group[i])
          r += j < h ? s[j] >= d : s[j] > d;
      ranks[i] = r;
    }
  }
}

static void
compute_ranks(const float *q, const float *k, size_t n, int e, size_t chunk, float *buf,
              int64_t *ranks)
{
  for (size_t r0 = 0; r0 < n; r0 += chunk) {
    size_t m = MIN(chunk, n - r0);
    ct_sgemm(FALSE, TRUE, (int) m, (int) n, e, 1.0f,
                q + r0 * (size_t) e, e, k, e, 0.0f, buf, (int) n);
    for (size_t a = 0; a < m; a++) {
      const float *s = buf + a * n;
      size_t i = r0 + a;
      float d = s[i];
      int64_t r = 0;
      for (size_t j = 0; j < i; j++)
        r += s[j] >= d;
      for (size_t j = i + 1; j < n; j++)
        r += s[j] > d;
      ranks[i] = r;
    }
  }
}

static int
cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
  return (x > y) - (x < y);
}

/* The statistic for K over N ranks (sorted in place for the median). */
static double
rank_stat(int64_t *ranks, size_t n, int k)
{
  if (n == 0)
    return NAN;
  if (k == RANK_K_MEDIAN) {
    qsort(ranks, n, sizeof *ranks, cmp_i64);
    double med = n % 2 ? (double) ranks[n / 2] : 0.5 * ((double) ranks[n / 2 - 1] + ranks[n / 2]);
    return floor(med) + 1;
  }
  double sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += k == RANK_K_MEAN ? (double) ranks[i] : (double) (ranks[i] < k);
  return sum / n + (k == RANK_K_MEAN);
}

static gboolean
all_finite(const float *x, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i]))
      return FALSE;
  return TRUE;
}

/* Add this batch's rows of every rank, in rank order (the order of the
 * global batch), so that every rank ranks the whole validation set as one
 * process would. */
static gboolean
append(Retrieval *s, CtComm *comm, const float *img, const float *txt, const int64_t *grp,
       size_t B, int E, GError **error)
{
  if (s->E != E) { /* first batch */
    s->E = E;
    s->cap = 0;
  }
  int W = ct_comm_size(comm);
  size_t *counts = g_new(size_t, W), total = 0;
  if (!ct_comm_allgather_counts(comm, B * E, counts, error)) {
    g_free(counts);
    return FALSE;
  }
  for (int r = 0; r < W; r++)
    total += counts[r] / E;
  if (s->n + total > s->cap) {
    s->cap = MAX(2 * s->cap, MAX(s->n + total, (size_t) 256));
    s->img = g_renew(float, s->img, s->cap * E);
    s->txt = g_renew(float, s->txt, s->cap * E);
    s->group = g_renew(int64_t, s->group, s->cap);
  }
  gboolean ok = ct_comm_allgatherv(comm, img, B * E, s->img + s->n * E, NULL, CT_COMM_F32, error) &&
                ct_comm_allgatherv(comm, txt, B * E, s->txt + s->n * E, NULL, CT_COMM_F32, error) &&
                ct_comm_allgatherv(comm, grp, B, s->group + s->n, NULL, CT_COMM_I64, error);
  s->n += total;
  g_free(counts);
  return ok;
}

/* FNV-1a over each row's token ids: equal captions, equal groups */
static int64_t *
caption_groups(CtLearner *L, size_t B)
{
  int T = ct_model_config(ct_learner_model(L))->context_length;
  const int32_t *tok = ct_learner_tokens(L);
  int64_t *g = g_new(int64_t, MAX(B, (size_t) 1));
  for (size_t b = 0; b < B; b++) {
    uint64_t h = 14695981039346656037ull;
    for (int t = 0; t < T; t++) {
      uint32_t v = (uint32_t) tok[b * (size_t) T + t];
      for (int byte = 0; byte < 4; byte++)
        h = (h ^ ((v >> (8 * byte)) & 0xff)) * 1099511628211ull;
    }
    g[b] = (int64_t) h;
  }
  return g;
}

/* The metric's name, once hit is known. */
static char *
metric_name(const Retrieval *s)
{
  const char *cls = s->hit == HIT_CLASS ? "class_" : "";
  if (!*s->dir) /* the fastai/self_supervised CLIP module's names */
    return s->k == RANK_K_MEAN     ? g_strdup_printf("%smean_retrieval_ranking", cls)
           : s->k == RANK_K_MEDIAN ? g_strdup_printf("%smedian_retrieval_ranking", cls)
                                   : g_strdup_printf("%sretrieval_at_%d", cls, s->k);
  /* open_clip's */
  return s->k == RANK_K_MEAN     ? g_strdup_printf("%s_%smean_rank", s->dir, cls)
         : s->k == RANK_K_MEDIAN ? g_strdup_printf("%s_%smedian_rank", s->dir, cls)
                                 : g_strdup_printf("%s_%sR@%d", s->dir, cls, s->k);
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Retrieval *s = state;
  if (event == CT_EVENT_BEFORE_FIT) {
    int64_t nv = ct_learner_n_valid(L);
    if (s->k >= 1 && nv > 0 && s->k > nv) {
      g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                  "retrieval_at_k: k %d is larger than the validation set (%" G_GINT64_FORMAT
                  " samples): recall at %d would always be 1",
                  s->k, nv, s->k);
      return CT_STATUS_ERROR;
    }
    if (s->hit == HIT_AUTO) {
      const char *ds = ct_learner_recipe_value(L, "data.dataset");
      s->hit = ds && (!strcmp(ds, "idx") || !strcmp(ds, "image_folder")) ? HIT_CLASS : HIT_EXACT;
    }
    g_free(s->name);
    s->name = metric_name(s);
    ct_recorder_declare(ct_learner_recorder(L), s->name);
  } else if (event == CT_EVENT_BEFORE_VALIDATE) {
    s->n = 0;
  } else if (event == CT_EVENT_AFTER_PRED) {
    if (ct_learner_training(L))
      return CT_STATUS_OK;
    size_t B = (size_t) ct_learner_batch_size(L);
    int64_t *grp = caption_groups(L, B);
    gboolean ok = append(s, ct_learner_comm(L), ct_learner_image_features(L),
                         ct_learner_text_features(L), grp, B,
                         ct_model_config(ct_learner_model(L))->embed_dim, error);
    g_free(grp);
    if (!ok)
      return CT_STATUS_ERROR;
  } else if (event == CT_EVENT_AFTER_VALIDATE && s->n > 0) {
    double v = NAN;
    if (all_finite(s->img, s->n * s->E) && all_finite(s->txt, s->n * s->E)) {
      size_t chunk = rank_chunk(s->n);
      float *buf = g_new(float, chunk * s->n);
      int64_t *ranks = g_new(int64_t, s->n);
      if (s->hit == HIT_CLASS)
        compute_ranks_grouped(s->t2i ? s->txt : s->img, s->t2i ? s->img : s->txt, s->group,
                              s->n, s->E, chunk, buf, ranks);
      else
        compute_ranks(s->t2i ? s->txt : s->img, s->t2i ? s->img : s->txt, s->n, s->E, chunk,
                      buf, ranks);
      v = rank_stat(ranks, s->n, s->k);
      g_free(buf);
      g_free(ranks);
    }
    ct_recorder_log(ct_learner_recorder(L), s->name, v);
  }
  return CT_STATUS_OK;
}

static void *
create(const CtParams *params, GError **error)
{
  const char *k = ct_params_get_string(params, "k");
  const char *dir = ct_params_get_string(params, "direction");
  int64_t kv = 0;
  if (strcmp(k, "mean") == 0)
    kv = RANK_K_MEAN;
  else if (strcmp(k, "median") == 0)
    kv = RANK_K_MEDIAN;
  else if (!g_ascii_string_to_signed(k, 10, 1, G_MAXINT, &kv, NULL)) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "k: '%s' is not an integer >= 1, 'mean' or 'median'", k);
    return NULL;
  }
  const char *hit = ct_params_get_string(params, "hit");
  Retrieval *s = g_new0(Retrieval, 1);
  s->k = (int) kv;
  s->t2i = strcmp(dir, "text_to_image") == 0;
  s->dir = g_strdup(dir);
  s->hit = !strcmp(hit, "exact") ? HIT_EXACT : !strcmp(hit, "class") ? HIT_CLASS : HIT_AUTO;
  s->name = metric_name(s); /* auto is settled in before_fit */
  return s;
}

static void
destroy(void *state)
{
  Retrieval *s = state;
  g_free(s->img);
  g_free(s->txt);
  g_free(s->group);
  g_free(s->dir);
  g_free(s->name);
  g_free(s);
}

static const CtParamSpec schema[] = {
  CT_PARAM("k", CT_PARAM_STRING, "5", "an integer >= 1 (recall at k), mean or median (rank)", 0,
           0, NULL),
  CT_PARAM("direction", CT_PARAM_STRING, "",
           "empty: image to text, fastai/self_supervised's names; else open_clip's names", 0, 0,
           "|image_to_text|text_to_image"),
  CT_PARAM("hit", CT_PARAM_STRING, "auto",
           "exact: only the own caption counts; class: any with the same caption (the same class "
           "for idx and image_folder data; names get class_); auto: class for those, else exact",
           0, 0, "auto|exact|class"),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "retrieval_at_k", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "Recall at k or mean/median rank of the true caption over the validation set",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) |
                           CT_EVENT_BIT(CT_EVENT_BEFORE_VALIDATE) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_VALIDATE),
                 .run = CT_RUN_VALID, .params = schema, .create = create, .destroy = destroy,
                 .on_event = on_event)

/* retrieve.c: `cliptrain retrieve`, the images of an index written by
 * `cliptrain embed --images` nearest to a text query, by cosine similarity. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  size_t n, dim;
  float *feats;    /* (n, dim) */
  GPtrArray *ids;  /* (n) image paths */
  char *model_sha; /* of the model that made it, or NULL */
} Index;

static void
index_clear(Index *ix)
{
  g_free(ix->feats);
  if (ix->ids)
    g_ptr_array_unref(ix->ids);
  g_free(ix->model_sha);
}

static gboolean
index_load(Index *ix, const char *path, int dim, GError **error)
{
  CtSafetensors *st = ct_safetensors_open(path, error);
  if (!st)
    return FALSE;
  const char *kind = ct_safetensors_metadata(st, "kind");
  const char *ids = ct_safetensors_metadata(st, "ids");
  const CtTensorInfo *t = ct_safetensors_find(st, "features");
  JsonParser *p = json_parser_new();
  JsonArray *a = NULL;
  gboolean ok = FALSE;
  if (!t || !ids || !kind)
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: not an index written by 'cliptrain embed' (no %s)", path,
                !t ? "tensor 'features'" : !ids ? "metadata 'ids'" : "metadata 'kind'");
  else if (strcmp(kind, "image") != 0)
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "%s: the index holds %s features; retrieve needs one written by "
                "'cliptrain embed --images'", path, kind);
  else if (t->ndim != 2 || t->shape[1] != dim) {
    g_autofree char *shape = ct_shape_string(t->ndim, t->shape);
    g_set_error(error, CT_ERROR, CT_ERROR_SHAPE,
                "%s: the index's features have shape %s but the model's embed_dim is %d", path,
                shape, dim);
  } else if (t->shape[0] == 0)
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                "%s: the index holds no images (features of shape [0, %d]): nothing to "
                "retrieve from",
                path, dim);
  else if (!json_parser_load_from_data(p, ids, -1, NULL) ||
             !JSON_NODE_HOLDS_ARRAY(json_parser_get_root(p)) ||
             json_array_get_length(a = json_node_get_array(json_parser_get_root(p))) !=
               (guint) t->shape[0])
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                "%s: metadata 'ids' is not a JSON array of %" G_GINT64_FORMAT " paths", path,
                t->shape[0]);
  else {
    ix->n = (size_t) t->shape[0];
    ix->dim = (size_t) dim;
    ix->feats = g_new(float, ix->n * ix->dim);
    ix->ids = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < ix->n; i++) {
      const char *s = json_node_get_string(json_array_get_element(a, i));
      g_ptr_array_add(ix->ids, g_strdup(s ? s : "?"));
    }
    ok = ct_safetensors_read_f32(st, "features", ix->feats, ix->n * ix->dim, error);
    /* a NaN similarity sorts nowhere: refused here, naming the row */
    for (size_t i = 0; ok && i < ix->n * ix->dim; i++)
      if (!isfinite(ix->feats[i])) {
        g_autofree char *id = ct_cli_escape(ix->ids->pdata[i / ix->dim]);
        g_set_error(error, CT_ERROR, CT_ERROR_INVALID,
                    "%s: the features of row %zu (%s) are not finite (%g): embed it again",
                    path, i / ix->dim, id, ix->feats[i]);
        ok = FALSE;
      }
    ix->model_sha = g_strdup(ct_safetensors_metadata(st, "model_sha256"));
  }
  g_object_unref(p);
  ct_safetensors_free(st);
  return ok;
}

static const float *sort_sims;

static int
by_sim(const void *a, const void *b)
{
  float x = sort_sims[*(const size_t *) a], y = sort_sims[*(const size_t *) b];
  size_t i = *(const size_t *) a, j = *(const size_t *) b;
  return x < y ? 1 : x > y ? -1 : (i > j) - (i < j);
}

int
ct_cli_retrieve(int argc, char **argv)
{
  g_autofree char *model = NULL, *vocab = NULL, *index = NULL, *query = NULL;
  gint top_k = 5;
  gint vheads = 0, theads = 0;
  GOptionEntry entries[] = {
    CT_CLI_MODEL_OPTIONS(model, vocab, vheads, theads),
    { "index", 'i', 0, G_OPTION_ARG_FILENAME, &index,
      "Image features written by 'cliptrain embed --images' (safetensors)", "F" },
    { "query", 'q', 0, G_OPTION_ARG_STRING, &query, "Text to search for", "TEXT" },
    { "top-k", 'k', 0, G_OPTION_ARG_INT, &top_k, "Images shown (5)", "N" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "- the indexed images nearest to a text",
    "Prints 'SIMILARITY PATH' lines, most similar first (cosine similarity).\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    &error);
  const char *usage = error ? error->message
                      : !model ? "--model FILE|RUN_DIR is required"
                      : !index ? "--index F is required"
                      : !query ? "--query TEXT is required"
                      : argc > 1 ? "unexpected argument"
                      : top_k < 1 ? "--top-k must be positive" : NULL;
  if (!ok || usage) {
    ct_cli_error("retrieve: %s", usage);
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  Index ix = { 0 };
  g_autofree char *mpath = NULL; /* the file --model names */
  CtModel *m = ct_cli_model_open(model, 1, vheads, theads, &mpath, &error);
  CtTokenizer *tok = m ? ct_cli_tokenizer(mpath, vocab, m, &error) : NULL;
  ok = tok && index_load(&ix, index, ct_model_config(m)->embed_dim, &error);
  const char *const q[1] = { query };
  float *qf = ok ? ct_cli_encode_texts(m, tok, q, 1, ct_model_config(m)->context_length, FALSE,
                                       NULL, &error)
                 : NULL;
  int status = CT_EXIT_OK;
  g_autofree char *sha = qf && ix.model_sha ? ct_file_sha256(mpath, NULL) : NULL;
  if (sha && strcmp(sha, ix.model_sha) != 0)
    ct_cli_error("retrieve: warning: %s was written with other weights than %s", index, mpath);
  for (size_t e = 0; qf && e < ix.dim; e++)
    if (!isfinite(qf[e])) {
      g_set_error(&error, CT_ERROR, CT_ERROR_INVALID,
                  "the query's features are not finite (%g): the weights of %s are broken",
                  qf[e], mpath);
      g_clear_pointer(&qf, g_free);
    }
  if (!qf) {
    ct_cli_error("retrieve: %s", error->message);
    g_error_free(error);
    status = CT_EXIT_FAILURE;
  } else {
    float *sim = g_new(float, ix.n);
    size_t *order = g_new(size_t, ix.n);
    for (size_t i = 0; i < ix.n; i++) {
      double dot = 0, norm = 0;
      for (size_t e = 0; e < ix.dim; e++) {
        dot += (double) qf[e] * ix.feats[i * ix.dim + e];
        norm += (double) ix.feats[i * ix.dim + e] * ix.feats[i * ix.dim + e];
      }
      sim[i] = norm > 0 ? (float) (dot / sqrt(norm)) : 0.0f;
      order[i] = i;
    }
    sort_sims = sim;
    qsort(order, ix.n, sizeof *order, by_sim);
    for (size_t r = 0; r < MIN((size_t) top_k, ix.n); r++)
    {
      g_autofree char *id = ct_cli_escape(ix.ids->pdata[order[r]]);
      printf("%.4f %s\n", sim[order[r]], id);
    }
    g_free(sim);
    g_free(order);
    if (fflush(stdout) != 0 || ferror(stdout)) {
      ct_cli_error("retrieve: cannot write stdout");
      status = CT_EXIT_FAILURE;
    }
  }
  g_free(qf);
  index_clear(&ix);
  ct_tokenizer_free(tok);
  ct_model_free(m);
  return status;
}

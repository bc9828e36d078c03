/* zeroshot.c: `cliptrain zeroshot`, classify images by labels: each class
 * vector is the re-normalised mean over the templates of the normalised
 * text features; logits 100 image . class, softmax, top k. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Template T with every "{label}" (or "{}", OpenAI's form) replaced. */
static char *
fill(const char *t, const char *label)
{
  GString *s = g_string_new(NULL);
  while (*t) {
    size_t skip = g_str_has_prefix(t, "{label}") ? 7 : g_str_has_prefix(t, "{}") ? 2 : 0;
    if (skip) {
      g_string_append(s, label);
      t += skip;
    } else
      g_string_append_c(s, *t++);
  }
  return g_string_free(s, FALSE);
}

/* (n_labels, E) class vectors. */
static float *
class_vectors(CtModel *m, const CtTokenizer *tok, GPtrArray *labels, GPtrArray *templates,
              GError **error)
{
  size_t E = (size_t) ct_model_config(m)->embed_dim, nt = templates->len;
  float *cls = g_new0(float, labels->len * E);
  GPtrArray *prompts = g_ptr_array_new_with_free_func(g_free);
  for (guint c = 0; c < labels->len; c++)
    for (guint t = 0; t < nt; t++)
      g_ptr_array_add(prompts, fill(templates->pdata[t], labels->pdata[c]));
  float *f = ct_cli_encode_texts(m, tok, (const char *const *) prompts->pdata, prompts->len,
                                 ct_model_config(m)->context_length, TRUE, NULL, error);
  g_ptr_array_unref(prompts);
  if (!f) {
    g_free(cls);
    return NULL;
  }
  for (guint c = 0; c < labels->len; c++) {
    float *v = cls + c * E;
    double norm = 0;
    for (size_t t = 0; t < nt; t++)
      for (size_t e = 0; e < E; e++)
        v[e] += f[(c * nt + t) * E + e] / (float) nt;
    for (size_t e = 0; e < E; e++)
      norm += (double) v[e] * v[e];
    float inv = norm > 0 ? (float) (1.0 / sqrt(norm)) : 0.0f;
    for (size_t e = 0; e < E; e++)
      v[e] *= inv;
  }
  g_free(f);
  return cls;
}

static const double *sort_probs;

static int
by_prob(const void *a, const void *b)
{
  double x = sort_probs[*(const int *) a], y = sort_probs[*(const int *) b];
  return x < y ? 1 : x > y ? -1 : *(const int *) a - *(const int *) b;
}

static int
fail(GError *error)
{
  ct_cli_error("zeroshot: %s", error->message);
  g_error_free(error);
  return CT_EXIT_FAILURE;
}

int
ct_cli_zeroshot(int argc, char **argv)
{
  g_autofree char *model = NULL, *vocab = NULL, *labels_arg = NULL, *tfile = NULL;
  gint top_k = 5, batch = 32;
  gint vheads = 0, theads = 0;
  GOptionEntry entries[] = {
    CT_CLI_MODEL_OPTIONS(model, vocab, vheads, theads),
    { "labels", 'l', 0, G_OPTION_ARG_STRING, &labels_arg, "Class names, comma-separated",
      "A,B,..." },
    { "templates", 't', 0, G_OPTION_ARG_FILENAME, &tfile,
      "Prompt templates, one a line, with {label} (default: 'a photo of a {label}.')", "FILE" },
    { "top-k", 'k', 0, G_OPTION_ARG_INT, &top_k, "Labels shown per image (5)", "N" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Samples per forward pass (32)", "N" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "IMAGE... - zero-shot classification by labels",
    "Prints 'IMAGE: label p, label p, ...' per image, most probable first.\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    &error);
  GPtrArray *labels = g_ptr_array_new_with_free_func(g_free);
  if (labels_arg) {
    g_auto(GStrv) parts = g_strsplit(labels_arg, ",", -1);
    for (char **p = parts; *p; p++)
      if (*g_strstrip(*p))
        g_ptr_array_add(labels, g_strdup(*p));
  }
  const char *usage = error ? error->message
                      : !model ? "--model FILE|RUN_DIR is required"
                      : !labels->len ? "--labels A,B,... is required"
                      : argc < 2 ? "no images given"
                      : top_k < 1 ? "--top-k must be positive"
                      : batch < 1 ? "--batch must be positive" : NULL;
  if (!ok || usage) {
    ct_cli_error("zeroshot: %s", usage);
    g_clear_error(&error);
    g_ptr_array_unref(labels);
    return CT_EXIT_USAGE;
  }
  GPtrArray *templates = tfile ? ct_cli_read_lines(tfile, &error)
                               : g_ptr_array_new_with_free_func(g_free);
  if (templates && !tfile)
    g_ptr_array_add(templates, g_strdup("a photo of a {label}."));
  for (guint i = 0; templates && i < templates->len;)
    if (!*g_strstrip((char *) templates->pdata[i]))
      g_ptr_array_remove_index(templates, i);
    else
      i++;
  if (templates && !templates->len)
    g_set_error(&error, CT_ERROR, CT_ERROR_FORMAT, "%s: no templates in it", tfile);
  GPtrArray *paths = error ? NULL : ct_cli_image_paths(argv + 1, &error);
  g_autofree char *mpath = NULL; /* the file --model names */
  CtModel *m = paths ? ct_cli_model_open(model, batch, vheads, theads, &mpath, &error) : NULL;
  CtTokenizer *tok = m ? ct_cli_tokenizer(mpath, vocab, m, &error) : NULL;
  float *cls = tok ? class_vectors(m, tok, labels, templates, &error) : NULL;
  float *img = cls ? ct_cli_encode_images(m, (const char *const *) paths->pdata, paths->len,
                                          &error)
                   : NULL;
  int status = img ? CT_EXIT_OK : fail(error);
  size_t E = m ? (size_t) ct_model_config(m)->embed_dim : 0, C = labels->len;
  double *p = g_new(double, C);
  int *order = g_new(int, C);
  for (guint i = 0; img && i < paths->len; i++) {
    double mx = -INFINITY, sum = 0;
    for (size_t c = 0; c < C; c++) {
      double dot = 0;
      for (size_t e = 0; e < E; e++)
        dot += (double) img[i * E + e] * cls[c * E + e];
      p[c] = 100.0 * dot;
      mx = MAX(mx, p[c]);
      order[c] = (int) c;
    }
    for (size_t c = 0; c < C; c++)
      sum += p[c] = exp(p[c] - mx);
    for (size_t c = 0; c < C; c++)
      p[c] /= sum;
    sort_probs = p;
    qsort(order, C, sizeof *order, by_prob);
    printf("%s:", (const char *) paths->pdata[i]);
    for (size_t r = 0; r < MIN((size_t) top_k, C); r++)
      printf("%s %s %.4f", r ? "," : "", (const char *) labels->pdata[order[r]], p[order[r]]);
    putchar('\n');
  }
  if (status == CT_EXIT_OK && (fflush(stdout) != 0 || ferror(stdout))) {
    ct_cli_error("zeroshot: cannot write stdout");
    status = CT_EXIT_FAILURE;
  }
  g_free(p);
  g_free(order);
  g_free(img);
  g_free(cls);
  ct_tokenizer_free(tok);
  if (m)
    ct_model_free(m);
  if (paths)
    g_ptr_array_unref(paths);
  if (templates)
    g_ptr_array_unref(templates);
  g_ptr_array_unref(labels);
  return status;
}

/* zeroshot.c: `cliptrain zeroshot`, classify images by labels: each class
 * vector is the re-normalised mean over the templates of the normalised
 * text features; logits 100 image . class, softmax, top k.  With --data
 * RECIPE, over a labelled split of the recipe's data instead: top-1 and
 * top-5 accuracy, a per-class table and the confusion matrix. */
#include "config.h"

#include "cli/cli.h"
#include "setup/run.h"

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

/* The templates of --templates FILE: its non-blank lines, stripped, each
 * holding "{label}" (or "{}" when BRACES, OpenAI's form; the --data path
 * fills only "{label}", as the zero_shot metric does).  A line without
 * one would give every class the same prompt: refused with FILE:LINE.
 * NULL with ERROR set.  (transfer full) */
static GPtrArray *
read_templates(const char *file, gboolean braces, GError **error)
{
  GPtrArray *lines = ct_cli_read_lines(file, error);
  if (!lines)
    return NULL;
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < lines->len; i++) {
    char *t = g_strstrip((char *) lines->pdata[i]);
    if (!*t)
      continue;
    if (!strstr(t, "{label}") && !(braces && strstr(t, "{}"))) {
      g_autofree char *shown = ct_cli_escape(t);
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT,
                  "%s:%u: template '%.80s%s' has no {label}%s: every class would get the same "
                  "prompt",
                  file, i + 1, shown, strlen(shown) > 80 ? "..." : "", braces ? " (or {})" : "");
      g_ptr_array_unref(out);
      g_ptr_array_unref(lines);
      return NULL;
    }
    g_ptr_array_add(out, g_strdup(t));
  }
  g_ptr_array_unref(lines);
  if (!out->len) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: no templates in it", file);
    g_ptr_array_unref(out);
    return NULL;
  }
  return out;
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

/* NAME as a CSV field: quoted (RFC 4180) when it holds a comma, a quote or
 * a line break. */
static void
append_field(GString *s, const char *name)
{
  if (!strpbrk(name, ",\"\r\n")) {
    g_string_append(s, name);
    return;
  }
  g_string_append_c(s, '"');
  for (const char *p = name; *p; p++) {
    if (*p == '"')
      g_string_append_c(s, '"');
    g_string_append_c(s, *p);
  }
  g_string_append_c(s, '"');
}

/* The confusion matrix as CSV: a header "true\\predicted,CLASS,...", then
 * a row per true class: its name and its count per predicted class. */
static char *
confusion_csv(const CtZeroshotResult *r, int C)
{
  GString *s = g_string_new("true\\predicted");
  for (int c = 0; c < C; c++) {
    g_string_append_c(s, ',');
    append_field(s, r->classes[c]);
  }
  g_string_append_c(s, '\n');
  for (int t = 0; t < C; t++) {
    append_field(s, r->classes[t]);
    for (int c = 0; c < C; c++)
      g_string_append_printf(s, ",%" G_GINT64_FORMAT, r->confusion[(size_t) t * C + c]);
    g_string_append_c(s, '\n');
  }
  return g_string_free(s, FALSE);
}

/* zeroshot --data: the accuracy over a labelled split. */
static int
over_data(const char *recipe, char **sets, const char *model, const char *split, gint64 limit,
          GPtrArray *labels, GPtrArray *templates, const char *confusion, int threads)
{
  GError *error = NULL;
  g_autofree char *path = ct_cli_model_path(model, &error);
  if (!path)
    return fail(error);
  if (labels->len)
    g_ptr_array_add(labels, NULL);
  if (templates)
    g_ptr_array_add(templates, NULL);
  CtRunOptions o = { .recipe = recipe, .sets = (const char *const *) sets, .threads = threads };
  CtZeroshotOptions z = {
    .model = path, .split = split, .limit = limit,
    .labels = labels->len ? (const char *const *) labels->pdata : NULL,
    .templates = templates ? (const char *const *) templates->pdata : NULL,
  };
  CtZeroshotResult r;
  int rc = ct_run_zeroshot(&o, &z, &r, &error);
  if (rc != 0) {
    ct_cli_error("zeroshot: %s", error ? error->message : "failed");
    g_clear_error(&error);
    return rc;
  }
  int C = (int) g_strv_length(r.classes);
  printf("samples %" G_GINT64_FORMAT "\n", r.n);
  printf("top1 %.4f (%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT ")\n", (double) r.top1 / r.n,
         r.top1, r.n);
  printf("top5 %.4f (%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT ")\n", (double) r.top5 / r.n,
         r.top5, r.n);
  printf("\n%-24s %8s %8s\n", "class", "count", "top1");
  for (int c = 0; c < C; c++) {
    int64_t count = 0, hit = r.confusion[(size_t) c * C + c];
    for (int k = 0; k < C; k++)
      count += r.confusion[(size_t) c * C + k];
    g_autofree char *name = ct_cli_escape(r.classes[c]);
    if (count)
      printf("%-24s %8" G_GINT64_FORMAT " %8.4f\n", name, count, (double) hit / count);
    else
      printf("%-24s %8d %8s\n", name, 0, "-");
  }
  if (confusion) {
    g_autofree char *csv = confusion_csv(&r, C);
    if (!g_file_set_contents_full(confusion, csv, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0666, &error)) {
      rc = fail(error);
    }
  }
  if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
    ct_cli_error("zeroshot: cannot write stdout");
    rc = CT_EXIT_FAILURE;
  }
  ct_zeroshot_result_clear(&r);
  return rc;
}

int
ct_cli_zeroshot(int argc, char **argv)
{
  g_autofree char *model = NULL, *vocab = NULL, *labels_arg = NULL, *tfile = NULL;
  g_autofree char *data = NULL, *split = NULL, *confusion = NULL;
  g_auto(GStrv) sets = NULL;
  gint64 limit = 0;
  gint top_k = 5, batch = 32, threads = 0;
  gint vheads = 0, theads = 0;
  gboolean top_k_set = FALSE, batch_set = FALSE;
  GOptionEntry entries[] = {
    CT_CLI_MODEL_OPTIONS(model, vocab, vheads, theads),
    { "labels", 'l', 0, G_OPTION_ARG_STRING, &labels_arg, "Class names, comma-separated",
      "A,B,..." },
    { "templates", 't', 0, G_OPTION_ARG_FILENAME, &tfile,
      "Prompt templates, one a line, with {label} (default: 'a photo of a {label}.')", "FILE" },
    { "top-k", 'k', 0, G_OPTION_ARG_INT, &top_k, "Labels shown per image (5)", "N" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Samples per forward pass (32)", "N" },
    { "data", 'd', 0, G_OPTION_ARG_FILENAME, &data,
      "Classify a labelled split of this recipe's data instead of IMAGEs", "RECIPE.yaml" },
    { "split", 0, 0, G_OPTION_ARG_STRING, &split, "With --data: valid (default) or train",
      "SPLIT" },
    { "limit", 0, 0, G_OPTION_ARG_INT64, &limit, "With --data: the first N samples only", "N" },
    { "confusion", 0, 0, G_OPTION_ARG_FILENAME, &confusion,
      "With --data: write the confusion matrix (rows true, columns predicted)", "FILE.csv" },
    { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets,
      "With --data: override a recipe key (repeatable)", "KEY=VALUE" },
    { "threads", 0, 0, G_OPTION_ARG_INT, &threads, "With --data: BLAS threads (default: fit.threads)",
      "N" },
    { NULL },
  };
  for (int i = 1; i < argc; i++) { /* options that --data does not take */
    top_k_set = top_k_set || g_str_has_prefix(argv[i], "--top-k") || !strcmp(argv[i], "-k");
    batch_set = batch_set || g_str_has_prefix(argv[i], "--batch") || !strcmp(argv[i], "-b");
  }
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "IMAGE... - zero-shot classification by labels",
    "Prints 'IMAGE: label p, label p, ...' per image, most probable first.\n"
    "\n"
    "With --data RECIPE.yaml, classifies the samples of a labelled split of the\n"
    "recipe's data (idx, image_folder, or captions that name the classes) as\n"
    "the zero_shot metric does, in the recipe's batches, and prints top-1 and\n"
    "top-5 accuracy and a table of each class's count and top-1 accuracy.  The\n"
    "classes are --labels (label i is the i-th), else the recipe's zero_shot\n"
    "class_names, else the data's class names; the templates --templates, else\n"
    "zero_shot's, else data.templates.\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    &error);
  GPtrArray *labels = g_ptr_array_new_with_free_func(g_free);
  if (labels_arg) {
    g_auto(GStrv) parts = g_strsplit(labels_arg, ",", -1);
    for (char **p = parts; *p; p++)
      if (*g_strstrip(*p))
        g_ptr_array_add(labels, g_strdup(*p));
  }
  if (ok && data) {
    const char *usage = !model ? "--model FILE|RUN_DIR is required"
                        : argc > 1 ? "--data takes no IMAGE arguments"
                        : vocab ? "--data tokenizes with the recipe's data; drop --vocab"
                        : top_k_set || batch_set ? "--data scores top-1 and top-5 in the "
                                                   "recipe's batches; drop --top-k and --batch"
                        : split && strcmp(split, "valid") && strcmp(split, "train")
                          ? "--split must be valid or train"
                        : limit < 0 || threads < 0 ? "--limit and --threads must be positive"
                                                   : NULL;
    if (usage) {
      ct_cli_error("zeroshot: %s", usage);
      g_ptr_array_unref(labels);
      return CT_EXIT_USAGE;
    }
    GPtrArray *templates = tfile ? read_templates(tfile, FALSE, &error) : NULL;
    int rc;
    if (tfile && !templates) {
      rc = g_error_matches(error, CT_ERROR, CT_ERROR_FORMAT) ? CT_EXIT_USAGE : CT_EXIT_FAILURE;
      fail(error);
    } else
      rc = over_data(data, sets, model, split, limit, labels, templates, confusion, threads);
    if (templates)
      g_ptr_array_unref(templates);
    g_ptr_array_unref(labels);
    return rc;
  }
  const char *usage = error ? error->message
                      : !model ? "--model FILE|RUN_DIR is required"
                      : split || limit || confusion || sets || threads
                        ? "--split, --limit, --confusion, --set and --threads go with --data"
                      : !labels->len ? "--labels A,B,... is required (or --data RECIPE)"
                      : argc < 2 ? "no images given"
                      : top_k < 1 ? "--top-k must be positive"
                      : batch < 1 ? "--batch must be positive" : NULL;
  if (!ok || usage) {
    ct_cli_error("zeroshot: %s", usage);
    g_clear_error(&error);
    g_ptr_array_unref(labels);
    return CT_EXIT_USAGE;
  }
  GPtrArray *templates = tfile ? read_templates(tfile, TRUE, &error)
                               : g_ptr_array_new_with_free_func(g_free);
  if (!templates) {
    int rc = g_error_matches(error, CT_ERROR, CT_ERROR_FORMAT) ? CT_EXIT_USAGE : CT_EXIT_FAILURE;
    fail(error);
    g_ptr_array_unref(labels);
    return rc;
  }
  if (!tfile)
    g_ptr_array_add(templates, g_strdup("a photo of a {label}."));
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
    g_autofree char *shown = ct_cli_escape(paths->pdata[i]);
    printf("%s:", shown);
    for (size_t r = 0; r < MIN((size_t) top_k, C); r++) {
      g_autofree char *label = ct_cli_escape(labels->pdata[order[r]]);
      printf("%s %s %.4f", r ? "," : "", label, p[order[r]]);
    }
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

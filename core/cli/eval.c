/* eval.c: `cliptrain eval RECIPE --model M`, the recipe's validation set
 * through a trained model with the recipe's metrics, without training:
 * the values as JSON (stdout, or --out FILE written atomically) and as
 * lines "NAME VALUE". */
#include "config.h"

#include "cli/cli.h"
#include "setup/run.h"

#include <cliptrain/cliptrain.h>

#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>

static char *
result_json(const char *recipe, const char *model, const CtEvalResult *r)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "recipe");
  json_builder_add_string_value(b, recipe);
  json_builder_set_member_name(b, "model");
  json_builder_add_string_value(b, model);
  g_autofree char *sha = ct_file_sha256(model, NULL);
  if (sha) {
    json_builder_set_member_name(b, "model_sha256");
    json_builder_add_string_value(b, sha);
  }
  json_builder_set_member_name(b, "valid_samples");
  json_builder_add_int_value(b, r->n_samples);
  json_builder_set_member_name(b, "metrics");
  json_builder_begin_object(b);
  for (size_t i = 0; r->names[i]; i++) {
    json_builder_set_member_name(b, r->names[i]);
    if (isfinite(r->values[i]))
      json_builder_add_double_value(b, r->values[i]);
    else
      json_builder_add_null_value(b);
  }
  json_builder_end_object(b);
  json_builder_end_object(b);
  JsonGenerator *gen = json_generator_new();
  JsonNode *root = json_builder_get_root(b);
  json_generator_set_root(gen, root);
  json_generator_set_pretty(gen, TRUE);
  char *text = json_generator_to_data(gen, NULL);
  json_node_unref(root);
  g_object_unref(gen);
  g_object_unref(b);
  return text;
}

int
ct_cli_eval(int argc, char **argv)
{
  g_auto(GStrv) sets = NULL;
  g_autofree char *model = NULL, *out = NULL;
  int threads = 0;
  GOptionEntry entries[] = {
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &model,
      "Weights (safetensors), a training state, or a run folder", "FILE|RUN_DIR" },
    { "set", 's', 0, G_OPTION_ARG_STRING_ARRAY, &sets,
      "Override a recipe key, e.g. data.n_valid=1000 (repeatable)", "KEY=VALUE" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out,
      "Write the JSON here (atomically) instead of stdout", "FILE.json" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &threads, "BLAS threads (default: fit.threads)", "N" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries,
    "RECIPE.yaml - measure a trained model on a recipe's validation set",
    "cliptrain eval runs the recipe's validation set through the model with the\n"
    "recipe's metrics (zero_shot, retrieval_at_k, ...) and its loss callback\n"
    "(valid_loss), as the last validation of a fit would, without training and\n"
    "without a run folder.  The JSON ({\"metrics\": {NAME: VALUE, ...}, ...}) goes\n"
    "to stdout, or to --out with the values also printed as NAME VALUE lines.\n"
    "Exit status: 0 success, 1 failure, 2 bad usage or a bad recipe.\n",
    &error);
  const char *usage = error ? error->message
                      : argc < 2 ? "a recipe file is required: cliptrain eval RECIPE.yaml "
                                   "--model FILE|RUN_DIR"
                      : argc > 2 ? "only one recipe file is taken"
                      : !model ? "--model FILE|RUN_DIR is required"
                      : threads < 0 ? "--threads must be positive" : NULL;
  if (!ok || usage) {
    ct_cli_error("eval: %s", usage);
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  g_autofree char *path = ct_cli_model_path(model, &error);
  if (!path) {
    ct_cli_error("eval: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  CtRunOptions o = { .recipe = argv[1], .sets = (const char *const *) sets, .threads = threads };
  CtEvalResult r;
  int rc = ct_run_eval(&o, path, &r, &error);
  if (rc != 0) {
    ct_cli_error("eval: %s", error ? error->message : "failed");
    g_clear_error(&error);
    return rc;
  }
  g_autofree char *json = result_json(argv[1], path, &r);
  FILE *lines = out ? stdout : stderr;
  for (size_t i = 0; r.names[i]; i++)
    fprintf(lines, "%s %.6g\n", r.names[i], r.values[i]);
  if (out) {
    g_autofree char *text = g_strconcat(json, "\n", NULL);
    if (!g_file_set_contents_full(out, text, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0666, &error)) {
      ct_cli_error("eval: %s", error->message);
      g_clear_error(&error);
      rc = CT_EXIT_FAILURE;
    }
  } else {
    printf("%s\n", json);
  }
  if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
    ct_cli_error("eval: cannot write stdout");
    rc = CT_EXIT_FAILURE;
  }
  ct_eval_result_clear(&r);
  return rc;
}

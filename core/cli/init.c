/* init.c: `cliptrain init`, write a freshly initialised model's weights. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <stdio.h>

int
ct_cli_init(int argc, char **argv)
{
  /* GOption replaces a string without freeing it: no allocated default */
  g_autofree char *preset_arg = NULL, *out = NULL;
  gint64 seed = 0;
  GOptionEntry entries[] = {
    { "preset", 'p', 0, G_OPTION_ARG_STRING, &preset_arg, "Model preset (vitb32, vitl14, small, tiny, fashion, rn50, rn101, rn50x4, rn)", "NAME" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Seed of the initialisation (0)", "N" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Weights file to write (safetensors)", "FILE" },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "- write OpenAI-initialised CLIP weights",
    NULL, &error);
  if (!ok || argc > 1 || !out) {
    ct_cli_error("init: %s", error ? error->message
                             : argc > 1 ? "unexpected argument" : "--out FILE is required");
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  const char *preset = preset_arg ? preset_arg : "vitb32";
  CtConfig cfg;
  if (!ct_config_preset(preset, &cfg, &error)) {
    ct_cli_error("init: %s", error->message);
    g_error_free(error);
    return CT_EXIT_USAGE;
  }
  CtModel *m = ct_model_new(&cfg, 1, &error);
  if (!m) {
    ct_cli_error("init: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  ct_model_init_weights(m, (uint64_t) seed);
  GHashTable *meta = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  g_hash_table_insert(meta, "preset", g_strdup(preset));
  g_hash_table_insert(meta, "seed", g_strdup_printf("%" G_GINT64_FORMAT, seed));
  ok = ct_model_save(m, out, meta, &error);
  g_hash_table_unref(meta);
  ct_model_free(m);
  if (!ok) {
    ct_cli_error("init: %s", error->message);
    g_error_free(error);
    return CT_EXIT_FAILURE;
  }
  return CT_EXIT_OK;
}

/* model-arg.c: what --model names, for embed, zeroshot, retrieve and
 * eval: a weights file (safetensors, as save_model or init write them, or
 * OpenAI's state dict), a training state (state.safetensors, whose
 * parameters are "model."-prefixed), or a run folder: its
 * model.safetensors when there is one, else its state.safetensors. */
#include "config.h"

#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

char *
ct_cli_model_path(const char *arg, GError **error)
{
  if (!g_file_test(arg, G_FILE_TEST_IS_DIR))
    return g_strdup(arg);
  static const char *const leaves[] = { "model.safetensors", "state.safetensors" };
  for (size_t i = 0; i < G_N_ELEMENTS(leaves); i++) {
    char *p = g_build_filename(arg, leaves[i], NULL);
    if (g_file_test(p, G_FILE_TEST_IS_REGULAR))
      return p;
    g_free(p);
  }
  g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
              "%s: a folder without model.safetensors or state.safetensors: not a run folder "
              "with weights", arg);
  return NULL;
}

CtModel *
ct_cli_model_open(const char *arg, int max_batch, int vision_heads, int text_heads,
                  char **path, GError **error)
{
  *path = ct_cli_model_path(arg, error);
  if (!*path)
    return NULL;
  CtModel *m = ct_model_new_from_file_heads(*path, max_batch, vision_heads, text_heads, error);
  if (!m) {
    g_clear_pointer(path, g_free);
    return NULL;
  }
  ct_model_set_training(m, FALSE); /* inference: BatchNorm's running statistics */
  return m;
}

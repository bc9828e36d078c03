/* sections-keys.c: `cliptrain recipe --keys`: every key of the top level
 * and of the core's sections, from their schema tables, with the
 * defaults that another key chooses (optimizer.name, model.preset,
 * schedule.name) said beside the default one's. */
#include "config.h"

#include "setup/sections-private.h"

#include <cliptrain/schedule.h>

#include <string.h>

#define WIDTH 36 /* "optimizer.lock_image_freeze_bn_stats" */

/* KEY's value in DEFAULTS (key, value pairs), or NULL. */
static const char *
lookup(char **defaults, const char *key)
{
  for (char **d = defaults; d && d[0]; d += 2)
    if (strcmp(d[0], key) == 0)
      return d[1];
  return NULL;
}

/* "adam 1e-3, sgd 1e-2": the kinds whose default differs from SHOWN. */
static char *
optimizer_note(const char *key, const char *shown)
{
  static const char *const kinds[] = { "adam", "adamw", "sgd" };
  GString *note = g_string_new(NULL);
  for (size_t i = 0; i < G_N_ELEMENTS(kinds); i++) {
    g_auto(GStrv) d = ct_sections_optimizer_defaults(kinds[i]);
    const char *v = lookup(d, key);
    if (v && shown && strcmp(v, shown) != 0)
      g_string_append_printf(note, "%s%s %s", note->len ? ", " : "by name: ", kinds[i], v);
  }
  return g_string_free(note, note->len == 0);
}

/* "schedules: one_cycle 0.25, flat_cos 0.75", or without the values when
 * they agree.  *SHOWN gets the first schedule's default. */
static char *
schedule_note(const char *key, char **shown)
{
  GString *names = g_string_new(NULL), *with = g_string_new(NULL);
  gboolean same = TRUE;
  for (const char *const *s = ct_schedule_names(); *s; s++) {
    g_auto(GStrv) d = ct_sections_schedule_defaults(*s);
    const char *v = lookup(d, key);
    if (!v)
      continue;
    if (!*shown)
      *shown = g_strdup(v);
    same = same && strcmp(v, *shown) == 0;
    g_string_append_printf(names, "%s%s", names->len ? ", " : "", *s);
    g_string_append_printf(with, "%s%s %s", with->len ? ", " : "", *s, v);
  }
  char *note = g_strdup_printf("schedules: %s", same ? names->str : with->str);
  g_string_free(names, TRUE);
  g_string_free(with, TRUE);
  return note;
}

/* Each config key's value in each preset. */
static void
describe_presets(GString *out)
{
  const char *const *presets = ct_config_preset_names();
  g_string_append(out, "  model presets (model.preset fills these keys; any of them set in the "
                       "recipe goes over it):\n");
  g_string_append_printf(out, "    %-20s", "");
  for (const char *const *p = presets; *p; p++)
    g_string_append_printf(out, " %7s", *p);
  g_string_append_c(out, '\n');
  for (const char *const *k = ct_config_keys(); *k; k++) {
    g_string_append_printf(out, "    %-20s", *k);
    for (const char *const *p = presets; *p; p++) {
      g_auto(GStrv) d = ct_sections_model_defaults(*p);
      g_string_append_printf(out, " %7s", lookup(d, *k));
    }
    g_string_append_c(out, '\n');
  }
}

static void
describe_section(GString *out, const CtSectionInfo *info)
{
  g_auto(GStrv) opt = ct_sections_optimizer_defaults("adamw");
  g_auto(GStrv) model = ct_sections_model_defaults("tiny");
  g_string_append_printf(out, "\n%s: %s\n", info->name, info->doc);
  for (const CtSectionKey *k = info->keys; k->spec.name; k++) {
    CtParamSpec spec = k->spec;
    g_autofree char *name = g_strconcat(info->name, ".", spec.name, NULL);
    g_autofree char *note = NULL, *shown = NULL;
    if (strcmp(info->name, "optimizer") == 0 && lookup(opt, spec.name)) {
      spec.default_value = lookup(opt, spec.name);
      note = optimizer_note(spec.name, spec.default_value);
    } else if (strcmp(info->name, "model") == 0 && lookup(model, spec.name)) {
      spec.default_value = lookup(model, spec.name);
      note = g_strdup("by preset (tiny's shown; table below)");
    } else if (strcmp(info->name, "schedule") == 0 && !spec.default_value) {
      note = schedule_note(spec.name, &shown);
      spec.default_value = shown;
    }
    ct_param_describe(out, name, WIDTH, &spec, note);
  }
  if (strcmp(info->name, "model") == 0)
    describe_presets(out);
}

char *
ct_sections_describe(void)
{
  GString *out = g_string_new(NULL);
  g_string_append(out,
                  "Every key of a recipe's top level and of its core sections: the key, its "
                  "type, its default,\nwhat it does, [its range] and (its choices).  A "
                  "plugin's parameters: cliptrain plugins NAME.\n\ntop level\n");
  for (const CtParamSpec *p = ct_top_level_keys; p->name; p++)
    ct_param_describe(out, p->name, WIDTH, p, NULL);
  for (const CtSectionInfo *info = ct_section_infos; info->name; info++)
    describe_section(out, info);
  return g_string_free(out, FALSE);
}

/* optim-setup.c: optimizer and schedule from their recipe sections.
 *
 *   optimizer: {name: adam|adamw|sgd, lr, beta1, beta2, eps, weight_decay,
 *               no_decay: [globs], lr_mult: {glob: factor}, freeze: [globs],
 *               lock_image, lock_image_unlocked, lock_image_unlocked_groups,
 *               lock_image_freeze_bn_stats, lock_text, lock_text_unlocked,
 *               lock_text_unlocked_layers, lock_norms, layer_decay: {tower: d}}
 *   schedule:  {name: const|one_cycle|flat_cos|warmup_cosine|const_cooldown,
 *               and that schedule's parameters}
 * Defaults are the chosen kind's (fastai's Adam, open_clip's AdamW,
 * fastai's SGD) and the chosen schedule's (sections.c). */
#include "config.h"

#include "setup/optim-setup.h"

#include <math.h>
#include <string.h>

static gboolean
no_match(GError **error, const char *where, const char *what, const char *glob)
{
  g_autofree char *shown = ct_quote_cut(glob);
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: optimizer.%s: '%s' matches no tensor",
              where, what, shown);
  return FALSE;
}

CtOptimizer *
ct_optim_build(const CtOptimizerSection *o, CtModel *model, GError **error)
{
  CtOptimizer *opt = ct_optimizer_new(model, o->name, error);
  if (!opt)
    return NULL;
  const struct {
    const char *name;
    size_t offset;
  } hparams[] = { { "lr", offsetof(CtOptimizerSection, lr) },
                  { "beta1", offsetof(CtOptimizerSection, beta1) },
                  { "beta2", offsetof(CtOptimizerSection, beta2) },
                  { "eps", offsetof(CtOptimizerSection, eps) },
                  { "weight_decay", offsetof(CtOptimizerSection, weight_decay) } };
  for (size_t i = 0; i < G_N_ELEMENTS(hparams); i++) {
    if (isnan(ct_optimizer_get(opt, hparams[i].name))) /* not a parameter of this kind (sgd) */
      continue;
    double v = *(const double *) ((const char *) o + hparams[i].offset);
    if (!ct_optimizer_set(opt, hparams[i].name, v, error)) {
      /* at the value's position, as the recipe's own range checks say it */
      g_prefix_error(error, "%s: optimizer.%s: ", ct_section_where(&o->base, hparams[i].offset),
                     hparams[i].name);
      goto fail;
    }
  }
  CtPrecision sp;
  if (!ct_precision_from_name(o->state_precision, &sp, error) ||
      !ct_optimizer_set_state_precision(opt, sp, error))
    goto fail;
  ct_optimizer_set_no_decay(opt, (const char *const *) o->no_decay.values);
  for (size_t i = 0; i < o->lr_mult.n; i++) {
    double f;
    if (!ct_recipe_parse_double(o->lr_mult.values[i], o->lr_mult.where[i], &f, error))
      goto fail;
    if (ct_optimizer_set_lr_mult(opt, o->lr_mult.keys[i], f) == 0 &&
        !no_match(error, o->lr_mult.where[i], "lr_mult", o->lr_mult.keys[i]))
      goto fail;
  }
  for (size_t i = 0; i < o->freeze.n; i++)
    if (ct_optimizer_freeze(opt, o->freeze.values[i]) == 0 &&
        !no_match(error, o->freeze.where[i], "freeze", o->freeze.values[i]))
      goto fail;
  /* tower locks: open_clip's groups, or the older count of blocks */
  const struct {
    const char *tower, *blocks_key, *groups_key;
    gboolean lock;
    int blocks, groups;
    size_t groups_at;
  } locks[] = {
    { "image", "lock_image_unlocked", "lock_image_unlocked_groups", o->lock_image,
      o->lock_image_unlocked, o->lock_image_unlocked_groups,
      offsetof(CtOptimizerSection, lock_image_unlocked_groups) },
    { "text", "lock_text_unlocked", "lock_text_unlocked_layers", o->lock_text,
      o->lock_text_unlocked, o->lock_text_unlocked_layers,
      offsetof(CtOptimizerSection, lock_text_unlocked_layers) },
  };
  for (size_t t = 0; t < G_N_ELEMENTS(locks); t++) {
    if (!locks[t].lock)
      continue;
    if (locks[t].blocks > 0 && locks[t].groups > 0) {
      g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                  "%s: optimizer.%s: give it or optimizer.%s (blocks), not both",
                  ct_section_where(&o->base, locks[t].groups_at), locks[t].groups_key,
                  locks[t].blocks_key);
      goto fail;
    }
    gboolean ok = locks[t].blocks > 0
                    ? ct_optimizer_lock_tower(opt, locks[t].tower, locks[t].blocks, o->lock_norms,
                                              error)
                    : ct_optimizer_lock_groups(opt, locks[t].tower, locks[t].groups,
                                               o->lock_norms, error);
    if (!ok)
      goto fail;
  }
  for (size_t i = 0; i < o->layer_decay.n; i++) {
    const char *tower = o->layer_decay.keys[i], *where = o->layer_decay.where[i];
    double d;
    if (!ct_recipe_parse_double(o->layer_decay.values[i], where, &d, error))
      goto fail;
    if (!ct_optimizer_set_layer_decay(opt, tower, d, error)) {
      g_prefix_error(error, "%s: optimizer.layer_decay.%s: ", where, tower);
      goto fail;
    }
  }
  /* what is frozen runs no backward; a locked ResNet's BatchNorm may
   * freeze its statistics too */
  static const char *const towers[] = { "image", "text" };
  for (size_t t = 0; t < G_N_ELEMENTS(towers); t++)
    if (!ct_model_set_frozen_groups(model, towers[t],
                                    ct_optimizer_frozen_groups(opt, towers[t]), error))
      goto fail;
  ct_model_set_freeze_bn_stats(model, o->lock_image && o->lock_image_freeze_bn_stats);
  return opt;
fail:
  ct_optimizer_free(opt);
  return NULL;
}

CtSchedule *
ct_schedule_build(const CtScheduleSection *s, double lr, GError **error)
{
  CtSchedule *sched = ct_schedule_new(s->name, error);
  if (!sched)
    return NULL;
  /* the parameters the section read: the schedule's own */
  for (const CtSectionKey *k = s->base.keys; k->spec.name; k++) {
    if (k->spec.type != CT_PARAM_DOUBLE)
      continue;
    double v = *(const double *) ((const char *) s + k->offset);
    if (!ct_schedule_set(sched, k->spec.name, v, error)) {
      g_prefix_error(error, "%s: schedule.%s: ", ct_section_where(&s->base, k->offset),
                     k->spec.name);
      ct_schedule_free(sched);
      return NULL;
    }
  }
  if (!ct_schedule_set(sched, "lr", lr, error)) {
    ct_schedule_free(sched);
    return NULL;
  }
  return sched;
}

/* ---------------------------------------------------------------- lr groups */

/* A tensor's group label: "image.block3", "text.stem", "logit_scale". */
static char *
group_label(const CtModel *m, size_t i)
{
  const char *tower;
  int g = ct_model_lock_group(m, i, &tower);
  if (g < 0)
    return g_strdup(ct_model_tensor(m, i)->name);
  int G = ct_model_n_lock_groups(m, tower), L = G - 2;
  if (strcmp(tower, "image") == 0 && ct_config_is_resnet(ct_model_config(m))) {
    static const char *const names[] = { "stem", "layer1", "layer2", "layer3", "layer4",
                                         "attnpool" };
    return g_strdup_printf("image.%s", names[g]);
  }
  if (g == 0)
    return g_strdup_printf("%s.stem", tower);
  if (g == G - 1)
    return g_strdup_printf("%s.proj", tower);
  if (g == L)
    return g_strdup_printf("%s.block%d+%s", tower, L - 1,
                           strcmp(tower, "image") == 0 ? "ln_post" : "ln_final");
  return g_strdup_printf("%s.block%d", tower, g - 1);
}

typedef struct {
  int tower, group; /* for the order: image, text, then the rest; bottom first */
  char *label;
  double mult;
  gboolean frozen, decays;
  size_t tensors, params;
} LrRow;

static gint
cmp_rows(gconstpointer a, gconstpointer b)
{
  const LrRow *x = a, *y = b;
  if (x->tower != y->tower)
    return x->tower - y->tower;
  if (x->group != y->group)
    return x->group - y->group;
  if (x->decays != y->decays)
    return y->decays - x->decays;
  return (x->mult > y->mult) - (x->mult < y->mult);
}

char *
ct_optim_describe_groups(const CtOptimizer *opt)
{
  CtModel *m = ct_optimizer_model(opt);
  double lr = ct_optimizer_get(opt, "lr"), wd = ct_optimizer_get(opt, "wd");
  GArray *rows = g_array_new(FALSE, TRUE, sizeof(LrRow));
  for (size_t i = 0; i < ct_model_n_tensors(m); i++) {
    char *label = group_label(m, i);
    double mult = ct_optimizer_lr_mult(opt, i);
    gboolean frozen = ct_optimizer_is_frozen(opt, i), decays = ct_optimizer_decays(opt, i);
    LrRow *row = NULL;
    for (guint r = 0; r < rows->len && !row; r++) {
      LrRow *x = &g_array_index(rows, LrRow, r);
      if (strcmp(x->label, label) == 0 && x->mult == mult && x->frozen == frozen &&
          x->decays == decays)
        row = x;
    }
    if (row) {
      g_free(label);
    } else {
      const char *tower;
      int g = ct_model_lock_group(m, i, &tower);
      LrRow fresh = { tower ? (strcmp(tower, "image") == 0 ? 0 : 1) : 2, g, label, mult, frozen,
                      decays, 0, 0 };
      g_array_append_val(rows, fresh);
      row = &g_array_index(rows, LrRow, rows->len - 1);
    }
    row->tensors++;
    row->params += ct_model_tensor(m, i)->numel;
  }
  g_array_sort(rows, cmp_rows);
  GString *out = g_string_new(NULL);
  g_string_append_printf(out, "# %s, lr %g, weight decay %g; lr_mult = optimizer.lr_mult x "
                              "layer decay\n",
                         ct_optimizer_kind(opt), lr, wd);
  g_string_append_printf(out, "%-28s %10s %12s %6s %7s %11s  %s\n", "group", "lr_mult", "lr",
                         "wd", "tensors", "params", "state");
  size_t locked = 0, trained = 0;
  for (guint r = 0; r < rows->len; r++) {
    LrRow *x = &g_array_index(rows, LrRow, r);
    g_string_append_printf(out, "%-28s %10.6g %12.6g %6g %7zu %11zu  %s\n", x->label, x->mult,
                           lr * x->mult, x->decays ? wd : 0.0, x->tensors, x->params,
                           x->frozen ? "locked" : "trains");
    *(x->frozen ? &locked : &trained) += x->params;
    g_free(x->label);
  }
  g_string_append_printf(out, "# %zu parameters train, %zu locked; backward skips the lowest "
                              "%d image groups and the lowest %d text groups\n",
                         trained, locked, ct_model_frozen_groups(m, "image"),
                         ct_model_frozen_groups(m, "text"));
  g_array_free(rows, TRUE);
  return g_string_free(out, FALSE);
}

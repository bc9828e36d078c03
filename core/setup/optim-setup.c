/* optim-setup.c: optimizer and schedule from their recipe sections.
 *
 *   optimizer: {name: adam|adamw|sgd, lr, beta1, beta2, eps, weight_decay,
 *               no_decay: [globs], lr_mult: {glob: factor}, freeze: [globs],
 *               lock_image, lock_image_unlocked, lock_text,
 *               lock_text_unlocked, lock_norms}
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
  const struct {
    const char *tower;
    gboolean lock;
    int unlocked;
  } locks[] = { { "image", o->lock_image, o->lock_image_unlocked },
                { "text", o->lock_text, o->lock_text_unlocked } };
  for (size_t t = 0; t < G_N_ELEMENTS(locks); t++)
    if (locks[t].lock &&
        !ct_optimizer_lock_tower(opt, locks[t].tower, locks[t].unlocked, o->lock_norms, error))
      goto fail;
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

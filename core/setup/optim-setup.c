/* optim-setup.c: optimizer and schedule from a recipe.
 *
 *   optimizer: {name: adam|adamw|sgd, lr, beta1, beta2, eps, weight_decay,
 *               no_decay: [globs], lr_mult: {glob: factor}, freeze: [globs],
 *               lock_image, lock_image_unlocked, lock_text,
 *               lock_text_unlocked, lock_norms}
 *   schedule:  {name: const|one_cycle|flat_cos|warmup_cosine|const_cooldown,
 *               and that schedule's parameters}
 * Defaults are the chosen kind's (fastai's Adam, open_clip's AdamW,
 * fastai's SGD) and the chosen schedule's, written into the resolved
 * recipe. */
#include "config.h"

#include "setup/optim-setup.h"

#include <math.h>
#include <string.h>

typedef struct {
  const char *kind, *lr, *beta1, *beta2, *eps, *wd;
} KindDefaults;

static const KindDefaults kind_defaults[] = {
  { "adam", "1e-3", "0.9", "0.99", "1e-5", "0.01" },   /* fastai */
  { "adamw", "5e-4", "0.9", "0.98", "1e-6", "0.2" },   /* open_clip, ViT */
  { "sgd", "1e-2", "0.9", "0.99", "1e-5", "0" },       /* beta2, eps unused */
};

static const char *
scalar_or(CtRecipe *r, const char *path, const char *dflt)
{
  CtRNode *n = ct_recipe_lookup(r, path);
  return n && ct_rnode_kind(n) == CT_RNODE_SCALAR ? ct_rnode_scalar(n) : dflt;
}

/* "['a', 'b']" for a LIST default */
static char *
flow_list(const char *const *items)
{
  GString *s = g_string_new("[");
  for (const char *const *i = items; *i; i++)
    g_string_append_printf(s, "%s'%s'", i == items ? "" : ", ", *i);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

gboolean
ct_optim_check(CtRecipe *r, GError **error)
{
  CtRNode *node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), "optimizer", "default");
  const char *kind = scalar_or(r, "optimizer.name", "adamw");
  const KindDefaults *d = &kind_defaults[1];
  for (size_t i = 0; i < G_N_ELEMENTS(kind_defaults); i++)
    if (strcmp(kind_defaults[i].kind, kind) == 0)
      d = &kind_defaults[i];
  g_autofree char *no_decay = flow_list(ct_optimizer_default_no_decay());
  CtParamSpec schema[] = {
    CT_PARAM("name", CT_PARAM_STRING, "adamw", "optimizer", 0, 0, "adam|adamw|sgd"),
    CT_PARAM("lr", CT_PARAM_DOUBLE, d->lr, "learning rate (a schedule's peak)", 0, 10, NULL),
    CT_PARAM("beta1", CT_PARAM_DOUBLE, d->beta1, "first-moment decay (fastai's mom)", 0, 1, NULL),
    CT_PARAM("beta2", CT_PARAM_DOUBLE, d->beta2, "second-moment decay (sqr_mom); not sgd", 0, 1, NULL),
    CT_PARAM("eps", CT_PARAM_DOUBLE, d->eps, "denominator epsilon; not sgd", 0, 1, NULL),
    CT_PARAM("weight_decay", CT_PARAM_DOUBLE, d->wd, "decoupled weight decay", 0, 10, NULL),
    CT_PARAM("no_decay", CT_PARAM_LIST, no_decay, "tensors without weight decay (globs)", 0, 0, NULL),
    CT_PARAM("lr_mult", CT_PARAM_MAP, "{}", "glob -> learning-rate factor (later globs win)", 0, 0, NULL),
    CT_PARAM("freeze", CT_PARAM_LIST, "[]", "tensors never updated (globs)", 0, 0, NULL),
    CT_PARAM("lock_image", CT_PARAM_BOOL, "false", "freeze the image tower (open_clip's lock-image)", 0, 0, NULL),
    CT_PARAM("lock_image_unlocked", CT_PARAM_INT, "0", "with lock_image: last blocks left trainable", 0, 1e6, NULL),
    CT_PARAM("lock_text", CT_PARAM_BOOL, "false", "freeze the text tower (lock-text)", 0, 0, NULL),
    CT_PARAM("lock_text_unlocked", CT_PARAM_INT, "0", "with lock_text: last blocks left trainable", 0, 1e6, NULL),
    CT_PARAM("lock_norms", CT_PARAM_BOOL, "false", "keep a locked tower's layer norms trainable", 0, 0, NULL),
    CT_PARAM("state_precision", CT_PARAM_STRING, "fp32",
             "moments stored as fp32, or bf16 (half the memory, stochastic rounding)", 0, 0,
             "fp32|bf16"),
    CT_PARAM("step_in_backward", CT_PARAM_STRING, "auto",
             "step each block inside backward from a one-block scratch: no whole gradient "
             "buffer; auto: when every callback declares it uses no gradient",
             0, 0, "auto|true|false"),
    CT_PARAM_END,
  };
  if (!ct_recipe_check(r, node, "optimizer", schema, error))
    return FALSE;

  /* the schedule: its own parameters and defaults, lr excepted */
  node = ct_rnode_ensure_mapping(r, ct_recipe_root(r), "schedule", "default");
  const char *name = scalar_or(r, "schedule.name", "const");
  CtSchedule *probe = ct_schedule_new(name, NULL);
  if (!probe) /* let the check report the bad name with its position */
    probe = ct_schedule_new("const", NULL);
  g_autofree char *names = g_strjoinv("|", (char **) ct_schedule_names());
  GArray *spec = g_array_new(TRUE, TRUE, sizeof(CtParamSpec));
  GPtrArray *texts = g_ptr_array_new_with_free_func(g_free);
  CtParamSpec nm = CT_PARAM("name", CT_PARAM_STRING, "const", "learning-rate schedule", 0, 0,
                            names);
  g_array_append_val(spec, nm);
  for (const char *const *p = ct_schedule_params(probe); *p; p++) {
    if (!strcmp(*p, "lr") || !strcmp(*p, "lr_max"))
      continue; /* optimizer.lr */
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    char *def = g_strdup(g_ascii_dtostr(buf, sizeof buf, ct_schedule_get(probe, *p)));
    g_ptr_array_add(texts, def);
    CtParamSpec ps = CT_PARAM(*p, CT_PARAM_DOUBLE, def, "schedule parameter", 0, 0, NULL);
    g_array_append_val(spec, ps);
  }
  gboolean ok = ct_recipe_check(r, node, "schedule", (CtParamSpec *) spec->data, error);
  g_array_free(spec, TRUE);
  g_ptr_array_free(texts, TRUE);
  ct_schedule_free(probe);
  return ok;
}

static gboolean
no_match(GError **error, CtRNode *at, const char *what, const char *glob)
{
  g_set_error(error, CT_ERROR, CT_ERROR_CONFIG, "%s: optimizer.%s: '%s' matches no tensor",
              ct_rnode_where(at), what, glob);
  return FALSE;
}

CtOptimizer *
ct_optim_build(CtRecipe *r, CtModel *model, GError **error)
{
  CtOptimizer *opt = ct_optimizer_new(model, scalar_or(r, "optimizer.name", "adamw"), error);
  if (!opt)
    return NULL;
  static const char *const hparams[] = { "lr", "beta1", "beta2", "eps", "weight_decay", NULL };
  for (const char *const *h = hparams; *h; h++) {
    g_autofree char *path = g_strconcat("optimizer.", *h, NULL);
    double v;
    if (isnan(ct_optimizer_get(opt, *h)) || /* not a parameter of this kind (sgd) */
        !ct_rnode_to_double(ct_recipe_lookup(r, path), &v, NULL))
      continue;
    if (!ct_optimizer_set(opt, *h, v, error))
      goto fail;
  }
  CtPrecision sp;
  if (!ct_precision_from_name(scalar_or(r, "optimizer.state_precision", "fp32"), &sp, error) ||
      !ct_optimizer_set_state_precision(opt, sp, error))
    goto fail;
  CtRNode *list = ct_recipe_lookup(r, "optimizer.no_decay");
  GPtrArray *globs = g_ptr_array_new();
  for (size_t i = 0; i < ct_rnode_n_items(list); i++)
    g_ptr_array_add(globs, (gpointer) ct_rnode_scalar(ct_rnode_item(list, i)));
  g_ptr_array_add(globs, NULL);
  ct_optimizer_set_no_decay(opt, (const char *const *) globs->pdata);
  g_ptr_array_free(globs, TRUE);

  CtRNode *mult = ct_recipe_lookup(r, "optimizer.lr_mult");
  for (size_t i = 0; i < ct_rnode_n_items(mult); i++) {
    double f;
    CtRNode *v = ct_rnode_item(mult, i);
    if (!ct_rnode_to_double(v, &f, error))
      goto fail;
    if (ct_optimizer_set_lr_mult(opt, ct_rnode_key(mult, i), f) == 0 &&
        !no_match(error, v, "lr_mult", ct_rnode_key(mult, i)))
      goto fail;
  }
  CtRNode *freeze = ct_recipe_lookup(r, "optimizer.freeze");
  for (size_t i = 0; i < ct_rnode_n_items(freeze); i++) {
    CtRNode *v = ct_rnode_item(freeze, i);
    if (ct_optimizer_freeze(opt, ct_rnode_scalar(v)) == 0 &&
        !no_match(error, v, "freeze", ct_rnode_scalar(v)))
      goto fail;
  }
  gboolean norms = FALSE, lock;
  int64_t unlocked;
  ct_rnode_to_bool(ct_recipe_lookup(r, "optimizer.lock_norms"), &norms, NULL);
  static const char *const towers[] = { "image", "text" };
  for (int t = 0; t < 2; t++) {
    g_autofree char *lk = g_strdup_printf("optimizer.lock_%s", towers[t]);
    g_autofree char *un = g_strdup_printf("optimizer.lock_%s_unlocked", towers[t]);
    lock = FALSE;
    unlocked = 0;
    ct_rnode_to_bool(ct_recipe_lookup(r, lk), &lock, NULL);
    ct_rnode_to_int(ct_recipe_lookup(r, un), &unlocked, NULL);
    if (lock && !ct_optimizer_lock_tower(opt, towers[t], (int) unlocked, norms, error))
      goto fail;
  }
  return opt;
fail:
  ct_optimizer_free(opt);
  return NULL;
}

CtSchedule *
ct_schedule_build(CtRecipe *r, GError **error)
{
  CtSchedule *s = ct_schedule_new(scalar_or(r, "schedule.name", "const"), error);
  if (!s)
    return NULL;
  CtRNode *node = ct_recipe_lookup(r, "schedule");
  for (size_t i = 0; i < ct_rnode_n_items(node); i++) {
    const char *key = ct_rnode_key(node, i);
    double v;
    if (!strcmp(key, "name") || !ct_rnode_to_double(ct_rnode_item(node, i), &v, NULL))
      continue;
    if (!ct_schedule_set(s, key, v, error)) {
      g_prefix_error(error, "%s: schedule.%s: ", ct_rnode_where(ct_rnode_item(node, i)), key);
      ct_schedule_free(s);
      return NULL;
    }
  }
  double lr = 0;
  ct_rnode_to_double(ct_recipe_lookup(r, "optimizer.lr"), &lr, NULL);
  if (!ct_schedule_set(s, "lr", lr, error)) {
    ct_schedule_free(s);
    return NULL;
  }
  return s;
}

/* schedule.h: learning-rate (and momentum) schedules, evaluated per batch.
 *
 * A CtSchedule is made from a name and then given its parameters by name.
 * It is evaluated at (step, total_steps), step counting batches from 0 to
 * total_steps - 1 over the whole fit, and returns lr and, for schedules
 * that drive it, mom (NAN when the schedule leaves mom alone).  fastai's
 * schedules are functions of pct = step / total_steps; open_clip's of the
 * step.
 *
 * fastai's SchedCos(a, b)(pos) = a + (1 + cos(pi * (1 - pos))) * (b - a) / 2,
 * and combine_scheds([p, 1 - p], [s1, s2]) runs s1 over pct in [0, p) and
 * s2 over [p, 1], each at its own pos in [0, 1].
 *
 *   "const"          lr; with warmup > 0, open_clip's const_lr warmup first.
 *                    Parameters: lr (1e-3), warmup (0 steps).
 *   "one_cycle"      fastai's fit_one_cycle:
 *                      lr  SchedCos(lr/div, lr) then SchedCos(lr, lr/div_final)
 *                      mom SchedCos(mom_start, mom_mid) then
 *                          SchedCos(mom_mid, mom_end)
 *                    the first over pct < pct_start.  Parameters: lr
 *                    (alias lr_max, 1e-3), div (25), div_final (1e5),
 *                    pct_start (0.25), mom_start (0.95), mom_mid (0.85),
 *                    mom_end (0.95).
 *   "flat_cos"       fastai's fit_flat_cos: lr flat until pct_start, then
 *                    SchedCos(lr, lr/div_final); mom unchanged.
 *                    Parameters: lr (1e-3), pct_start (0.75), div_final (1e5).
 *   "warmup_cosine"  open_clip's cosine_lr: for step < warmup
 *                    lr * (step + 1) / warmup, then
 *                    0.5 * (1 + cos(pi * e / es)) * lr with e = step - warmup,
 *                    es = total_steps - warmup.  Parameters: lr (1e-3),
 *                    warmup (0 steps).
 *   "const_cooldown" open_clip's const_lr_cooldown: the warmup as above,
 *                    then lr until step total_steps - cooldown_steps, then
 *                    (1 - e/es)^cooldown_power * (lr - lr_end) + lr_end with
 *                    e = step - (total_steps - cooldown_steps),
 *                    es = cooldown_steps.  The warmup takes precedence.
 *                    Parameters: lr (1e-3), warmup (0), cooldown_steps (0),
 *                    cooldown_power (1), lr_end (0).
 *
 * Every parameter is a double; warmup and cooldown_steps must be whole.
 * Past total_steps, warmup_cosine and const_cooldown keep their final
 * value (open_clip never evaluates there). */
#ifndef CLIPTRAIN_SCHEDULE_H
#define CLIPTRAIN_SCHEDULE_H

#include <cliptrain/ct-common.h>
#include <cliptrain/optimizer.h>

G_BEGIN_DECLS

typedef struct CtSchedule CtSchedule;

/* NULL-terminated names of the schedules.  (transfer none) */
CT_API const char *const *ct_schedule_names(void);

/* Schedule NAME with its default parameters.  Fails (CT_ERROR_INVALID,
 * naming it) on an unknown name.  (transfer full): free with
 * ct_schedule_free(). */
CT_API CtSchedule *ct_schedule_new(const char *name, GError **error);
CT_API void ct_schedule_free(CtSchedule *sched);

/* The schedule's name.  (transfer none) */
CT_API const char *ct_schedule_name(const CtSchedule *sched);
/* NULL-terminated names of the schedule's parameters.  (transfer none) */
CT_API const char *const *ct_schedule_params(const CtSchedule *sched);

/* Set parameter PARAM.  Fails (CT_ERROR_INVALID, naming the parameter and
 * the schedule) on a parameter the schedule lacks or a value out of range:
 * lr, lr_end, cooldown_power finite and >= 0 (cooldown_power > 0); div,
 * div_final > 0; pct_start in [0, 1]; mom_* in [0, 1); warmup and
 * cooldown_steps whole and >= 0. */
CT_API gboolean ct_schedule_set(CtSchedule *sched, const char *param, double value,
                                GError **error);
/* Value of PARAM, NAN when the schedule lacks it. */
CT_API double ct_schedule_get(const CtSchedule *sched, const char *param);

/* lr at batch STEP (0-based) of TOTAL_STEPS (> 0); *MOM (may be NULL)
 * gets the momentum, or NAN when the schedule leaves it alone. */
CT_API double ct_schedule_eval(const CtSchedule *sched, int64_t step, int64_t total_steps,
                               double *mom);
/* The same at PCT = step / total_steps, for the schedules that are
 * functions of pct (const without warmup, one_cycle, flat_cos); NAN (and
 * *MOM NAN) for the others, whose warmup and cooldown count steps. */
CT_API double ct_schedule_eval_pct(const CtSchedule *sched, double pct, double *mom);

/* Evaluate at (STEP, TOTAL_STEPS) and set OPT's "lr" and, when the schedule
 * gives one, "mom".  Returns FALSE (with ERROR) when OPT refuses a value. */
CT_API gboolean ct_schedule_apply(const CtSchedule *sched, CtOptimizer *opt, int64_t step,
                                  int64_t total_steps, GError **error);

G_END_DECLS

#endif

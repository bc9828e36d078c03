/* optim.h: optimizers over a model's flat parameter buffer. */
#ifndef CLIPTRAIN_OPTIM_H
#define CLIPTRAIN_OPTIM_H

#include <cliptrain/ct-common.h>
#include <cliptrain/model.h>

G_BEGIN_DECLS

/* AdamW (decoupled weight decay), as torch.optim.AdamW:
 *   p -= lr * wd * p            (only tensors whose CtParamInfo.decay is set)
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) */
typedef struct {
  float lr, beta1, beta2, eps, weight_decay;
} CtAdamWParams;

typedef struct CtAdamW CtAdamW;

/* Moments for N parameters, zeroed.  (transfer full) */
CT_API CtAdamW *ct_adamw_new(size_t n, const CtAdamWParams *params);
CT_API void ct_adamw_free(CtAdamW *opt);
/* The hyper-parameters, changeable between steps.  (transfer none) */
CT_API CtAdamWParams *ct_adamw_params(CtAdamW *opt);
/* Steps taken so far. */
CT_API int64_t ct_adamw_step_count(const CtAdamW *opt);
/* For restoring a saved state. */
CT_API void ct_adamw_set_step_count(CtAdamW *opt, int64_t steps);
/* The moments, (n) each, in the model's parameter layout.  (transfer none) */
CT_API float *ct_adamw_exp_avg(CtAdamW *opt);
CT_API float *ct_adamw_exp_avg_sq(CtAdamW *opt);
/* One step on MODEL's parameters with its gradients.  N must equal the
 * model's ct_model_n_params(). */
CT_API void ct_adamw_step(CtAdamW *opt, CtModel *model);

G_END_DECLS

#endif

/* optimizer.h: a general optimizer over one model's flat parameters.
 *
 * A CtOptimizer updates the parameters of one CtModel from its gradients,
 * tensor by tensor (CtParamInfo), in one pass over memory per tensor.  It
 * keeps, per tensor, whether weight decay applies, a learning-rate
 * multiplier, whether the tensor is frozen and its own step count, as
 * fastai does: a tensor that was frozen starts its bias correction from
 * step 1 when it is unfrozen.
 *
 * Kinds ("lr", "mom", ... are the hyper-parameters, see below):
 *
 *   "adam"  fastai's Adam, decoupled weight decay applied first:
 *             p *= 1 - lr*wd                      (decayed tensors only)
 *             m  = mom*m + (1-mom)*g
 *             v  = sqr_mom*v + (1-sqr_mom)*g^2
 *             p -= lr * (m / (1 - mom^t)) / (sqrt(v / (1 - sqr_mom^t)) + eps)
 *           defaults: lr 1e-3, mom 0.9, sqr_mom 0.99, eps 1e-5, wd 0.01
 *   "adamw" torch.optim.AdamW as open_clip uses it: the same update,
 *           defaults: lr 1e-3, mom (beta1) 0.9, sqr_mom (beta2) 0.98,
 *           eps 1e-6, wd 0.2 (open_clip's ViT defaults)
 *   "sgd"   fastai's SGD with momentum, decoupled weight decay:
 *             p *= 1 - lr*wd;  buf = mom*buf + g;  p -= lr*buf
 *           defaults: lr 1e-3, mom 0.9, wd 0
 *
 * Here lr is the optimizer's lr times the tensor's multiplier and t is the
 * tensor's own step count.  Hyper-parameters are read at every step, so a
 * schedule may change them between steps (fastai's one_cycle changes mom);
 * the bias corrections use the current mom and sqr_mom.
 *
 * Nothing is allocated by ct_optimizer_step(); it runs on the calling
 * thread.  A CtOptimizer is not thread-safe. */
#ifndef CLIPTRAIN_OPTIMIZER_H
#define CLIPTRAIN_OPTIMIZER_H

#include <cliptrain/ct-common.h>
#include <cliptrain/model.h>

G_BEGIN_DECLS

typedef struct CtOptimizer CtOptimizer;

/* NULL-terminated names of the kinds: "adam", "adamw", "sgd".
 * (transfer none) */
CT_API const char *const *ct_optimizer_kinds(void);

/* An optimizer of KIND over MODEL's parameters, with the kind's default
 * hyper-parameters, the default weight-decay exclusions (see
 * ct_optimizer_set_no_decay()), every lr multiplier 1, nothing frozen and
 * zeroed state.  MODEL is borrowed (transfer none) and must outlive the
 * optimizer.  Fails (CT_ERROR_INVALID, naming the kind) on an unknown kind.
 * (transfer full): free with ct_optimizer_free(). */
CT_API CtOptimizer *ct_optimizer_new(CtModel *model, const char *kind, GError **error);
CT_API void ct_optimizer_free(CtOptimizer *opt);

/* The kind's name.  (transfer none) */
CT_API const char *ct_optimizer_kind(const CtOptimizer *opt);
/* The model given at creation.  (transfer none) */
CT_API CtModel *ct_optimizer_model(const CtOptimizer *opt);

/* ---- hyper-parameters ----
 * Names: "lr", "mom" (alias "beta1"), "sqr_mom" (alias "beta2"), "eps",
 * "wd" (alias "weight_decay").  "sgd" has no sqr_mom and no eps.
 * NULL-terminated canonical names that OPT's kind has.  (transfer none) */
CT_API const char *const *ct_optimizer_hyper_names(const CtOptimizer *opt);
/* Value of hyper-parameter NAME, or NAN when OPT's kind has none of that
 * name. */
CT_API double ct_optimizer_get(const CtOptimizer *opt, const char *name);
/* Set hyper-parameter NAME, taking effect at the next step.  Fails
 * (CT_ERROR_INVALID, naming the parameter) on a name the kind lacks or a
 * value out of range: lr, wd and eps must be finite and >= 0, mom and
 * sqr_mom in [0, 1). */
CT_API gboolean ct_optimizer_set(CtOptimizer *opt, const char *name, double value,
                                 GError **error);

/* ---- which tensors, how ----
 * GLOBs are g_pattern_match_simple() patterns ('*' and '?', '*' also
 * matches '.') over the whole tensor name, e.g. "visual.*",
 * "*.resblocks.11.*", "*.bias".
 *
 * Replace the weight-decay exclusions: tensors matching any of GLOBS (a
 * NULL-terminated array, copied) do not decay, all others do.  GLOBS NULL
 * restores the default list, which decays exactly the tensors whose
 * CtParamInfo.decay is set:
 *   "*ln_*.weight" (gains: ln_1, ln_2, ln_pre, ln_post, ln_final),
 *   "*.bias", "*_bias" (every bias, attn.in_proj_bias included),
 *   "logit_scale", "token_embedding.weight", "positional_embedding",
 *   "visual.positional_embedding", "visual.class_embedding"
 * i.e. only the weights of linear layers, conv1, visual.proj and
 * text_projection decay.  An empty array (GLOBS[0] == NULL) decays every
 * tensor.  Returns the number of tensors that do not decay. */
CT_API size_t ct_optimizer_set_no_decay(CtOptimizer *opt, const char *const *globs);
/* NULL-terminated default exclusions listed above.  (transfer none) */
CT_API const char *const *ct_optimizer_default_no_decay(void);

/* Parameter groups: tensors matching GLOB use lr * MULT (MULT finite and
 * >= 0).  A later call wins for the tensors it matches.  Returns the number
 * of tensors matched (0 usually means a typo in a recipe). */
CT_API size_t ct_optimizer_set_lr_mult(CtOptimizer *opt, const char *glob, double mult);

/* Freeze the tensors matching GLOB: ct_optimizer_step() leaves them and
 * their state alone (a tensor frozen from the start keeps zero moments and
 * a step count of 0).  Unfreezing resumes from the state the tensor had.
 * Each returns the number of tensors matched. */
CT_API size_t ct_optimizer_freeze(CtOptimizer *opt, const char *glob);
CT_API size_t ct_optimizer_unfreeze(CtOptimizer *opt, const char *glob);

/* open_clip's --lock-image / --lock-text with
 * --lock-image-unlocked-groups / --lock-text-unlocked-layers: freeze
 * TOWER's ("image" or "text") lock groups (ct_model_n_lock_groups: the
 * stem, the blocks, the last block with the final LayerNorm, the
 * projection; a ResNet's stem, layer1..4, attention pool) but its top
 * UNLOCKED_GROUPS; 0 freezes the whole tower, the group count or more
 * nothing.  With UNLOCK_NORMS every LayerNorm of the tower stays trainable
 * (HF text towers' freeze_layer_norm = False).  Only freezes: tensors it
 * leaves trainable keep their state.  Fails (CT_ERROR_INVALID) on another
 * TOWER or N < 0. */
CT_API gboolean ct_optimizer_lock_groups(CtOptimizer *opt, const char *tower,
                                         int unlocked_groups, gboolean unlock_norms,
                                         GError **error);
/* The same counting residual blocks (optimizer.lock_image_unlocked):
 * UNLOCKED_LAST_BLOCKS = N > 0 leaves the last N blocks trainable with the
 * final LayerNorm and the projection, i.e. N + 1 groups; N at least the
 * tower's number of blocks + 1 leaves it all trainable.  A ResNet image
 * tower has no blocks to count: N > 0 fails for it (CT_ERROR_INVALID). */
CT_API gboolean ct_optimizer_lock_tower(CtOptimizer *opt, const char *tower,
                                        int unlocked_last_blocks, gboolean unlock_norms,
                                        GError **error);
/* TOWER's lock groups, from the bottom, whose every tensor is frozen: what
 * ct_model_set_frozen_groups() may skip in backward.  -1 for another
 * TOWER. */
CT_API int ct_optimizer_frozen_groups(const CtOptimizer *opt, const char *tower);

/* Layer-wise learning-rate decay (BEiT, open_clip's layer_decay): every
 * tensor of TOWER's lock group g takes lr * DECAY^(D - g), where D is the
 * tower's number of blocks (a ResNet: 4, its stages): block k of L gets
 * DECAY^(L - 1 - k), the stem DECAY^L, and the last block, the final
 * LayerNorm and the projection the full lr, as do tensors outside the
 * towers (logit_scale).  Multiplies with ct_optimizer_set_lr_mult()'s
 * factors, in either order; a later call for the same tower replaces its
 * decay.  DECAY in (0, 1]; fails (CT_ERROR_INVALID) otherwise or on
 * another TOWER. */
CT_API gboolean ct_optimizer_set_layer_decay(CtOptimizer *opt, const char *tower, double decay,
                                             GError **error);

/* Number of parameters (elements, not tensors) that are not frozen. */
CT_API size_t ct_optimizer_n_trainable(const CtOptimizer *opt);

/* Per tensor, I indexing ct_model_tensor(): */
CT_API gboolean ct_optimizer_is_frozen(const CtOptimizer *opt, size_t i);
CT_API gboolean ct_optimizer_decays(const CtOptimizer *opt, size_t i);
/* The tensor's lr factor: its lr_mult times its layer-decay scale. */
CT_API double ct_optimizer_lr_mult(const CtOptimizer *opt, size_t i);
/* The layer-decay part alone (1 without ct_optimizer_set_layer_decay). */
CT_API double ct_optimizer_layer_scale(const CtOptimizer *opt, size_t i);
/* Steps that tensor I has taken (its t in the bias corrections). */
CT_API int64_t ct_optimizer_tensor_steps(const CtOptimizer *opt, size_t i);

/* ---- stepping ---- */

/* One update of every tensor that is not frozen, from the model's
 * gradients (not cleared).  Allocates nothing. */
CT_API void ct_optimizer_step(CtOptimizer *opt);
/* Step ahead, inside backward, the tensors that lie wholly in the flat
 * range [OFFSET, OFFSET + N) and are not frozen, as soon as their
 * gradients are final; the next ct_optimizer_step() then steps only the
 * others, and counts the step.  Each tensor gets the bits it would get in
 * ct_optimizer_step() (the same hyperparameters, t and rounding), so the
 * fused step of the learner (optimizer.step_in_backward) trains
 * bit-identically.  A tensor is stepped ahead at most once a step. */
CT_API void ct_optimizer_step_range(CtOptimizer *opt, size_t offset, size_t n);
/* The same, with the range's gradients read from GRADS, (N) floats for
 * [OFFSET, OFFSET + N), rather than from the model's flat buffer: for a
 * model that keeps its blocks' gradients in scratch
 * (ct_model_set_block_grads_scratch, ct_model_ready_grads). */
CT_API void ct_optimizer_step_range_from(CtOptimizer *opt, size_t offset, size_t n,
                                         const float *grads);
/* Calls of ct_optimizer_step() so far (or restored by ct_optimizer_load()). */
CT_API int64_t ct_optimizer_step_count(const CtOptimizer *opt);
/* Zero every state buffer and step count (fastai's clear_state()). */
CT_API void ct_optimizer_clear_state(CtOptimizer *opt);

/* A state buffer by its name, (n_params) floats in the model's parameter
 * layout (for a sharded optimizer: (n) floats, its range's part; NULL for
 * bfloat16 state): "exp_avg" and "exp_avg_sq" for adam and adamw,
 * "momentum_buffer" for sgd; NULL for a name the kind lacks.
 * (transfer none) */
CT_API float *ct_optimizer_state(CtOptimizer *opt, const char *buffer);

/* ---- sharding (ZeRO stage 1) ----
 * Keep the state of the flat parameter range [OFFSET, OFFSET + N) alone:
 * the buffers shrink to N floats, and ct_optimizer_step() updates only the
 * parameters in the range (from the gradients in the range), so that N
 * processes can each own 1/N of the optimizer state.  Per-tensor step
 * counts stay whole, and every tensor that is not frozen counts a step
 * even where it lies outside the range, so all shards agree on bias
 * corrections.  Allowed before the first step only (the state must be
 * zero); OFFSET 0 and N n_params undo it.  Fails (CT_ERROR_INVALID) on a
 * range outside the model or after a step. */
CT_API gboolean ct_optimizer_set_shard(CtOptimizer *opt, size_t offset, size_t n,
                                       GError **error);
/* The range set by ct_optimizer_set_shard(): (0, n_params) by default. */
CT_API void ct_optimizer_shard(const CtOptimizer *opt, size_t *offset, size_t *n);
/* ---- state precision ----
 * CT_PRECISION_BF16 keeps the moments (and SGD's momentum) as bfloat16,
 * half the memory of float32: each element is widened to float32, updated
 * with the same operations, and stored back with stochastic rounding,
 * whose random bits are a hash of (step, buffer, element), so results are
 * reproducible and independent of the thread count, and small updates are
 * not lost on average.  Parameters and gradients stay float32.  The step
 * is then not bit-identical to the float32 state's: each moment carries a
 * relative error of up to 2^-8.  Allowed before the first step only;
 * fails (CT_ERROR_INVALID) for fp16 or after a step.  ct_optimizer_state()
 * returns NULL at bf16; saved states hold BF16 tensors, and a state of
 * either precision loads into either (float32 values round to the
 * nearest bfloat16). */
CT_API gboolean ct_optimizer_set_state_precision(CtOptimizer *opt, CtPrecision precision,
                                                 GError **error);
CT_API CtPrecision ct_optimizer_state_precision(const CtOptimizer *opt);
/* Bytes of state buffers this optimizer holds. */
CT_API size_t ct_optimizer_state_bytes(const CtOptimizer *opt);

/* ---- saving ----
 * Write the state to PATH as safetensors, atomically.  A sharded
 * optimizer writes its range alone: buffers "exp_avg" / "exp_avg_sq" /
 * "momentum_buffer" as flat F32 of N elements, the step counts as below,
 * and metadata "shard_offset", "shard_n" and "n_params"; such a file loads
 * only into an optimizer with the same shard.  Otherwise: for every tensor
 * that has taken a step, its buffers as F32 of the tensor's shape,
 * "exp_avg.<name>" and "exp_avg_sq.<name>" (adam, adamw) or
 * "momentum_buffer.<name>" (sgd), and its step count as I64 scalar
 * "step.<name>"; metadata "format" ("cliptrain-optimizer"), "kind", "step"
 * and every hyper-parameter (as round-tripping decimal text).  Freezing,
 * lr multipliers and decay exclusions are not saved: they come from the
 * recipe. */
CT_API gboolean ct_optimizer_save(CtOptimizer *opt, const char *path, GError **error);
/* Restore a state written by ct_optimizer_save(): buffers, per-tensor and
 * global step counts and hyper-parameters, bit for bit; tensors the file
 * has no state for get zero state.  Everything is checked before anything
 * changes, so a failed load leaves OPT as it was.  Fails, naming the file
 * and where concerned the tensor, on: another kind (CT_ERROR_CONFIG),
 * missing or bad metadata (CT_ERROR_FORMAT), a tensor name that is no
 * state of this kind or names no model tensor (CT_ERROR_FORMAT), a buffer
 * without its step count or the reverse (CT_ERROR_MISSING), a wrong shape
 * (CT_ERROR_SHAPE) or dtype (CT_ERROR_DTYPE), and the reader's errors. */
CT_API gboolean ct_optimizer_load(CtOptimizer *opt, const char *path, GError **error);

G_END_DECLS

#endif

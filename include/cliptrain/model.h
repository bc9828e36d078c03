/* model.h: OpenAI's CLIP (ViT or ModifiedResNet image tower, causal text
 * transformer).
 *
 * A CtModel owns one flat float32 allocation for the parameters, one of the
 * same layout for the gradients, and one arena for the activations of up to
 * max_batch samples.  Nothing is allocated after ct_model_new(). */
#ifndef CLIPTRAIN_MODEL_H
#define CLIPTRAIN_MODEL_H

#include <cliptrain/ct-common.h>
#include <cliptrain/safetensors.h>

G_BEGIN_DECLS

/* The config keys of the fastai/self_supervised CLIP module, with OpenAI's
 * meanings.
 *
 * The image tower is a ViT when vision_patch_size > 0 and OpenAI's
 * ModifiedResNet when vision_patch_size is 0.  A ResNet's blocks per stage
 * (layer1..layer4: (3, 4, 6, 3) is RN50) are vision_stages, keys
 * "vision_stage1" .. "vision_stage4"; its vision_layers is their sum (0 is
 * filled in by ct_config_validate), its vision_width the stem width
 * (the attention pool is vision_width * 32 wide) and its vision_heads the
 * attention pool's heads (0: vision_width * 32 / 64).  A ViT's
 * vision_stages are all 0. */
typedef struct {
  int embed_dim;          /* joint embedding width */
  int image_resolution;   /* R: images are (3, R, R) */
  int vision_layers;      /* ViT blocks; a ResNet's total Bottleneck blocks */
  int vision_width;
  int vision_patch_size;  /* P: R must be a multiple of P; 0: a ResNet */
  int vision_heads;       /* 0 means vision_width / 64 (ResNet: width * 32 / 64) */
  int context_length;
  int vocab_size;
  int transformer_width;
  int transformer_heads;
  int transformer_layers;
  int vision_stages[4];   /* ResNet: Bottleneck blocks of layer1..layer4; ViT: 0 */
} CtConfig;

/* TRUE when CFG's image tower is a ModifiedResNet (vision_patch_size 0). */
CT_API gboolean ct_config_is_resnet(const CtConfig *cfg);

/* NULL-terminated names of the presets.  (transfer none) */
CT_API const char *const *ct_config_preset_names(void);
/* Fill CFG with preset NAME ("vitb32", "vitl14", "small", "tiny", "fashion",
 * and the ResNets "rn50", "rn101", "rn50x4", "rn"). */
CT_API gboolean ct_config_preset(const char *name, CtConfig *cfg, GError **error);
/* Check that every field is positive and the shapes divide (R % P, width %
 * heads; for a ResNet R % 32, 32 * width % heads, every stage >= 1).
 * Fills vision_heads when it is 0, and a ResNet's vision_layers. */
CT_API gboolean ct_config_validate(CtConfig *cfg, GError **error);
/* Set one config field by its key name. */
CT_API gboolean ct_config_set(CtConfig *cfg, const char *key, long value, GError **error);
/* Field by key name; -1 for an unknown key.  "vision_stage1" ..
 * "vision_stage4" are vision_stages[0..3]. */
CT_API long ct_config_get(const CtConfig *cfg, const char *key);
/* NULL-terminated list of the config keys.  (transfer none) */
CT_API const char *const *ct_config_keys(void);
/* The keys where GOT differs from WANT, as "key 4 (the recipe says 8), ...",
 * or NULL when they agree.  (transfer full) */
CT_API char *ct_config_diff(const CtConfig *got, const CtConfig *want);
/* Model FLOPs of one training step (forward + backward = 3 x forward
 * matmul FLOPs) at BATCH with TEXT_TOKENS text positions per caption. */
CT_API double ct_config_step_flops(const CtConfig *cfg, int batch, int text_tokens);
/* Number of parameters of the config. */
CT_API size_t ct_config_n_params(const CtConfig *cfg);
/* The gradients resident when every residual block steps inside backward
 * from the block scratch (ct_model_set_block_grads_scratch): all tensors
 * outside the blocks, and the largest block's. */
CT_API size_t ct_config_fused_grads(const CtConfig *cfg);

/* One parameter tensor, named as in OpenAI's state dict. */
typedef struct {
  const char *name;
  size_t offset;        /* into ct_model_params() / ct_model_grads() */
  size_t numel;
  int ndim;
  int64_t shape[4];
  gboolean decay;       /* weight decay applies (weights of linear layers,
                         * of convolutions and projections, the attention
                         * pool's q/k/v/c_proj weights; not gains (layer
                         * and batch norm), biases, embeddings (the
                         * positional ones included), class token or
                         * logit_scale) */
  void *reserved[2];
} CtParamInfo;

typedef struct CtModel CtModel;

/* Allocate a model for CFG (validated first) for batches of up to MAX_BATCH.
 * Parameters are zero until ct_model_init_weights() or ct_model_load().
 * (transfer full): free with ct_model_free(). */
CT_API CtModel *ct_model_new(const CtConfig *cfg, int max_batch, GError **error);
/* Parameters beyond OpenAI's CLIP that a loss needs, as flags. */
typedef enum {
  /* "logit_bias", a scalar after logit_scale (open_clip's SigLIP): the
   * siglip_trainer plugin asks for it.  Initialised to -10. */
  CT_MODEL_LOGIT_BIAS = 1 << 0,
} CtModelExtras;
/* ct_model_new with EXTRAS (CtModelExtras flags).  ct_model_save() writes
 * the extra tensors and records them in the metadata ("config.logit_bias":
 * "1"); ct_model_new_from_file() gives a model the extras its file has. */
CT_API CtModel *ct_model_new_extras(const CtConfig *cfg, int max_batch, uint32_t extras,
                                    GError **error);
/* The model's CtModelExtras flags. */
CT_API uint32_t ct_model_extras(const CtModel *model);
CT_API void ct_model_free(CtModel *model);

/* (transfer none) */
CT_API const CtConfig *ct_model_config(const CtModel *model);
CT_API int ct_model_max_batch(const CtModel *model);

/* OpenAI's initialisation, deterministic in SEED: each tensor draws from
 * its own stream, so its values depend on (seed, tensor) only. */
CT_API void ct_model_init_weights(CtModel *model, uint64_t seed);

/* The flat parameter and gradient buffers, (n_params) each.  (transfer none) */
CT_API size_t ct_model_n_params(const CtModel *model);
CT_API float *ct_model_params(CtModel *model);
CT_API float *ct_model_grads(CtModel *model);
CT_API void ct_model_zero_grad(CtModel *model);
/* Zero the gradients [OFFSET, OFFSET + N) of the flat buffer and return
 * the memory pages wholly inside the range to the system: they read as
 * zeros and take no memory until written again.  The learner's fused step
 * (optimizer.step_in_backward) releases each block's gradients once the
 * block is stepped, so the whole gradient buffer is never resident. */
CT_API void ct_model_release_grads(CtModel *model, size_t offset, size_t n);
/* Residual blocks' gradients in a scratch buffer, for a step inside
 * backward (the learner's optimizer.step_in_backward).  Turned on, each
 * block's backward writes its gradients into one buffer that the model
 * owns, the size of the largest block's, instead of into the flat buffer,
 * whose block ranges are then left as they are (zeros, taking no memory
 * once released); the backward hook finds the block's final gradients
 * with ct_model_ready_grads(), and the next block's backward overwrites
 * them.  Turning it on allocates the buffer (FALSE with ERROR set when
 * memory runs out); off frees it.  Off by default. */
CT_API gboolean ct_model_set_block_grads_scratch(CtModel *model, gboolean on, GError **error);
/* Inside the backward hook: where the block's final gradients are, (n)
 * floats for the hook's range (offset, n): the flat buffer at offset, or
 * the block scratch.  NULL outside the hook.  (transfer none) */
CT_API float *ct_model_ready_grads(CtModel *model);

/* Parameter tensors in OpenAI's state-dict order.  (transfer none) */
CT_API size_t ct_model_n_tensors(const CtModel *model);
CT_API const CtParamInfo *ct_model_tensor(const CtModel *model, size_t i);
CT_API const CtParamInfo *ct_model_find(const CtModel *model, const char *name);
/* ---- buffers: state that is not trained ----
 * A ResNet's BatchNorm running statistics (running_mean, running_var of
 * each BatchNorm2d, under OpenAI's names) live in one flat float array
 * apart from the parameters: they have no gradient, no weight decay and no
 * optimizer state, but ct_model_save() and the training state save them
 * and ct_model_load_from() loads them.  A training-mode forward updates
 * them.  A ViT model has none: 0 floats and NULL.
 * ct_model_buffers: (n_buffer_floats), (transfer none): owned by the model,
 * valid until ct_model_free(); a caller may overwrite the values (e.g. to
 * average them across processes) between passes. */
CT_API size_t ct_model_n_buffer_floats(const CtModel *model);
CT_API float *ct_model_buffers(CtModel *model);
/* Buffer tensors in state-dict order; offsets index ct_model_buffers().
 * (transfer none) */
CT_API size_t ct_model_n_buffer_tensors(const CtModel *model);
CT_API const CtParamInfo *ct_model_buffer_tensor(const CtModel *model, size_t i);
CT_API const CtParamInfo *ct_model_find_buffer(const CtModel *model, const char *name);

/* Training or eval mode, as nn.Module.train()/eval(): it matters for
 * BatchNorm (a ResNet image tower) and patch dropout (a ViT's, off by
 * default; ct_model_set_patch_dropout).  In training mode (the default)
 * a forward normalises with the batch's statistics and updates the
 * running ones, and drops patches; in eval mode it uses the running
 * statistics, keeps every patch and changes nothing.  The learner runs validation in eval mode and training in
 * training mode; embed, zeroshot and retrieve run in eval mode. */
CT_API void ct_model_set_training(CtModel *model, gboolean training);
CT_API gboolean ct_model_training(const CtModel *model);

/* Pointer to the (log) logit scale parameter.  (transfer none) */
CT_API float *ct_model_logit_scale(CtModel *model);
/* Pointer to the logit bias (SigLIP), or NULL when the model has none
 * (CT_MODEL_LOGIT_BIAS).  (transfer none) */
CT_API float *ct_model_logit_bias(CtModel *model);

/* Forward pass of both towers over BATCH samples.
 *   images: (batch, 3, R, R) normalised pixels
 *   tokens: (batch, context_length) ids in [0, vocab_size); the end-of-text
 *           position of a row is that of its largest id.
 * Fails (CT_ERROR_INVALID) when batch is out of range or a token id is. */
CT_API gboolean ct_model_forward(CtModel *model, const float *images, const int32_t *tokens,
                                 int batch, GError **error);
CT_API gboolean ct_model_encode_image(CtModel *model, const float *images, int batch,
                                      GError **error);
/* Zero-shot class vectors: PROMPTS (n_classes * n_templates,
 * context_length) token rows, class-major, are encoded max_batch at a
 * time; each class's vector, written to OUT (n_classes, embed_dim), is
 * the re-normalised sum of its prompts' L2-normalised text features.
 * Overwrites the text tower's activations. */
CT_API gboolean ct_model_class_vectors(CtModel *model, const int32_t *prompts, int n_classes,
                                       int n_templates, float *out, GError **error);
/* The 0-based position of class TRUTH in a stable descending sort of
 * LOGITS (n_classes): 0 is a top-1 hit, below k a top-k hit. */
CT_API int ct_class_rank(const float *logits, int n_classes, int truth);
CT_API gboolean ct_model_encode_text(CtModel *model, const int32_t *tokens, int batch,
                                     GError **error);
/* L2-normalised features of the last forward pass, (batch, embed_dim).
 * (transfer none): valid until the next forward. */
CT_API const float *ct_model_image_features(const CtModel *model);
CT_API const float *ct_model_text_features(const CtModel *model);

/* Backward pass from d loss / d features, (batch, embed_dim) each, of the
 * last forward.  ADDS into the gradients; either may be NULL to skip that
 * tower. */
CT_API void ct_model_backward(CtModel *model, const float *d_image_features,
                              const float *d_text_features);

/* Text trimming, on by default: under the causal mask a caption's
 * end-of-text feature depends only on the positions before it, so each
 * pass runs the text tower over the first (longest end-of-text position
 * + 1) positions only.  Features and gradients equal the untrimmed ones
 * up to float rounding (BLAS groups the sums differently); a batch of
 * captions that fill the context is unchanged bit for bit. */
CT_API void ct_model_set_trim_text(CtModel *model, gboolean on);

/* Readout pruning, on by default: each tower reads one row per sequence
 * of its last residual block's output (the class token, the end-of-text
 * token), so that block computes keys and values for every row but its
 * attention, out_proj, residual and MLP for that row only, about 6% of
 * the products of vitb32's step.  Features and gradients equal the
 * unpruned ones up to float rounding. */
CT_API void ct_model_set_prune_readout(CtModel *model, gboolean on);

/* Patch dropout (FLIP; open_clip's PatchDropout), off by default: in
 * training mode (ct_model_set_training) each ViT image keeps
 * K = max(1, floor(GG * (1 - PROB))) of its GG patch tokens and its class
 * token, after the positional embedding; the tower then runs on 1 + K
 * tokens (only the kept patches are embedded), and conv1 and the
 * positional embedding receive gradients for the kept patches only.  Eval
 * mode uses every token.  Sample b of a forward keeps the patches drawn
 * from (SEED, the key, b) alone: the learner sets the key to the training
 * step before each forward, so runs and resumed runs draw the same.
 * Fails for PROB outside [0, 1) (CT_ERROR_INVALID) and for PROB > 0 on a
 * ResNet image tower (CT_ERROR_CONFIG). */
CT_API gboolean ct_model_set_patch_dropout(CtModel *model, double prob, uint64_t seed,
                                           GError **error);
CT_API double ct_model_patch_dropout(const CtModel *model);
CT_API void ct_model_set_patch_dropout_key(CtModel *model, uint64_t key);
CT_API uint64_t ct_model_patch_dropout_key(const CtModel *model);
/* The patches the last image forward kept: (batch, *K) grid indices
 * (row-major over the G x G grid), ascending in each row; NULL when it
 * kept all (*K is then GG).  (transfer none): valid until the next forward. */
CT_API const int *ct_model_kept_patches(const CtModel *model, int *k);

/* ---- memory: precision and activation checkpointing ---- */

typedef enum {
  CT_PRECISION_FP32 = 0,
  CT_PRECISION_BF16,
  CT_PRECISION_FP16, /* IEEE half */
} CtPrecision;

/* "fp32", "bf16", "fp16" (transfer none); NULL for an invalid value. */
CT_API const char *ct_precision_name(CtPrecision precision);
/* The precision called NAME; FALSE (CT_ERROR_INVALID) for another name. */
CT_API gboolean ct_precision_from_name(const char *name, CtPrecision *precision,
                                       GError **error);

/* How the model computes and keeps the activations of its passes.
 *
 * PRECISION BF16 or FP16 is autocast on a CPU: every matrix product sees
 * its operands (activations, weights, and in backward the incoming
 * gradients) rounded to that precision, and its result is rounded too;
 * layer norm, softmax, the residual stream, L2 normalisation and the loss
 * stay float32.  The activations saved for backward are stored in 16 bits.
 * Parameters and gradients stay float32 (master weights).
 *
 * CHECKPOINT_NCHUNKS 0 keeps every block's activations.  N >= 1 splits
 * each tower's residual blocks into N segments (at most one block each),
 * keeps only each segment's input, and recomputes the segment during
 * backward; both towers share the recomputation space.  Gradients are
 * bit-identical to those without checkpointing.
 *
 * Reallocates the activation arena (so never call it inside a step); the
 * next backward needs a forward first. */
CT_API gboolean ct_model_set_memory(CtModel *model, CtPrecision precision,
                                    int checkpoint_nchunks, GError **error);
CT_API CtPrecision ct_model_precision(const CtModel *model);
CT_API int ct_model_checkpoint_nchunks(const CtModel *model);
/* Bytes of the activation arena: saved activations and work space. */
CT_API size_t ct_model_activation_bytes(const CtModel *model);
/* The same for a model of CFG (validated) at BATCH, without building it. */
CT_API size_t ct_config_activation_bytes(const CtConfig *cfg, int batch, CtPrecision precision,
                                         int checkpoint_nchunks);

/* Loss scaling (the fp16 plugin): backward multiplies d loss / d features
 * by SCALE before anything else, so that every gradient comes out scaled
 * (a power of two keeps that exact).  1 by default. */
CT_API void ct_model_set_loss_scale(CtModel *model, float scale);
CT_API float ct_model_loss_scale(const CtModel *model);

/* Called during ct_model_backward() after each residual block (a
 * transformer block, or a ResNet's Bottleneck), with the range of the flat
 * gradient buffer (offset, n) that the block owns and whose gradients are
 * now final.  The other tensors (embeddings, stems, projections, the
 * attention pool, logit_scale) are final when ct_model_backward()
 * returns.
 * NULL removes the hook. */
typedef void (*CtBackwardHook)(void *data, size_t offset, size_t n);
CT_API void ct_model_set_backward_hook(CtModel *model, CtBackwardHook hook, void *data);

/* ---- lock groups: open_clip's LiT locking, layer-wise lr decay ----
 * TOWER is "image" or "text".  A transformer tower of L blocks has L + 2
 * groups, bottom first: 0 its stem (conv1, class and positional
 * embeddings, ln_pre; or token and positional embeddings), 1 + k block k
 * for k < L - 1, L the last block with the final LayerNorm (ln_post,
 * ln_final), L + 1 the projection (visual.proj, text_projection), as
 * open_clip's lock() groups them.  A ResNet image tower has 6: the stem
 * (conv1..3, bn1..3), layer1 .. layer4, the attention pool.
 * The number of groups of TOWER, or -1 for another name. */
CT_API int ct_model_n_lock_groups(const CtModel *model, const char *tower);
/* The group of tensor I (indexing ct_model_tensor()) within its tower,
 * whose name goes to *TOWER (may be NULL); -1 (and NULL) for a tensor in
 * neither tower (logit_scale). */
CT_API int ct_model_lock_group(const CtModel *model, size_t i, const char **tower);
/* Freeze TOWER's N lowest groups (0 to its group count): backward then
 * stops below the lowest group left, computing no gradient of any kind
 * for the N groups, whose parameter gradients stay as they are (zero after
 * ct_model_zero_grad); N the whole count runs no backward in the tower.
 * The gradients of the groups left are those of a full backward, bit for
 * bit.  With activation checkpointing frozen segments are not
 * recomputed; the backward hook is not called for frozen blocks.  Set it
 * before a forward: the backward that follows uses it.  0 by default.  Fails (CT_ERROR_INVALID) on another TOWER or N out of range. */
CT_API gboolean ct_model_set_frozen_groups(CtModel *model, const char *tower, int n,
                                           GError **error);
CT_API int ct_model_frozen_groups(const CtModel *model, const char *tower);
/* open_clip's freeze_bn_stats (FrozenBatchNorm2d): in training mode too,
 * the BatchNorm layers of a ResNet's frozen groups normalise with their
 * running statistics and leave them alone, as in eval mode; the other
 * groups' train as usual.  Off by default; nothing for a ViT. */
CT_API void ct_model_set_freeze_bn_stats(CtModel *model, gboolean on);
CT_API gboolean ct_model_freeze_bn_stats(const CtModel *model);

/* TRUE when tensor GOT has parameter WANT's shape (a scalar may be [] or
 * [1]). */
CT_API gboolean ct_param_shape_matches(const CtParamInfo *want, const CtTensorInfo *got);

/* Copy every parameter from ST, where tensor "<prefix><name>" holds
 * parameter <name> (prefix may be NULL), and the buffers (running
 * statistics) found there.  F32, F16, BF16 and F64 are read.  Fails,
 * naming the file and the tensor, on a missing or mis-shaped tensor or an
 * unreadable dtype; with STRICT, also on a missing buffer and on tensors
 * the model lacks (a BatchNorm's num_batches_tracked is accepted and
 * ignored). */
CT_API gboolean ct_model_load_from(CtModel *model, const CtSafetensors *st,
                                   const char *prefix, gboolean strict, GError **error);
/* The CtModelExtras of the weights in ST: CT_MODEL_LOGIT_BIAS when the
 * metadata says config.logit_bias = 1 or tensor "<prefix>logit_bias" is
 * there.  A model with extras loads a file without them (CLIP's weights):
 * the extra parameters keep their values. */
CT_API uint32_t ct_model_extras_of_file(const CtSafetensors *st, const char *prefix);
/* Open PATH and load it strictly, without a prefix. */
CT_API gboolean ct_model_load(CtModel *model, const char *path, GError **error);
/* Write every parameter, then every buffer, as F32 under OpenAI's names,
 * atomically.
 * METADATA (string to string, may be NULL) goes into __metadata__, with the
 * config keys added. */
CT_API gboolean ct_model_save(CtModel *model, const char *path, GHashTable *metadata,
                              GError **error);
/* Read a config from a checkpoint's metadata (as written by
 * ct_model_save()).  Fails when the metadata lacks a key, except
 * config.vision_stage1..4, absent from files written before ResNets (0: a
 * ViT). */
CT_API gboolean ct_config_from_metadata(CtConfig *cfg, const CtSafetensors *st,
                                        GError **error);
/* Read a config from the shapes of a state dict's tensors, as OpenAI's
 * build_model does, for weights without config metadata: widths from
 * visual.conv1.weight, ln_final.weight and text_projection; layers by
 * counting the blocks' attn.in_proj_weight; the patch from conv1; the
 * resolution from visual.positional_embedding; context and vocabulary from
 * positional_embedding and token_embedding.weight.  A file with
 * visual.layer1.* or visual.attnpool.* tensors is a ResNet: blocks per
 * stage by counting visual.layerN.<i>, the width from
 * visual.layer1.0.conv1.weight, the resolution from
 * visual.attnpool.positional_embedding ((R/32)^2 + 1 rows).  Tensor names
 * are "<prefix><name>" (prefix may be NULL).  VISION_HEADS and
 * TRANSFORMER_HEADS override the head counts; 0 means width / 64 (a
 * ResNet's pool: width * 32 / 64; at least 1).  Fails, naming the file and
 * the tensor, on a missing or mis-shaped tensor. */
CT_API gboolean ct_config_from_weights(CtConfig *cfg, const CtSafetensors *st,
                                       const char *prefix, int vision_heads,
                                       int transformer_heads, GError **error);
/* A model for the weights in PATH, loaded (F32, F16, BF16 or F64): its
 * config from the "config.*" metadata when the file has any, else from the
 * tensors' shapes (ct_config_from_weights, heads from the widths).  A
 * training state (metadata format "cliptrain training state 1") is read
 * through its "model."-prefixed tensors.  Errors name PATH.  (transfer
 * full): free with ct_model_free(). */
CT_API CtModel *ct_model_new_from_file(const char *path, int max_batch, GError **error);
/* The same, with head counts for a file without config metadata (0: the
 * width / 64 rule); the metadata's heads win when present. */
CT_API CtModel *ct_model_new_from_file_heads(const char *path, int max_batch, int vision_heads,
                                             int transformer_heads, GError **error);

G_END_DECLS

#endif

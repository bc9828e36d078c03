/* distributed_clip_trainer: the fastai/self_supervised CLIP module's
 * DistributedCLIPTrainer over MPI.
 *
 * After each forward pass every rank all-gathers the image and text
 * features of the global batch (MPI_Allgatherv), and computes CLIP's loss
 * for its own rows against every column: its images against all captions
 * and its captions against all images, as open_clip's local_loss does.
 * The ranks' terms add up to the loss of the global batch, which every
 * rank logs.
 *
 * With gather_with_grad (the default, open_clip's gather_with_grad), the
 * gradient also flows into the gathered features: what each rank's loss
 * term says about another rank's features is sent back to that rank
 * (MPI_Reduce_scatter, the all-gather's backward), so that, averaged by
 * ddp, the gradient equals that of one process with the whole global
 * batch.  gather_with_grad: false is the fastai/self_supervised CLIP
 * module's variant: the gathered features are constants, and each rank's
 * features get the gradient of their own rows only.
 *
 * Use it with ddp instead of clip_trainer.  Like clip_trainer it clamps
 * logit_scale to [0, ln 100] after every step. */
#include "config.h"

#include "mpi/mpi-comm.h"

#include <math.h>
#include <string.h>

typedef struct {
  CtMpi mpi; /* first: the communicator table's context */
  gboolean with_grad;
  int E, G;                      /* width; rows of the largest global batch */
  float *img_all, *txt_all;      /* (G, E) the global batch's features */
  float *d_img_all, *d_txt_all;  /* (G, E) what this rank's term says of them */
  float *logits, *scratch;       /* (max_batch, G) */
  float *recv;                   /* (max_batch, E) the reduce-scatter's part for this rank */
  int *rows, *counts, *displs;   /* (size) rows of each rank; the same in floats; offsets */
} Dct;

static gboolean
start(Dct *d, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  int B = ct_model_max_batch(m), W = d->mpi.size;
  d->E = ct_model_config(m)->embed_dim;
  d->G = B * W;
  size_t GE = (size_t) d->G * d->E;
  d->img_all = g_new0(float, GE);
  d->txt_all = g_new0(float, GE);
  d->d_img_all = g_new0(float, GE);
  d->d_txt_all = g_new0(float, GE);
  d->logits = g_new0(float, (size_t) B * d->G);
  d->scratch = g_new0(float, (size_t) B * d->G);
  d->recv = g_new0(float, (size_t) B * d->E);
  d->rows = g_new0(int, W);
  d->counts = g_new0(int, W);
  d->displs = g_new0(int, W);
  int count;
  return ct_mpi_count(GE, &count, "gathered features", error);
}

static gboolean
gather(Dct *d, const float *mine, float *all, GError **error)
{
  MPI_Request req;
  int me = d->counts[d->mpi.rank];
  return ct_mpi_check(&d->mpi, MPI_Iallgatherv(mine, me, MPI_FLOAT, all, d->counts, d->displs,
                                               MPI_FLOAT, MPI_COMM_WORLD, &req),
                      "MPI_Iallgatherv", error) &&
         ct_mpi_wait(&d->mpi, &req, 1, "feature all-gather", error);
}

/* D_ALL (G, E) summed over ranks, this rank's rows added into D_MINE. */
static gboolean
scatter_back(Dct *d, const float *d_all, float *d_mine, int b, GError **error)
{
  MPI_Request req;
  if (!ct_mpi_check(&d->mpi, MPI_Ireduce_scatter(d_all, d->recv, d->counts, MPI_FLOAT, MPI_SUM,
                                                 MPI_COMM_WORLD, &req),
                    "MPI_Ireduce_scatter", error) ||
      !ct_mpi_wait(&d->mpi, &req, 1, "feature gradient reduce-scatter", error))
    return FALSE;
  for (size_t i = 0; i < (size_t) b * d->E; i++)
    d_mine[i] += d->recv[i];
  return TRUE;
}

static gboolean
loss(Dct *d, CtLearner *L, GError **error)
{
  CtModel *m = ct_learner_model(L);
  int b = ct_learner_batch_size(L), W = d->mpi.size, E = d->E, me = d->mpi.rank;
  MPI_Request req;
  if (!ct_mpi_check(&d->mpi, MPI_Iallgather(&b, 1, MPI_INT, d->rows, 1, MPI_INT,
                                            MPI_COMM_WORLD, &req),
                    "MPI_Iallgather", error) ||
      !ct_mpi_wait(&d->mpi, &req, 1, "batch sizes", error))
    return FALSE;
  int G = 0, offset = 0;
  for (int r = 0; r < W; r++) {
    if (r == me)
      offset = G;
    d->counts[r] = d->rows[r] * E;
    d->displs[r] = G * E;
    G += d->rows[r];
  }
  if (G > d->G) {
    g_set_error(error, CT_ERROR, CT_ERROR_INVALID, "a global batch of %d rows exceeds %d", G,
                d->G);
    return FALSE;
  }
  if (!gather(d, ct_learner_image_features(L), d->img_all, error) ||
      !gather(d, ct_learner_text_features(L), d->txt_all, error))
    return FALSE;
  gboolean grad = ct_learner_training(L), back = grad && d->with_grad;
  float scale = *ct_model_logit_scale(m);
  /* each term is weighted 1 / (2G) of the global loss, times W because
   * ddp averages the ranks' gradients */
  double w = (double) W / (2.0 * G);
  float dls_i = 0, dls_t = 0;
  double t = ct_clip_loss_rows(d->logits, grad ? ct_learner_d_image_features(L) : NULL,
                               back ? d->d_txt_all : NULL, grad ? &dls_i : NULL, d->scratch,
                               ct_learner_image_features(L), d->txt_all, offset, scale, w, b, G,
                               E);
  t += ct_clip_loss_rows(d->logits, grad ? ct_learner_d_text_features(L) : NULL,
                         back ? d->d_img_all : NULL, grad ? &dls_t : NULL, d->scratch,
                         ct_learner_text_features(L), d->img_all, offset, scale, w, b, G, E);
  if (back && (!scatter_back(d, d->d_txt_all, ct_learner_d_text_features(L), b, error) ||
               !scatter_back(d, d->d_img_all, ct_learner_d_image_features(L), b, error)))
    return FALSE;
  if (grad)
    *ct_learner_d_logit_scale(L) = dls_i + dls_t;
  double total = t / W; /* this rank's share of the global loss */
  if (!ct_mpi_check(&d->mpi, MPI_Iallreduce(MPI_IN_PLACE, &total, 1, MPI_DOUBLE, MPI_SUM,
                                            MPI_COMM_WORLD, &req),
                    "MPI_Iallreduce", error) ||
      !ct_mpi_wait(&d->mpi, &req, 1, "loss all-reduce", error))
    return FALSE;
  ct_learner_set_loss(L, total);
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Dct *d = state;
  gboolean ok = TRUE;
  if (event == CT_EVENT_BEFORE_FIT) {
    ok = start(d, L, error);
  } else if (event == CT_EVENT_AFTER_PRED && ct_learner_has_loss(L)) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "another callback already computed this batch's loss: use "
                "distributed_clip_trainer instead of clip_trainer, not with it");
    ok = FALSE;
  } else if (event == CT_EVENT_AFTER_PRED) {
    ok = loss(d, L, error);
  } else if (event == CT_EVENT_AFTER_STEP) {
    float *s = ct_model_logit_scale(ct_learner_model(L));
    *s = fminf(fmaxf(*s, 0.0f), logf(100.0f));
  }
  return ok ? CT_STATUS_OK : CT_STATUS_ERROR;
}

static void *
create(const CtParams *params, GError **error)
{
  Dct *d = g_new0(Dct, 1);
  d->with_grad = ct_params_get_bool(params, "gather_with_grad");
  if (!ct_mpi_setup(&d->mpi, "distributed_clip_trainer", ct_params_get_double(params, "timeout"),
                    error)) {
    g_free(d);
    return NULL;
  }
  return d;
}

static void
destroy(void *state)
{
  Dct *d = state;
  g_free(d->img_all);
  g_free(d->txt_all);
  g_free(d->d_img_all);
  g_free(d->d_txt_all);
  g_free(d->logits);
  g_free(d->scratch);
  g_free(d->recv);
  g_free(d->rows);
  g_free(d->counts);
  g_free(d->displs);
  g_free(d);
}

static const CtCommOps *
comm(void *state)
{
  return ct_mpi_comm_ops();
}

static const CtParamSpec schema[] = {
  CT_PARAM("gather_with_grad", CT_PARAM_BOOL, "true",
           "let the gradient flow into the other ranks' features "
           "(false: fastai/self_supervised's variant)",
           0, 0, NULL),
  CT_PARAM("timeout", CT_PARAM_DOUBLE, "1800",
           "seconds a collective may wait before the job is aborted (a rank died or hangs)", 0,
           1e9, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "distributed_clip_trainer", .version = "1.0", .grads = CT_GRADS_UNUSED,
                 .doc = "CLIP's loss over the features of every rank (all-gathered); clamps "
                        "logit_scale to [0, ln 100]",
                 .order = 0,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_AFTER_PRED) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_STEP),
                 .run = CT_RUN_TRAIN | CT_RUN_VALID, .params = schema, .create = create,
                 .destroy = destroy, .on_event = on_event, .comm = comm)

/* ddp: PyTorch's DistributedDataParallel over MPI, with ZeRO stage 1 as an
 * option.
 *
 * Every rank runs the same model on its own shard of each global batch
 * (the core shards the data once a plugin provides a communicator).  At
 * the start, rank 0's parameters are broadcast.  During backward, the
 * gradients of each residual block are final as soon as its backward is
 * done (after_layer_backward): they gather into buckets of bucket_mib,
 * and a full bucket is summed over the ranks with a non-blocking
 * MPI_Iallreduce at once, so that communication overlaps the rest of the
 * backward pass.  At after_backward the remaining gradients (stems,
 * embeddings, projections, logit_scale) go too, every request is waited
 * for, and the sums are divided by the number of ranks: every rank then
 * holds the gradient of the global batch's mean loss and takes the same
 * step.  The tensors of a tower's locked groups, which the model runs no
 * backward for (ct_model_frozen_groups), keep zero gradients on every
 * rank and are not sent.
 *
 * With zero: true (ZeRO stage 1), each rank keeps the optimizer state of
 * 1/N of the flat parameters (ct_optimizer_set_shard).  Buckets are
 * reduced (MPI_Ireduce) to the rank that owns them instead of to all,
 * that rank updates its shard, and after the step the updated parameters
 * are all-gathered (MPI_Allgatherv).  fp16 and grad_clip look at the
 * shard alone and agree across ranks.
 *
 * BatchNorm (the ResNet tower) works as DDP's default: each rank
 * normalises with its own batch's statistics, and rank 0's running
 * statistics are broadcast at the start and before each training batch
 * (broadcast_buffers).
 *
 * Every wait has a timeout: a rank that dies or hangs makes the others
 * say so and abort the job instead of waiting for ever. */
#include "config.h"

#include "mpi/mpi-comm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  size_t off, n;
} Range;

typedef struct {
  CtMpi mpi; /* first: the communicator table's context */
  size_t bucket_floats;
  gboolean zero, check_sync, broadcast_buffers;
  /* from before_fit */
  CtModel *model;
  size_t n_params;
  int cap;            /* entries of each array below */
  Range *pending;     /* (cap) ready gradients not sent yet, merged when adjacent */
  int n_pending;
  size_t pending_floats;
  Range *sent;        /* (cap + n_frozen) ranges sent in this backward */
  Range *frozen;      /* (n_frozen) the locked groups' tensors, merged: never sent */
  int n_frozen;
  int n_sent;
  MPI_Request *reqs;  /* (cap) in flight */
  int n_reqs;
  size_t *shard_off, *shard_n; /* (size) each rank's parameters with zero */
  int *counts, *displs;        /* (size) the same as MPI counts */
} Ddp;

/* ---------------------------------------------------------------- buckets */

/* Sum gradients [off, off + n) over the ranks: to all of them, or with
 * zero to the rank that owns each part. */
static gboolean
send_range(Ddp *d, size_t off, size_t n, GError **error)
{
  float *g = ct_model_grads(d->model);
  if (n == 0)
    return TRUE;
  if (d->n_sent < d->cap)
    d->sent[d->n_sent++] = (Range) { off, n };
  for (int r = 0; r < d->mpi.size; r++) {
    size_t lo = d->zero ? MAX(off, d->shard_off[r]) : off;
    size_t hi = d->zero ? MIN(off + n, d->shard_off[r] + d->shard_n[r]) : off + n;
    if (lo >= hi)
      continue;
    int count;
    if (d->n_reqs >= d->cap) { /* cannot happen with cap as sized; finish what is out */
      if (!ct_mpi_wait(&d->mpi, d->reqs, d->n_reqs, "gradient all-reduce", error))
        return FALSE;
      d->n_reqs = 0;
    }
    if (!ct_mpi_count(hi - lo, &count, "ddp bucket", error))
      return FALSE;
    MPI_Request *req = &d->reqs[d->n_reqs++];
    int rc = d->zero ? MPI_Ireduce(d->mpi.rank == r ? MPI_IN_PLACE : g + lo, g + lo, count,
                                   MPI_FLOAT, MPI_SUM, r, MPI_COMM_WORLD, req)
                     : MPI_Iallreduce(MPI_IN_PLACE, g + lo, count, MPI_FLOAT, MPI_SUM,
                                      MPI_COMM_WORLD, req);
    if (!ct_mpi_check(&d->mpi, rc, d->zero ? "MPI_Ireduce" : "MPI_Iallreduce", error))
      return FALSE;
    if (!d->zero)
      break;
  }
  return TRUE;
}

static gboolean
flush_pending(Ddp *d, GError **error)
{
  for (int i = 0; i < d->n_pending; i++)
    if (!send_range(d, d->pending[i].off, d->pending[i].n, error))
      return FALSE;
  d->n_pending = 0;
  d->pending_floats = 0;
  return TRUE;
}

static gboolean
layer_ready(Ddp *d, size_t off, size_t n, GError **error)
{
  Range *last = d->n_pending ? &d->pending[d->n_pending - 1] : NULL;
  if (last && off + n == last->off) { /* backward runs from the last layer down */
    last->off = off;
    last->n += n;
  } else if (last && last->off + last->n == off) {
    last->n += n;
  } else if (d->n_pending < d->cap) {
    d->pending[d->n_pending++] = (Range) { off, n };
  } else if (!flush_pending(d, error)) {
    return FALSE;
  } else {
    d->pending[d->n_pending++] = (Range) { off, n };
  }
  d->pending_floats += n;
  if (d->pending_floats >= d->bucket_floats && !flush_pending(d, error))
    return FALSE;
  ct_mpi_poke(d->reqs, d->n_reqs); /* let the requests out move on */
  return TRUE;
}

static int
cmp_range(const void *a, const void *b)
{
  const Range *x = a, *y = b;
  return (x->off > y->off) - (x->off < y->off);
}

/* The rest of the gradients, then wait, then the mean over ranks. */
static gboolean
finish_backward(Ddp *d, GError **error)
{
  if (!flush_pending(d, error))
    return FALSE;
  /* what no layer reported: sent in the gaps between the sent ranges and
   * the locked groups' (zero everywhere) */
  memcpy(d->sent + d->n_sent, d->frozen, sizeof(Range) * (size_t) d->n_frozen);
  int n_sent = d->n_sent + d->n_frozen;
  qsort(d->sent, (size_t) n_sent, sizeof(Range), cmp_range);
  size_t at = 0;
  for (int i = 0; i < n_sent; i++) {
    Range r = d->sent[i];
    if (r.off > at && !send_range(d, at, r.off - at, error))
      return FALSE;
    at = MAX(at, r.off + r.n);
  }
  if (at < d->n_params && !send_range(d, at, d->n_params - at, error))
    return FALSE;
  if (!ct_mpi_wait(&d->mpi, d->reqs, d->n_reqs, d->zero ? "gradient reduce" : "gradient all-reduce",
                   error))
    return FALSE;
  d->n_reqs = 0;
  d->n_sent = 0;
  /* sums to means: the part this rank steps */
  size_t off = d->zero ? d->shard_off[d->mpi.rank] : 0;
  size_t n = d->zero ? d->shard_n[d->mpi.rank] : d->n_params;
  float *g = ct_model_grads(d->model) + off;
  float inv = 1.0f / (float) d->mpi.size;
  for (size_t i = 0; i < n; i++)
    g[i] *= inv;
  return TRUE;
}

/* ---------------------------------------------------------------- start and step */

/* Rank 0's model buffers (BatchNorm running statistics) on every rank. */
static gboolean
sync_buffers(Ddp *d, GError **error)
{
  size_t n = ct_model_n_buffer_floats(d->model);
  int count;
  MPI_Request req;
  if (n == 0)
    return TRUE;
  return ct_mpi_count(n, &count, "buffers", error) &&
         ct_mpi_check(&d->mpi, MPI_Ibcast(ct_model_buffers(d->model), count, MPI_FLOAT, 0,
                                          MPI_COMM_WORLD, &req),
                      "MPI_Ibcast", error) &&
         ct_mpi_wait(&d->mpi, &req, 1, "buffer broadcast", error);
}

static gboolean
start(Ddp *d, CtLearner *L, GError **error)
{
  d->model = ct_learner_model(L);
  d->n_params = ct_model_n_params(d->model);
  int W = d->mpi.size;
  d->cap = (int) (2 * ct_model_n_tensors(d->model) + 8) * W;
  d->pending = g_new0(Range, d->cap);
  d->sent = g_new0(Range, d->cap + (int) ct_model_n_tensors(d->model));
  d->frozen = g_new0(Range, ct_model_n_tensors(d->model));
  d->n_frozen = 0;
  for (size_t i = 0; i < ct_model_n_tensors(d->model); i++) {
    const char *tower;
    int g = ct_model_lock_group(d->model, i, &tower);
    if (!tower || g >= ct_model_frozen_groups(d->model, tower))
      continue;
    const CtParamInfo *t = ct_model_tensor(d->model, i);
    Range *last = d->n_frozen ? &d->frozen[d->n_frozen - 1] : NULL;
    if (last && last->off + last->n == t->offset)
      last->n += t->numel;
    else
      d->frozen[d->n_frozen++] = (Range) { t->offset, t->numel };
  }
  d->reqs = g_new0(MPI_Request, d->cap);
  d->shard_off = g_new0(size_t, W);
  d->shard_n = g_new0(size_t, W);
  d->counts = g_new0(int, W);
  d->displs = g_new0(int, W);
  for (int r = 0; r < W; r++) { /* contiguous, balanced, 16-float aligned */
    size_t a = (d->n_params * (size_t) r / (size_t) W) & ~(size_t) 15;
    size_t b = r + 1 == W ? d->n_params : (d->n_params * (size_t) (r + 1) / (size_t) W) & ~(size_t) 15;
    d->shard_off[r] = a;
    d->shard_n[r] = b - a;
    if (!ct_mpi_count(b - a, &d->counts[r], "zero shard", error) ||
        !ct_mpi_count(a, &d->displs[r], "zero shard", error))
      return FALSE;
  }
  /* rank 0's parameters everywhere */
  int count;
  MPI_Request req;
  if (!ct_mpi_count(d->n_params, &count, "parameters", error) ||
      !ct_mpi_check(&d->mpi, MPI_Ibcast(ct_model_params(d->model), count, MPI_FLOAT, 0,
                                        MPI_COMM_WORLD, &req),
                    "MPI_Ibcast", error) ||
      !ct_mpi_wait(&d->mpi, &req, 1, "parameter broadcast", error))
    return FALSE;
  if (!sync_buffers(d, error))
    return FALSE;
  CtOptimizer *opt = ct_learner_optimizer(L);
  size_t whole = ct_optimizer_state_bytes(opt);
  if (d->zero && !ct_optimizer_set_shard(opt, d->shard_off[d->mpi.rank], d->shard_n[d->mpi.rank],
                                         error))
    return FALSE;
  /* the figure: each rank's optimizer state */
  double mine = (double) ct_optimizer_state_bytes(opt) / 1048576.0;
  double *all = g_new0(double, W);
  gboolean ok = ct_mpi_check(&d->mpi, MPI_Iallgather(&mine, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE,
                                                     MPI_COMM_WORLD, &req),
                             "MPI_Iallgather", error) &&
                ct_mpi_wait(&d->mpi, &req, 1, "optimizer figure", error);
  if (ok && d->mpi.rank == 0) {
    GString *s = g_string_new(NULL);
    for (int r = 0; r < W; r++)
      g_string_append_printf(s, "%s%.1f", r ? ", " : "", all[r]);
    g_printerr("cliptrain: ddp: %d rank%s, gradients %s in buckets of %.1f MiB; optimizer state "
               "per rank (MiB): %s; without zero: %.1f each\n",
               W, W == 1 ? "" : "s", d->zero ? "reduced to their shard's owner (zero)" : "all-reduced",
               d->bucket_floats * 4.0 / 1048576.0, s->str, whole / 1048576.0);
    g_string_free(s, TRUE);
  }
  g_free(all);
  return ok;
}

static gboolean
gather_params(Ddp *d, GError **error)
{
  MPI_Request req;
  return ct_mpi_check(&d->mpi, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL,
                                               ct_model_params(d->model), d->counts, d->displs,
                                               MPI_FLOAT, MPI_COMM_WORLD, &req),
                      "MPI_Iallgatherv", error) &&
         ct_mpi_wait(&d->mpi, &req, 1, "parameter all-gather", error);
}

/* Do the ranks still hold the same parameters?  A 64-bit sum of the
 * words, compared by its minimum and maximum over ranks. */
static gboolean
check_sync(Ddp *d, CtLearner *L, GError **error)
{
  const uint32_t *w = (const uint32_t *) ct_model_params(d->model);
  uint64_t h = 0;
  for (size_t i = 0; i < d->n_params; i++)
    h = h * 1099511628211ull + w[i];
  uint64_t mm[2] = { h, ~h }; /* max of h and max of ~h (= ~min h) */
  MPI_Request req;
  if (!ct_mpi_check(&d->mpi, MPI_Iallreduce(MPI_IN_PLACE, mm, 2, MPI_UINT64_T, MPI_MAX,
                                            MPI_COMM_WORLD, &req),
                    "MPI_Iallreduce", error) ||
      !ct_mpi_wait(&d->mpi, &req, 1, "parameter check", error))
    return FALSE;
  if (mm[0] != ~mm[1]) {
    g_set_error(error, CT_ERROR, CT_ERROR_FAILED,
                "the ranks' parameters differ after epoch %d (MPI's reductions gave the ranks "
                "different sums)", ct_learner_epoch(L));
    return FALSE;
  }
  return TRUE;
}

static CtStatus
on_event(void *state, CtLearner *L, CtEvent event, GError **error)
{
  Ddp *d = state;
  gboolean ok = TRUE;
  switch (event) {
  case CT_EVENT_BEFORE_FIT:
    ok = start(d, L, error);
    break;
  case CT_EVENT_BEFORE_BATCH: /* as DDP's broadcast_buffers, before each training forward */
    ok = !d->broadcast_buffers || sync_buffers(d, error);
    break;
  case CT_EVENT_AFTER_LAYER_BACKWARD: {
    size_t off, n;
    ct_learner_ready_params(L, &off, &n);
    ok = layer_ready(d, off, n, error);
    break;
  }
  case CT_EVENT_AFTER_BACKWARD:
    ok = finish_backward(d, error);
    break;
  case CT_EVENT_AFTER_STEP:
    ok = !d->zero || gather_params(d, error);
    break;
  case CT_EVENT_AFTER_EPOCH:
    ok = !d->check_sync || check_sync(d, L, error);
    break;
  default:
    break;
  }
  return ok ? CT_STATUS_OK : CT_STATUS_ERROR;
}

static void *
create(const CtParams *params, GError **error)
{
  Ddp *d = g_new0(Ddp, 1);
  d->bucket_floats = (size_t) (ct_params_get_double(params, "bucket_mib") * 1048576.0 / 4.0);
  d->bucket_floats = MAX(d->bucket_floats, (size_t) 1);
  d->zero = ct_params_get_bool(params, "zero");
  d->check_sync = ct_params_get_bool(params, "check_sync");
  d->broadcast_buffers = ct_params_get_bool(params, "broadcast_buffers");
  if (!ct_mpi_setup(&d->mpi, "ddp", ct_params_get_double(params, "timeout"), error)) {
    g_free(d);
    return NULL;
  }
  return d;
}

static void
destroy(void *state)
{
  Ddp *d = state;
  g_free(d->pending);
  g_free(d->sent);
  g_free(d->frozen);
  g_free(d->reqs);
  g_free(d->shard_off);
  g_free(d->shard_n);
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
  CT_PARAM("bucket_mib", CT_PARAM_DOUBLE, "25",
           "gradients sent per all-reduce, in MiB (PyTorch's bucket_cap_mb)", 0.001, 1e6, NULL),
  CT_PARAM("zero", CT_PARAM_BOOL, "false",
           "ZeRO stage 1: each rank keeps the optimizer state of 1/N of the parameters", 0, 0,
           NULL),
  CT_PARAM("timeout", CT_PARAM_DOUBLE, "1800",
           "seconds a collective may wait before the job is aborted (a rank died or hangs)", 0,
           1e9, NULL),
  CT_PARAM("broadcast_buffers", CT_PARAM_BOOL, "true",
           "before each training batch, give every rank rank 0's BatchNorm running statistics "
           "(DDP's broadcast_buffers); each rank normalises with its own batch's statistics",
           0, 0, NULL),
  CT_PARAM("check_sync", CT_PARAM_BOOL, "true",
           "check after each epoch that every rank holds the same parameters", 0, 0, NULL),
  CT_PARAM_END,
};

CT_PLUGIN_DEFINE(.name = "ddp", .version = "1.0", .grads = CT_GRADS_WHOLE,
                 .doc = "DistributedDataParallel over MPI: bucketed, overlapped gradient "
                        "all-reduce; zero: ZeRO stage 1",
                 .order = -20,
                 .events = CT_EVENT_BIT(CT_EVENT_BEFORE_FIT) | CT_EVENT_BIT(CT_EVENT_BEFORE_BATCH) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_LAYER_BACKWARD) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_BACKWARD) |
                           CT_EVENT_BIT(CT_EVENT_AFTER_STEP) | CT_EVENT_BIT(CT_EVENT_AFTER_EPOCH),
                 .run = CT_RUN_TRAIN, .params = schema, .create = create, .destroy = destroy,
                 .on_event = on_event, .comm = comm)

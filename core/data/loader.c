/* loader.c: a ring of PREFETCH batch slots filled sample by sample by a
 * GThreadPool; the consumer takes slots in order. */
#include "config.h"

#include "data/loader.h"
#include "base/parallel.h"

#include <cliptrain/rng.h>

#include <sched.h>
#include <string.h>

typedef struct Slot Slot;

typedef struct {
  CtLoader *L;
  Slot *slot;
  int pos;
} Task;

struct Slot {
  int batch;       /* batch index in the epoch; -1 when free */
  int B, done;
  GError *error;   /* the first error of this batch */
  float *images;   /* (batch_size, 3, R, R) */
  int32_t *tokens; /* (batch_size, context) */
  Task *tasks;     /* (batch_size), reused */
};

struct CtLoader {
  CtDataset *ds;
  int bs, ctx, workers, prefetch;
  size_t npix;
  gboolean shuffle, drop_last;
  int rank, world;   /* the shard: 0 and 1 for the whole set */
  uint64_t seed;
  size_t *order;   /* (len) sample order of this epoch */
  int n_batches, epoch, next_take, next_queue;
  Slot *slots;     /* (prefetch) */
  GThreadPool *pool;
  GMutex mu;
  GCond cond;
  int pending;     /* samples queued and not done */
};

/* Where this rank's batch B starts in the epoch's order, and its size. */
static void
batch_span(const CtLoader *L, int b, size_t *first, int *size)
{
  size_t N = ct_dataset_len(L->ds);
  size_t G = (size_t) L->bs * L->world, start = (size_t) b * G;
  size_t M = MIN(G, N - start); /* samples in global batch b */
  size_t base = M / L->world, extra = M % L->world, r = (size_t) L->rank;
  *size = (int) (base + (r < extra));
  *first = start + r * base + MIN(r, extra);
}

static size_t
sample_index(CtLoader *L, int batch, int pos)
{
  size_t first;
  int size;
  batch_span(L, batch, &first, &size);
  size_t k = first + (size_t) pos;
  return L->order ? L->order[k] : k;
}

static int
count_batches(const CtLoader *L, gboolean allow_empty)
{
  size_t N = ct_dataset_len(L->ds), G = (size_t) L->bs * L->world;
  size_t full = N / G, rest = N % G;
  gboolean last = !L->drop_last && rest > 0 && (allow_empty || rest >= (size_t) L->world);
  return (int) (full + last);
}

static void
load_sample(CtLoader *L, Slot *s, int pos)
{
  GError *e = NULL;
  ct_dataset_get(L->ds, sample_index(L, s->batch, pos), L->epoch, s->images + pos * L->npix,
                 s->tokens + (size_t) pos * L->ctx, &e);
  g_mutex_lock(&L->mu);
  if (e && !s->error)
    s->error = e;
  else if (e)
    g_error_free(e);
  s->done++;
  L->pending--;
  g_cond_broadcast(&L->cond);
  g_mutex_unlock(&L->mu);
}

/* Loader threads run only on CPU time the step leaves idle (SCHED_IDLE,
 * Linux).  Otherwise a loader thread that wakes during a product takes a
 * core from one of the BLAS or pool threads, and every other thread of
 * the product waits for that one: on 2 cores, vitb32's step went from 4.4
 * to 6.3 s with one loader thread.  When the step waits for a batch the
 * cores are idle and the loader runs at full speed. */
static void
yield_to_step(void)
{
#ifdef SCHED_IDLE
  static __thread gboolean done;
  if (!done) {
    ct_parallel_unpin_self();
    struct sched_param sp = { 0 };
    sched_setscheduler(0, SCHED_IDLE, &sp); /* the calling thread; best effort */
    done = TRUE;
  }
#endif
}

static void
worker(gpointer data, gpointer user)
{
  Task *t = data;
  yield_to_step();
  load_sample(t->L, t->slot, t->pos);
}

CtLoader *
ct_loader_new(CtDataset *ds, const CtConfig *cfg, int batch_size, gboolean shuffle,
              gboolean drop_last, int workers, int prefetch, uint64_t seed)
{
  CtLoader *L = g_new0(CtLoader, 1);
  L->ds = ds;
  L->bs = batch_size;
  L->ctx = cfg->context_length;
  L->npix = (size_t) 3 * cfg->image_resolution * cfg->image_resolution;
  L->shuffle = shuffle;
  L->drop_last = drop_last;
  L->workers = MAX(workers, 0);
  L->prefetch = MAX(prefetch, 1);
  L->seed = seed;
  L->rank = 0;
  L->world = 1;
  size_t N = ct_dataset_len(ds);
  L->n_batches = count_batches(L, TRUE);
  L->order = shuffle ? g_new(size_t, MAX(N, 1)) : NULL;
  L->slots = g_new0(Slot, L->prefetch);
  for (int i = 0; i < L->prefetch; i++) {
    Slot *s = &L->slots[i];
    s->batch = -1;
    s->images = g_new0(float, (size_t) batch_size * L->npix);
    s->tokens = g_new0(int32_t, (size_t) batch_size * L->ctx);
    s->tasks = g_new0(Task, batch_size);
    for (int p = 0; p < batch_size; p++)
      s->tasks[p] = (Task) { L, s, p };
  }
  g_mutex_init(&L->mu);
  g_cond_init(&L->cond);
  if (L->workers > 0)
    L->pool = g_thread_pool_new(worker, NULL, L->workers, TRUE, NULL);
  return L;
}

void
ct_loader_stop(CtLoader *L)
{
  g_mutex_lock(&L->mu);
  while (L->pending > 0)
    g_cond_wait(&L->cond, &L->mu);
  g_mutex_unlock(&L->mu);
  for (int i = 0; i < L->prefetch; i++) {
    L->slots[i].batch = -1;
    g_clear_error(&L->slots[i].error);
  }
}

void
ct_loader_free(CtLoader *L)
{
  if (!L)
    return;
  ct_loader_stop(L);
  if (L->pool)
    g_thread_pool_free(L->pool, FALSE, TRUE);
  for (int i = 0; i < L->prefetch; i++) {
    g_free(L->slots[i].images);
    g_free(L->slots[i].tokens);
    g_free(L->slots[i].tasks);
  }
  g_free(L->slots);
  g_free(L->order);
  g_mutex_clear(&L->mu);
  g_cond_clear(&L->cond);
  g_free(L);
}

CtDataset *
ct_loader_dataset(CtLoader *L)
{
  return L->ds;
}

int
ct_loader_n_batches(const CtLoader *L)
{
  return L->n_batches;
}

void
ct_loader_set_shard(CtLoader *L, int rank, int world, gboolean allow_empty)
{
  g_return_if_fail(world >= 1 && rank >= 0 && rank < world);
  ct_loader_stop(L);
  L->rank = rank;
  L->world = world;
  L->n_batches = count_batches(L, allow_empty);
}

/* Put batch B into slot S and hand its samples to the workers. */
static void
queue_batch(CtLoader *L, Slot *s, int b)
{
  size_t first;
  batch_span(L, b, &first, &s->B);
  s->batch = b;
  s->done = 0;
  if (!L->pool)
    return; /* loaded when taken */
  g_mutex_lock(&L->mu);
  L->pending += s->B;
  g_mutex_unlock(&L->mu);
  for (int p = 0; p < s->B; p++)
    g_thread_pool_push(L->pool, &s->tasks[p], NULL);
}

void
ct_loader_start(CtLoader *L, int epoch)
{
  ct_loader_start_at(L, epoch, 0);
}

void
ct_loader_start_at(CtLoader *L, int epoch, int first)
{
  ct_loader_stop(L);
  L->epoch = epoch;
  size_t N = ct_dataset_len(L->ds);
  if (L->order) {
    for (size_t i = 0; i < N; i++)
      L->order[i] = i;
    CtRng rng;
    ct_rng_init_stream(&rng, L->seed, 0x5f1e5eedull + (uint64_t) epoch);
    for (size_t i = N - 1; N > 1 && i > 0; i--) {
      size_t j = ct_rng_below(&rng, i + 1);
      size_t t = L->order[i];
      L->order[i] = L->order[j];
      L->order[j] = t;
    }
  }
  L->next_take = first;
  for (L->next_queue = first; L->next_queue < MIN(first + L->prefetch, L->n_batches);
       L->next_queue++)
    queue_batch(L, &L->slots[L->next_queue % L->prefetch], L->next_queue);
}

gboolean
ct_loader_next(CtLoader *L, float *images, int32_t *tokens, int *B, GError **error)
{
  g_return_val_if_fail(L->next_take < L->n_batches, FALSE);
  Slot *s = &L->slots[L->next_take % L->prefetch];
  if (!L->pool)
    for (int p = 0; p < s->B; p++) {
      L->pending++;
      load_sample(L, s, p);
    }
  g_mutex_lock(&L->mu);
  while (s->done < s->B)
    g_cond_wait(&L->cond, &L->mu);
  g_mutex_unlock(&L->mu);
  if (s->error) {
    g_propagate_error(error, s->error);
    s->error = NULL;
    return FALSE;
  }
  *B = s->B;
  memcpy(images, s->images, sizeof(float) * (size_t) s->B * L->npix);
  memcpy(tokens, s->tokens, sizeof(int32_t) * (size_t) s->B * L->ctx);
  L->next_take++;
  if (L->next_queue < L->n_batches)
    queue_batch(L, s, L->next_queue++);
  else
    s->batch = -1;
  return TRUE;
}

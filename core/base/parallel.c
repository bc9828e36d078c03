/* parallel.c: a small fork-join pool.  Between jobs a worker first spins
 * for a moment on the job counter, then sleeps on a condition variable.
 *
 * The spin is what makes the pool work for products: a sleeping worker
 * woken by the caller tends to be woken on the caller's own core, and the
 * two halves of a product then share one core until the scheduler moves
 * one of them (a 768 x 768 x 768 product ran at half speed that way).  A
 * worker that is still spinning is already running on the other core.
 * Kernels follow each other within microseconds in a training step, so
 * workers rarely reach the sleep; when they do (between steps, in the
 * loader's time, when idle) they use no CPU. */
#include "config.h"

#include "base/parallel.h"

#include <cliptrain/ct-common.h>

#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void) 0)
#endif

/* Pause instructions a waiting thread spins before it sleeps: about
 * 0.1 to 0.5 ms, depending on the CPU's pause latency. */
#define SPIN_PAUSES 4096

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  int n_threads;           /* including the caller */
  int started;             /* worker threads running */
  atomic_int quit;         /* at exit: workers return */
  atomic_uint_fast64_t job; /* generation of the current job */
  atomic_int pending;      /* workers still busy with it */
  /* the current job: written before job is advanced, read after */
  int active; /* threads taking part in it */
  size_t n;
  CtRangeFn fn;
  void *ctx;
  pthread_t tids[CT_MAX_THREADS];
  /* pinning: the CPUs the process may use, and one for each thread */
  gboolean pinned;
  cpu_set_t allowed;
  int cpu_of[CT_MAX_THREADS];
} pool = { .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
            .done = PTHREAD_COND_INITIALIZER, .n_threads = 1 };

/* Set while a thread runs a task: a ct_parallel_for inside a task runs
 * inline rather than waiting on the pool it is part of. */
static _Thread_local int in_task;

static void
range(int t, int active, size_t n, size_t *b, size_t *e)
{
  *b = n * (size_t) t / (size_t) active;
  *e = n * (size_t) (t + 1) / (size_t) active;
}

/* Wait until the job counter moves past SEEN; returns the new value. */
static uint64_t
wait_job(uint64_t seen)
{
  for (int i = 0; i < SPIN_PAUSES; i++) {
    uint64_t j = atomic_load_explicit(&pool.job, memory_order_acquire);
    if (j != seen)
      return j;
    CPU_RELAX();
  }
  pthread_mutex_lock(&pool.lock);
  uint64_t j;
  while ((j = atomic_load_explicit(&pool.job, memory_order_acquire)) == seen)
    pthread_cond_wait(&pool.wake, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
  return j;
}

/* Each pool thread on a CPU of its own.  Left to itself the scheduler
 * often ran the caller and a worker on one CPU while the other idled (on
 * this 2-vCPU KVM machine, for 100 ms and more), and then every shared
 * product ran at half speed.
 *
 * Pinned only when the process may use enough CPUs: N threads need N of
 * the allowed CPUs, and under an MPI launcher (Open MPI's or MPICH's
 * local rank variables) the ranks on a node take consecutive blocks of N,
 * so the ranks need local size x N; a launcher that binds each rank to
 * fewer CPUs, or a rank variable without the local ones, leaves threads
 * unpinned.  Threads added by a later, larger ct_set_num_threads are not
 * pinned.  CT_PIN_THREADS=0 turns pinning off. */
static void
pin_self(int thread)
{
  if (!pool.pinned || pool.cpu_of[thread] < 0)
    return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(pool.cpu_of[thread], &one);
  pthread_setaffinity_np(pthread_self(), sizeof one, &one); /* best effort */
}

/* This process's place among the processes of its node: FALSE when a
 * launcher says it started it but not where. */
static gboolean
local_rank(int *rank, int *size)
{
  static const char *const vars[][2] = {
    { "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE" },
    { "MPI_LOCALRANKID", "MPI_LOCALNRANKS" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS(vars); i++) {
    const char *r = getenv(vars[i][0]), *n = getenv(vars[i][1]);
    if (r && n) {
      *rank = atoi(r);
      *size = atoi(n);
      return *size >= 1 && *rank >= 0 && *rank < *size;
    }
  }
  *rank = 0;
  *size = 1;
  return !getenv("OMPI_COMM_WORLD_RANK") && !getenv("PMI_RANK") && !getenv("PMIX_RANK");
}

static void
plan_pinning(int n)
{
  static gboolean planned;
  if (planned || n <= 1)
    return;
  planned = TRUE;
  for (int t = 0; t < CT_MAX_THREADS; t++)
    pool.cpu_of[t] = -1;
  const char *env = getenv("CT_PIN_THREADS");
  int rank, size;
  if ((env && strcmp(env, "0") == 0) || !local_rank(&rank, &size) ||
      pthread_getaffinity_np(pthread_self(), sizeof pool.allowed, &pool.allowed) != 0 ||
      CPU_COUNT(&pool.allowed) < size * n)
    return;
  int seen = 0, t = 0;
  for (int c = 0; c < CPU_SETSIZE && t < n; c++)
    if (CPU_ISSET(c, &pool.allowed) && seen++ >= rank * n)
      pool.cpu_of[t++] = c;
  pool.pinned = TRUE;
}

void
ct_parallel_unpin_self(void)
{
  if (pool.pinned)
    pthread_setaffinity_np(pthread_self(), sizeof pool.allowed, &pool.allowed);
}

static void *
worker(void *arg)
{
  int id = (int) (intptr_t) arg;
  uint64_t seen = 0;
  pin_self(id);
  for (;;) {
    seen = wait_job(seen);
    if (atomic_load(&pool.quit))
      break;
    if (id >= pool.active)
      continue;
    size_t b, e;
    range(id, pool.active, pool.n, &b, &e);
    in_task = 1;
    if (b < e)
      pool.fn(pool.ctx, b, e, id);
    in_task = 0;
    if (atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&pool.lock);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.lock);
    }
  }
  return NULL;
}

/* Advance the job counter and wake the sleepers; the job's fields are
 * written before. */
static void
post_job(void)
{
  pthread_mutex_lock(&pool.lock);
  atomic_fetch_add_explicit(&pool.job, 1, memory_order_release);
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
}

/* At exit: the workers return and are joined, so that nothing of theirs
 * is left (valgrind's leak check, sanitizers). */
static void
shutdown_pool(void)
{
  atomic_store(&pool.quit, 1);
  post_job();
  int n = pool.started;
  for (int i = 1; i <= n; i++)
    pthread_join(pool.tids[i], NULL);
  pool.started = 0;
  pool.n_threads = 1;
}

void
ct_set_num_threads(int n)
{
  n = CLAMP(n, 1, CT_MAX_THREADS);
  openblas_set_num_threads(1); /* products share the pool: gemm.c */
  static int registered;
  if (!registered && n > 1) {
    atexit(shutdown_pool);
    registered = 1;
  }
  plan_pinning(n);
  if (n > 1)
    pin_self(0);
  else
    ct_parallel_unpin_self();
  /* workers start at the current job counter: they wait for the next */
  while (pool.started < n - 1 && !atomic_load(&pool.quit)) {
    int id = pool.started + 1;
    if (pthread_create(&pool.tids[id], NULL, worker, (void *) (intptr_t) id) != 0)
      break; /* fewer threads: still correct */
    pool.started++;
  }
  pool.n_threads = MIN(n, pool.started + 1);
}

int
ct_parallel_threads(void)
{
  return pool.n_threads;
}

void
ct_parallel_for(size_t n, size_t min_items, CtRangeFn fn, void *ctx)
{
  int active = pool.n_threads;
  if (min_items > 0 && n / min_items < (size_t) active)
    active = (int) MAX(n / min_items, 1);
  if (active <= 1 || in_task) {
    if (n)
      fn(ctx, 0, n, 0);
    return;
  }
  pool.n = n;
  pool.fn = fn;
  pool.ctx = ctx;
  pool.active = active;
  /* every started worker sees the job; those past ACTIVE skip it */
  atomic_store_explicit(&pool.pending, active - 1, memory_order_relaxed);
  post_job();
  size_t b, e;
  range(0, active, n, &b, &e);
  in_task = 1;
  if (b < e)
    fn(ctx, b, e, 0);
  in_task = 0;
  for (int i = 0; i < SPIN_PAUSES; i++) {
    if (atomic_load_explicit(&pool.pending, memory_order_acquire) == 0)
      return;
    CPU_RELAX();
  }
  pthread_mutex_lock(&pool.lock);
  while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0)
    pthread_cond_wait(&pool.done, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
}

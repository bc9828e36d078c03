/* parallel.c: a small fork-join pool: workers sleep on a condition
 * variable between jobs. */
#include "config.h"

#include "parallel.h"

#include <cliptrain/ct-common.h>

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  int n_threads;       /* including the caller */
  int started;         /* worker threads running */
  int quit;            /* at exit: workers return */
  uint64_t job;        /* generation of the current job */
  int pending;         /* workers still busy with it */
  int active;          /* threads taking part in it */
  size_t n;
  CtRangeFn fn;
  void *ctx;
  pthread_t tids[CT_MAX_THREADS];
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

static void *
worker(void *arg)
{
  int id = (int) (intptr_t) arg;
  uint64_t seen = 0;
  pthread_mutex_lock(&pool.lock);
  for (;;) {
    while (pool.job == seen && !pool.quit)
      pthread_cond_wait(&pool.wake, &pool.lock);
    if (pool.quit)
      break;
    seen = pool.job;
    if (id < pool.active) {
      size_t b, e;
      range(id, pool.active, pool.n, &b, &e);
      CtRangeFn fn = pool.fn;
      void *ctx = pool.ctx;
      pthread_mutex_unlock(&pool.lock);
      in_task = 1;
      if (b < e)
        fn(ctx, b, e, id);
      in_task = 0;
      pthread_mutex_lock(&pool.lock);
      if (--pool.pending == 0)
        pthread_cond_signal(&pool.done);
    }
  }
  pthread_mutex_unlock(&pool.lock);
  return NULL;
}

/* At exit: the workers return and are joined, so that nothing of theirs
 * is left (valgrind's leak check, sanitizers). */
static void
shutdown_pool(void)
{
  pthread_mutex_lock(&pool.lock);
  pool.quit = 1;
  pthread_cond_broadcast(&pool.wake);
  int n = pool.started;
  pthread_mutex_unlock(&pool.lock);
  for (int i = 1; i <= n; i++)
    pthread_join(pool.tids[i], NULL);
  pool.started = 0;
  pool.n_threads = 1;
}

void
ct_set_num_threads(int n)
{
  n = CLAMP(n, 1, CT_MAX_THREADS);
  openblas_set_num_threads(n);
  pthread_mutex_lock(&pool.lock);
  pool.n_threads = n;
  static int registered;
  if (!registered && n > 1) {
    atexit(shutdown_pool);
    registered = 1;
  }
  while (pool.started < n - 1 && !pool.quit) {
    int id = pool.started + 1;
    if (pthread_create(&pool.tids[id], NULL, worker, (void *) (intptr_t) id) != 0)
      break; /* fewer threads: still correct */
    pool.started++;
  }
  pool.n_threads = MIN(n, pool.started + 1);
  pthread_mutex_unlock(&pool.lock);
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
  pthread_mutex_lock(&pool.lock);
  pool.n = n;
  pool.fn = fn;
  pool.ctx = ctx;
  pool.active = active;
  pool.pending = active - 1;
  pool.job++;
  pthread_cond_broadcast(&pool.wake);
  pthread_mutex_unlock(&pool.lock);
  size_t b, e;
  range(0, active, n, &b, &e);
  in_task = 1;
  if (b < e)
    fn(ctx, b, e, 0);
  in_task = 0;
  pthread_mutex_lock(&pool.lock);
  while (pool.pending > 0)
    pthread_cond_wait(&pool.done, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
}

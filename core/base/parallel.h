/* parallel.h: the pool of threads that the products (gemm.c), attention
 * and the element-wise kernels share.  Not installed.
 *
 * OpenBLAS runs single-threaded (ct_set_num_threads); the pool has the
 * process's threads, so nothing else competes for a core.  Work is split into
 * contiguous ranges that depend on N and the thread count only, and each
 * item is computed by one thread: results are the same whatever the
 * thread count, as long as items do not share accumulators. */
#ifndef CT_PARALLEL_H
#define CT_PARALLEL_H

#include <stddef.h>

/* FN(ctx, begin, end, thread) for items [begin, end); thread is 0 ..
 * ct_parallel_threads() - 1, for per-thread scratch. */
#define CT_MAX_THREADS 64

typedef void (*CtRangeFn)(void *ctx, size_t begin, size_t end, int thread);

/* Run FN over [0, n) on the pool; the calling thread takes a share.
 * Ranges smaller than MIN_ITEMS per thread run on fewer threads.  Called
 * from inside a task it runs inline, as thread 0: a task that nests one
 * must not rely on per-thread scratch in the nested call. */
void ct_parallel_for(size_t n, size_t min_items, CtRangeFn fn, void *ctx);
int ct_parallel_threads(void);

/* Pool threads are pinned one a CPU (parallel.c says when); a thread
 * started since, such as a data loader's, inherits the caller's single
 * CPU and calls this to run on any of the process's CPUs again. */
void ct_parallel_unpin_self(void);

#endif

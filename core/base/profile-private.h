/* profile-private.h: the counters behind profile.h, and how a kernel
 * times itself into one of them.  Not installed.
 *
 * Each kernel of the step (core/kernels/ops.h, the loss, the optimizer)
 * opens with CT_PROF_BEGIN(its kind) and closes with CT_PROF_END(), so the
 * model calls kernels as plain statements.  Regions do not nest: while one
 * is open ct_prof_on reads 0, so a kernel that another calls (a product in
 * a convolution, a rounding in a projection) runs untimed and its time is
 * the outer kernel's, counted once; the pool's workers, started inside,
 * see 0 as well.  Off, the cost is a load of ct_prof_on and a predictable
 * branch at BEGIN, and one on a local at END; nothing is allocated. */
#ifndef CT_PROFILE_PRIVATE_H
#define CT_PROFILE_PRIVATE_H

#include <cliptrain/profile.h>

/* 1 while profiling and no region is open; written by the profiled
 * thread only. */
extern int ct_prof_on;
extern double ct_prof_s[CT_PROF_N];

/* The slow path, profiling on: open a region of KIND (returns KIND),
 * close it. */
int ct_prof_enter(CtProfKind kind);
void ct_prof_leave(int kind);

/* The first statement of a timed kernel (it declares ct_prof_kind_). */
#define CT_PROF_BEGIN(kind) const int ct_prof_kind_ = ct_prof_on ? ct_prof_enter(kind) : -1
/* The last one, and before every return after CT_PROF_BEGIN. */
#define CT_PROF_END()                 \
  do {                                \
    if (ct_prof_kind_ >= 0)           \
      ct_prof_leave(ct_prof_kind_);   \
  } while (0)

/* One statement timed as a region: PROF(CT_PROF_LOSS, loss = f(...)); */
#define PROF(kind, stmt)    \
  do {                      \
    CT_PROF_BEGIN(kind);    \
    stmt;                   \
    CT_PROF_END();          \
  } while (0)

#endif

/* mpi-comm.h: what the distributed plugins share: MPI set up once per
 * process, collectives that wait with a timeout instead of hanging, and
 * the core's communicator table (comm.h) over MPI_COMM_WORLD.  Compiled
 * into each MPI plugin; MPI itself (one libmpi) keeps the state that must
 * be shared. */
#ifndef CT_MPI_COMM_H
#define CT_MPI_COMM_H

#include <cliptrain/plugin.h>

#include <mpi.h>

/* The first member of every MPI plugin's state, so that the communicator
 * table's functions can take the state as their context. */
typedef struct {
  int rank, size;
  double timeout; /* seconds a collective may wait; <= 0: forever */
  const char *who; /* the plugin's name, for messages */
} CtMpi;

/* Initialise MPI if no plugin has yet (MPI_THREAD_FUNNELED: only the
 * loop's thread calls MPI) and fill M.  MPI is finalised at exit. */
gboolean ct_mpi_setup(CtMpi *m, const char *who, double timeout, GError **error);

/* Wait for N requests.  Past the timeout it says which collective did not
 * complete and aborts the job (a rank has died or hangs): the others must
 * not wait for ever.  FALSE with an error when MPI reports one. */
gboolean ct_mpi_wait(CtMpi *m, MPI_Request *reqs, int n, const char *what, GError **error);
/* Progress the requests without waiting (MPI_Testall). */
void ct_mpi_poke(MPI_Request *reqs, int n);

/* An MPI error code as a GError naming WHAT. */
gboolean ct_mpi_check(CtMpi *m, int rc, const char *what, GError **error);

/* The communicator table over MPI_COMM_WORLD; its context is a CtMpi*. */
const CtCommOps *ct_mpi_comm_ops(void);

/* N as an MPI count (an int); FALSE with an error naming WHAT when it
 * does not fit. */
gboolean ct_mpi_count(size_t n, int *count, const char *what, GError **error);

#endif

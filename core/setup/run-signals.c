/* run-signals.c: what a fit does on a signal, and on a plugin's exit().
 *
 *   SIGINT, SIGTERM, SIGHUP  the first: stop after the current step, save the
 *                            training state, print the resume command, exit 0;
 *                            a second: quit at once, exit 128 + the signal
 *   SIGUSR1, SIGUSR2         save a training state after the current step and
 *                            go on (what batch schedulers send before they
 *                            preempt a job)
 *   SIGPIPE                  ignored: a closed stdout or stderr never stops a
 *                            fit (output-errors.c says so once, in log.txt)
 *   SIGSEGV, SIGBUS, SIGFPE, say which plugin and event were running and the
 *   SIGILL, SIGABRT          last training state, then die of the signal as
 *                            before (the shell's status 139, 134, ...)
 *
 * and exit() called while the fit runs (a plugin's) ends the process with
 * status 1 instead of its own, saying where it was called.  Handlers call
 * only async-signal-safe functions (write, sigaction, raise, _exit) and
 * read what the learner keeps by pointer (ct_learner_fitting): every text
 * they print exists before the signal comes. */
#include "config.h"

#include "setup/run-private.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int stop_requested;
static const char *volatile save_requested;

static void
say(const char *msg)
{
  ssize_t k = write(STDERR_FILENO, msg, strlen(msg));
  (void) k;
}

/* V in decimal, without stdio. */
static void
say_int(int64_t v)
{
  char buf[24];
  size_t i = sizeof buf;
  uint64_t u = v < 0 ? (uint64_t) 0 - (uint64_t) v : (uint64_t) v;
  buf[--i] = 0;
  do
    buf[--i] = (char) ('0' + u % 10);
  while ((u /= 10) && i > 1);
  if (v < 0)
    buf[--i] = '-';
  say(buf + i);
}

static const char *
sig_name(int sig)
{
  switch (sig) {
  case SIGINT: return "SIGINT";
  case SIGTERM: return "SIGTERM";
  case SIGHUP: return "SIGHUP";
  case SIGUSR1: return "SIGUSR1";
  case SIGUSR2: return "SIGUSR2";
  case SIGSEGV: return "SIGSEGV";
  case SIGBUS: return "SIGBUS";
  case SIGFPE: return "SIGFPE";
  case SIGILL: return "SIGILL";
  case SIGABRT: return "SIGABRT";
  default: return "a signal";
  }
}

/* " in plugin NAME (FILE) during EVENT at training step N", or what is
 * known of it. */
static void
say_where(const CtLearner *L)
{
  if (!L) {
    say(" outside the training loop");
    return;
  }
  const CtCallback *cb = L->current_cb;
  const char *event = cb ? ct_event_name(L->current_event) : NULL;
  if (cb) {
    say(" in plugin ");
    say(cb->label ? cb->label : cb->desc->name);
    say(" during ");
    say(event ? event : "an event");
  } else {
    say(" in the training loop (no plugin was running)");
  }
  say(L->in_step ? " at training step " : " after training step ");
  say_int(L->in_step ? L->train_iter + 1 : L->train_iter);
}

/* "; the last training state is ...: continue with ..." */
static void
say_state(const CtLearner *L)
{
  if (!L)
    return;
  if (L->last_state) {
    say("; the last training state is ");
    say(L->last_state);
    say(" (step ");
    say_int(L->last_state_iter);
    say("): continue with: cliptrain fit --resume ");
    say(L->out_dir ? L->out_dir : ".");
  } else {
    say("; no training state was saved before it (fit.save_state_every_seconds and "
        "fit.save_state_every keep one)");
  }
}

/* ---------------------------------------------------------------- stop, save */

/* The first SIGINT, SIGTERM or SIGHUP asks the loop to stop after the
 * current step and save a training state; a second one ends the process
 * at once, with the shell's status for a death by that signal (130, 143,
 * 129). */
static void
on_stop(int sig)
{
  const char *name = sig_name(sig);
  if (stop_requested) {
    say("cliptrain: ");
    say(name);
    say(" again: quitting at once; the last training state saved is kept\n");
    _exit(128 + sig);
  }
  stop_requested = 1;
  say("cliptrain: ");
  say(name);
  say(": stopping after this step to save the training state (send it again to quit at "
      "once)\n");
}

/* SIGUSR1, SIGUSR2: the learner saves after this step, says so and goes on. */
static void
on_save(int sig)
{
  save_requested = sig_name(sig);
}

/* ---------------------------------------------------------------- crashes */

static const int fatal_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
static struct sigaction fatal_before[G_N_ELEMENTS(fatal_signals)];
static char alt_stack[64 * 1024]; /* a stack overflow's SIGSEGV still gets said */

/* Say where, then give the signal back to the action it had before (the
 * default, or a sanitizer's): a fault returns and happens again under it,
 * a signal sent (abort(), kill) is raised again. */
static void
on_fatal(int sig, siginfo_t *info, void *context)
{
  (void) context;
  const CtLearner *L = ct_learner_fitting;
  say("cliptrain: fatal signal ");
  say(sig_name(sig));
  say_where(L);
  say_state(L);
  say("\n");
  for (size_t i = 0; i < G_N_ELEMENTS(fatal_signals); i++)
    if (fatal_signals[i] == sig)
      sigaction(sig, &fatal_before[i], NULL);
  if (!info || info->si_code <= 0)
    raise(sig);
}

/* exit() during the fit: a plugin's (nothing of the core's calls it
 * then).  Its status, often 0, would pass a truncated run for a finished
 * one. */
static void
on_exit_in_fit(void)
{
  const CtLearner *L = ct_learner_fitting;
  if (!L)
    return;
  say("cliptrain: exit() was called");
  say_where(L);
  say(", before the fit's end: exit status 1");
  say_state(L);
  say("\n");
  _exit(1);
}

static void
install_once(void)
{
  static gboolean done;
  if (done)
    return;
  done = TRUE;
  atexit(on_exit_in_fit);
  stack_t ss, old;
  if (sigaltstack(NULL, &old) == 0 && (old.ss_flags & SS_DISABLE)) {
    ss.ss_sp = alt_stack;
    ss.ss_size = sizeof alt_stack;
    ss.ss_flags = 0;
    sigaltstack(&ss, NULL);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < G_N_ELEMENTS(fatal_signals); i++)
    sigaction(fatal_signals[i], &sa, &fatal_before[i]);
}

/* ---------------------------------------------------------------- install */

void
ct_run_signals_install(void)
{
  stop_requested = 0;
  save_requested = NULL;
  install_once();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART; /* a read or wait under way goes on (SIGUSR1 must not fail it) */
  sa.sa_handler = on_stop;
  sigaddset(&sa.sa_mask, SIGINT);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGHUP);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sa.sa_handler = on_save;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
}

volatile int *
ct_run_signals_stop_flag(void)
{
  return &stop_requested;
}

const char *volatile *
ct_run_signals_save_flag(void)
{
  return &save_requested;
}

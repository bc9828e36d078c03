# tests/cli: the command-line scripts, which run the built cliptrain (and
# the helpers of tests/unit/) and print TAP; tap.sh is what they share.
# Included by the top Makefile.am.
cli_tests = \
	%reldir%/cli.sh \
	%reldir%/plugins.sh \
	%reldir%/example-plugin.sh \
	%reldir%/blas-kernels.sh \
	%reldir%/tokenize.sh \
	%reldir%/fit.sh \
	%reldir%/data-fit.sh \
	%reldir%/resume.sh \
	%reldir%/patch-dropout.sh \
	%reldir%/precision.sh \
	%reldir%/commands.sh \
	%reldir%/eval.sh \
	%reldir%/metrics.sh
# every subcommand's --help: the program's name, an example, a docs page
cli_tests += %reldir%/help.sh
# every fenced block of README.md and docs/*.md run, checked or skipped
# with its reason (the docs travel in the tarball for distcheck)
cli_tests += %reldir%/doc-snippets.sh
# a tiny ResNet recipe trains, resumes bit for bit and saves
cli_tests += %reldir%/resnet-fit.sh
# SigLIP's loss: logit_bias saved and loaded, init, resume, 2 ranks with MPI
cli_tests += %reldir%/siglip.sh
# LiT-style locking and layer-wise lr decay from a recipe; --print-lr-groups
cli_tests += %reldir%/lock.sh
# core/'s folders include and call only downwards
cli_tests += %reldir%/check-layers.sh
# run folders, paths, resume and failures, from a user's side
cli_tests += %reldir%/run-folder.sh
# what a fit prints as it goes: log lines, the progress bar, a plugin's stop
cli_tests += %reldir%/logging.sh
# the HTML report plugin
cli_tests += %reldir%/report.sh
# faults on purpose: NaN losses, a full disk, signals, plugin loading and
# failures, SIGKILL at random moments, valgrind; tests/sanitize.sh runs the
# whole suite under ASan, LSan and UBSan (not part of make check)
cli_tests += %reldir%/faults.sh %reldir%/plugin-load.sh %reldir%/chaos.sh %reldir%/valgrind.sh
# one run at a time in a run folder (its lock)
cli_tests += %reldir%/run-lock.sh
# SIGHUP, SIGUSR1/2, SIGPIPE and broken outputs; plugins that segfault,
# abort or exit(0)
cli_tests += %reldir%/signals.sh
# input files read with bounds: FIFOs, devices and folders refused at
# once, gzip bombs stopped at their header or a limit, CSV limits, and
# captions too long for the context named by file and row
cli_tests += %reldir%/reads.sh
# the distributed plugins under mpiexec (skipped without MPI)
cli_tests += %reldir%/mpi.sh
TESTS += $(cli_tests)
EXTRA_DIST += $(cli_tests) %reldir%/tap.sh

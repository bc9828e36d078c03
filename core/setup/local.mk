# core/setup: turning a recipe into a run: its typed sections, data, optimizer,
# batch-size search, callbacks, the run folder, fit.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/data-setup.c \
	%reldir%/data-setup.h \
	%reldir%/max-batch.c \
	%reldir%/max-batch.h \
	%reldir%/optim-setup.c \
	%reldir%/optim-setup.h \
	%reldir%/run-callbacks.c \
	%reldir%/run-eval.c \
	%reldir%/run-folder.c \
	%reldir%/run-lock.c \
	%reldir%/run-private.h \
	%reldir%/run-signals.c \
	%reldir%/run.c \
	%reldir%/run.h \
	%reldir%/sections-keys.c \
	%reldir%/sections-private.h \
	%reldir%/sections.c \
	%reldir%/sections.h

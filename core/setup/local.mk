# core/setup: turning a recipe into a run: data, optimizer, batch-size search, fit.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/data-setup.c \
	%reldir%/data-setup.h \
	%reldir%/max-batch.c \
	%reldir%/max-batch.h \
	%reldir%/optim-setup.c \
	%reldir%/optim-setup.h \
	%reldir%/run.c \
	%reldir%/run.h

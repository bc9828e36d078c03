# core/train: training: the learner, recorder and state, the optimizer, schedules,
# the communicator, plugin loading.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/comm.c \
	%reldir%/learner-private.h \
	%reldir%/learner.c \
	%reldir%/optimizer.c \
	%reldir%/output-errors.c \
	%reldir%/pace.c \
	%reldir%/plugin-loader.c \
	%reldir%/plugin-loader.h \
	%reldir%/recorder.c \
	%reldir%/schedule.c \
	%reldir%/state.c

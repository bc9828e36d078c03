# core/base: the foundations every other folder may use: errors, hashing, bounded
# file reads, caption templates and durations (text.c), the RNG,
# the thread pool, gemm, bf16/fp16 rounding, vector math, profiling.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/error.c \
	%reldir%/file.c \
	%reldir%/file.h \
	%reldir%/file-write.c \
	%reldir%/file-write.h \
	%reldir%/gemm.c \
	%reldir%/gemm.h \
	%reldir%/hash.c \
	%reldir%/parallel.c \
	%reldir%/parallel.h \
	%reldir%/precision.c \
	%reldir%/precision.h \
	%reldir%/profile-private.h \
	%reldir%/profile.c \
	%reldir%/rng.c \
	%reldir%/text.c \
	%reldir%/vec.h \
	%reldir%/vmath.h

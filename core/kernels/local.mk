# core/kernels: forward and backward kernels over rows, and the CLIP loss.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/attention.c \
	%reldir%/attnpool.c \
	%reldir%/batchnorm.c \
	%reldir%/conv.c \
	%reldir%/elementwise.c \
	%reldir%/embed.c \
	%reldir%/gelu.c \
	%reldir%/layernorm.c \
	%reldir%/linear.c \
	%reldir%/loss.c \
	%reldir%/lowp.c \
	%reldir%/ops.h \
	%reldir%/pool.c \
	%reldir%/relu.c \
	%reldir%/rows.c \
	%reldir%/siglip-loss.c \
	%reldir%/softmax.c

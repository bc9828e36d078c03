# core/model: the CLIP model: configuration, layout and arena, the transformer,
# the towers, the ModifiedResNet, weight I/O.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/classes.c \
	%reldir%/groups.c \
	%reldir%/model-config-private.h \
	%reldir%/model-config.c \
	%reldir%/model-private.h \
	%reldir%/model.c \
	%reldir%/patch-dropout.c \
	%reldir%/resnet-layout.c \
	%reldir%/resnet-private.h \
	%reldir%/resnet.c \
	%reldir%/towers.c \
	%reldir%/transformer.c \
	%reldir%/weights.c

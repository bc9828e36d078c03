# core/formats: file formats: safetensors and YAML recipes.
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/recipe-schema.c \
	%reldir%/recipe-schema.h \
	%reldir%/recipe.c \
	%reldir%/recipe.h \
	%reldir%/safetensors-header.c \
	%reldir%/safetensors-private.h \
	%reldir%/safetensors.c

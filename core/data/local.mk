# core/data: data: sources, datasets, the loader, images, the tokenizer
# (tables/ holds generated tables).
# Included by the top Makefile.am; it may include headers from itself
# and from the folders below it (tests/cli/check-layers.sh).
libctcore_la_SOURCES += \
	%reldir%/dataset-source.c \
	%reldir%/dataset.c \
	%reldir%/dataset.h \
	%reldir%/image-private.h \
	%reldir%/image-transform.c \
	%reldir%/image.c \
	%reldir%/loader.c \
	%reldir%/loader.h \
	%reldir%/source-csv.c \
	%reldir%/source-folder.c \
	%reldir%/source-idx.c \
	%reldir%/source-webdataset.c \
	%reldir%/source.c \
	%reldir%/source.h \
	%reldir%/tables/html-entities.c \
	%reldir%/tokenizer-train.c \
	%reldir%/tokenizer.c

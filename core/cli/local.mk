# core/cli: the `cliptrain` program, a file a subcommand, over the
# installed library.  Included by the top Makefile.am; it may include
# headers from every layer of core/ (tests/cli/check-layers.sh).
bin_PROGRAMS += cliptrain
cliptrain_SOURCES = \
	%reldir%/cli.h \
	%reldir%/main.c \
	%reldir%/bench.c \
	%reldir%/blas.c \
	%reldir%/embed.c \
	%reldir%/escape.c \
	%reldir%/eval.c \
	%reldir%/fit.c \
	%reldir%/init.c \
	%reldir%/model-arg.c \
	%reldir%/recipe.c \
	%reldir%/retrieve.c \
	%reldir%/tokenize.c \
	%reldir%/zeroshot.c
cliptrain_LDADD = libcliptrain.la $(GLIB_LIBS) $(JSON_GLIB_LIBS) $(OPENBLAS_LIBS) -lm

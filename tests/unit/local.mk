# tests/unit: the GLib C test programs, each a test of its own, and the C
# helpers that the scripts of tests/cli/ and tests/torch/ call; test-util.h
# is what they share.  Each program is built from its name with .c
# (automake's default) and links $(LDADD), libctcore with every symbol.
# Included by the top Makefile.am.
unit_tests = \
	%reldir%/test-ops \
	%reldir%/test-ops-resnet \
	%reldir%/test-resnet \
	%reldir%/test-safetensors \
	%reldir%/test-model \
	%reldir%/test-loop \
	%reldir%/test-recipe \
	%reldir%/test-sources \
	%reldir%/test-tokenizer \
	%reldir%/clip_parity \
	%reldir%/test-image \
	%reldir%/test-precision \
	%reldir%/test-checkpoint \
	%reldir%/test-patch-dropout
# metric plugins: test-metrics.c includes plugins/retrieval_at_k.c
unit_tests += %reldir%/test-metrics
# the general optimizer and the schedules
unit_tests += %reldir%/test-optimizer
# LiT-style locking: frozen groups run no backward
unit_tests += %reldir%/test-lock
# the distributed sampler and the loss of a rank's rows, without MPI
unit_tests += %reldir%/test-shard
# SigLIP's sigmoid loss: definition, finite differences, chunks, ranks
unit_tests += %reldir%/test-siglip
# check-run DIR: is every file of a run folder whole? (chaos.sh, faults.sh)
# st-diff A B: do two safetensors files agree? (mpi.sh)
# siglip_parity CASES: ct_siglip_loss against PyTorch (tests/torch/siglip.sh)
# pdrop-pass: a case's pass under patch dropout (tests/torch/patch-dropout.sh)
check_PROGRAMS += $(unit_tests) %reldir%/check-run %reldir%/st-diff %reldir%/siglip_parity \
                  %reldir%/pdrop-pass
TESTS += $(unit_tests)
EXTRA_DIST += %reldir%/test-util.h

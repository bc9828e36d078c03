# tests/torch: the PyTorch references (bench/torch_clip.py's CLIP makes
# the cases that tests/unit/clip_parity checks), the scripts that need
# PyTorch (they skip without it; torch-python.sh finds it), and the Python
# generators of the fixtures in tests/data/ and of
# core/data/tables/html-entities.c.
# Included by the top Makefile.am.
torch_tests = \
	%reldir%/torch-interop.sh \
	%reldir%/side-by-side.sh
# the ResNet image tower against PyTorch
torch_tests += %reldir%/torch-resnet.sh
# 16 random shapes of both towers against PyTorch, every variant of the
# pass (parity-sweep.sh N SEED runs more)
torch_tests += %reldir%/parity-sweep.sh
# SigLIP's sigmoid loss and its gradients against PyTorch
torch_tests += %reldir%/siglip.sh
# patch dropout against an open_clip-style PyTorch tower (tests/unit/pdrop-pass
# writes cliptrain's pass, check_patch_dropout.py compares)
torch_tests += %reldir%/patch-dropout.sh
TESTS += $(torch_tests)
EXTRA_DIST += $(torch_tests) %reldir%/torch-python.sh \
	%reldir%/gen_clip_case.py %reldir%/check_torch_clip.py %reldir%/torch_roundtrip.py \
	%reldir%/check_optimizer_torch.py %reldir%/gen_siglip_case.py %reldir%/check_patch_dropout.py \
	%reldir%/gen_image_cases.py %reldir%/gen_source_fixtures.py %reldir%/gen_tokenizer_tables.py

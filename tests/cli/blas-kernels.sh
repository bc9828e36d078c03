#!/bin/sh
# blas-kernels.sh: the OpenBLAS kernels that `cliptrain` may select for
# itself (see core/cli/blas.c) give PyTorch-exact results on this machine:
# the parity cases and the finite-difference checks pass under each core
# type that the CPU supports.  Products cut across threads keep the bits
# of one call (core/base/gemm.c's row grain for each core type) under those and
# under the other kernel sets the CPU can run.  Prints TAP.
builddir=${CT_BUILDDIR:-.}
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { case " $flags " in *" $1 "*) return 0 ;; esac; return 1; }
cores=
if has avx512f && has avx512bw && has avx512dq && has avx512vl; then cores="SkylakeX"; fi
if has avx2 && has fma; then cores="$cores Haswell"; fi
if [ -z "$cores" ]; then
  echo "1..0 # SKIP this CPU has neither AVX-512 nor AVX2 with FMA"
  exit 0
fi
# other core types whose sgemm kernels this CPU can run: gemm.c knows the
# row grain of the first four; Nehalem's stands for the unnamed ones
cut_cores=
if has avx512f && has avx512bw && has avx512dq && has avx512vl; then cut_cores="Cooperlake"; fi
if has avx2 && has fma; then cut_cores="$cut_cores Zen"; fi
if has avx; then cut_cores="$cut_cores Sandybridge"; fi
cut_cores="$cut_cores Prescott Nehalem"
set -- $cores
echo "1..$(($# * 2 + $(echo $cut_cores | wc -w)))"
n=0 fail=0
for core in "$@"; do
  for prog in clip_parity test-ops; do
    n=$((n + 1))
    if out=$(OPENBLAS_CORETYPE=$core "$builddir/tests/unit/$prog" 2>&1); then
      echo "ok $n - $prog with OPENBLAS_CORETYPE=$core"
    else
      echo "not ok $n - $prog with OPENBLAS_CORETYPE=$core"
      printf '%s\n' "$out" | sed 's/^/# /'
      fail=1
    fi
  done
done
for core in $cut_cores; do
  n=$((n + 1))
  if out=$(OPENBLAS_CORETYPE=$core "$builddir/tests/unit/test-ops" -p /ops/sgemm-threads 2>&1); then
    echo "ok $n - cut products keep their bits with OPENBLAS_CORETYPE=$core"
  else
    echo "not ok $n - cut products keep their bits with OPENBLAS_CORETYPE=$core"
    printf '%s\n' "$out" | sed 's/^/# /'
    fail=1
  fi
done
exit $fail

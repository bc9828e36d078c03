#!/bin/sh
# check-layers.sh: core/'s folders are layers, lowest first:
#   base kernels formats model data train setup cli
# A file may include headers of its own folder and of the folders below
# it, named from core/ ("model/model-private.h"), never one of a folder
# above it; <cliptrain/...> (the public API) and "config.h" (autoconf's)
# are open to all.  And, from the built objects (nm), no function of a
# folder calls a ct_ function defined in a folder above it, through the
# public API or otherwise.  Prints TAP: one test a folder for the
# includes, each naming every include that breaks the order, and one for
# the calls.
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
builddir=${CT_BUILDDIR:-$srcdir}
layers="base kernels formats model data train setup cli"

rank() {
  i=0
  for l in $layers; do
    [ "$l" = "$1" ] && { echo $i; return; }
    i=$((i + 1))
  done
  echo -1
}

set -- $layers
echo "1..$(($# + 1))"
n=0 fail=0
for layer in $layers; do
  n=$((n + 1))
  own=$(rank "$layer")
  bad=$(find "$srcdir/core/$layer" -name '*.[ch]' | sort | while read -r f; do
    grep -n '^#include "' "$f" | while IFS= read -r line; do
      hdr=$(echo "$line" | sed 's/.*#include "\([^"]*\)".*/\1/')
      [ "$hdr" = config.h ] && continue
      case "$hdr" in
        */*) dir=${hdr%%/*} ;;
        *) echo "${f#"$srcdir"/}:${line%%:*}: \"$hdr\" is not named from core/"; continue ;;
      esac
      r=$(rank "$dir")
      if [ "$r" -lt 0 ]; then
        echo "${f#"$srcdir"/}:${line%%:*}: \"$hdr\" is in no layer"
      elif [ "$r" -gt "$own" ]; then
        echo "${f#"$srcdir"/}:${line%%:*}: \"$hdr\" is in $dir, above $layer"
      elif [ ! -f "$srcdir/core/$hdr" ]; then
        echo "${f#"$srcdir"/}:${line%%:*}: \"$hdr\" does not exist"
      fi
    done
  done)
  if [ -z "$bad" ]; then
    echo "ok $n - core/$layer includes only from itself and the layers below it"
  else
    echo "not ok $n - core/$layer includes from above it"
    echo "$bad" | sed 's/^/# /'
    fail=1
  fi
done

# the calls: "layer D symbol" for definitions, "layer U symbol" for uses
n=$((n + 1))
objs=$(find "$builddir/core" -path '*/.libs/*.o' 2>/dev/null | sort)
if [ -z "$objs" ] || ! command -v nm >/dev/null; then
  echo "ok $n # SKIP no built objects under $builddir/core, or no nm"
  exit $fail
fi
table=$(for o in $objs; do
  rel=${o#"$builddir"/core/}
  layer=${rel%%/*}
  [ "$(rank "$layer")" -ge 0 ] || continue
  nm "$o" | awk -v l="$layer" -v f="$(basename "$o" .o | sed 's/^libctcore_la-//')" '
    NF == 3 && $2 ~ /^[TDBR]$/ { print l, "D", $3, f }
    NF == 2 && $1 == "U" && $2 ~ /^ct_/ { print l, "U", $2, f }'
done)
up=$(echo "$table" | awk -v order="$layers" '
  BEGIN { k = split(order, o, " "); for (i = 1; i <= k; i++) r[o[i]] = i }
  $2 == "D" { def[$3] = $1; file[$3] = $4 }
  $2 == "U" { use[++u] = $0 }
  END {
    for (i = 1; i <= u; i++) {
      split(use[i], f, " ")
      if ((f[3] in def) && r[def[f[3]]] > r[f[1]])
        printf "core/%s/%s.c calls %s of core/%s/%s.c\n", f[1], f[4], f[3], def[f[3]], file[f[3]]
    }
  }' | sort -u)
if [ -z "$up" ]; then
  echo "ok $n - no function calls one of a layer above its own ($(echo "$objs" | wc -w) objects)"
else
  echo "not ok $n - functions call into layers above their own"
  echo "$up" | sed 's/^/# /'
  fail=1
fi
exit $fail

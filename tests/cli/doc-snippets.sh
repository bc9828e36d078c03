#!/bin/sh
# doc-snippets.sh: every fenced block of README.md and docs/*.md is checked
# or skipped with its reason, so that an example that breaks fails the
# suite.  The convention (docs/testing.md#documentation-snippets):
#   ```sh       commands, run from a copy of the top source folder (one for
#               each page, so that a page's commands see each other's
#               files) with the built cliptrain (fit cut short by
#               --stop-after 1, into its --out or a folder of its own,
#               bench by --steps 1; under mpirun/mpiexec/srun, fit
#               is validated by `cliptrain recipe` with the same recipe and
#               --set options); a command that is not cliptrain's fails
#               unless the block is marked only-cliptrain
#   ```console  "$ cliptrain ..." lines are run as they are; the lines
#               after one are its expected output (stdout and stderr): `...`
#               in a line matches any text, a line of just `...` any lines
#   ```yaml     a recipe or a part of one, resolved by `cliptrain recipe`
#               on top of recipes/synthetic.yaml (unless it has extends:)
#   anything else (```, ```text, ```c, ...): a synopsis, output or code:
#               reported as skipped
# HTML comments on the lines just before a fence:
#   <!-- snippet: skip REASON -->          the block is not run
#   <!-- snippet: only-cliptrain REASON --> only the cliptrain commands of
#                                           the block run; the others are
#                                           skipped for REASON
#   <!-- snippet: file NAME=PATH -->       NAME, which the block names but
#                                           does not exist, stands for PATH
#                                           (a recipe that extends it, or a
#                                           copy)
#   <!-- snippet: file NAME -->            (on a yaml block) the block is
#                                           saved as NAME, not validated
# Each test names FILE:LINE of its command or block.  Prints TAP.
. "$(dirname "$0")/tap.sh"

ct_abs=$(cd "$(dirname "$ct")" && pwd)/$(basename "$ct")
pages=$(cd "$srcdir" && ls README.md docs/*.md)

# ---------------------------------------------------------------- extract
# $tmp/blocks: "ID<TAB>FILE<TAB>LINE<TAB>INFO<TAB>MARKERS" per block, the
# body in $tmp/b/ID (indentation of the fence removed)
mkdir "$tmp/b"
for page in $pages; do
  awk -v page="$page" -v dir="$tmp/b" -v start="$(ls "$tmp/b" | wc -l)" '
    BEGIN { id = start; inb = 0; markers = "" }
    !inb && /^ *```/ {
      match($0, /^ */); indent = RLENGTH
      info = substr($0, indent + 4); sub(/[ \t].*/, "", info)
      id++; body = sprintf("%s/%04d", dir, id); printf "" > body
      printf "%04d\t%s\t%d\t%s\t%s\n", id, page, NR, info, markers
      inb = 1; markers = ""; next
    }
    inb && /^ *```/ { inb = 0; close(body); next }
    inb { print substr($0, indent + 1) > body; next }
    /^<!-- *snippet: .*-->$/ {
      m = $0; sub(/^<!-- *snippet: */, "", m); sub(/ *-->$/, "", m)
      markers = markers (markers == "" ? "" : "|") m; next
    }
    /^<!--.*-->$/ { next }
    /[^ \t]/ { markers = "" }
  ' "$srcdir/$page" >>"$tmp/blocks"
done

# ---------------------------------------------------------------- plan
# $tmp/items: one line a step, "KIND<TAB>WHERE<TAB>A<TAB>B"; KIND page and
# file set things up, the others are one TAP test each
items=$tmp/items
: >"$items"
item() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$items"; }
is_cliptrain() { # CMD: cliptrain (or ./cliptrain) is one of its commands
  printf '%s\n' "$1" | sed 's/^\([A-Za-z_][A-Za-z0-9_]*=[^ ]* \)*//' |
    grep -Eq '^((mpirun|mpiexec|srun) .*)?(\./)?cliptrain( |$)|[|;&(] *(\./)?cliptrain( |$)'
}
last_page=
while IFS="$(printf '\t')" read -r id file line info markers; do
  [ "$file" != "$last_page" ] && item page "$file" "" "" && last_page=$file
  where="$file:$line"
  skip_reason= only= save=
  oldifs=$IFS
  IFS='|'
  for m in $markers; do
    case $m in
    skip*) skip_reason=${m#skip}; skip_reason=${skip_reason# } ;;
    only-cliptrain*) only=${m#only-cliptrain}; only=${only# } ;;
    file\ *=*)
      IFS=$oldifs
      for spec in ${m#file }; do item file "$where" "${spec%%=*}" "${spec#*=}"; done
      IFS='|' ;;
    file\ *) save=${m#file }; save=${save# } ;;
    *) item bad "$where" "unknown snippet marker '$m'" "" ;;
    esac
  done
  IFS=$oldifs
  body=$tmp/b/$id
  if [ -n "$skip_reason" ] || printf '%s\n' "$markers" | grep -Eq '(^|[|])skip($|[|])'; then
    item skip "$where" "${skip_reason:-marked skip without a reason}" ""
    continue
  fi
  case $info in
  sh | bash | shell)
    # commands: continuation lines joined, comments dropped, && split
    awk -v first="$line" '
      { l = NR + first }
      cont != "" { $0 = cont " " $0; l = cl; cont = "" }
      /\\$/ { sub(/\\$/, ""); cont = $0; cl = l; next }
      { sub(/(^|[ \t]+)#.*$/, ""); if ($0 !~ /[^ \t]/) next
        n = split($0, parts, / +&& +/)
        for (i = 1; i <= n; i++) { c = parts[i]; gsub(/^ +| +$/, "", c); printf "%d\t%s\n", l, c } }
    ' "$body" >"$tmp/cmds"
    while IFS="$(printf '\t')" read -r l c; do
      if is_cliptrain "$c"; then item run "$file:$l" "$c" ""
      elif [ -n "$only" ]; then item skip "$file:$l" "$only: $(printf '%.40s' "$c")" ""
      else item bad "$file:$l" "'$(printf '%.40s' "$c")' is not a cliptrain command; run it from a test or mark the block (see docs/testing.md)" ""
      fi
    done <"$tmp/cmds"
    ;;
  console)
    # each "$ " line and the output lines after it
    awk -v first="$line" -v dir="$tmp/b" -v id="$id" '
      /^\$ / { k++; f = sprintf("%s/%s.%d", dir, id, k); printf "" > f
               printf "%d\t%s\t%s\n", NR + first, f, substr($0, 3); next }
      k { print > f }
    ' "$body" >"$tmp/cmds"
    while IFS="$(printf '\t')" read -r l f c; do item console "$file:$l" "$c" "$f"; done <"$tmp/cmds"
    ;;
  yaml | yml)
    if [ -n "$save" ]; then item save "$where" "$save" "$body"
    else item yaml "$where" "$body" ""; fi
    ;;
  *) item skip "$where" "\`\`\`${info:-(no info string)} block: a synopsis, output or code, not run" "" ;;
  esac
done <"$tmp/blocks"
echo "1..$(grep -Evc '^(page|file)	' "$items")"

# ---------------------------------------------------------------- run
# the stand-in cliptrain: the real one, cut short
mkdir "$tmp/bin"
cat >"$tmp/bin/cliptrain" <<EOF
#!/bin/sh
ct='$ct_abs'
EOF
cat >>"$tmp/bin/cliptrain" <<'EOF'
[ -n "${SNIPPET_AS_IS:-}" ] && exec "$ct" "$@"
cmd=${1:-}
[ $# -gt 0 ] && shift
drop=0
case $cmd in
fit)
  out=$SNIPPET_OUT
  for a do
    shift
    [ $drop = 1 ] && { drop=0; continue; }
    [ $drop = out ] && { drop=0; out=$a; continue; }
    case $a in
    --out | -o) drop=out; continue ;;
    --out=*) out=${a#--out=}; continue ;;
    --resume | -r) out= ;;
    --stop-after | --time-limit | --threads | -t | --max-batch-size) drop=1; continue ;;
    --stop-after=* | --time-limit=* | --threads=* | --max-batch-size=*) continue ;;
    esac
    set -- "$@" "$a"
  done
  if [ -n "${SNIPPET_VALIDATE:-}" ]; then exec "$ct" recipe "$@" >/dev/null; fi
  exec "$ct" fit "$@" --stop-after 1 ${out:+--out "$out"} ;;
bench)
  for a do
    shift
    [ $drop = 1 ] && { drop=0; continue; }
    case $a in --steps) drop=1; continue ;; --steps=*) continue ;; esac
    set -- "$@" "$a"
  done
  exec "$ct" bench "$@" --steps 1 ;;
esac
exec "$ct" "$cmd" "$@"
EOF
chmod +x "$tmp/bin/cliptrain"
to=
command -v timeout >/dev/null 2>&1 && to="timeout 300"

# workdir PAGE: a fresh copy of the source folder's top (links; recipes/
# copied, so that a snippet's stand-in files can go there)
workdir() {
  work=$tmp/w/$(echo "$1" | tr '/.' '__')
  mkdir -p "$work/recipes"
  for e in "$srcdir"/* "$srcdir"/.ci; do
    b=$(basename "$e")
    case $b in recipes | cliptrain | runs) continue ;; esac
    [ -e "$e" ] && ln -s "$e" "$work/$b"
  done
  cp "$srcdir"/recipes/* "$work/recipes/"
  ln -s "$tmp/bin/cliptrain" "$work/cliptrain"
}

# runsh CMD: CMD in the work folder, output in $tmp/out and $tmp/err
k=0
runsh() {
  k=$((k + 1))
  (cd "$work" && PATH="$tmp/bin:$PATH" SNIPPET_OUT="$tmp/run$k" $to sh -c "$1") \
    </dev/null >"$tmp/out" 2>"$tmp/err"
}

# matches EXPECTED ACTUAL: each expected line matches the actual one
# (`...` in a line: any text; a line that is just `...`: any lines)
matches() {
  awk '
    function rx(s) { gsub(/[][\\^$.*+?(){}|\/]/, "\\\\&", s); gsub(/\\\.\\\.\\\./, ".*", s); return "^" s "$" }
    function m(i, j) {
      if (i > ne) return j > na
      if (e[i] == "...") { for (; j <= na + 1; j++) if (m(i + 1, j)) return 1; return 0 }
      return j <= na && a[j] ~ rx(e[i]) && m(i + 1, j + 1)
    }
    FNR == NR { e[++ne] = $0; next }
    { a[++na] = $0 }
    END { exit !m(1, 1) }
  ' "$1" "$2"
}

while IFS="$(printf '\t')" read -r kind where a b; do
  case $kind in
  page) workdir "$where" ;;
  file)
    if [ -e "$srcdir/$b" ]; then
      # a recipe extends the real one, whose own extends: stay right
      case $a in
      *.yaml | *.yml) echo "extends: $srcdir/$b" >"$work/$a" ;;
      *) cp "$srcdir/$b" "$work/$a" ;;
      esac
    else echo "# $where: stand-in $b for $a does not exist"; fail=1; fi ;;
  skip) skip "$where: $a" ;;
  bad) not_ok "$where: $a" ;;
  save)
    cp "$b" "$work/$a"
    skip "$where: saved as $a for the commands after it" ;;
  run)
    c=$a note=
    case $c in
    mpirun\ * | mpiexec\ * | srun\ *)
      c="cliptrain ${c#*cliptrain }" note=" (launcher dropped: validated by cliptrain recipe)"
      export SNIPPET_VALIDATE=1 ;;
    esac
    runsh "$c"
    rc=$?
    unset SNIPPET_VALIDATE
    if [ $rc -eq 0 ]; then ok "$where: $a$note"
    elif grep -q "built without MPI" "$tmp/err"; then skip "$where: $a: cliptrain was built without MPI"
    elif [ ! -d /usr/share/datasets/fashion-mnist ] && grep -q /usr/share/datasets/fashion-mnist "$tmp/err"
    then skip "$where: $a: Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)"
    else not_ok "$where: $a$note (exit $rc)" "$tmp/out" "$tmp/err"; fi ;;
  console)
    SNIPPET_AS_IS=1 runsh "$a"
    cat "$tmp/out" "$tmp/err" >"$tmp/both"
    if matches "$b" "$tmp/both"; then ok "$where: \$ $a: the output shown"
    else
      not_ok "$where: \$ $a: output differs from the one shown"
      sed 's/^/# expected: /' "$b"
      sed 's/^/# got:      /' "$tmp/both"
    fi ;;
  yaml)
    if grep -q '^extends:' "$a"; then cp "$a" "$work/snippet.yaml"
    else { echo "extends: $srcdir/recipes/synthetic.yaml"; cat "$a"; } >"$work/snippet.yaml"; fi
    SNIPPET_AS_IS=1 runsh "cliptrain recipe snippet.yaml"
    rc=$?
    if [ $rc -eq 0 ]; then ok "$where: yaml resolves (cliptrain recipe)"
    elif grep -q "built without MPI" "$tmp/err"; then skip "$where: yaml: cliptrain was built without MPI"
    else not_ok "$where: yaml does not resolve (exit $rc)" "$tmp/err"; fi ;;
  esac
done <"$items"
exit $fail

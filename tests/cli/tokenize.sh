#!/bin/sh
# tokenize.sh: `cliptrain tokenize` against OpenAI's ids for a few captions
# of tests/data/tokenizer_cases.jsonl, its padding, truncation, errors and
# exit statuses.  Prints TAP.  Needs OpenAI's merges file at $CT_TEST_VOCAB;
# the checks that read it are skipped when it is missing.
builddir=${CT_BUILDDIR:-.}
ct="$builddir/cliptrain"
# OpenAI's merges file: $CT_TEST_VOCAB, else the copy in shared/ beside the checkout
vocab=${CT_TEST_VOCAB:-$(cd "$(dirname "$0")/../.." && pwd)/../shared/vocab/bpe_simple_vocab_16e6.txt.gz}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
have_vocab=no
if [ -n "$vocab" ] && [ -f "$vocab" ]; then
  have_vocab=yes
fi
unset CLIPTRAIN_VOCAB

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1))
  echo "not ok $n - $1"
  for f in out err; do
    [ -s "$tmp/$f" ] && sed "s/^/# $f: /" "$tmp/$f"
  done
  fail=1
}
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP OpenAI's merges file (CT_TEST_VOCAB=${vocab:-unset}) is missing"; }

# run INPUT ARGS...: cliptrain tokenize ARGS with INPUT on stdin
run() {
  input=$1
  shift
  printf '%s' "$input" | "$ct" tokenize "$@" >"$tmp/out" 2>"$tmp/err"
  status=$?
}

# check DESCRIPTION CONDITION...: ok when the test command succeeds
check() {
  desc=$1
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

same_output() { printf '%s\n' "$1" | cmp -s - "$tmp/out"; }

echo "1..14"

# without a vocabulary: bad usage, one line that says what to pass
run "a cat
"
check "no --vocab and no CLIPTRAIN_VOCAB: exit 2" [ "$status" -eq 2 ]
check "... one error line naming --vocab" sh -c "[ \$(wc -l <'$tmp/err') -eq 1 ] && grep -q -- '--vocab' '$tmp/err'"

run "a cat
" --vocab "$tmp/no-such-file.txt.gz"
check "a missing vocabulary file: exit 1, naming it" \
  sh -c "[ $status -eq 1 ] && grep -q 'no-such-file.txt.gz' '$tmp/err'"

if [ "$have_vocab" = yes ]; then
  # OpenAI's ids (tests/data/tokenizer_cases.jsonl) with start, end, padding
  run "a photo of a cat.
an ankle boot
It's 2 o'clock
café déjà vu
&amp; &lt;b&gt; &quot;quoted&quot; &amp;amp;

" --vocab "$vocab" --context-length 10
  check "golden captions: exit 0" [ "$status" -eq 0 ]
  check "golden captions: OpenAI's ids" same_output "49406 320 1125 539 320 2368 269 49407 0 0
49406 550 14777 8087 49407 0 0 0 0 0
49406 585 568 273 334 262 6716 49407 0 0
49406 15304 25466 73 21259 13230 49407 0 0 0
49406 261 283 321 285 257 27706 257 261 49407
49406 49407 0 0 0 0 0 0 0 0"

  CLIPTRAIN_VOCAB=$vocab
  export CLIPTRAIN_VOCAB
  run "a photo of a cat.
"
  unset CLIPTRAIN_VOCAB
  check "CLIPTRAIN_VOCAB, default context length 77" \
    sh -c "[ $status -eq 0 ] && [ \$(wc -w <'$tmp/out') -eq 77 ] && grep -q '^49406 320 1125 539 320 2368 269 49407 0 ' '$tmp/out'"

  run "a photo of a cat" --vocab "$vocab" -n 8
  check "a last line without a newline" same_output "49406 320 1125 539 320 2368 49407 0"

  # 19 ids, 21 with start and end
  run "three
numbers 1234567890 and 3.14159
seven
" --vocab "$vocab" --context-length 10
  check "too long: exit 1" [ "$status" -eq 1 ]
  check "... one error line with the line number, the caption and its length" \
    sh -c "[ \$(wc -l <'$tmp/err') -eq 1 ] && grep -q 'line 2' '$tmp/err' && grep -q 'numbers 1234567890 and 3.14159' '$tmp/err' && grep -q '21 tokens' '$tmp/err'"
  check "... the lines before it are printed" same_output "49406 2097 49407 0 0 0 0 0 0 0"

  run "numbers 1234567890 and 3.14159
" --vocab "$vocab" --context-length 10 --truncate
  check "--truncate: the first ids, ending with the end token" \
    same_output "49406 6121 272 273 274 275 276 277 278 49407"

  printf 'ok\n\377bad\n' | "$ct" tokenize --vocab "$vocab" >"$tmp/out" 2>"$tmp/err"
  status=$?
  check "invalid UTF-8: exit 1 naming line 2" \
    sh -c "[ $status -eq 1 ] && grep -q 'line 2' '$tmp/err' && grep -q 'UTF-8' '$tmp/err'"
else
  skip "golden captions: exit 0"
  skip "golden captions: OpenAI's ids"
  skip "CLIPTRAIN_VOCAB, default context length 77"
  skip "a last line without a newline"
  skip "too long: exit 1"
  skip "... one error line with the line number, the caption and its length"
  skip "... the lines before it are printed"
  skip "--truncate: the first ids, ending with the end token"
  skip "invalid UTF-8: exit 1 naming line 2"
fi

run "" --context-length 0 --vocab "$tmp/whatever"
check "--context-length 0 is bad usage" [ "$status" -eq 2 ]
run "" --frobnicate
check "an unknown option is bad usage" [ "$status" -eq 2 ]
exit $fail

#!/bin/sh
# help.sh: every subcommand that `cliptrain --help` lists answers --help
# with the program's name, at least one example command and a docs page
# that exists (its #section too).  Prints TAP.
. "$(dirname "$0")/tap.sh"

"$ct" --help >"$tmp/help" 2>&1 || { echo "1..1"; echo "not ok 1 - cliptrain --help"; exit 1; }
# the commands: the first word of each line under "Commands:" up to the
# next blank line
cmds=$(awk '/^Commands:/ { on = 1; next } on && /^$/ { exit } on && /^  [a-z]/ { print $1 }' \
  "$tmp/help")

# slug TEXT: a heading's GitHub anchor (lower case, punctuation dropped,
# spaces to dashes)
slug() { printf '%s\n' "$1" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g'; }

count=$(echo "$cmds" | wc -w)
echo "1..$((count * 4 + 1))"
that "cliptrain --help lists commands (found: $(echo $cmds))" '[ "$count" -ge 9 ]'
for c in $cmds; do
  "$ct" "$c" --help >"$tmp/out" 2>"$tmp/err"
  rc=$?
  that "$c --help exits 0 (exit $rc)" '[ $rc -eq 0 ]'
  expect "$c --help: Usage names 'cliptrain $c'" "$tmp/out" "^ *(Usage: *)?cliptrain $c( |$)"
  # an "Example:" or "Examples:" heading, then lines that run cliptrain CMD
  that "$c --help shows an example 'cliptrain $c ...'" \
    "awk '/^Examples?:/ { on = 1; next } on && /^\$/ { exit } on && /(^|[|;&] *) *cliptrain $c( |\$)/ { found = 1 } END { exit !found }' '$tmp/out'"
  doc=$(sed -n 's/^Documentation: \(docs\/[^ ]*\).*/\1/p' "$tmp/out" | head -n 1)
  file=${doc%%#*}
  anchor=
  case $doc in *'#'*) anchor=${doc#*#} ;; esac
  found=no
  if [ -n "$file" ] && [ -f "$srcdir/$file" ]; then
    found=yes
    if [ -n "$anchor" ]; then
      found=no
      while IFS= read -r h; do
        [ "$(slug "$h")" = "$anchor" ] && found=yes
      done <<EOF
$(sed -n 's/^#\{1,6\} \{1,\}//p' "$srcdir/$file")
EOF
    fi
  fi
  that "$c --help points to a docs page that exists ('${doc:-none}')" '[ $found = yes ]'
done
exit $fail

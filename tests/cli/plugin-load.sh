#!/bin/sh
# plugin-load.sh: which plugin files are loaded, and the errors of those
# that fail.  Plugins come from the recipe's plugin_path and the search
# path only, never from the current directory; a file or folder that
# group or others may write is refused; a bad ABI, a missing entry symbol,
# a file that is no shared object, a create() or on_event that fails: each
# is one line naming the plugin file.  Prints TAP.
. "$(dirname "$0")/tap.sh"
plugins=${CT_TEST_PLUGINS:-$builddir/tests/plugins/.libs}
unset CLIPTRAIN_PLUGIN_PATH

echo "1..32"
if [ ! -f "$plugins/fault.so" ]; then
  i=0
  while [ $i -lt 32 ]; do skip "the test plugins are not built ($plugins)"; i=$((i + 1)); done
  exit 0
fi
ct=$(cd "$(dirname "$ct")" && pwd)/$(basename "$ct")

# recipe FILE CALLBACK [PLUGIN_DIR]: a one-epoch recipe using CALLBACK
recipe() {
  cat >"$1" <<EOF
model: {preset: tiny}
data: {dataset: synthetic, n_train: 16, n_valid: 8, batch_size: 8}
fit: {epochs: 1, threads: 1}
${3:+plugin_path: [$3]}
callbacks: [clip_trainer, $2]
EOF
}

mkdir -m 755 "$tmp/p"
cp "$plugins/fault.so" "$plugins/no_symbol.so" "$plugins/abi_old_major.so" "$tmp/p/"
chmod 755 "$tmp/p"/*.so
recipe "$tmp/ok.yaml" fault "$tmp/p"
that "a plugin from the recipe's plugin_path loads" 'run 0 fit "$tmp/ok.yaml" --out "$tmp/ok"'

# ---- never from the current directory
mkdir "$tmp/cwd"
cp "$tmp/p/fault.so" "$tmp/cwd/"
recipe "$tmp/cwd/r.yaml" fault
that "fault.so in the current folder is not loaded for the bare name 'fault'" \
  '(cd "$tmp/cwd" && run 2 fit r.yaml --out "$tmp/cwd1") && grep -q "callbacks.1: no plugin .fault." "$tmp/err"'
that "nor with empty entries in CLIPTRAIN_PLUGIN_PATH" \
  '(cd "$tmp/cwd" && CLIPTRAIN_PLUGIN_PATH=":" run 2 fit r.yaml --out "$tmp/cwd2") && grep -q "no plugin .fault." "$tmp/err"'
recipe "$tmp/cwd/path.yaml" ./fault
that "a path as the plugin's name is refused" \
  '(cd "$tmp/cwd" && run 2 fit path.yaml --out "$tmp/cwd3") && grep -q "plugin .\./fault.: a plugin is named, not given as a path" "$tmp/err"'
recipe "$tmp/cwd/up.yaml" ../p/fault "$tmp/cwd"
that "so is one climbing out of the search path" \
  '(cd "$tmp/cwd" && run 2 fit up.yaml --out "$tmp/cwd4") && grep -q "plugin .\.\./p/fault.: a plugin is named" "$tmp/err"'
that "the recipe's plugin_path [.] names the recipe's folder explicitly, and loads it" \
  'recipe "$tmp/cwd/dot.yaml" fault . && (cd "$tmp/cwd" && run 0 fit dot.yaml --out "$tmp/cwd5")'

# ---- permissions
chmod o+w "$tmp/p/fault.so"
that "a plugin file writable by others is refused (exit 2)" 'run 2 fit "$tmp/ok.yaml" --out "$tmp/w1"'
that "naming the file and its mode" \
  '[ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$tmp/p/fault.so: plugin file is writable by others (mode 0757): refused" "$tmp/err"'
chmod o-w,g+w "$tmp/p/fault.so"
that "writable by its group: refused too" \
  'run 2 fit "$tmp/ok.yaml" --out "$tmp/w2" && grep -q "fault.so: plugin file is writable by its group" "$tmp/err"'
chmod g-w "$tmp/p/fault.so"
chmod o+w "$tmp/p"
that "a plugin in a folder writable by others is refused, naming the folder" \
  'run 2 fit "$tmp/ok.yaml" --out "$tmp/w3" && grep -q "fault.so: the plugin.s folder $tmp/p is writable by others (mode 0757): refused" "$tmp/err"'
chmod +t "$tmp/p"
that "a sticky one (as /tmp) too" 'run 2 fit "$tmp/ok.yaml" --out "$tmp/w4"'
chmod -t,o-w "$tmp/p"
that "cliptrain plugins lists such a file as not loadable" \
  'chmod o+w "$tmp/p/fault.so" && CLIPTRAIN_PLUGIN_PATH="$tmp/p" run 0 plugins && grep -q "^fault .*cannot load: $tmp/p/fault.so: plugin file is writable by others" "$tmp/out"'
chmod o-w "$tmp/p/fault.so"
that "the plugin loads again once fixed" 'run 0 fit "$tmp/ok.yaml" --out "$tmp/w5"'

# ---- the resolved file and every folder up to /, as OpenSSH's safe_path
# a symlink in a safe folder to a plugin in a folder anyone may write
mkdir -m 755 "$tmp/link" && mkdir -m 777 "$tmp/open"
cp "$tmp/p/fault.so" "$tmp/open/fault.so" && chmod 755 "$tmp/open/fault.so"
ln -s "$tmp/open/fault.so" "$tmp/link/fault.so"
recipe "$tmp/link.yaml" fault "$tmp/link"
that "a symlink to a plugin in a folder writable by others is refused, naming that folder" \
  'run 2 fit "$tmp/link.yaml" --out "$tmp/s1" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$tmp/link/fault.so: the plugin.s folder $tmp/open is writable by others (mode 0777): refused" "$tmp/err"'
# a safe folder below one anyone may write, without the sticky bit
mkdir -m 777 "$tmp/ww" && mkdir -m 755 "$tmp/ww/p"
cp "$tmp/p/fault.so" "$tmp/ww/p/" && chmod 755 "$tmp/ww/p/fault.so"
recipe "$tmp/ww.yaml" fault "$tmp/ww/p"
that "a plugin whose folder's parent is writable by others and not sticky is refused, naming it" \
  'run 2 fit "$tmp/ww.yaml" --out "$tmp/s2" && grep -q "$tmp/ww/p/fault.so: the folder $tmp/ww above the plugin is writable by others (mode 0777, not sticky): refused" "$tmp/err"'
chmod +t "$tmp/ww"
that "with the sticky bit (as /tmp) and our own folder below it, it loads" \
  'run 0 fit "$tmp/ww.yaml" --out "$tmp/s3"'
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
  chown nobody "$tmp/ww/p"
  that "but not when the folder below the sticky one is another user's" \
    'run 2 fit "$tmp/ww.yaml" --out "$tmp/s4" && grep -q "$tmp/ww/p/fault.so: the plugin.s folder $tmp/ww/p is owned by nobody (uid [0-9]*), not by root or you: refused" "$tmp/err"'
  chown 0 "$tmp/ww/p"
  chown nobody "$tmp/p/fault.so"
  that "a plugin file owned by another user is refused, naming the owner" \
    'run 2 fit "$tmp/ok.yaml" --out "$tmp/s5" && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "$tmp/p/fault.so: plugin file is owned by nobody (uid [0-9]*), not by root or you: refused" "$tmp/err"'
  chown 0 "$tmp/p/fault.so"
else
  skip "not root (or no user nobody): cannot give a plugin's folder to another user"
  skip "not root (or no user nobody): cannot give a plugin file to another user"
fi
chmod -t "$tmp/ww"
rm "$tmp/link/fault.so" && ln -s "$tmp/p/fault.so" "$tmp/link/fault.so"
that "a symlink in a safe folder to a safe plugin loads" 'run 0 fit "$tmp/link.yaml" --out "$tmp/s6"'

# ---- what `cliptrain plugins` prints: escaped, and which file wins
mkdir -m 755 "$tmp/h" "$tmp/h2"
cp "$plugins/hostile_doc.so" "$plugins/fault.so" "$tmp/h/" && cp "$plugins/fault.so" "$tmp/h2/"
cp "$plugins/fault.so" "$tmp/h2/impostor.so" && chmod 755 "$tmp/h"/*.so "$tmp/h2"/*.so
esc=$(printf '\033')
that "cliptrain plugins prints a doc's control characters escaped, on one line" \
  'CLIPTRAIN_PLUGIN_PATH="$tmp/h:$tmp/h2" run 0 plugins && ! grep -q "$esc" "$tmp/out" && grep -qF "red \x1b[31mALERT\x1b[0m\x0asecond line\x0d" "$tmp/out" && [ "$(grep -c "^hostile_doc " "$tmp/out")" -eq 1 ]'
that "cliptrain plugins NAME escapes the version, the doc and the parameters' docs" \
  'CLIPTRAIN_PLUGIN_PATH="$tmp/h" run 0 plugins hostile_doc && ! grep -q "$esc" "$tmp/out" && grep -qF "hostile_doc 1\x1b[31m" "$tmp/out" && grep -qF "a level\x1b]0;retitled\x07 of \x1b[2Jnothing" "$tmp/out"'
that "a second fault.so later on the search path is flagged, naming the file that wins" \
  'CLIPTRAIN_PLUGIN_PATH="$tmp/h:$tmp/h2" run 0 plugins && grep -q "^fault  *Makes things fail" "$tmp/out" && grep -q "^fault  *(not loaded: $tmp/h2/fault.so is hidden by $tmp/h/fault.so, found first on the search path)" "$tmp/out" && [ "$(grep -c "^fault " "$tmp/out")" -eq 2 ]'
that "a file whose descriptor claims another name is listed by its file name, as not loadable" \
  'CLIPTRAIN_PLUGIN_PATH="$tmp/h:$tmp/h2" run 0 plugins && grep -q "^impostor  *(cannot load: $tmp/h2/impostor.so declares the name .fault., not .impostor.)" "$tmp/out"'
that "and cliptrain plugins impostor refuses it (exit 2)" \
  'CLIPTRAIN_PLUGIN_PATH="$tmp/h2" run 2 plugins impostor && grep -q "impostor.so declares the name .fault., not .impostor." "$tmp/err"'

# ---- broken plugins: one line naming the file
recipe "$tmp/abi.yaml" abi_old_major "$tmp/p"
that "an ABI mismatch names the file and both versions (exit 2)" \
  'run 2 fit "$tmp/abi.yaml" --out "$tmp/b1" && grep -q "callbacks.1: $tmp/p/abi_old_major.so: plugin ABI 0.3 does not match cliptrain.s 1.4" "$tmp/err"'
recipe "$tmp/nosym.yaml" no_symbol "$tmp/p"
that "a missing entry symbol names the file and the symbol" \
  'run 2 fit "$tmp/nosym.yaml" --out "$tmp/b2" && grep -q "$tmp/p/no_symbol.so: no symbol ct_plugin_descriptor" "$tmp/err"'
echo "not an ELF file" >"$tmp/p/junk.so"
recipe "$tmp/junk.yaml" junk "$tmp/p"
that "a file that is no shared object names the file" \
  'run 2 fit "$tmp/junk.yaml" --out "$tmp/b3" && grep -q "$tmp/p/junk.so: cannot load plugin" "$tmp/err"'
that "and is one line" '[ "$(wc -l <"$tmp/err")" -eq 1 ]'
recipe "$tmp/create.yaml" "{fault: {fail_create: true}}" "$tmp/p"
that "create() failing names the plugin file and its reason (exit 2)" \
  'run 2 fit "$tmp/create.yaml" --out "$tmp/b4" && grep -q "fault ($tmp/p/fault.so): fault: refusing to start, as asked" "$tmp/err"'
that "before anything is written" '[ ! -e "$tmp/b4" ]'
recipe "$tmp/event.yaml" "{fault: {fail_event: after_epoch}}" "$tmp/p"
that "on_event failing names the plugin file and the event (exit 1)" \
  'run 1 fit "$tmp/event.yaml" --out "$tmp/b5" && grep -q "plugin fault ($tmp/p/fault.so) failed in after_epoch: fault: failing in after_epoch as asked" "$tmp/err"'
that "and is one line" '[ "$(wc -l <"$tmp/err")" -eq 1 ]'
exit $fail

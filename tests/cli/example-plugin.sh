#!/bin/sh
# example-plugin.sh: plugins/example builds out of tree, with its own plain
# Makefile, against an installed cliptrain (installed here with DESTDIR into
# a temporary folder, its pkg-config file pointed there), installs into the
# plugin folder that pkg-config names, and runs in a fit of the installed
# program.  Prints TAP.
#
# Only the library, program, headers and pkg-config file are installed with
# make: installing the plugins makes libtool relink them, which moves the
# build tree's plugins/.libs/*.so aside for a moment and breaks the tests
# running alongside this one.  clip_trainer is copied in instead.
. "$(dirname "$0")/tap.sh"

# the rest needs what came before: stop at the first failure of a step
need() { [ "$fail" -eq 0 ] || { echo "Bail out! $1"; exit 1; }; }

for tool in ${CC:-cc} pkg-config make; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "1..0 # SKIP $tool not found"
    exit 0
  fi
done

echo "1..13"

# make, apart from the make running the tests (its jobserver and
# command-line variables are not ours)
submake() { (unset MAKEFLAGS MFLAGS MAKELEVEL; make "$@"); }

# 1. install the build into $tmp/dest
if submake -C "$builddir" install-libLTLIBRARIES install-binPROGRAMS install-ctincludeHEADERS \
     install-pkgconfigDATA DESTDIR="$tmp/dest" >"$tmp/install.log" 2>&1; then
  ok "make install DESTDIR=... (library, program, headers, cliptrain.pc)"
else not_ok "make install DESTDIR=..." "$tmp/install.log"; fi
need "cannot install"

# 2. its pkg-config file, with the absolute paths moved under DESTDIR
pc=$(find "$tmp/dest" -name cliptrain.pc | head -n 1)
mkdir "$tmp/pc"
if [ -n "$pc" ] &&
   sed -E "s#^(prefix|exec_prefix|libdir|includedir|pluginsdir)=/#\\1=$tmp/dest/#" "$pc" \
     >"$tmp/pc/cliptrain.pc"; then ok "cliptrain.pc installed"
else not_ok "cliptrain.pc installed"; find "$tmp/dest" | sed 's/^/# /'; fi
need "no cliptrain.pc"
PKG_CONFIG_PATH="$tmp/pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
pluginsdir=$(pkg-config --variable=pluginsdir cliptrain)
libdir=$(pkg-config --variable=libdir cliptrain)
case $pluginsdir in
  "$tmp/dest"/*) ok "pkg-config names the installed plugin folder" ;;
  *) not_ok "pkg-config pluginsdir is '$pluginsdir'" "$tmp/pc/cliptrain.pc" ;;
esac
bin=$(find "$tmp/dest" -path '*/bin/cliptrain' | head -n 1)
mkdir -p "$pluginsdir" && cp "$builddir/plugins/.libs/clip_trainer.so" "$pluginsdir/"
if [ -x "$bin" ] && [ -f "$pluginsdir/clip_trainer.so" ]; then
  ok "the program is installed (clip_trainer copied in)"
else not_ok "installed program ($bin) or $pluginsdir/clip_trainer.so missing"; fi
need "incomplete install"

# 3. build the example as an outside author would: a copy, its own Makefile
cp -R "$srcdir/plugins/example" "$tmp/example"
chmod -R u+w "$tmp/example"
rm -f "$tmp/example/lr_logger.so"
if submake -C "$tmp/example" >"$tmp/build.log" 2>&1 &&
   [ -f "$tmp/example/lr_logger.so" ]; then ok "the example builds with pkg-config"
else not_ok "the example builds with pkg-config" "$tmp/build.log"; fi
if grep -Eiq 'warning' "$tmp/build.log"; then not_ok "the example builds without warnings" "$tmp/build.log"
else ok "the example builds without warnings"; fi
need "the example does not build"

# 4. found through CLIPTRAIN_PLUGIN_PATH
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
CLIPTRAIN_PLUGIN_PATH="$tmp/example" "$bin" plugins lr_logger >"$tmp/out" 2>&1
expect "cliptrain plugins lr_logger (CLIPTRAIN_PLUGIN_PATH)" "$tmp/out" '^  every +int +default 10 '

# 5. installed with its Makefile into pluginsdir, found there alone
if submake -C "$tmp/example" install >"$tmp/build.log" 2>&1 &&
   [ -f "$pluginsdir/lr_logger.so" ]; then ok "make install puts it in pluginsdir"
else not_ok "make install puts it in pluginsdir" "$tmp/build.log"; fi
CLIPTRAIN_PLUGIN_PATH="$pluginsdir"
export CLIPTRAIN_PLUGIN_PATH
"$bin" fit "$tmp/example/recipe.yaml" --out "$tmp/run" >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 0 ]; then ok "the installed cliptrain fits the example recipe"
else not_ok "fit exited $rc" "$tmp/out" "$tmp/err"; fi
expect "lr_logger printed the learning rate" "$tmp/err" \
  '^lr_logger: epoch 1 batch 4/4 lr 0\.0005 smooth_loss [0-9]+\.[0-9]{4}$'
if [ "$(grep -c '"last_lr":0.0005' "$tmp/run/metrics.jsonl" 2>/dev/null)" = 2 ]; then
  ok "metrics.jsonl has last_lr for both epochs"
else not_ok "metrics.jsonl lacks last_lr" "$tmp/run/metrics.jsonl"; fi
expect "the manifest names the installed lr_logger" "$tmp/run/manifest.json" \
  "\"file\" : \"$pluginsdir/lr_logger.so\""
expect "the manifest names the installed clip_trainer" "$tmp/run/manifest.json" \
  "\"file\" : \"$pluginsdir/clip_trainer.so\""
exit $fail

# torch-python.sh: what the tests that need PyTorch share.  Source it:
#   . "$srcdir/tests/torch/torch-python.sh"
# It sets py to a python3 that imports torch and numpy (Debian's first),
# or prints TAP's skip-all line and exits 0 when there is none.
py=
for cand in /usr/bin/python3 python3; do
  if "$cand" -c 'import torch, numpy' >/dev/null 2>&1; then
    py=$cand
    break
  fi
done
if [ -z "$py" ]; then
  echo "1..0 # SKIP python3 with torch is not installed"
  exit 0
fi

#!/usr/bin/env bash
# Prepare the git-ignored folder .bench/ that a GPU session carries to the device machine
# (run(command="bash benchmarks/gpu_session.sh PART", carry=[".bench"])). Run it HERE, on the
# development machine (it needs the RSLAD mirror and PyPI; the GPU machine has neither):
#
#     bash benchmarks/prepare_device.sh [MIRROR_GIT_DIR]   # default /work/.mirror/zibojia+RSLAD/repo
#
# .bench/official/RSLAD/         zibojia/RSLAD exported from the mirror's HEAD (git archive),
#   COMMIT                       plus the sha it was exported from (never committed here)
# .bench/site/pyautoattack/...   pyautoattack 0.2.0 (ardbench's AutoAttack column; the GPU
#                                image lacks it), installed from the PyPI wheel with
#                                `pip install --target`, less its examples/ folder (a 45 MB
#                                demo checkpoint; the wheel is 42 MB, too much to carry)
#
# .bench/ is ignored through .git/info/exclude (not .gitignore): the device tool carries only
# paths that git ignores, and nothing in .bench is ever to be committed.
set -euo pipefail

MIRROR=${1:-/work/.mirror/zibojia+RSLAD/repo}
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
BENCH=.bench
PYTHON=${PYTHON:-python3}  # any Python with pip that reaches PyPI

# 1. ignore .bench/ locally
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.bench/' "$EXCLUDE" 2>/dev/null || echo '/.bench/' >>"$EXCLUDE"

# 2. the official code, exported from the mirror (no work tree there; read-only is fine)
rm -rf "$BENCH/official/RSLAD"
mkdir -p "$BENCH/official/RSLAD"
git -C "$MIRROR" archive HEAD | tar -x -C "$BENCH/official/RSLAD"
git -C "$MIRROR" rev-parse HEAD >"$BENCH/official/RSLAD/COMMIT"

# 3. pyautoattack, installed into .bench/site (pure Python: py3-none-any)
rm -rf "$BENCH/site" "$BENCH/wheels"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PYTHON" -m pip download --quiet --no-deps pyautoattack==0.2.0 -d "$TMP"
"$PYTHON" -m pip install --quiet --no-deps --no-index --no-compile --target "$BENCH/site" \
    "$TMP"/pyautoattack-0.2.0-*.whl
rm -rf "$BENCH/site/pyautoattack/examples" "$BENCH/site/bin"

echo "official: $BENCH/official/RSLAD @ $(cat "$BENCH/official/RSLAD/COMMIT")"
echo "pyautoattack: $(ls -d "$BENCH"/site/pyautoattack-*.dist-info)"
du -sh "$BENCH"/*
du -sh "$BENCH"
SIZE_KB=$(du -sk "$BENCH" | cut -f1)
if [ "$SIZE_KB" -gt $((60 * 1024)) ]; then
    echo "ERROR: .bench is ${SIZE_KB} KiB, over 60 MiB (the device tool carries 64 MiB in all)" >&2
    exit 1
fi
git check-ignore -q "$BENCH" || { echo "ERROR: $BENCH is not ignored by git" >&2; exit 1; }
echo "ok: .bench is git-ignored, ${SIZE_KB} KiB"

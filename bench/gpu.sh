#!/usr/bin/env bash
# issue 17 item 3: the GPU check, one script, under 8 minutes on a fresh GPU machine.
#   bench/gpu.sh            # -> bench/results/gpu.json (+ copies under $OUT when set)
# 1. a CUDA build of torch (kept if the machine has one; else `pip install torch`: PyPI's Linux
#    x86-64 wheels are CUDA builds); 2. the project's missing dependencies, from wheels in .whl/
#    when the machine is offline (see ../.library/device/README.md), else from PyPI; 3. the GPU
#    tests (tests/gpu); 4. bench/gpu.py: PubMed, GPU against one CPU thread.
# Data: PubMed's raw Planetoid files under $DISTGCL_DATA (default: ./shared/data, then
# ../shared/data).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
T0=$SECONDS
log() { echo "[gpu.sh +$((SECONDS - T0))s] $*"; }
mkdir -p bench/results/_work

if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    log "no CUDA build of torch here: pip install torch"
    $PY -m pip install -q torch || { echo "gpu.sh: could not install torch" >&2; exit 1; }
    $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        || { echo "gpu.sh: torch sees no CUDA GPU" >&2; exit 1; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the project itself, from this checkout
if ls .whl/*.whl >/dev/null 2>&1; then
    log "installing the carried wheels in .whl/"
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/distgcl-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/distgcl-site"
elif ! $PY -c 'import distgcl.config, torch_geometric, scipy, sklearn, yaml' 2>/dev/null; then
    log "installing the project's dependencies from PyPI"
    $PY -m pip install -q -e . || { echo "gpu.sh: pip install -e . failed" >&2; exit 1; }
fi
$PY -c 'import distgcl.config' || { echo "gpu.sh: distgcl does not import" >&2; exit 1; }
$PY -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'

if [ -z "${DISTGCL_DATA:-}" ]; then
    for root in "$PWD/shared/data" "$PWD/../shared/data"; do
        [ -d "$root/Planetoid/PubMed" ] && export DISTGCL_DATA="$root" && break
    done
fi
export DISTGCL_CACHE=${DISTGCL_CACHE:-/tmp/distgcl-cache}

log "GPU tests"
timeout 240 $PY -m pytest tests/gpu -q -rs -p no:cacheprovider 2>&1 \
    | tee bench/results/_work/gpu-tests.log
tests=${PIPESTATUS[0]}

log "PubMed timing, GPU against one CPU thread"
PYTHONUNBUFFERED=1 timeout 330 $PY bench/gpu.py --device cuda --cpu-threads 1
bench=$?

if [ -n "${OUT:-}" ]; then
    cp bench/results/_work/gpu-tests.log "$OUT"/ 2>/dev/null
    cp bench/results/gpu.json "$OUT"/ 2>/dev/null
fi
log "done: tests rc=$tests, bench rc=$bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]

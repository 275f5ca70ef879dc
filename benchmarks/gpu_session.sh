#!/usr/bin/env bash
# The GPU session's benchmarks, one PART per device call (each well under 9 minutes on an H100):
#
#     run(command="bash benchmarks/gpu_session.sh PART", carry=[".bench"])     # device tool
#     OMP_NUM_THREADS=1 bash benchmarks/gpu_session.sh smoke                  # CPU check, here
#
# PART  issue14    issue 14 in ONE call (about 9 minutes): the captured-step tests of
#                  `pytest -m gpu` (tests/test_train_cuda.py -k captured: correctness first), the
#                  official RSLAD script (ResNet-18 <- WRN-34-10, unmodified), then
#                  epoch_time.py --graph both on 50,000 images (captured, then eager: real
#                  s/epoch, ms/step, trainer overhead, host reads/step, x the TF32 floor), and a
#                  summary: ratio to the official script and the issue's targets
#       steps      train_step.py, RSLAD, WRN-34-10 teacher, batch 128: ResNet-18, MobileNetV2
#       baselines  train_step.py, ResNet-18: ARD, TRADES, PGD-AT (one process each)
#       epoch      official_rslad.py: the official RSLAD scripts (ResNet-18, MobileNetV2) timed
#                  unmodified (issue 6's calibration), then epoch_time.py: two real epochs of
#                  50,000 images (RSLAD, ResNet-18 / WRN-34-10)
#       eval       eval_throughput.py (ResNet-18, WRN-34-10; clean, FGSM, PGD-20, CW), then
#                  `pytest -m gpu` (tests/test_train_cuda.py)
#       smoke      every command above at CPU sizes, to check this script without a GPU
#
# Needs .bench/ (bash benchmarks/prepare_device.sh, run beforehand on the dev machine): the
# official RSLAD code and pyautoattack, which the GPU image lacks. Writes one log per part and
# JSON files, flat, into $OUT (the device tool returns at most 8 files from there; smoke
# defaults to /tmp/ardbench-gpu-smoke) and prints each command's last lines and a summary. Each
# command runs under `timeout`, capped so the part ends within PART_BUDGET_S (default 520 s)
# whatever hangs. JSON results are also copied to /tmp/ardbench-gpu-stash (kept while the
# machine stays warm) so that `epoch` can print the official script beside train_step.py's
# reference step; it also looks in .bench/results/ (copy steps' rslad_*.json there to carry them).
set -uo pipefail

PART=${1:?usage: gpu_session.sh issue14|steps|baselines|epoch|eval|smoke}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
if [ "$PART" = smoke ]; then
    OUT=${OUT:-/tmp/ardbench-gpu-smoke}
else
    OUT=${OUT:-/tmp/ardbench-gpu-$PART}
fi
mkdir -p "$OUT"
LOG="$OUT/$PART.log"
: >"$LOG"
STASH=/tmp/ardbench-gpu-stash
mkdir -p "$STASH"
PY=${PYTHON:-python3}
BUDGET=${PART_BUDGET_S:-520}
START=$SECONDS
STATUS=()
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

say() { echo "$*" | tee -a "$LOG"; }

# sub NAME LIMIT_S CMD...: run CMD under timeout (capped by what is left of the part's budget),
# its whole output into the log, its last lines to stdout, its status into the summary.
sub() {
    local name=$1 limit=$2 left rc t0 tmp
    shift 2
    left=$((BUDGET - (SECONDS - START) - 10))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        STATUS+=("$(printf '%-24s %-12s %5s' "$name" "not run" "-")")
        say "=== [$name] not run: the part's ${BUDGET}s budget is spent"
        return
    fi
    say "=== [$name] (limit ${limit}s) $*"
    tmp=$(mktemp)
    t0=$SECONDS
    timeout -k 15 "$limit" "$@" >"$tmp" 2>&1
    rc=$?
    cat "$tmp" >>"$LOG"
    grep -v -e 'UserWarning' -e '_Reduction.legacy' -e 'warnings.warn' "$tmp" | tail -n "${TAIL_LINES:-14}"
    rm -f "$tmp"
    local what="rc $rc"
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && what="TIMEOUT"
    STATUS+=("$(printf '%-24s %-12s %5ss' "$name" "$what" "$((SECONDS - t0))")")
    say "=== [$name] $what after $((SECONDS - t0)) s"
}

# find_json NAME: the newest of $OUT/NAME, the stash's, .bench/results/NAME
find_json() {
    local f
    for f in "$OUT/$1" "$STASH/$1" "$ROOT/.bench/results/$1"; do
        [ -s "$f" ] && { echo "$f"; return; }
    done
}

# ------------------------------------------------------------------------ common set-up
say "# ardbench gpu_session.sh $PART  ($(date -u +%Y-%m-%dT%H:%M:%SZ)); OUT=$OUT"
if ! "$PY" -c "import pyautoattack" 2>/dev/null; then
    if [ -d .bench/site/pyautoattack ]; then
        export PYTHONPATH="$PYTHONPATH:$ROOT/.bench/site"
    elif compgen -G ".bench/wheels/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-deps --no-index --no-compile --target /tmp/ardbench-site \
            .bench/wheels/*.whl >>"$LOG" 2>&1 && export PYTHONPATH="$PYTHONPATH:/tmp/ardbench-site"
    fi
fi
{
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    "$PY" - <<'EOF'
import platform, torch
cuda = torch.cuda.is_available()
print(f"python {platform.python_version()}; torch {torch.__version__}; CUDA {torch.version.cuda}; "
      f"cuDNN {torch.backends.cudnn.version()}; device "
      + (torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA)"))
try:
    import pyautoattack, importlib.metadata as md
    print(f"pyautoattack {md.version('pyautoattack')} from {pyautoattack.__file__}")
except Exception as e:  # noqa: BLE001
    print(f"pyautoattack: NOT importable ({e}); AutoAttack columns will fail")
import ardbench
print(f"ardbench from {ardbench.__file__}")
EOF
    [ -f .bench/official/RSLAD/COMMIT ] && echo "official RSLAD: $(cat .bench/official/RSLAD/COMMIT)" \
        || echo "official RSLAD: .bench/official/RSLAD missing (run benchmarks/prepare_device.sh)"
} 2>&1 | tee -a "$LOG"

OFFICIAL=.bench/official/RSLAD
COMMIT=$(cat "$OFFICIAL/COMMIT" 2>/dev/null || echo unknown)
TS="benchmarks/train_step.py"

OFFICIAL_ENV=(env)
official() {  # official NAME LIMIT JSON SCRIPT COMPARE_JSON [extra args]
    local name=$1 limit=$2 json=$3 script=$4 cmp=$5
    shift 5
    local c=()
    [ -n "$cmp" ] && c=(--compare "$cmp")
    sub "$name" "$limit" "${OFFICIAL_ENV[@]}" "$PY" benchmarks/official_rslad.py --official "$OFFICIAL" \
        --script "$script" --commit "$COMMIT" --json "$OUT/$json" "${c[@]}" "$@"
}

case "$PART" in
issue14)
    BUDGET=${PART_BUDGET_S:-560}
    TAIL_LINES=20 sub pytest_captured 130 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
        tests/test_train_cuda.py -k captured --junitxml "$OUT/pytest_captured.xml"
    official official_resnet18 100 official.json resnet18_rslad_cifar10.py "" \
        --warmup 5 --steps 30
    TAIL_LINES=30 sub epoch_graph 330 "$PY" benchmarks/epoch_time.py --method rslad \
        --teacher wrn_34_10 --student resnet18 --n-train 50000 --device cuda --graph both \
        --json "$OUT/epoch_graph.json"
    ;;
steps)
    for s in resnet18 mobilenetv2; do
        sub "rslad_$s" 250 "$PY" $TS --method rslad --teacher wrn_34_10 --student $s \
            --batch-size 128 --device cuda --plain --iters 20 --warmup 5 \
            --json "$OUT/rslad_$s.json"
    done
    ;;
baselines)
    for m in ard trades pgd_at; do
        sub "${m}_resnet18" 170 "$PY" $TS --method $m --teacher wrn_34_10 --student resnet18 \
            --batch-size 128 --device cuda --plain --iters 20 --warmup 5 \
            --json "$OUT/${m}_resnet18.json"
    done
    ;;
epoch)
    official official_resnet18 120 official.json resnet18_rslad_cifar10.py \
        "$(find_json rslad_resnet18.json)"
    official official_mobilenetv2 90 official_mobilenetv2.json mobilenet_v2_rslad_cifar10.py \
        "$(find_json rslad_mobilenetv2.json)"
    sub epoch_rslad_resnet18 320 "$PY" benchmarks/epoch_time.py --method rslad \
        --teacher wrn_34_10 --student resnet18 --n-train 50000 --device cuda
    ;;
eval)
    sub eval_resnet18 120 "$PY" benchmarks/eval_throughput.py --model resnet18 --n 2000 \
        --device cuda --attacks clean,fgsm,pgd20,cw --batch-sizes 256,512,1024 \
        --json "$OUT/eval_resnet18.json"
    sub eval_wrn_34_10 150 "$PY" benchmarks/eval_throughput.py --model wrn_34_10 --n 1000 \
        --device cuda --attacks clean,fgsm,pgd20,cw --batch-sizes 500 \
        --json "$OUT/eval_wrn_34_10.json"
    TAIL_LINES=25 sub pytest_gpu 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider \
        --junitxml "$OUT/pytest_gpu.xml"
    ;;
smoke)
    # CPU sizes; the official script on the CPU is a smoke test of the harness, not a
    # calibration (CUDA hidden so it stays on the CPU even on a GPU machine).
    sub smoke_train_step 240 "$PY" $TS --method rslad,ard,trades,pgd_at --teacher wrn_16_2 \
        --student small_cnn --batch-size 32 --device cpu --plain --iters 2 --warmup 1 \
        --json "$OUT/smoke_train_step.json"
    sub smoke_epoch 180 "$PY" benchmarks/epoch_time.py --method rslad --teacher wrn_16_2 \
        --student small_cnn --n-train 512 --batch-size 32 --device cpu --profile \
        --json "$OUT/epoch_graph.json"
    # the official script's own student and teacher at a CPU batch, for --compare below
    sub smoke_rslad_resnet18 240 "$PY" $TS --method rslad --teacher wrn_34_10 \
        --student resnet18 --batch-size 16 --device cpu --iters 1 --warmup 1 \
        --json "$OUT/smoke_rslad_resnet18.json"
    OFFICIAL_ENV=(env CUDA_VISIBLE_DEVICES=)
    official smoke_official 180 official.json resnet18_rslad_cifar10.py \
        "$(find_json smoke_rslad_resnet18.json)" --steps 3 --warmup 1 --n-synthetic 512 \
        --smoke-batch-size 16
    sub smoke_eval_small_cnn 120 "$PY" benchmarks/eval_throughput.py --model small_cnn --n 128 \
        --device cpu --attacks clean,fgsm,pgd20,cw --batch-sizes 64,128 \
        --json "$OUT/eval_small_cnn.json"
    sub smoke_eval_wrn_16_2 120 "$PY" benchmarks/eval_throughput.py --model wrn_16_2 --n 64 \
        --device cpu --attacks clean,fgsm,pgd20,cw --batch-sizes 64 \
        --json "$OUT/eval_wrn_16_2.json"
    sub smoke_pytest_gpu 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider
    ;;
*)
    echo "unknown PART $PART (issue14, steps, baselines, epoch, eval, smoke)" >&2
    exit 2
    ;;
esac

for f in "$OUT"/*.json; do
    [ -e "$f" ] && cp -f "$f" "$STASH/"
done

# ------------------------------------------------------------------------------ summary
{
    echo
    echo "## summary: gpu_session.sh $PART, $((SECONDS - START)) s"
    printf '%-24s %-12s %6s\n' command status time
    for s in "${STATUS[@]}"; do echo "$s"; done
    "$PY" - "$OUT" "$STASH" "$ROOT/.bench/results" "$LOG" <<'EOF'
import json, re, sys
from pathlib import Path

out, stash, carried, log = (Path(a) for a in sys.argv[1:5])
jsons = sorted(out.glob("*.json"))
train = {}
for d in (carried, stash, out):  # later wins: this run's own files last
    for f in d.glob("*.json") if d.is_dir() else []:
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for r in data.get("results", []):
            train[(r["method"], r["student"])] = r
own = set()
for f in jsons:
    for r in json.loads(f.read_text()).get("results", []):
        own.add((r["method"], r["student"]))
if own:
    batches = sorted({train[k]["batch_size"] for k in own})
    print(f"\ntrain_step.py (ms/step, median; batch {', '.join(map(str, batches))})")
    print(f"{'method':8} {'student':12} {'reference':>10} {'ardbench':>9} {'plain':>8} "
          f"{'speed-up':>8} {'x floor':>7} {'epoch s*':>8}")
    for key in sorted(own):
        r = train[key]
        rows = r["rows"]
        plain = rows.get("ardbench_plain", {}).get("ms_per_step")
        print(f"{key[0]:8} {key[1]:12} {rows['reference']['ms_per_step']:10.1f} "
              f"{rows['ardbench']['ms_per_step']:9.1f} {plain or float('nan'):8.1f} "
              f"{r['speedup']:7.2f}x {rows['ardbench']['x_floor']:7.1f} "
              f"{rows['ardbench']['est_cifar10_epoch_s']:8.1f}")
off = [json.loads(f.read_text()) for f in jsons if f.name.startswith("official")]
if off:
    print("\nofficial RSLAD script, unmodified (ms/step between optimizer steps, median)")
    print(f"{'script':30} {'batch':>5} {'ms/step':>8} {'(min-max)':>17} {'img/s':>7} "
          f"{'ref ms':>7} {'ref/off':>7}")
    for o in off:
        ref = train.get(("rslad", o["student"]))
        ref_ms = ref["rows"]["reference"]["ms_per_step"] if ref and ref["batch_size"] == o["batch_size"] else None
        rng = f"({o['min_ms']:.1f}-{o['max_ms']:.1f})"
        print(f"{o['script']:30} {o['batch_size']:5d} {o['ms_per_step']:8.1f} {rng:>17} "
              f"{o['images_per_s']:7.1f} {ref_ms or float('nan'):7.1f} "
              f"{(ref_ms / o['ms_per_step']) if ref_ms else float('nan'):7.2f}")
        print(f"  {o['device']}; torch {o['torch']}; RSLAD {str(o['official_commit'])[:12]}; "
              f"{o['steps']} steps after {o['warmup']}; {o['data']}"
              + ("" if o["calibration"] else "; CPU SMOKE, NOT A CALIBRATION")
              + (f"; TERMINATED after {o['steps']} of {o['steps_requested']} timed steps"
                 if o.get("terminated") else ""))
ev = [json.loads(f.read_text()) for f in jsons if f.name.startswith("eval_")]
if ev:
    print("\neval_throughput.py (points/s per column)")
    for e in ev:
        for run in e["runs"]:
            cols = ", ".join(f"{k} {v:.0f}" for k, v in run["points_per_s"].items())
            print(f"  {e['model']:10} n {e['n']:5d} batch {run['batch_size']:5d}: {cols}")
text = log.read_text(errors="replace")
ep = next((json.loads(f.read_text()) for f in jsons if f.name == "epoch_graph.json"), None)
if ep:
    floor = (ep.get("floor") or {}).get("floor_ms_per_step")
    offj = next((json.loads(f.read_text()) for f in jsons if f.name == "official.json"), None)
    steps = -(-ep["n_train"] // ep["batch_size"])
    print(f"\nepoch_time.py: {ep['method']} {ep['student']} <- {ep['teacher']}, batch "
          f"{ep['batch_size']}, {ep['n_train']} images ({steps} steps); {ep['device']}; "
          f"torch {ep['torch']}; {(ep.get('floor') or {}).get('rate', '')} FLOP floor "
          f"{floor or float('nan'):.2f} ms/step")
    print(f"{'run':36} {'ms/step':>8} {'s/epoch':>8} {'x floor':>8} {'overhead':>9} "
          f"{'reads/step':>10} {'official/this':>13}")
    off_epoch = None
    if offj and offj.get("calibration"):
        off_epoch = steps * offj["ms_per_step"] / 1000
        print(f"{'official script (estimate)':36} {offj['ms_per_step']:8.1f} {off_epoch:8.1f} "
              f"{offj['ms_per_step'] / floor if floor else float('nan'):8.2f} {'':>9} "
              f"{'':>10} {1.0:13.2f}")
    for v in ep["variants"]:
        r = v["epochs"][-1]
        name = f"ardbench cuda_graph={v['speed']['cuda_graph']} (epoch {r['epoch']})"
        ratio = off_epoch / r["real_s"] if off_epoch else float("nan")
        print(f"{name:36} {r['ms_per_step']:8.1f} {r['real_s']:8.1f} "
              f"{r['ms_per_step'] / floor if floor else float('nan'):8.2f} "
              f"{r['overhead_pct']:8.1f}% {r['host_reads_per_step']:10.2f} {ratio:13.2f}")
        for note in v["speed"]["notes"]:
            print(f"    note: {note}")
    cap = next((v["epochs"][-1] for v in ep["variants"] if v["speed"]["cuda_graph"]), None)
    if cap and floor:
        print(f"targets (H200, RSLAD R18 <- WRN-34-10, TF32, batch 128): epoch <= 12 s: "
              f"{cap['real_s']:.1f} s; step <= 2.5x floor: {cap['ms_per_step'] / floor:.2f}x; "
              f"overhead <= 5 %: {cap['overhead_pct']:.1f} %")
epochs = re.findall(r"^(epoch \d+: .*)$", text, re.M)
if epochs:
    print("\nepoch_time.py")
    for line in epochs:
        print("  " + line)
tests = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|error).*?)\s*=*$", text, re.M)
if tests:
    print("\npytest -m gpu: " + tests[-1])
print(f"\nfiles in {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))
EOF
} 2>&1 | tee -a "$LOG"
exit 0

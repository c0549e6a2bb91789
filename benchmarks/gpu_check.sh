#!/usr/bin/env bash
# Issue 25's GPU measurement in one prepared run (one H100/H200, about 8 minutes), or its CPU smoke test.
#
#   benchmarks/gpu_check.sh OUTDIR                # on the GPU machine
#   benchmarks/gpu_check.sh OUTDIR --cpu-smoke    # here: every step at tiny sizes on the CPU
#
# Steps, each under its own time limit (GPU: speed 240 s, profile 60 s, same accuracy 100 + 70 s, summary) so one overrun cannot cost the others (a killed step still leaves
# the JSON of what it finished: the benchmarks write after every case / run):
#   speed     benchmarks/bench_train_speed.py: the issue's table in one run (Lite-Mind faithful + fast at batch
#             1000, MindEye faithful + fast + bf16-weights at 32 and 128), then the levers while time is left
#             (MindEye's torchao optimizers; Lite-Mind's compile scopes, Triton vs inductor chains, CUDA
#             graphs, bf16 spectral ops)                                                   -> speed.json
#   profile   benchmarks/profile_train_step.py: kernels by time, launches per step, eager op/byte/FLOP
#             counts and the roofline floor, for faithful and fast; its compile reuses the inductor cache
#             the speed step filled (its first_step_s is the warm-cache compile time)    -> profile.json
#   same_*    benchmarks/bench_same_accuracy.py at nsd scale, quick budget, seeds 0,1,2, fast vs faithful:
#             Lite-Mind (fast: impl=fast, bf16, step compile) and MindEye (fast: bf16 + --fast-optimizer)
#             -> same_litemind.json, same_mindeye.json; the simulator's nsd-scale data are generated on the
#             CPU in the background while the speed step runs
#   summary   benchmarks/gpu_check_summary.py                                 -> summary.md, summary.json
# Logs: OUTDIR/steps.log, OUTDIR/steps.jsonl (rc and seconds per step), OUTDIR/<step>.out / .err.
#
# The device image has torch but not torchao: put its wheel in .device-wheels/ (pip download torchao
# --no-deps -d .device-wheels) and carry that folder; it is installed offline here when present.
set -uo pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [--cpu-smoke]}
MODE=${2:-gpu}
case "$MODE" in gpu | --cpu-smoke) ;; *) echo "unknown mode $MODE (expected --cpu-smoke or nothing)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export BRAINBENCH_HOME=${BRAINBENCH_HOME:-$(mktemp -d /tmp/bb-gpu-check.XXXXXX)}
# one inductor/Triton cache for every step: later compiles of the same graphs are cache hits
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/inductor-cache}
START=$(date +%s)
: > "$OUT/steps.jsonl"

log() { echo "[gpu_check +$(($(date +%s) - START))s] $*" | tee -a "$OUT/steps.log" >&2; }

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 t0 rc
  shift 2
  log "start $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$limit" "$@" > "$OUT/$name.out" 2> "$OUT/$name.err"
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(($(date +%s) - t0)), \"limit\": $limit}" >> "$OUT/steps.jsonl"
  log "end $name rc=$rc ($(($(date +%s) - t0)) s)"
  [ "$rc" -eq 0 ] || tail -n 5 "$OUT/$name.err" >&2
}

# ------------------------------------------------------------------------------------------ install
if compgen -G ".device-wheels/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-deps --no-index .device-wheels/*.whl 2>&1 | tail -n 2
fi
if ! "$PY" -c "import brainbench_litemind" 2> /dev/null; then
  "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e . 2>&1 | tail -n 2
fi
{ nvidia-smi -L 2> /dev/null || echo "no nvidia-smi"; } > "$OUT/env.txt"
"$PY" - >> "$OUT/env.txt" 2>&1 <<'PY'
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())
for name in ("triton", "torchao"):
    spec = importlib.util.find_spec(name)
    print(name, __import__(name).__version__ if spec else "MISSING")
PY
log "$(tr '\n' ' ' < "$OUT/env.txt")"

# --------------------------------------------------------------------------------------- settings
LM_VARIANTS=regions,blocks,torch-chain,cudagraphs,bf16-spectral
ME_OPTIMIZERS=adamw8bit-bf16,adamw8bit,adamw-bf16-states
if [ "$MODE" = "--cpu-smoke" ]; then
  SCALE=tiny
  SPEED=(--tiny --device cpu --warmup 0 --steps 1 --compile --compile-backend aot_eager --mindeye-batch 16
         --time-budget 600)
  PROFILE=(--tiny --device cpu --warmup 1 --steps 1 --compile --compile-backend aot_eager)
  SAME=(--scale tiny --device cpu --budget quick --seeds 0,1 --opt litemind.patch_size=20)
  LM_EPOCHS=1 ME_EPOCHS=1
  LIMITS=(600 300 300 400)  # generous: a shared CPU may be heavily loaded; the point is every code path
else
  SCALE=nsd
  SPEED=(--mindeye-batch 128 --time-budget 160)
  PROFILE=(--warmup 2 --steps 3)
  SAME=(--scale nsd --budget quick --seeds 0,1,2)
  LM_EPOCHS=5 ME_EPOCHS=2
  LIMITS=(240 60 100 70)
fi

# MindEye's fast path in the same-accuracy step: torchao's 8-bit states with bf16 weights, or, when torchao does
# not import with the device's torch, brainbench's own bf16 weights + fp32 masters
if "$PY" -c "import torchao.optim" 2> /dev/null; then
  ME_FAST=(--fast-optimizer adamw8bit-bf16)
else
  ME_FAST=(--fast-precision bf16-master)
  log "torchao does not import: MindEye's same-accuracy fast path uses bf16-master instead"
fi

# the simulator's data for the same-accuracy steps, generated on the CPU while the GPU times steps
"$PY" -c "from brainbench_nsd.dataset import open_synthetic_nsd; open_synthetic_nsd(scale='$SCALE').n_voxels(1)" \
  > "$OUT/simulate.out" 2> "$OUT/simulate.err" &
SIMULATE=$!

step speed "${LIMITS[0]}" "$PY" benchmarks/bench_train_speed.py "${SPEED[@]}" \
  --litemind-variants "$LM_VARIANTS" --mindeye-optimizers "$ME_OPTIMIZERS" --json "$OUT/speed.json"
step profile "${LIMITS[1]}" "$PY" benchmarks/profile_train_step.py "${PROFILE[@]}" --json "$OUT/profile.json"
# if the default fast Lite-Mind row failed (e.g. the Triton kernels on this card), train the same-accuracy
# fast path with the plain spectral ops instead, and say so
LM_FAST=()
if "$PY" - "$OUT/speed.json" 2> /dev/null <<'PY'
import json, sys
failed = {item["label"] for item in json.load(open(sys.argv[1])).get("failed", [])}
sys.exit(0 if any(label.startswith("litemind fast b") and len(label.split()) == 3 for label in failed) else 1)
PY
then
  LM_FAST=(--opt litemind.spectral_kernel=torch)
  log "the default fast Lite-Mind row failed: same accuracy runs it with spectral_kernel=torch"
fi
log "waiting for the simulator's $SCALE-scale data"
wait "$SIMULATE"
echo "{\"step\": \"simulate\", \"rc\": $?, \"seconds\": null, \"limit\": null}" >> "$OUT/steps.jsonl"
step same_litemind "${LIMITS[2]}" "$PY" benchmarks/bench_same_accuracy.py "${SAME[@]}" --encoders litemind \
  --epochs "$LM_EPOCHS" "${LM_FAST[@]}" --json "$OUT/same_litemind.json"
step same_mindeye "${LIMITS[3]}" "$PY" benchmarks/bench_same_accuracy.py "${SAME[@]}" --encoders mindeye \
  --epochs "$ME_EPOCHS" "${ME_FAST[@]}" --json "$OUT/same_mindeye.json"
step summary 60 "$PY" benchmarks/gpu_check_summary.py "$OUT"
cat "$OUT/summary.md" 2> /dev/null
log "done in $(($(date +%s) - START)) s; results in $OUT"

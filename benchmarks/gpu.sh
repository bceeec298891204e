#!/usr/bin/env bash
# GPU readiness, one script for one CUDA GPU (budget: under 8 minutes):
#   1. the tests marked gpu (CUDA vs CPU estimates for every net kind, CUDA graphs vs eager);
#   2. throughput eager vs compiled (mode="reduce-overhead": CUDA graphs) of P-1h, EB-1h and
#      P-conv at batch 20, and of the IMDB net at the seed's full size (600 tokens);
#   3. one GDU callback run on CUDA (P-1h, 20 batches) writing its TensorBoard figures, and a
#      check that its gdu/ figures are in the event files.
# A failed step does not stop the next ones: each step's exit status goes to $OUT/status.txt
# ("<step> <status>"), and the script exits with 1 at the end if any step failed.
# Everything goes under $OUT (default benchmarks/results/gpu). Run from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu.sh
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export EQPROP_DATA_DIR=${EQPROP_DATA_DIR:-data}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" \
    || exit 1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
: > "$OUT/status.txt"
failed=0

# step NAME LOG COMMAND...: runs COMMAND, its output to the screen and appended to $OUT/LOG
step() {
  local name=$1 log=$2
  shift 2
  "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  echo "$name $rc" >> "$OUT/status.txt"
  [ "$rc" -eq 0 ] || { echo "!! $name failed with status $rc"; failed=1; }
}

echo "== 1. tests marked gpu"
step pytest-gpu pytest-gpu.log timeout 180 python -m pytest -m gpu tests/test_compile.py \
    tests/test_meta_device.py -q --junitxml "$OUT/pytest-gpu.xml"

echo "== 2. throughput, eager vs CUDA graphs"
step throughput throughput.log timeout 150 python benchmarks/throughput.py --device cuda \
    --configs p1h eb1h pconv --seconds 2 --out "$OUT/throughput.json"
# the IMDB net always runs on synthetic inputs
step throughput-imdb600 throughput.log timeout 90 python benchmarks/throughput.py \
    --device cuda --configs imdb --imdb-tokens 600 --seconds 2 \
    --out "$OUT/throughput_imdb600.json"

echo "== 3. GDU callback on CUDA"
step gdu-fit gdu.log timeout 60 python -m eqprop_lightning.commands fit \
    --config configs/mnist/p1h.yaml --trainer.accelerator gpu --trainer.devices 1 \
    --trainer.max_epochs 1 --trainer.limit_train_batches 20 --trainer.limit_val_batches 0 \
    --trainer.limit_test_batches 0 --trainer.logger.init_args.save_dir "$OUT/runs" \
    --trainer.enable_progress_bar false --gdu.every_n_steps 10
step gdu-figures gdu.log python - "$OUT/runs" <<'PY'
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

expected = {"gdu/gdu_neurons", "gdu/gdu_synapses", "gdu/gdu_rmse"}
found = set()
for events in Path(sys.argv[1]).rglob("events.out.tfevents.*"):
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    found |= {tag for tag in accumulator.Tags()["images"] if tag.startswith("gdu/")}
print(f"gdu figures in {sys.argv[1]}: {sorted(found)}")
sys.exit(f"missing: {sorted(expected - found)}" if expected - found else 0)
PY

echo "exit status of each step:"
cat "$OUT/status.txt"
echo "all written under $OUT"
exit "$failed"

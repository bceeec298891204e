#!/usr/bin/env bash
# GPU readiness, one script for one CUDA GPU (budget: under 8 minutes):
#   1. the tests marked gpu (CUDA vs CPU estimates for every net kind, CUDA graphs vs eager);
#   2. throughput eager vs compiled (mode="reduce-overhead": CUDA graphs) of P-1h, EB-1h and
#      P-conv at batch 20, and of the IMDB net at the seed's full size (600 tokens);
#   3. one GDU callback run on CUDA (P-1h, 20 batches) writing its TensorBoard figures.
# Everything goes under $OUT (default benchmarks/results/gpu). Run from the repository root:
#   OUT=/tmp/gpu bash benchmarks/gpu.sh
set -euo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export EQPROP_DATA_DIR=${EQPROP_DATA_DIR:-data}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

echo "== 1. tests marked gpu"
timeout 180 python -m pytest -m gpu tests/test_compile.py tests/test_meta_device.py -q \
    --junitxml "$OUT/pytest-gpu.xml" 2>&1 | tee "$OUT/pytest-gpu.log"

echo "== 2. throughput, eager vs CUDA graphs"
timeout 150 python benchmarks/throughput.py --device cuda --configs p1h eb1h pconv \
    --seconds 2 --out "$OUT/throughput.json" 2>&1 | tee "$OUT/throughput.log"
timeout 90 python benchmarks/throughput.py --device cuda --configs imdb --imdb-tokens 600 \
    --seconds 2 --synthetic --out "$OUT/throughput_imdb600.json" 2>&1 | tee -a "$OUT/throughput.log"

echo "== 3. GDU callback on CUDA"
timeout 60 python -m eqprop_lightning.cli fit --config configs/mnist/p1h.yaml \
    --trainer.accelerator gpu --trainer.devices 1 --trainer.max_epochs 1 \
    --trainer.limit_train_batches 20 --trainer.limit_val_batches 0 \
    --trainer.limit_test_batches 0 --trainer.logger.init_args.save_dir "$OUT/runs" \
    --trainer.callbacks+=eqprop_lightning.callbacks.GDUCallback \
    --trainer.callbacks.every_n_steps 10 2>&1 | tee "$OUT/gdu.log"
find "$OUT/runs" -name "events.out.tfevents.*" | tee "$OUT/tensorboard_files.txt"
test -s "$OUT/tensorboard_files.txt"
echo "all written under $OUT"

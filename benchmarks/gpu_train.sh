#!/usr/bin/env bash
# Train a benchmark size on a GPU machine; print throughput and GPU memory.
#
#   benchmarks/gpu_train.sh                 # fresh venv .venv-gpu, CUDA build of the pinned torch
#   SIZE=large benchmarks/gpu_train.sh      # the scale benchmark's largest size: 14 days of the
#                                           # large preset (~21M events, 1M users, 100k items)
#   SIZE=large DAYS=4 EVENTS_PER_DAY=1250000 benchmarks/gpu_train.sh   # a smaller cut of it
#   VENV=/tmp/v TORCH_INDEX=https://download.pytorch.org/whl/cu126 benchmarks/gpu_train.sh
#   NPROC=2 benchmarks/gpu_train.sh         # also a DDP run with torchrun (NCCL) on 2 GPUs
#
# The venv gets the CUDA wheel of exactly the torch version pinned in constraints.txt (never an
# unpinned torch), then the project with the remaining constraints. The data (SIZE=mid, default)
# are the benchmark's mid-size simulation (21 days, 5 000 users, 1 000 items); SIZE=large builds
# the scale benchmark's set (simulate → gate → features → training set, ~10 minutes and ~20 GB
# of disk at full size) and trains it on the streaming path (in-batch negatives; sparse
# embedding updates on one GPU, dense under torchrun: NCCL has no sparse all-reduce). Everything is written under a temporary
# FLYWHEEL_HOME; training runs without MLflow so that only the trainer is measured.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-gpu}"
PYTHON="${PYTHON:-python3.11}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}"
NPROC="${NPROC:-1}"
SIZE="${SIZE:-mid}"
DAYS="${DAYS:-14}"
EVENTS_PER_DAY="${EVENTS_PER_DAY:-0}"
TORCH_VERSION="$(sed -n 's/^torch==\(.*\)$/\1/p' "$ROOT/constraints.txt")"
[ -n "$TORCH_VERSION" ] || { echo "torch is not pinned in constraints.txt" >&2; exit 1; }

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this script needs an NVIDIA GPU" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
fi
# 1. the CUDA build of the pinned torch, 2. everything else under the lock (torch already satisfied:
#    a local label like +cu128 matches ==X.Y.Z)
"$VENV/bin/pip" install --quiet "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"
"$VENV/bin/pip" install --quiet -c "$ROOT/constraints.txt" -e "$ROOT"

cd "$ROOT"
export FLYWHEEL_HOME="$(mktemp -d)/fw"
export FLYWHEEL_PSEUDONYM_KEY="${FLYWHEEL_PSEUDONYM_KEY:-gpu-benchmark-key}"
trap 'rm -rf "$(dirname "$FLYWHEEL_HOME")"' EXIT

"$VENV/bin/python" - <<'EOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name(0)}")
EOF

case "$SIZE" in
  mid)
    SET="$("$VENV/bin/python" -c "
import os
from benchmarks.bench_training import FULL, prepare
print(prepare(os.environ['FLYWHEEL_HOME'], FULL))
" | tail -1)"
    ARGS=(--data "$SET" --no-mlflow --set data.feature_source=contract --set data.window_days=21 --set train.num_threads=0)
    ;;
  large)
    SET="$("$VENV/bin/python" -c "
import os
from benchmarks.bench_scale import prepare_large
print(prepare_large(os.environ['FLYWHEEL_HOME'], $DAYS, $EVENTS_PER_DAY or None))
" | tail -1)"
    ARGS=(--data "$SET" --no-mlflow --set data.window_days="$DAYS" --set train.num_threads=0 --set train.epochs=2)
    ;;
  *) echo "SIZE must be mid or large, not $SIZE" >&2; exit 2 ;;
esac
echo "training set ($SIZE): $SET"

"$VENV/bin/python" -m training.train "${ARGS[@]}" --run-key gpu-1 --result-json "$FLYWHEEL_HOME/gpu-1.json"
"$VENV/bin/python" - "$FLYWHEEL_HOME/gpu-1.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["metrics"]
print(f"1 GPU: {r['interactions_per_s']:,.0f} interactions/s, {r['epochs_run']} epochs, "
      f"peak GPU memory {m.get('gpu_max_memory_mib', float('nan')):.0f} MiB, "
      f"NDCG@10 {m['holdout_ndcg_at_10']:.4f} (oracle ratio {m.get('ndcg_to_oracle_ratio', float('nan')):.3f})")
EOF

if [ "$NPROC" -gt 1 ]; then
  "$VENV/bin/torchrun" --nproc-per-node "$NPROC" -m training.train "${ARGS[@]}" --run-key gpu-ddp --result-json "$FLYWHEEL_HOME/gpu-ddp.json"
  "$VENV/bin/python" -c "
import json; r = json.load(open('$FLYWHEEL_HOME/gpu-ddp.json'))
print(f\"DDP x$NPROC: {r['interactions_per_s']:,.0f} interactions/s, NDCG@10 {r['metrics']['holdout_ndcg_at_10']:.4f}\")"
fi

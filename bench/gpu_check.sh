#!/usr/bin/env bash
# The accelerator check of issue 19, item 6: on whatever TensorFlow sees, finetune throughput on
# 1 GPU vs all GPUs, mixed precision on/off, XLA on/off, and the input pipeline against the model
# (bench/gpu_check.py says exactly what). Bounded in time; results under the output folder.
#
#   bench/gpu_check.sh [OUTPUT_DIR] [--quick]
#
# OUTPUT_DIR defaults to $OUT (the device machine's result folder), else bench/results/gpu.
# GPU_CHECK_TIMEOUT (seconds, default 540) bounds the whole check; each measurement is bounded
# by a share of it, and every finished measurement is already written when time runs out.
# Needs the project's Python environment: .venv/bin/python, else $PYTHON, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
output="${OUT:-bench/results/gpu}"
if [[ $# -gt 0 && "$1" != --* ]]; then output="$1"; shift; fi
mkdir -p "$output"
python="${PYTHON:-.venv/bin/python}"
[[ -x "$python" ]] || python=python3
budget="${GPU_CHECK_TIMEOUT:-540}"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(uname -srm), $(nproc) CPU cores"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
} > "$output/.device.txt.tmp" && mv "$output/.device.txt.tmp" "$output/device.txt"  # atomic
# Six measurements at most (five on one GPU), plus start-up: each gets a sixth of the budget.
timeout --kill-after=10 "$budget" "$python" bench/gpu_check.py --output "$output" \
  --per-measurement-timeout "$((budget / 6))" "$@"

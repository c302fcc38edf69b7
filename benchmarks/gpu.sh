#!/usr/bin/env bash
# GPT-2 124M on one GPU (training MFU in bf16 with torch.compile and flash attention, generation,
# attention vs torch SDPA): one short table in a few minutes on one H100. See benchmarks/gpu.py.
#   bash benchmarks/gpu.sh [--peak-tflops 989] [--batch 16] [--steps 20]
#   bash benchmarks/gpu.sh --dry-run      # the same code path on CPU, tiny config, seconds
# PYTHON picks the interpreter (default: python3 on PATH). Exit status 2: no CUDA device.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" benchmarks/gpu.py "$@"

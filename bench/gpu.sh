#!/usr/bin/env bash
# The GPU path: tokens/s and MFU (against the bf16 matmul peak measured in the same run) of a
# ~110M-parameter masked-LM training step (BERT-base shape, vocab 32k, seq 512) with bf16
# autocast, fused AdamW and torch.compile. Under 5 minutes on an H100/H200; target >= 45% MFU.
#   bash bench/gpu.sh [--json OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "bench/gpu.sh: no CUDA device visible to torch; nothing to measure" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec "$PY" bench/pretrain_throughput.py --device cuda --bf16 --compile --no-peer \
  --vocab 32768 --width 768 --layers 12 --heads 12 --ffn 3072 --seq 512 --batch 32 \
  --dropout 0.0 --warmup 5 --steps 20 --rounds 3 --threads 8 "$@"

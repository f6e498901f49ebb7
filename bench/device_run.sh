#!/usr/bin/env bash
# On the GPU machine (after ../shared/tools/device-stage's calls): speed of lightning-align and
# its peers, same machine, same weights, same audio. Writes JSON lines under $OUT.
set -uo pipefail
source .device-stage/payload/device-install --env-only
[ -d /tmp/site/numba ] || tar -xJf .whl/numba-llvmlite-py312.tar.xz -C /tmp/site
ln -sfn ../kernels lightning_align/kernels
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
audio=${AUDIO:-.benchdata/speech450.npy}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -m bench.breakdown "$audio" --batch-size 32 2>&1 | tee -a "$OUT/breakdown.jsonl"
python3 -m bench.throughput "$audio" --tile "${TILE:-4}" --systems "${LIGHTNING:-lightning,lightning+capture,lightning+words}" \
    --batch-sizes "${BATCHES:-16,32,64}" --out "$OUT/gpu.jsonl" 2>&1 | cut -c1-170
python3 -m bench.throughput "$audio" --systems "${PEERS:-mlx-whisper,mlx-whisper+words,openai-whisper,openai-whisper+words,lightning,lightning+words}" \
    --batch-sizes 32 --out "$OUT/gpu.jsonl" 2>&1 | cut -c1-170

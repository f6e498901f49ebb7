#!/usr/bin/env bash
# On the GPU machine (after ../shared/tools/device-stage's calls): speed of lightning-align and
# its peers, same machine, same weights, same audio. Writes JSON lines under $OUT.
# Knobs: STAGE (staging dir, e.g. .device-stage-base), MODEL_DIR (the weights, when not the
# stage's), AUDIO, REF (its text: adds WER), TILE, LIGHTNING, BATCHES, WINDOWS, REPEAT (runs of
# each lightning system after the warm-up; the report keeps the fastest), INTERLEAVE (non-empty:
# the systems run in rounds, see bench.throughput --interleave), VARY_SEED (non-empty: lightning's
# fallback samples drawn with seed r in round r), PEERS, PEER_REPEAT, BREAK.
set -uo pipefail
source "${STAGE:-.device-stage}/payload/device-install" --env-only
[ -n "${MODEL_DIR:-}" ] && export WHISPER_MODEL_DIR=$MODEL_DIR
# numba: the device image has one; older images needed it carried
python3 -c "import numba" 2>/dev/null || tar -xJf .whl/numba-llvmlite-py312.tar.xz -C /tmp/site
ln -sfn ../kernels lightning_align/kernels
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
audio=${AUDIO:-.benchdata/speech450.npy}
ref=${REF:-${audio%.npy}.txt}
refarg=(); [ -f "$ref" ] && refarg=(--reference "$ref")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ -n "${BREAK-1}" ]; then  # BREAK= (empty) skips the breakdown
  for w in ${BREAK_WINDOWS:-30 auto}; do
    warg=(); [ "$w" != auto ] && warg=(--window-s "$w")
    python3 -m bench.breakdown "$audio" "${warg[@]}" 2>&1 | sed "s/^{/{\"window_s\": \"$w\", /" | tee -a "$OUT/breakdown.jsonl"
  done
fi
for tile in ${TILE:-1 4}; do
  tilearg=("${refarg[@]}"); [ "$tile" != 1 ] && tilearg=()  # WER is a quadratic edit distance: minutes on tiled text
  python3 -m bench.throughput "$audio" --tile "$tile" --systems "${LIGHTNING:-lightning,lightning+capture,lightning+words}" \
      --batch-sizes "${BATCHES:-64}" --window-s "${WINDOWS:-30,auto}" --repeat "${REPEAT:-1}" ${INTERLEAVE:+--interleave} ${VARY_SEED:+--vary-seed} \
      "${tilearg[@]}" --out "$OUT/gpu.jsonl" 2>&1 | cut -c1-200
done
[ -n "${PEERS-mlx-whisper,mlx-whisper+words}" ] && python3 -m bench.throughput "$audio" \
    --systems "${PEERS:-mlx-whisper,mlx-whisper+words},lightning,lightning+words" --batch-sizes 64 \
    --repeat "${PEER_REPEAT:-1}" ${INTERLEAVE:+--interleave} ${VARY_SEED:+--vary-seed} "${refarg[@]}" --out "$OUT/gpu.jsonl" 2>&1 | cut -c1-200
exit 0

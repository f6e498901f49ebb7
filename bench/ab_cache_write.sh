#!/usr/bin/env bash
# On the GPU machine (after ../shared/tools/device-stage's calls and device-install): the compiled
# decoding step's cache and record writes as MLX's slice update against a scatter
# (`lightning_align.model.write_at`, chosen by LIGHTNING_ALIGN_CACHE_WRITE), the two alternating
# in separate processes round by round (the order reversed every other round), each process
# timing segment-only and word runs interleaved, with the word error rate as the transcript's
# check; then, unless TIMELINE is empty, each variant's kernel timeline (bench.kernel_timeline).
# Knobs: STAGE, AUDIO, ROUNDS (2), REPEAT (3 runs of each system per process), TIMELINE.
# Rows: $OUT/ab-cache-write.jsonl (each row's `cache_write` names its variant).
set -uo pipefail
source "${STAGE:-.device-stage}/payload/device-install" --env-only
ln -sfn ../kernels lightning_align/kernels
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
audio=${AUDIO:-.benchdata/speech450.npy}
ref=${audio%.npy}.txt
refarg=(); [ -f "$ref" ] && refarg=(--reference "$ref")
for r in $(seq 1 "${ROUNDS:-2}"); do
  order="slice scatter"; (( r % 2 == 0 )) && order="scatter slice"
  for how in $order; do
    echo "== round $r, $how"
    LIGHTNING_ALIGN_CACHE_WRITE=$how python3 -m bench.throughput "$audio" --systems lightning,lightning+words \
        --batch-sizes 64 --repeat "${REPEAT:-3}" --interleave "${refarg[@]}" --out "$OUT/ab-cache-write.jsonl" 2>&1 | cut -c1-160
  done
done
if [ -n "${TIMELINE-1}" ]; then
  for how in slice scatter; do
    echo "== kernel timeline, $how"
    LIGHTNING_ALIGN_CACHE_WRITE=$how python3 -m bench.kernel_timeline "$audio" --configs seg words 2>&1
  done
fi
exit 0

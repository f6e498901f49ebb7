#!/usr/bin/env bash
# On the GPU machine: the corpus benchmark (bench/test_bench_corpus.py, LA_BENCH_CORPUS_GPU=1):
# in-process `transcribe` over 24 clips of 60-120 s vs `corpus.run` on Ray with 1 worker, 1 GPU.
# Before it: MLX installed by device-install (../shared/tools/device-stage's calls), and the
# folders of .device-ray/ (Ray 2.60.0 as split tar.xz, wheels Ray and the project need, the
# clips as FLAC) copied to /root/stash-ray/ by earlier calls, or carried in this one.
# Writes $OUT/corpus-gpu.json (pytest-benchmark) and $OUT/corpus-gpu.jsonl (one line a test).
# Knobs: STAGE (staging dir, e.g. .device-stage-base), MODEL_DIR (the weights, when not the
# stage's), STASH (default /root/stash-ray), BENCH_TIMEOUT (seconds for pytest, default 480).
set -uo pipefail
source "${STAGE:-.device-stage}/payload/device-install" --env-only
stash=${STASH:-/root/stash-ray}
mkdir -p "$stash" && for d in .device-ray/*/; do [ -d "$d" ] && cp -rn "$d". "$stash"/; done
if [ ! -d /tmp/site/ray ]; then
  ls "$stash"/ray.part.* >/dev/null || { echo "no Ray parts in $stash" >&2; exit 3; }
  cat "$stash"/ray.part.* | xz -d | tar -xf - -C /tmp/site || exit 3
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$stash"/*.whl || exit 3
fi
[ -n "${MODEL_DIR:-}" ] && export WHISPER_MODEL_DIR=$MODEL_DIR
# numba: the device image has one; older images needed it carried
python3 -c "import numba" 2>/dev/null || tar -xJf .whl/numba-llvmlite-py312.tar.xz -C /tmp/site
ln -sfn ../kernels lightning_align/kernels
export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export LA_GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
python3 - <<'EOF' || exit 4
import importlib.metadata as md
import ray, ray.data, soundfile, numba, mlx.core as mx
print("ray", ray.__version__, "| mlx", mx.__version__, mx.default_device(), "| numba",
      numba.__version__, "| libsndfile", soundfile.__libsndfile_version__)
print(" ".join(f"{n} {md.version(n)}" for n in
               ("numpy", "pandas", "pyarrow", "packaging", "protobuf", "jsonschema", "attrs")))
EOF
[ -d "$stash/corpus" ] || { echo "no clips in $stash/corpus" >&2; exit 5; }
LA_BENCH_CORPUS_GPU=1 LA_BENCH_CORPUS_AUDIO="$stash/corpus" timeout "${BENCH_TIMEOUT:-480}" \
    python3 -m pytest bench/test_bench_corpus.py --benchmark-only -s -p no:cacheprovider \
    --log-level=WARNING --benchmark-json="$OUT/corpus-gpu.json" 2>&1 | tee "$OUT/corpus-gpu.log"
rc=${PIPESTATUS[0]}
python3 - "$OUT/corpus-gpu.json" "$OUT/corpus-gpu.jsonl" <<'EOF'
import json, os, sys
try:
    data = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"no benchmark JSON: {e}")
machine = data.get("machine_info", {})
import mlx.core as mx, ray
extra = {"gpu": os.environ.get("LA_GPU_NAME"), "mlx": mx.__version__, "ray": ray.__version__}
with open(sys.argv[2], "a") as out:
    for b in data.get("benchmarks", []):
        row = {"test": b["name"], **b.get("extra_info", {}), "time": data.get("datetime"),
               "python": machine.get("python_version"), "cpu": machine.get("machine"), **extra}
        out.write(json.dumps(row) + "\n")
        print(json.dumps(row))
EOF
exit "$rc"

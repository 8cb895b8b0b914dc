#!/usr/bin/env bash
# Reproduces the figures of docs/bench.md ("Fixture results") and docs/performance.md:
#   scripts/bench-fixtures.sh [OUT_DIR]   (default target/bench-fixtures)
# ending with docs/performance.md's table (OUT_DIR/performance.md, from scripts/perf-table.py).
# The MobileNetV3-small-style models (random weights, 10 MB each) are generated into
# OUT_DIR/models by scripts/make_mobilenet.py with the repository's .venv; never committed.
# Needs a release build with every feature (ONNX Runtime through ORT_DYLIB_PATH, which
# scripts/setup.sh records in .venv/ort_dylib_path). CPU engines only: wgpu is left out on
# purpose (on a machine without a GPU it would be a software rasteriser, correctness only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-target/bench-fixtures}
mkdir -p "$OUT"
if [[ -z "${ORT_DYLIB_PATH:-}" && -f .venv/ort_dylib_path ]]; then
    ORT_DYLIB_PATH=$(cat .venv/ort_dylib_path)
    export ORT_DYLIB_PATH
fi
cargo build --release --all-features
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT/models"
"$PY" scripts/make_mobilenet.py "$OUT/models/mobilenet224.onnx" --height 224 --image-width 224
"$PY" scripts/make_mobilenet.py "$OUT/models/mobilenet48x192.onnx" --height 48 --image-width 192
BIN=${CARGO_TARGET_DIR:-target}/release/alembic
"$BIN" bench models/student.onnx --device-info --runs 1 --warmup 0 --quiet | sed -n '/^device:/,/^$/p' >"$OUT/device.txt"
# README figures: every Alembic precision against tract and ONNX Runtime, one thread each.
for m in teacher student; do
    "$BIN" bench "models/$m.onnx" --backends cpu,tract,ort --precision f32,f16,int8,int4 \
        --batch 1,8 --threads 1 --warmup 20 --runs 200 --baseline ort:f32 --quiet --markdown \
        --json "$OUT/$m.json" --plot "$OUT/$m.svg" >"$OUT/$m.txt"
done
# docs/performance.md. Latency: every engine, precision (f32, int8, w8a8), batch (1, 8) and
# thread count (1, 2) interleaved in one process, so ratios compare runs made side by side.
# Init and peak memory: one process per engine at batch 1, so each peak is the engine's own.
perf() { # NAME MODEL RUNS
    "$BIN" bench "$2" --backends cpu,tract,ort --precision f32,int8,w8a8 --batch 1,8 --threads 1,2 \
        --warmup 20 --runs "$3" --quiet --markdown --json "$OUT/perf-$1.json" >"$OUT/perf-$1.txt"
    for b in cpu tract ort; do
        "$BIN" bench "$2" --backends "$b" --batch 1 --threads 2 --warmup 5 --runs 20 --quiet \
            --json "$OUT/perf-$1-mem-$b.json" >"$OUT/perf-$1-mem-$b.txt"
    done
}
perf teacher models/teacher.onnx 300
perf student models/student.onnx 300
perf mobilenet224 "$OUT/models/mobilenet224.onnx" 60
perf mobilenet48x192 "$OUT/models/mobilenet48x192.onnx" 200
"$PY" scripts/perf-table.py "$OUT" teacher student mobilenet224 mobilenet48x192 >"$OUT/performance.md"
echo "wrote $OUT"

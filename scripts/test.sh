#!/usr/bin/env bash
# Run alembic's test suite with its full environment:
#   - scripts/setup.sh: Debian packages (Vulkan/lavapipe), .venv with onnx +
#     onnxruntime, and .venv/ort_dylib_path;
#   - scripts/onnx_node_cases.py: ONNX node conformance cases into
#     tests/data/onnx-node (skipped when its STAMP is current);
#   - exports ORT_DYLIB_PATH, ALEMBIC_ONNX_NODE_CASES and a valid
#     XDG_RUNTIME_DIR;
#   - cargo test --all-features "$@"  (extra arguments are passed through,
#     e.g. `scripts/test.sh -- --nocapture` or `scripts/test.sh --test integration`).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

bash scripts/setup.sh >/dev/null

.venv/bin/python scripts/onnx_node_cases.py --out "$ROOT/tests/data/onnx-node"

ORT_DYLIB_PATH=$(cat .venv/ort_dylib_path)
if [[ ! -f "$ORT_DYLIB_PATH" ]]; then
    echo "test.sh: ORT_DYLIB_PATH=$ORT_DYLIB_PATH does not exist" >&2
    exit 1
fi
export ORT_DYLIB_PATH
export ALEMBIC_ONNX_NODE_CASES=$ROOT/tests/data/onnx-node

# Mesa / the Vulkan loader want a private, existing runtime dir.
xdg_ok() {
    [[ -n "${XDG_RUNTIME_DIR:-}" && -d "$XDG_RUNTIME_DIR" && -O "$XDG_RUNTIME_DIR" &&
        -w "$XDG_RUNTIME_DIR" ]] &&
        [[ "$(stat -c '%a' "$XDG_RUNTIME_DIR" 2>/dev/null)" == 700 ]]
}
if ! xdg_ok; then
    XDG_RUNTIME_DIR=$(mktemp -d "${TMPDIR:-/tmp}/alembic-xdg.XXXXXX")
    chmod 700 "$XDG_RUNTIME_DIR"
    export XDG_RUNTIME_DIR
    trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [[ -f "$HOME/.cargo/env" ]]; then
        # shellcheck disable=SC1091
        . "$HOME/.cargo/env"
    fi
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo not found (install Rust via rustup, or put cargo on PATH)" >&2
    exit 1
fi

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

echo "test.sh: ORT_DYLIB_PATH=$ORT_DYLIB_PATH" >&2
echo "test.sh: ALEMBIC_ONNX_NODE_CASES=$ALEMBIC_ONNX_NODE_CASES" >&2
cargo test --all-features "$@"

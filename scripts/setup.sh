#!/usr/bin/env bash
# Prepare the test environment for alembic. Idempotent, quiet, and fast when
# everything is already in place.
#
#   1. Debian packages the tests need (Vulkan loader + Mesa lavapipe for the
#      wgpu engine tests; gcc and a JDK for the C ABI and JNI tests),
#      installed only when missing. Needs root or
#      password-less sudo; otherwise a warning is printed and setup goes on.
#   2. A Python virtual environment at .venv (repo root) with
#      scripts/requirements-test.txt installed. Re-installed only when the
#      requirements file (or the interpreter) changes: .venv/.requirements.stamp
#      holds the hash of what was installed.
#   3. Locates libonnxruntime.so* inside the venv's onnxruntime/capi, prints its
#      path and writes it to .venv/ort_dylib_path (read by scripts/test.sh and
#      exported as ORT_DYLIB_PATH for the `ort` crate's load-dynamic feature).
#
# Environment knobs:
#   ALEMBIC_SKIP_APT=1   do not check/install Debian packages
#   PYTHON=/path/python  interpreter used to create the venv (>= 3.11)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
REQ=$ROOT/scripts/requirements-test.txt
STAMP=$VENV/.requirements.stamp

log() { printf 'setup: %s\n' "$*" >&2; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------
APT_PACKAGES=(mesa-vulkan-drivers libvulkan1 gcc default-jdk-headless)

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

install_apt_packages() {
    if [[ "${ALEMBIC_SKIP_APT:-0}" == 1 ]]; then
        return 0
    fi
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        warn "not a Debian-like system (no dpkg/apt-get); make sure these are installed: ${APT_PACKAGES[*]}"
        return 0
    fi
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0

    local -a SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            warn "missing Debian packages (${missing[*]}) and not root / no password-less sudo;"
            warn "GPU (Vulkan/lavapipe) tests may be skipped or fail. Install them with:"
            warn "  sudo apt-get install -y ${missing[*]}"
            return 0
        fi
    fi

    log "installing Debian packages: ${missing[*]}"
    local aptlog
    aptlog=$(mktemp)
    if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$aptlog" 2>&1 &&
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1; then
        rm -f "$aptlog"
    else
        tail -n 20 "$aptlog" >&2 || true
        rm -f "$aptlog"
        warn "apt-get failed; GPU (Vulkan/lavapipe) tests may be skipped or fail"
    fi
}

install_apt_packages

# ---------------------------------------------------------------------------
# 2. Python virtual environment
# ---------------------------------------------------------------------------
python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

find_python() {
    local c
    for c in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python; do
        [[ -n "$c" ]] || continue
        if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

hash_file() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        cksum "$1" | cut -d' ' -f1
    fi
}

# Serialize concurrent setups (e.g. two test runs started at once).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$ROOT/.venv.lock.tmp"
    flock 9
fi

venv_py_version() {
    "$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null
}

# The stamp records the requirements' hash and the venv interpreter's version;
# it only counts while that interpreter still runs (a venv copied from another
# machine, or left over from a removed Python, is rebuilt).
want_req="req=$(hash_file "$REQ")"
have_stamp=""
[[ -f "$STAMP" ]] && have_stamp=$(cat "$STAMP")
if [[ -x "$VENV/bin/python" ]] && [[ -n "$have_stamp" ]] &&
    [[ "$have_stamp" == "$want_req py=$(venv_py_version)" ]]; then
    :
else
    PY=$(find_python) || {
        warn "no Python >= 3.11 found (set PYTHON=/path/to/python3.11+)"
        exit 1
    }
    log "creating .venv with $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >/dev/null 2>&1; then
        warn "'$PY -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
        exit 1
    fi
    piplog=$(mktemp)
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --only-binary=:all: -r "$REQ" >"$piplog" 2>&1; then
        cat "$piplog" >&2
        rm -f "$piplog"
        warn "pip install -r scripts/requirements-test.txt failed"
        exit 1
    fi
    rm -f "$piplog"
    "$VENV/bin/python" -c 'import onnx, onnxruntime, numpy' || {
        warn "venv packages do not import"
        exit 1
    }
    echo "$want_req py=$(venv_py_version)" >"$STAMP"
    log "installed $("$VENV/bin/python" -c 'import onnx, onnxruntime, numpy; print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}")')"
fi

# ---------------------------------------------------------------------------
# 3. ONNX Runtime shared library
# ---------------------------------------------------------------------------
shopt -s nullglob
libs=("$VENV"/lib/python*/site-packages/onnxruntime/capi/libonnxruntime.so*)
shopt -u nullglob
if [[ ${#libs[@]} -eq 0 ]]; then
    warn "libonnxruntime.so* not found under $VENV/lib/python*/site-packages/onnxruntime/capi"
    rm -f "$VENV/ort_dylib_path"
    exit 1
fi
# Prefer the real (versioned) file over symlinks; pick the highest version.
ort_lib=$(printf '%s\n' "${libs[@]}" | sort -V | tail -n 1)
ort_lib=$(readlink -f "$ort_lib")
if [[ ! -f "$VENV/ort_dylib_path" ]] || [[ "$(cat "$VENV/ort_dylib_path")" != "$ort_lib" ]]; then
    printf '%s\n' "$ort_lib" >"$VENV/ort_dylib_path"
fi
echo "$ort_lib"

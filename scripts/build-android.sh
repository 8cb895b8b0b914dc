#!/usr/bin/env bash
# Builds libalembic_ffi.so (C ABI + JNI) for Android with cargo-ndk into
# android/src/main/jniLibs/<abi>/, where the android/ Gradle module picks it up.
#
#   scripts/build-android.sh [--debug] [--cpu-only] [ABI...]   (default ABIs: arm64-v8a armeabi-v7a x86_64)
#
# The library is the lean one (student runtime + refinement + JNI + the wgpu engine, no tract,
# ONNX Runtime or CLI; --cpu-only drops wgpu) in the size-tuned `release-small` profile
# (docs/embedding.md has the sizes).
#
# Needs: ANDROID_NDK_HOME (or ANDROID_NDK_ROOT) pointing at an NDK (r25+), cargo-ndk
# (cargo install cargo-ndk), and the Rust targets for the ABIs (rustup target add ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'build-android: %s\n' "$*" >&2; exit 1; }

profile=(--profile release-small)
features=jni,wgpu
abis=()
for a in "$@"; do
    case "$a" in
        --debug) profile=() ;;
        --cpu-only) features=jni ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) abis+=("$a") ;;
    esac
done
[[ ${#abis[@]} -gt 0 ]] || abis=(arm64-v8a armeabi-v7a x86_64)

ndk=${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}
[[ -n "$ndk" ]] || die "ANDROID_NDK_HOME is not set; install the NDK (Android Studio > SDK Manager > NDK, or sdkmanager 'ndk;26.3.11579264') and export ANDROID_NDK_HOME=\$ANDROID_HOME/ndk/<version>"
[[ -d "$ndk/toolchains/llvm" ]] || die "ANDROID_NDK_HOME=$ndk does not look like an NDK (no toolchains/llvm)"
export ANDROID_NDK_HOME=$ndk
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
cargo ndk --version >/dev/null 2>&1 || die "cargo-ndk not found: cargo install cargo-ndk"

declare -A triple=([arm64-v8a]=aarch64-linux-android [armeabi-v7a]=armv7-linux-androideabi
    [x86_64]=x86_64-linux-android [x86]=i686-linux-android)
missing=()
for a in "${abis[@]}"; do
    t=${triple[$a]:-} || true
    [[ -n "$t" ]] || die "unknown ABI '$a' (known: ${!triple[*]})"
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$t"; then
        missing+=("$t")
    fi
done
[[ ${#missing[@]} -eq 0 ]] || die "missing Rust targets: rustup target add ${missing[*]}"

targets=()
for a in "${abis[@]}"; do targets+=(-t "$a"); done
cargo ndk "${targets[@]}" -o android/src/main/jniLibs build -p alembic-ffi --features "$features" "${profile[@]}"
echo "build-android: libraries in android/src/main/jniLibs:" >&2
find android/src/main/jniLibs -name '*.so' -exec ls -l {} + >&2

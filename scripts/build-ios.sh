#!/usr/bin/env bash
# Builds ios/AlembicFFI.xcframework (static libalembic_ffi.a for devices and the arm64
# simulator, plus include/alembic.h and a module map) for the Swift package in ios/.
#
#   scripts/build-ios.sh [--debug] [--cpu-only]
#
# The library is the lean one (student runtime + refinement + the wgpu engine on Metal, no tract,
# ONNX Runtime or CLI; --cpu-only drops wgpu) in the size-tuned `release-small` profile.
#
# Needs macOS with Xcode (xcodebuild) and: rustup target add aarch64-apple-ios aarch64-apple-ios-sim
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'build-ios: %s\n' "$*" >&2; exit 1; }

profile=release-small
flags=(--profile release-small)
features=wgpu
for a in "$@"; do
    case "$a" in
        --debug) profile=debug; flags=() ;;
        --cpu-only) features= ;;
        *) die "unknown option '$a' (usage: scripts/build-ios.sh [--debug] [--cpu-only])" ;;
    esac
done

[[ "$(uname -s)" == Darwin ]] || die "needs macOS with Xcode (this is $(uname -s)); XCFrameworks cannot be built elsewhere"
command -v xcodebuild >/dev/null || die "xcodebuild not found: install Xcode and run 'xcode-select -s /Applications/Xcode.app'"
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
targets=(aarch64-apple-ios aarch64-apple-ios-sim)
if command -v rustup >/dev/null; then
    for t in "${targets[@]}"; do
        rustup target list --installed | grep -qx "$t" || die "missing Rust target: rustup target add $t"
    done
fi

target_dir=${CARGO_TARGET_DIR:-target}
for t in "${targets[@]}"; do
    cargo build -p alembic-ffi --lib --target "$t" --features "$features" "${flags[@]}"
done

headers=$(mktemp -d)
trap 'rm -rf "$headers"' EXIT
cp include/alembic.h "$headers/"
cat >"$headers/module.modulemap" <<'MAP'
module AlembicFFI {
    header "alembic.h"
    export *
}
MAP
rm -rf ios/AlembicFFI.xcframework
xcodebuild -create-xcframework \
    -library "$target_dir/aarch64-apple-ios/$profile/libalembic_ffi.a" -headers "$headers" \
    -library "$target_dir/aarch64-apple-ios-sim/$profile/libalembic_ffi.a" -headers "$headers" \
    -output ios/AlembicFFI.xcframework
echo "build-ios: wrote ios/AlembicFFI.xcframework" >&2

//! The committed fixtures under models/ match models/SHA256SUMS, so a corrupted or half-updated
//! fixture fails here rather than as a puzzling numeric mismatch elsewhere.

use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[test]
fn model_fixtures_match_sha256sums() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).expect("models/SHA256SUMS");
    let mut bad = Vec::new();
    let mut files = Vec::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        // `sha256sum` format: hex, two spaces (or space + `*` for binary mode), path.
        let (hash, path) = line.split_once(' ').expect("SHA256SUMS line: <hex>  <path>");
        let path = path.trim_start_matches([' ', '*']);
        files.push(path.to_string());
        match std::fs::read(dir.join(path)) {
            Ok(bytes) => {
                let got: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                if got != hash.to_ascii_lowercase() {
                    bad.push(format!("{path}: sha256 {got}, SHA256SUMS says {hash}"));
                }
            }
            Err(e) => bad.push(format!("{path}: {e}")),
        }
    }
    for needed in ["teacher.onnx", "student.onnx", "data/heldout_x.npy", "expected/student_heldout_logits.npy"] {
        assert!(files.iter().any(|f| f == needed), "SHA256SUMS does not cover {needed}");
    }
    assert!(bad.is_empty(), "corrupted fixtures under models/:\n{}", bad.join("\n"));
    println!("fixtures: {} files match models/SHA256SUMS", files.len());
}

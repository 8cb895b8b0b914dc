//! Helpers shared by the integration tests.

use alembic::Tensor;

/// Largest |a-e| - (atol + rtol*|e|) over all elements (<= 0 means within tolerance), or a
/// description of a type/shape mismatch.
pub fn compare(actual: &Tensor, expected: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if actual.shape() != expected.shape() {
        return Err(format!("shape {:?}, expected {:?}", actual.shape(), expected.shape()));
    }
    if actual.dtype() != expected.dtype() {
        return Err(format!("type {}, expected {}", actual.dtype(), expected.dtype()));
    }
    let (a, e) = (actual.to_f64_vec(), expected.to_f64_vec());
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let ok = if y.is_nan() {
            x.is_nan()
        } else if y.is_infinite() {
            x == y
        } else {
            (x - y).abs() <= atol + rtol * y.abs()
        };
        if !ok {
            return Err(format!("element {i}: {x} vs expected {y}"));
        }
    }
    Ok(())
}

/// ONNX Runtime on `path`, or None with a printed SKIPPED line where this machine has no ONNX
/// Runtime library; a library that ORT_DYLIB_PATH names but that does not load fails the test.
#[cfg(feature = "ort")]
pub fn ort_engine(path: &std::path::Path, what: &str) -> Option<alembic::teacher::OrtEngine> {
    match alembic::teacher::ort::available() {
        Ok(()) => Some(
            alembic::teacher::OrtEngine::load(path).unwrap_or_else(|e| panic!("onnxruntime does not load {what}: {e}")),
        ),
        Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) => panic!("{e}"),
        Err(e) => {
            println!("SKIPPED onnxruntime check of {what}: {e}");
            None
        }
    }
}

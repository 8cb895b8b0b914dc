//! Parity of Alembic's CPU engine with tract, ONNX Runtime (feature `ort` + ORT_DYLIB_PATH) and
//! the numpy reference logits on the committed digits fixtures (models/).
//!
//! Tolerance: |a - r| <= 1e-4 * max(|r|, 1) per element, i.e. relative 1e-4 for logits of
//! magnitude above 1 and absolute 1e-4 below (f32 summation order differs between runtimes;
//! the fixtures' own ORT-vs-numpy gap is under 4e-6).

use alembic::teacher::{load_engine, AlembicEngine, Engine, EngineKind};
use alembic::Tensor;
use ndarray::{s, ArrayD, Axis};
use std::path::PathBuf;

const TOL: f32 = 1e-4;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn read_f32(rel: &str) -> ArrayD<f32> {
    let p = models().join(rel);
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_i64(rel: &str) -> ArrayD<i64> {
    let p = models().join(rel);
    ndarray_npy::read_npy(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Largest |a - r| / max(|r|, 1) over all elements; panics on a shape mismatch.
fn max_rel_diff(a: &ArrayD<f32>, r: &ArrayD<f32>, what: &str) -> f32 {
    assert_eq!(a.shape(), r.shape(), "{what}: shapes differ");
    a.iter().zip(r.iter()).map(|(&x, &y)| (x - y).abs() / y.abs().max(1.0)).fold(0.0, f32::max)
}

fn logits(engine: &dyn Engine, x: &ArrayD<f32>) -> ArrayD<f32> {
    let input = Tensor::from_array(x.clone());
    let outs =
        engine.run(&[("input", &input)]).unwrap_or_else(|e| panic!("{} on batch {:?}: {e}", engine.name(), x.shape()));
    let (name, t) = &outs[0];
    assert_eq!(name, "logits", "{}: first output", engine.name());
    t.to_array::<f32>().unwrap_or_else(|| panic!("{}: logits are {}, not f32", engine.name(), t.dtype()))
}

/// heldout accuracy recorded by models/make_fixtures.py.
fn fixture_accuracy(model: &str) -> f64 {
    let text = std::fs::read_to_string(models().join("fixtures.json")).expect("models/fixtures.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixtures.json is JSON");
    json["metrics"][model]["heldout_accuracy"].as_f64().expect("metrics.<model>.heldout_accuracy")
}

fn accuracy(logits: &ArrayD<f32>, labels: &ArrayD<i64>) -> f64 {
    let correct = logits
        .axis_iter(Axis(0))
        .zip(labels.iter())
        .filter(|(row, &y)| {
            let best =
                row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            best.0 as i64 == y
        })
        .count();
    correct as f64 / labels.len() as f64
}

fn check_model(model: &str) {
    let path = models().join(format!("{model}.onnx"));
    let x = read_f32("data/heldout_x.npy");
    let y = read_i64("data/heldout_y.npy");
    let expected = read_f32(&format!("expected/{model}_heldout_logits.npy"));
    let n = x.shape()[0];
    assert_eq!(y.len(), n);

    let alembic = AlembicEngine::load(&path).unwrap_or_else(|e| panic!("alembic loads {model}: {e}"));
    #[cfg_attr(not(feature = "ort"), allow(unused_mut))]
    let mut refs: Vec<Box<dyn Engine>> =
        vec![load_engine(EngineKind::Tract, &path).unwrap_or_else(|e| panic!("tract loads {model}: {e}"))];
    #[cfg(feature = "ort")]
    match alembic::teacher::ort::available() {
        Ok(()) => refs.push(Box::new(
            alembic::teacher::OrtEngine::load(&path).unwrap_or_else(|e| panic!("onnxruntime loads {model}: {e}")),
        )),
        // ORT_DYLIB_PATH set but unusable is a broken environment, not a reason to skip.
        Err(e) if std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| !p.is_empty()) => panic!("{e}"),
        Err(e) => println!("SKIPPED {model} onnxruntime parity: {e}"),
    }
    #[cfg(not(feature = "ort"))]
    println!("SKIPPED {model} onnxruntime parity: built without feature `ort`");

    // The whole split (symbolic batch N = 359), a batch of 32, and single samples.
    let t0 = std::time::Instant::now();
    let all = logits(&alembic, &x);
    let alembic_secs = t0.elapsed().as_secs_f64();
    assert_eq!(all.shape(), &[n, 10]);
    let mut batches: Vec<(String, ArrayD<f32>)> = vec![
        (format!("batch {n}"), x.clone()),
        ("batch 32".into(), x.slice(s![..32, .., .., ..]).to_owned().into_dyn()),
    ];
    for i in [0, 1, n / 2, n - 1] {
        batches.push((format!("batch 1 (sample {i})"), x.slice(s![i..i + 1, .., .., ..]).to_owned().into_dyn()));
    }
    for (what, xb) in &batches {
        let a = logits(&alembic, xb);
        let b = xb.shape()[0];
        // Alembic agrees with itself across batch sizes.
        let rows: ArrayD<f32> = if what.contains("sample") {
            let i: usize = what.trim_end_matches(')').rsplit(' ').next().unwrap().parse().unwrap();
            all.slice(s![i..i + 1, ..]).to_owned().into_dyn()
        } else {
            all.slice(s![..b, ..]).to_owned().into_dyn()
        };
        let d = max_rel_diff(&a, &rows, &format!("{model} {what} vs whole split"));
        assert!(d <= TOL, "{model} {what}: alembic differs from its whole-split run by {d:e}");
        for r in &refs {
            let rl = logits(r.as_ref(), xb);
            let d = max_rel_diff(&a, &rl, &format!("{model} {what} alembic vs {}", r.name()));
            println!("{model} {what}: alembic vs {} max rel diff {d:.2e}", r.name());
            assert!(d <= TOL, "{model} {what}: alembic vs {} max rel diff {d:e} > {TOL:e}", r.name());
        }
    }

    // numpy reference logits (first 32 heldout samples).
    let k = expected.shape()[0];
    let d = max_rel_diff(&all.slice(s![..k, ..]).to_owned().into_dyn(), &expected, &format!("{model} vs numpy"));
    println!("{model}: alembic vs numpy reference ({k} samples) max rel diff {d:.2e}");
    assert!(d <= TOL, "{model}: alembic vs numpy reference logits max rel diff {d:e} > {TOL:e}");

    let acc = accuracy(&all, &y);
    let want = fixture_accuracy(model);
    println!(
        "{model}: heldout accuracy {:.2}% (fixtures.json {:.2}%), {n} samples in {alembic_secs:.2}s",
        100.0 * acc,
        100.0 * want
    );
    assert!((acc - want).abs() <= 0.005, "{model}: heldout accuracy {acc} vs {want} in fixtures.json");
}

#[test]
fn student_parity() {
    check_model("student");
}

#[test]
fn teacher_parity() {
    check_model("teacher");
}

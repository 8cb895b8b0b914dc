//! Quantized model files load by memory map: the int8 weights of a QDQ file stay in the mapped
//! file (QGemm/QConv weights point into the map), and the results equal a copying load.

use super::quant::{heldout, logits, models};
use alembic::ir::{Graph, Op};
use alembic::quant::{QData, QWeight};
use alembic::{Model, Precision, SessionOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-zerocopy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The int8 weight values of every QGemm/QConv (plain int8 or w8a8).
fn int8_weights(g: &Graph) -> Vec<&QWeight> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::QGemm { w, .. } | Op::QConv { w, .. } => Some(&**w),
            _ => None,
        })
        .filter(|w| matches!(w.data, QData::Int8 { .. } | QData::W8a8 { .. }))
        .collect()
}

/// Where each weight's values live: (borrowed from a shared buffer, inside `map`).
fn placement(w: &QWeight, map: &Range<*const u8>) -> (bool, bool) {
    let (QData::Int8 { q, .. } | QData::W8a8 { q, .. }) = &w.data else { unreachable!("filtered") };
    let r = q.as_ptr_range();
    (q.is_borrowed(), map.contains(&(r.start as *const u8)) && r.end as *const u8 <= map.end)
}

/// Loads `path` the way `Model::load` does, keeping the map to check addresses against.
fn load_mapped(path: &Path) -> (bytes::Bytes, Model) {
    let map = alembic::onnx::map_file(path).unwrap();
    let proto = alembic::onnx::decode_model_bytes(map.clone(), "test").unwrap();
    let graph = alembic::onnx::import_model(&proto, path.parent(), "test").unwrap();
    drop(proto); // the protobuf's slices go; the weights must keep the map alive themselves
    (map, Model::from_graph(graph).unwrap())
}

#[test]
fn qdq_int8_weights_borrow_the_mapped_file() {
    let dir = out_dir("int8");
    let x = heldout();
    for name in ["student", "teacher"] {
        let src = models().join(format!("{name}.onnx"));
        let out = dir.join(format!("{name}.int8.onnx"));
        let report = alembic::quant::export_qdq(&src, Precision::Int8, &out).unwrap();

        let (map, mapped) = load_mapped(&out);
        let map = map.as_ptr_range();
        let ws = int8_weights(mapped.graph());
        assert_eq!(ws.len(), report.weights, "{name}: every int8 weight folds");
        for w in &ws {
            assert_eq!(placement(w, &map), (true, true), "{name}: a [{}, {}] weight is not in the map", w.n, w.k);
        }
        // Model::load takes the same path: its weights borrow (the only buffer there is the map).
        let loaded = Model::load(&out).unwrap();
        assert!(int8_weights(loaded.graph()).iter().all(|w| placement(w, &map).0), "{name}: Model::load copied");
        // Loading from a byte slice copies (once, while decoding: the caller's buffer is not
        // kept); same weights, same results.
        let copied = Model::from_bytes(&std::fs::read(&out).unwrap()).unwrap();
        assert!(int8_weights(copied.graph()).iter().all(|w| !placement(w, &map).1));
        for (a, b) in ws.iter().zip(int8_weights(copied.graph())) {
            assert_eq!(**a, *b, "{name}: mapped and copied weights differ");
        }
        for p in [Precision::F32, Precision::W8a8] {
            let opts = || SessionOptions::default().precision(p);
            let (got, want) = (logits(&mapped, opts(), &x).unwrap(), logits(&copied, opts(), &x).unwrap());
            assert_eq!(got, want, "{name} at {p}: mapped and copied loads compute different logits");
            // The w8a8 session shares the mapped int8 values rather than copying them.
            let s = mapped.session(opts()).unwrap();
            assert!(int8_weights(s.graph()).iter().all(|w| placement(w, &map) == (true, true)), "{name} {p}");
        }
        println!("{name}: {} int8 QDQ weights borrowed from the mapped file, logits equal to a copying load", ws.len());
    }
}

/// Static w8a8 files fold their int8 weights into w8a8 nodes without copying them either.
#[test]
fn qdq_w8a8_weights_borrow_the_mapped_file() {
    let dir = out_dir("w8a8");
    let src = models().join("student.onnx");
    let out = dir.join("student.w8a8.onnx");
    alembic::quant::export_qdq_calibrated(&src, &models().join("data/train_x.npy"), &out).unwrap();
    let (map, model) = load_mapped(&out);
    let map = map.as_ptr_range();
    let ws = int8_weights(model.graph());
    assert!(!ws.is_empty() && ws.iter().all(|w| matches!(w.data, QData::W8a8 { act_scale: Some(_), .. })));
    assert!(ws.iter().all(|w| placement(w, &map) == (true, true)), "w8a8 weights copied on load");
}

//! Soft-label cache figures: bytes per sample (full f32 logits vs top-k f16, computed and from a
//! real 1000-class file built with a synthetic teacher), the cache machinery's cost per sample,
//! and the cost of a cache build over the teacher's bare inference on the same data.
//!
//! `cargo bench --bench cache [-- DATA.npy [TEACHER.onnx]]` (defaults: the fixture refinement
//! split and teacher). The teacher runs on Alembic's CPU engine when it supports the graph, else
//! on tract.

use alembic::cache::{build_cache, BuildOptions, CacheHeader};
use alembic::data::{sha256_file, DataOptions, DataSource};
use alembic::{Result, Tensor};
use std::path::PathBuf;
use std::time::Instant;

type Teacher = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

fn teacher(path: &std::path::Path) -> (Teacher, &'static str) {
    if let Ok(s) = alembic::Model::load(path).and_then(|m| m.session(Default::default())) {
        let f = move |x: &Tensor| -> Result<Tensor> {
            let out = s.run_refs(&[("input", x)])?;
            Ok(out.0.into_iter().next().map(|(_, t)| t).unwrap_or_else(|| Tensor::empty(alembic::DType::F32)))
        };
        return (Box::new(f), "alembic");
    }
    use tract_onnx::prelude::{
        tvec, Framework, InferenceModelExt, IntoRunnable, IntoTValue, IntoTensor, Tensor as TTensor,
    };
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .expect("tract loads the teacher");
    let f = move |x: &Tensor| -> Result<Tensor> {
        let t = TTensor::from_shape::<f32>(x.shape(), x.as_slice::<f32>().unwrap_or(&[]))
            .map_err(|e| alembic::Error::Unavailable(e.to_string()))?;
        let out = plan.run(tvec![t.into_tvalue()]).map_err(|e| alembic::Error::Unavailable(e.to_string()))?;
        let v = out[0].clone().into_tensor();
        let v = v.to_plain_array_view::<f32>().map_err(|e| alembic::Error::Unavailable(e.to_string()))?;
        Ok(Tensor::from_vec(v.shape().to_vec(), v.iter().copied().collect())
            .unwrap_or_else(|| Tensor::empty(alembic::DType::F32)))
    };
    (Box::new(f), "tract")
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let data = args.first().map(PathBuf::from).unwrap_or(root.join("models/data/refine_x.npy"));
    let model = args.get(1).map(PathBuf::from).unwrap_or(root.join("models/teacher.onnx"));

    println!("bytes per sample (record incl. label, input digest and three log-sum-exps):");
    for (c, k) in [(10u32, 10u32), (1000, 1000), (1000, 50)] {
        let h = CacheHeader {
            samples: 1,
            classes: c,
            k,
            temperature: 1.0,
            chunk_records: 256,
            teachers: vec![[0; 32]],
            output: "logits".into(),
            data_digest: [0; 32],
            labels_digest: [0; 32],
            has_labels: false,
        };
        println!(
            "  classes {c:5} k {k:5}: {:5} B vs {:5} B f32 logits ({:.1}x)",
            h.record_size(),
            4 * c,
            4.0 * c as f64 / h.record_size() as f64
        );
    }

    let src = DataSource::open(&data, &DataOptions::default())?;
    let (run, engine) = teacher(&model);
    let mut call = |x: &Tensor| run(x);
    let opts = BuildOptions {
        top_k: 5,
        temperature: 4.0,
        batch: 32,
        teacher_digests: vec![sha256_file(&model)?],
        ..Default::default()
    };
    let out = std::env::temp_dir().join(format!("alembic-bench-{}.kdc", std::process::id()));
    let (mut bare, mut build, mut inside) = (f64::MAX, f64::MAX, 0.0);
    for _ in 0..5 {
        let t0 = Instant::now();
        for b in src.batches(opts.batch) {
            call(&b?.x)?;
        }
        bare = bare.min(t0.elapsed().as_secs_f64());
        let _ = std::fs::remove_file(&out);
        let rep = build_cache(&src, &mut [&mut call], &opts, &out, &mut |_, _| {})?;
        if rep.total_secs < build {
            (build, inside) = (rep.total_secs, rep.teacher_secs);
        }
    }
    let _ = std::fs::remove_file(&out);
    synthetic_1000()?;
    println!("fixture: {} samples, teacher on {engine}: bare {bare:.4}s, cache build {build:.4}s (teacher {inside:.4}s), overhead {:.1}%", src.len(), 100.0 * (build / bare - 1.0));
    Ok(())
}

/// A 1000-class build with a synthetic linear teacher (64 -> 1000) on 2048 random samples: the
/// real file's bytes per sample at full logits and top-50, and what the cache machinery (data
/// digest, top-k selection, f16 encoding, CRCs, fsync) costs per sample beyond the teacher.
fn synthetic_1000() -> Result<()> {
    let (n, d, c) = (2048usize, 64usize, 1000usize);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
    let w: Vec<f32> = (0..d * c).map(|_| 4.0 * rnd()).collect();
    let data = std::env::temp_dir().join(format!("alembic-bench-{}-x.npy", std::process::id()));
    alembic::tensor::npy::write_npy(
        &data,
        &Tensor::from_vec(vec![n, d], x).unwrap_or_else(|| Tensor::empty(alembic::DType::F32)),
    )?;
    let src = DataSource::open(&data, &DataOptions::default())?;
    let mut linear = |x: &Tensor| -> Result<Tensor> {
        let xs = x.as_slice::<f32>().unwrap_or(&[]);
        let b = xs.len() / d;
        let mut out = vec![0f32; b * c];
        for (row, o) in xs.chunks(d).zip(out.chunks_mut(c)) {
            for (xi, wi) in row.iter().zip(w.chunks(c)) {
                o.iter_mut().zip(wi).for_each(|(o, w)| *o += xi * w);
            }
        }
        Ok(Tensor::from_vec(vec![b, c], out).unwrap_or_else(|| Tensor::empty(alembic::DType::F32)))
    };
    for k in [0usize, 50] {
        let opts = BuildOptions {
            top_k: k,
            temperature: 4.0,
            batch: 64,
            teacher_digests: vec![[1; 32]],
            ..Default::default()
        };
        let out = std::env::temp_dir().join(format!("alembic-bench-{}-1000.kdc", std::process::id()));
        let mut best: Option<alembic::cache::BuildReport> = None;
        for _ in 0..3 {
            let _ = std::fs::remove_file(&out);
            let rep = build_cache(&src, &mut [&mut linear], &opts, &out, &mut |_, _| {})?;
            if best.as_ref().is_none_or(|b| rep.total_secs - rep.teacher_secs < b.total_secs - b.teacher_secs) {
                best = Some(rep);
            }
        }
        let _ = std::fs::remove_file(&out);
        if let Some(r) = best {
            println!(
                "synthetic 1000 classes, k {:4}: {n} samples, file {:.1} B/sample vs {} B f32 logits; machinery {:.1} us/sample (build {:.3}s, teacher {:.3}s)",
                r.k,
                r.file_bytes as f64 / n as f64,
                4 * c,
                1e6 * (r.total_secs - r.teacher_secs) / n as f64,
                r.total_secs,
                r.teacher_secs
            );
        }
    }
    let _ = std::fs::remove_file(&data);
    Ok(())
}

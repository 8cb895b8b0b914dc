//! The `.kdc` soft-label cache and the streaming data sources behind it.

use alembic::cache::{
    build_cache, decode_record, encode_record, verify, BuildOptions, BuildReport, CacheHeader, CacheReader,
};
use alembic::data::{record_digest, tensor_le_bytes, DataOptions, DataSource};
use alembic::{Result, Tensor};
use ndarray::{ArrayD, IxDyn};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fresh folder under the system temp dir.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-cache-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() - 0.5) * 2.0 * scale).collect()
}

/// Writes `n` samples of shape `dims` (+ labels) as .npy files; returns (x path, y path).
fn write_data(dir: &Path, seed: u64, n: usize, dims: &[usize], classes: i64) -> (PathBuf, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut shape = vec![n];
    shape.extend_from_slice(dims);
    let len = shape.iter().product();
    let x = ArrayD::from_shape_vec(IxDyn(&shape), randn(&mut rng, len, 1.0)).unwrap();
    let y = ArrayD::from_shape_vec(IxDyn(&[n]), (0..n).map(|_| rng.random_range(0..classes)).collect()).unwrap();
    let (xp, yp) = (dir.join("x.npy"), dir.join("y.npy"));
    ndarray_npy::write_npy(&xp, &x).unwrap();
    ndarray_npy::write_npy(&yp, &y).unwrap();
    (xp, yp)
}

/// A deterministic fake teacher: logits = x . W (W fixed random), per sample, so a sample's
/// logits do not depend on its batch.
struct Linear {
    w: Vec<f32>,
    d: usize,
    c: usize,
}

impl Linear {
    fn new(seed: u64, d: usize, c: usize, scale: f32) -> Linear {
        let mut rng = StdRng::seed_from_u64(seed);
        Linear { w: randn(&mut rng, d * c, scale), d, c }
    }

    fn logits(&self, x: &[f32]) -> Vec<f32> {
        (0..self.c).map(|j| (0..self.d).map(|i| x[i] * self.w[i * self.c + j]).sum()).collect()
    }

    fn run(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.shape()[0];
        let xs = x.as_slice::<f32>().unwrap();
        let out: Vec<f32> = xs.chunks(self.d).take(b).flat_map(|s| self.logits(s)).collect();
        Ok(Tensor::from_vec(vec![b, self.c], out).unwrap())
    }
}

fn opts(k: usize, t: f32, batch: usize, chunk: u32, digests: Vec<[u8; 32]>) -> BuildOptions {
    BuildOptions {
        top_k: k,
        temperature: t,
        batch,
        output: "logits".into(),
        teacher_digests: digests,
        chunk_records: chunk,
    }
}

fn build(src: &DataSource, teacher: &Linear, o: &BuildOptions, out: &Path) -> Result<BuildReport> {
    let mut f = |x: &Tensor| teacher.run(x);
    build_cache(src, &mut [&mut f], o, out, &mut |_, _| {})
}

fn softmax(z: &[f32], t: f32) -> Vec<f64> {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = z.iter().map(|&v| ((v as f64 - m) / t as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// |p - q| within f16 precision of the stored log-probability (values are T*log p in f16).
fn close_p(p: f64, q: f64) -> bool {
    (p - q).abs() <= 2e-3 * q * (1.0 + q.ln().abs()) + 1e-6
}

/// Relative error f16 allows on probabilities at temperature `t` when the stored values
/// (logits shifted by T*lse) reach `vmax` in magnitude: each logit is off by <= vmax * 2^-11,
/// each log-probability by twice that over t.
fn f16_rel(vmax: f64, t: f32) -> f64 {
    2.0 * vmax * 2f64.powi(-11) / t as f64 + 1e-5
}

#[test]
fn round_trip() {
    let dir = tmp("roundtrip");
    let (xp, yp) = write_data(&dir, 1, 50, &[3, 4], 10);
    let src = DataSource::open(&xp, &DataOptions { labels: Some(yp.clone()), ..Default::default() }).unwrap();
    let teacher = Linear::new(7, 12, 10, 1.5);
    let o = opts(3, 2.0, 7, 8, vec![[1; 32]]);
    let out = dir.join("c.kdc");
    let rep = build(&src, &teacher, &o, &out).unwrap();
    assert_eq!((rep.samples, rep.computed, rep.resumed_from, rep.classes, rep.k), (50, 50, 0, 10, 3));
    let v = verify(&out).unwrap();
    assert_eq!(v.records, 50);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), v.file_bytes);
    let r = CacheReader::open(&out).unwrap();
    let labels: Vec<i64> = ndarray_npy::read_npy::<_, ArrayD<i64>>(&yp).unwrap().iter().copied().collect();
    let all = src.read(0, 50).unwrap();
    let mut bytes = Vec::new();
    tensor_le_bytes(&all, &mut bytes);
    for i in 0..50 {
        let rec = r.record(i).unwrap();
        let z = teacher.logits(&all.as_slice::<f32>().unwrap()[i * 12..(i + 1) * 12]);
        let mut order: Vec<u32> = (0..10).collect();
        order.sort_by(|&a, &b| z[b as usize].total_cmp(&z[a as usize]));
        assert_eq!(rec.indices, order[..3].to_vec(), "sample {i}");
        for (&j, &l) in rec.indices.iter().zip(&rec.logits) {
            assert!((l - z[j as usize]).abs() < 0.01, "logit {l} vs {}", z[j as usize]);
        }
        assert_eq!(rec.label, labels[i]);
        assert_eq!(rec.digest, record_digest(&bytes[i * 48..(i + 1) * 48]));
        assert_eq!(rec.tail_count, 7);
    }
    assert!(r.record(50).is_none());
    // A second run finds the file complete and leaves it alone.
    let before = std::fs::read(&out).unwrap();
    let again = build(&src, &teacher, &o, &out).unwrap();
    assert!(again.already_complete && again.computed == 0);
    assert_eq!(before, std::fs::read(&out).unwrap());
}

fn header(classes: u32, k: u32, t: f32) -> CacheHeader {
    CacheHeader {
        samples: 1,
        classes,
        k,
        temperature: t,
        chunk_records: 1,
        teachers: vec![[0; 32]],
        output: "y".into(),
        data_digest: [0; 32],
        labels_digest: [0; 32],
        has_labels: false,
    }
}

#[test]
fn reconstruction_matches_softmax() {
    let mut rng = StdRng::seed_from_u64(3);
    let classes = 100u32;
    for &t in &[1.0f32, 4.0] {
        for &k in &[1u32, 5, 37, 99, 100] {
            let h = header(classes, k, t);
            let (mut idx, mut rec) = (Vec::new(), vec![0u8; h.record_size()]);
            for _ in 0..20 {
                let z = randn(&mut rng, classes as usize, 8.0);
                encode_record(&h, &z, -1, [0; 8], &mut idx, &mut rec);
                let s = decode_record(&h, &rec);
                let shift = t as f64 * s.lse as f64;
                let vmax = s.logits.iter().map(|&l| (l as f64 - shift).abs()).fold(0.0, f64::max);
                // Exact temperatures: the cache's and T = 1 (both tail sums are stored).
                for &tt in &[t, 1.0] {
                    let p = softmax(&z, tt);
                    let (top, tail) = s.probs_top(tt);
                    let rel = f16_rel(vmax, tt);
                    for (&j, &q) in s.indices.iter().zip(&top) {
                        let e = p[j as usize];
                        assert!((q as f64 - e).abs() <= rel * e + 1e-6, "k {k} T {t} t {tt}: p[{j}] {q} vs {e}");
                    }
                    let true_tail: f64 = (0..classes).filter(|j| !s.indices.contains(j)).map(|j| p[j as usize]).sum();
                    assert!((tail as f64 - true_tail).abs() <= rel * true_tail + 1e-6, "tail {tail} vs {true_tail}");
                    let dense = s.probs(tt);
                    assert!((dense.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-4);
                }
                if k == classes {
                    for &tt in &[0.5f32, 2.0, 7.0] {
                        let p = softmax(&z, tt);
                        let rel = f16_rel(vmax, tt);
                        for (q, e) in s.probs(tt).iter().zip(&p) {
                            assert!((*q as f64 - e).abs() <= rel * e + 1e-6, "full k, t {tt}: {q} vs {e}");
                        }
                    }
                } else {
                    // Other temperatures: the tail is approximated, the distribution stays normalised.
                    let d = s.probs(2.5);
                    assert!((d.iter().map(|&v| v as f64).sum::<f64>() - 1.0).abs() < 1e-4);
                }
            }
        }
    }
}

#[test]
fn ensemble_averages_probabilities() {
    let dir = tmp("ensemble");
    let (xp, _) = write_data(&dir, 2, 20, &[6], 5);
    let src = DataSource::open(&xp, &DataOptions::default()).unwrap();
    let (a, b) = (Linear::new(1, 6, 5, 2.0), Linear::new(2, 6, 5, 2.0));
    let (mut fa, mut fb) = (|x: &Tensor| a.run(x), |x: &Tensor| b.run(x));
    let out = dir.join("e.kdc");
    let o = opts(0, 3.0, 8, 4, vec![[1; 32], [2; 32]]);
    build_cache(&src, &mut [&mut fa, &mut fb], &o, &out, &mut |_, _| {}).unwrap();
    let r = CacheReader::open(&out).unwrap();
    assert_eq!(r.header().teachers.len(), 2);
    let x = src.read(0, 20).unwrap();
    for i in 0..20 {
        let s = &x.as_slice::<f32>().unwrap()[i * 6..(i + 1) * 6];
        let (pa, pb) = (softmax(&a.logits(s), 3.0), softmax(&b.logits(s), 3.0));
        for (j, q) in r.probs(i, 3.0).unwrap().iter().enumerate() {
            assert!(close_p(*q as f64, (pa[j] + pb[j]) / 2.0));
        }
    }
}

/// Builds the reference cache for the resume tests: 61 samples, chunks of 4, batches of 5.
fn resume_setup(name: &str) -> (PathBuf, DataSource, Linear, BuildOptions, Vec<u8>) {
    let dir = tmp(name);
    let (xp, yp) = write_data(&dir, 5, 61, &[2, 3], 12);
    let src = DataSource::open(&xp, &DataOptions { labels: Some(yp), ..Default::default() }).unwrap();
    let teacher = Linear::new(9, 6, 12, 2.0);
    let o = opts(4, 2.0, 5, 4, vec![[7; 32]]);
    let reference = dir.join("ref.kdc");
    build(&src, &teacher, &o, &reference).unwrap();
    let bytes = std::fs::read(&reference).unwrap();
    (dir, src, teacher, o, bytes)
}

#[test]
fn resume_after_truncation_is_byte_identical() {
    let (dir, src, teacher, o, reference) = resume_setup("truncate");
    let mut rng = StdRng::seed_from_u64(11);
    let mut offsets: Vec<usize> = (0..24).map(|_| rng.random_range(0..reference.len())).collect();
    offsets.extend([0, 3, 150, reference.len() - 1, reference.len() - 24]);
    for (n, &cut) in offsets.iter().enumerate() {
        let p = dir.join(format!("t{n}.kdc"));
        let mut torn = reference[..cut].to_vec();
        // Half the time the torn tail is garbage rather than a clean prefix.
        if n % 2 == 1 && cut > 400 {
            let at = rng.random_range(cut - 100..cut);
            torn[at] ^= 0x5a;
        }
        std::fs::write(&p, &torn).unwrap();
        let rep = build(&src, &teacher, &o, &p).unwrap_or_else(|e| panic!("resume from {cut}: {e}"));
        assert!(rep.resumed_from <= 61);
        assert_eq!(std::fs::read(&p).unwrap(), reference, "resumed from a cut at byte {cut}");
    }
}

const CHILD_ENV: &str = "ALEMBIC_KDC_CHILD";

/// Entry point of the child process the SIGKILL test starts; does nothing in a normal run.
#[test]
fn sigkill_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split('|');
    let (x, y, out) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let src = DataSource::open(Path::new(x), &DataOptions { labels: Some(y.into()), ..Default::default() }).unwrap();
    let teacher = Linear::new(9, 6, 12, 2.0);
    let mut slow = |x: &Tensor| {
        std::thread::sleep(Duration::from_millis(10));
        teacher.run(x)
    };
    let o = opts(4, 2.0, 5, 4, vec![[7; 32]]);
    build_cache(&src, &mut [&mut slow], &o, Path::new(out), &mut |_, _| {}).unwrap();
}

#[test]
fn sigkill_and_resume_is_byte_identical() {
    let (dir, src, teacher, o, reference) = resume_setup("sigkill");
    let out = dir.join("killed.kdc");
    let spec = format!("{}|{}|{}", dir.join("x.npy").display(), dir.join("y.npy").display(), out.display());
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(13);
    let mut lens = Vec::new();
    for _ in 0..8 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "cache::sigkill_child", "--test-threads=1", "--nocapture"])
            .env(CHILD_ENV, &spec)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(5..45)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        lens.push(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0));
    }
    eprintln!("sigkill: file lengths after each kill {lens:?} (finished file {} bytes)", reference.len());
    build(&src, &teacher, &o, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), reference, "file lengths after each kill: {lens:?}");
}

#[test]
fn corrupt_and_truncated_files_are_rejected() {
    let (dir, src, teacher, o, reference) = resume_setup("corrupt");
    let h = CacheHeader::decode(&reference, Path::new("x")).unwrap();
    // A flipped byte inside chunk 3 of a finished file.
    let p = dir.join("bad.kdc");
    let mut bad = reference.clone();
    let at = h.chunk_offset(3) as usize + 10;
    bad[at] ^= 1;
    std::fs::write(&p, &bad).unwrap();
    let e = verify(&p).unwrap_err().to_string();
    assert!(e.contains("corrupt chunk 3") && e.contains(&format!("byte {}", h.chunk_offset(3))), "{e}");
    let e = build(&src, &teacher, &o, &p).unwrap_err().to_string();
    assert!(e.contains("corrupt chunk 3"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), bad, "a finished file is never rewritten");
    // Truncated.
    let p = dir.join("short.kdc");
    std::fs::write(&p, &reference[..reference.len() - 30]).unwrap();
    let e = CacheReader::open(&p).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");
    assert!(verify(&p).unwrap_err().to_string().contains("truncated"));
    // Bad magic and unknown version.
    let p = dir.join("magic.kdc");
    let mut m = reference.clone();
    m[0] = b'X';
    std::fs::write(&p, &m).unwrap();
    assert!(CacheReader::open(&p).err().unwrap().to_string().contains("bad magic"));
    assert!(build(&src, &teacher, &o, &p).unwrap_err().to_string().contains("bad magic"));
    let mut v = reference.clone();
    v[8] = 9;
    std::fs::write(&p, &v).unwrap();
    assert!(CacheReader::open(&p).err().unwrap().to_string().contains("version 9"));
}

#[test]
fn other_teacher_or_data_is_rejected() {
    let (dir, _src, teacher, o, reference) = resume_setup("mismatch");
    let p = dir.join("half.kdc");
    std::fs::write(&p, &reference[..reference.len() / 2]).unwrap();
    let (x2, _) = write_data(&tmp("mismatch-other"), 6, 61, &[2, 3], 12);
    let other = DataSource::open(&x2, &DataOptions::default()).unwrap();
    let e = build(&other, &teacher, &o, &p).unwrap_err().to_string();
    assert!(e.contains("another data set"), "{e}");
    let src =
        DataSource::open(&dir.join("x.npy"), &DataOptions { labels: Some(dir.join("y.npy")), ..Default::default() })
            .unwrap();
    let mut o2 = o.clone();
    o2.teacher_digests = vec![[8; 32]];
    let e = build(&src, &teacher, &o2, &p).unwrap_err().to_string();
    assert!(e.contains("another teacher"), "{e}");
    let mut o3 = o.clone();
    o3.top_k = 5;
    assert!(build(&src, &teacher, &o3, &p).unwrap_err().to_string().contains("top-k 4"));
    assert_eq!(std::fs::read(&p).unwrap(), reference[..reference.len() / 2].to_vec(), "rejected files are untouched");
    let full = dir.join("ref.kdc");
    assert!(CacheReader::open_for(&full, &[[7; 32]], &src.digest(16).unwrap()).is_ok());
    let e = CacheReader::open_for(&full, &[[7; 32]], &other.digest(16).unwrap()).err().unwrap().to_string();
    assert!(e.contains("another data set"), "{e}");
    let e = CacheReader::open_for(&full, &[[3; 32]], &src.digest(16).unwrap()).err().unwrap().to_string();
    assert!(e.contains("another teacher"), "{e}");
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/data").join(name)
}

#[test]
fn fixture_streams_in_odd_batches() {
    let whole: ArrayD<f32> = ndarray_npy::read_npy(fixture("refine_x.npy")).unwrap();
    let opts = DataOptions { labels: Some(fixture("refine_y.npy")), ..Default::default() };
    let src = DataSource::open(&fixture("refine_x.npy"), &opts).unwrap();
    assert_eq!((src.len(), src.sample_shape()), (270, &[1usize, 8, 8][..]));
    let mut got = Vec::new();
    let mut labels = Vec::new();
    for (n, b) in src.batches(7).enumerate() {
        let b = b.unwrap();
        assert_eq!(b.start, n * 7);
        assert_eq!(b.x.shape()[0], if n == 38 { 4 } else { 7 });
        got.extend_from_slice(b.x.as_slice::<f32>().unwrap());
        labels.extend(b.y.unwrap());
    }
    assert_eq!(got, whole.iter().copied().collect::<Vec<_>>());
    let y: ArrayD<i64> = ndarray_npy::read_npy(fixture("refine_y.npy")).unwrap();
    assert_eq!(labels, y.iter().copied().collect::<Vec<_>>());
    assert_eq!(src.digest(7).unwrap(), src.digest(64).unwrap(), "digest does not depend on batching");
}

#[test]
fn npz_and_folders_give_the_same_samples() {
    let dir = tmp("formats");
    let (xp, yp) = write_data(&dir, 4, 30, &[5], 3);
    let x: ArrayD<f32> = ndarray_npy::read_npy(&xp).unwrap();
    let y: ArrayD<i64> = ndarray_npy::read_npy(&yp).unwrap();
    let one = DataSource::open(&xp, &DataOptions { labels: Some(yp), ..Default::default() }).unwrap();
    let npz = dir.join("d.npz");
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(&npz).unwrap());
    w.add_array("x", &x).unwrap();
    w.add_array("y", &y).unwrap();
    w.finish().unwrap();
    let z = DataSource::open(&npz, &DataOptions::default()).unwrap();
    let parts = tmp("formats-parts");
    ndarray_npy::write_npy(parts.join("a.npy"), &x.slice(ndarray::s![..13, ..]).to_owned()).unwrap();
    ndarray_npy::write_npy(parts.join("b.npy"), &x.slice(ndarray::s![13.., ..]).to_owned()).unwrap();
    let folder = DataSource::open(&parts, &DataOptions::default()).unwrap();
    assert_eq!(folder.len(), 30);
    let d = one.digest(4).unwrap();
    assert_eq!(z.digest(3).unwrap(), d);
    assert_eq!(folder.digest(11).unwrap(), d);
    assert_eq!(z.labels(), one.labels());
    assert_eq!(folder.read(10, 20).unwrap(), one.read(10, 20).unwrap());
    // u8 data: converted to f32 by default, kept with keep_dtype.
    let u = dir.join("u8.npy");
    ndarray_npy::write_npy(&u, &ArrayD::from_shape_vec(IxDyn(&[4, 2]), vec![0u8, 1, 2, 3, 4, 5, 6, 255]).unwrap())
        .unwrap();
    let f = DataSource::open(&u, &DataOptions::default()).unwrap().read(3, 4).unwrap();
    assert_eq!(f.as_slice::<f32>().unwrap(), &[6.0, 255.0]);
    let k = DataSource::open(&u, &DataOptions { keep_dtype: true, ..Default::default() }).unwrap().read(0, 1).unwrap();
    assert_eq!(k.as_slice::<u8>().unwrap(), &[0, 1]);
}

#[test]
fn image_folders_with_class_subfolders() {
    use alembic::data::{ColorMode, ImageOptions, Layout};
    let dir = tmp("images");
    for (c, name) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..3u8 {
            let img =
                image::RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 100 * c as u8 + i]));
            img.save(dir.join(name).join(format!("{i}.png"))).unwrap();
        }
    }
    let io = ImageOptions {
        height: 2,
        width: 3,
        color: ColorMode::Rgb,
        layout: Layout::Nhwc,
        mean: vec![0.5],
        std: vec![0.25],
        ..Default::default()
    };
    let src = DataSource::open(&dir, &DataOptions { image: io, ..Default::default() }).unwrap();
    assert_eq!((src.len(), src.sample_shape()), (6, &[2usize, 3, 3][..]));
    assert_eq!(src.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!(src.classes(), &["cat".to_string(), "dog".to_string()]);
    let b = src.read(4, 5).unwrap();
    // Blue channel of dog image 1 is flat 101 before resizing.
    let blue = b.as_slice::<f32>().unwrap()[2];
    assert!((blue - (101.0 / 255.0 - 0.5) / 0.25).abs() < 1e-5, "{blue}");
    let gray = ImageOptions { color: ColorMode::Gray, ..Default::default() };
    let g = DataSource::open(&dir, &DataOptions { image: gray, ..Default::default() }).unwrap();
    assert_eq!(g.sample_shape(), &[1, 4, 6]);
    assert!(g.read(0, 6).unwrap().as_slice::<f32>().unwrap().iter().all(|v| (0.0..=1.0).contains(v)));
}

/// Prints bytes per sample and the build overhead over bare teacher calls on the fixture data:
/// `cargo test --test integration cache::figures -- --ignored --nocapture`.
#[test]
#[ignore]
#[cfg(feature = "tract")]
fn figures() {
    for (c, k) in [(10u32, 10u32), (10, 1), (1000, 1000), (1000, 50)] {
        let h = header(c, k, 1.0);
        println!(
            "classes {c:5} k {k:5}: {:5} bytes/record vs {:5} bytes of f32 logits ({:.1}x)",
            h.record_size(),
            4 * c,
            4.0 * c as f64 / h.record_size() as f64
        );
    }
    // tract runs the fixture teacher (Alembic's own engine may not cover its ops yet).
    let tpath = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/teacher.onnx");
    let plan = tract_teacher::load(&tpath);
    let mut run = |x: &Tensor| -> Result<Tensor> {
        let (shape, v) = plan(x.shape(), x.as_slice::<f32>().unwrap());
        Ok(Tensor::from_vec(shape, v).unwrap())
    };
    let src = DataSource::open(
        &fixture("refine_x.npy"),
        &DataOptions { labels: Some(fixture("refine_y.npy")), ..Default::default() },
    )
    .unwrap();
    // Best of 5 of each (the machine is shared), bare and cached alternating.
    let o = opts(5, 4.0, 32, 256, vec![alembic::data::sha256_file(&tpath).unwrap()]);
    let (mut bare, mut best) = (f64::MAX, BuildReport { total_secs: f64::MAX, ..Default::default() });
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        for b in src.batches(32) {
            run(&b.unwrap().x).unwrap();
        }
        bare = bare.min(t0.elapsed().as_secs_f64());
        let out = tmp("figures").join("refine.kdc");
        let rep = build_cache(&src, &mut [&mut run], &o, &out, &mut |_, _| {}).unwrap();
        if rep.total_secs < best.total_secs {
            best = rep;
        }
    }
    let rep = best;
    println!(
        "fixture: bare teacher {bare:.4}s, build {:.4}s (teacher {:.4}s, data digest {:.4}s): overhead {:.1}%",
        rep.total_secs,
        rep.teacher_secs,
        rep.digest_secs,
        100.0 * (rep.total_secs / bare - 1.0)
    );
    println!("file {} bytes for {} samples", rep.file_bytes, rep.samples);
    // The same build with a free teacher: what the cache machinery itself costs.
    for name in ["refine_x.npy", "train_x.npy"] {
        let src = DataSource::open(&fixture(name), &DataOptions::default()).unwrap();
        let mut free = |x: &Tensor| -> Result<Tensor> { Ok(Tensor::zeros(alembic::DType::F32, &[x.shape()[0], 10])) };
        let out = tmp("figures-free").join("free.kdc");
        let t0 = std::time::Instant::now();
        let rep = build_cache(&src, &mut [&mut free], &o, &out, &mut |_, _| {}).unwrap();
        let t = t0.elapsed().as_secs_f64();
        println!(
            "{name}: {} samples, machinery alone {t:.4}s ({:.1} us/sample)",
            rep.samples,
            1e6 * t / rep.samples as f64
        );
    }
}

#[cfg(feature = "tract")]
mod tract_teacher {
    use tract_onnx::prelude::*;

    /// The ONNX model at `path` as a function of (shape, f32 data) to (shape, f32 data).
    pub fn load(path: &std::path::Path) -> impl Fn(&[usize], &[f32]) -> (Vec<usize>, Vec<f32>) {
        let plan = tract_onnx::onnx().model_for_path(path).unwrap().into_optimized().unwrap().into_runnable().unwrap();
        move |shape, data| {
            let t = Tensor::from_shape::<f32>(shape, data).unwrap();
            let out = plan.run(tvec![t.into_tvalue()]).unwrap();
            let v = out[0].clone().into_tensor();
            let v = v.to_plain_array_view::<f32>().unwrap();
            (v.shape().to_vec(), v.iter().copied().collect())
        }
    }
}

// ---- `alembic cache` (CLI) and `build_from_files` ----

fn model(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name).display().to_string()
}

/// Runs `alembic cache ARGS`; returns (success, stdout, stderr).
fn cli(args: &[&str], without: Option<&str>) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_alembic"));
    cmd.arg("cache").args(args);
    if let Some(var) = without {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("spawn alembic");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// A failure with exactly one stderr line, "error: ...", containing every needle.
fn one_line_error(args: &[&str], without: Option<&str>, needles: &[&str]) {
    let (ok, _, err) = cli(args, without);
    assert!(!ok, "expected failure for {args:?}");
    assert_eq!(err.lines().count(), 1, "expected one stderr line: {err}");
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
}

/// `cache` arguments for teacher(s) on a data set at T = 4 in batches of 32.
fn cache_args<'a>(teachers: &[&'a str], data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a: Vec<&str> = teachers.iter().flat_map(|t| ["--teacher", *t]).collect();
    a.extend(["--data", data, "--out", out, "--temperature", "4", "--batch", "32", "--quiet"]);
    a.extend_from_slice(extra);
    a
}

#[test]
fn cli_builds_resumes_verifies_and_rejects() {
    let dir = tmp("cli");
    let (teacher, student) = (model("teacher.onnx"), model("student.onnx"));
    let (x, y) = (fixture("refine_x.npy").display().to_string(), fixture("refine_y.npy").display().to_string());
    let out = dir.join("r.kdc").display().to_string();
    let args = cache_args(&[&teacher], &x, &out, &["--labels", &y, "--top-k", "5"]);
    let (ok, so, se) = cli(&args, None);
    assert!(ok, "{se}");
    assert_eq!(so.lines().count(), 1, "{so}");
    assert!(so.contains("270 samples (resumed from 0, computed 270)") && so.contains("overhead"), "{so}");
    let full = std::fs::read(&out).unwrap();
    let v = verify(Path::new(&out)).unwrap();
    assert_eq!((v.records, v.header.classes, v.header.k, v.header.has_labels), (270, 10, 5, true));
    assert_eq!(v.header.teachers, vec![alembic::data::sha256_file(Path::new(&teacher)).unwrap()]);
    // The library entry point the CLI wraps writes the same bytes.
    let spec = alembic::cache::FileBuild {
        teachers: vec![teacher.clone().into()],
        data: x.clone().into(),
        data_options: DataOptions { labels: Some(y.clone().into()), ..Default::default() },
        top_k: 5,
        temperature: 4.0,
        batch: 32,
        ..Default::default()
    };
    let lib = dir.join("lib.kdc");
    alembic::cache::build_from_files(&spec, &lib, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read(&lib).unwrap(), full);
    // Again: complete, untouched.
    let (ok, so, _) = cli(&args, None);
    assert!(ok && so.contains("already complete"), "{so}");
    assert_eq!(std::fs::read(&out).unwrap(), full);
    // A torn file (the first chunk whole) resumes to the same bytes.
    std::fs::write(&out, &full[..full.len() - 100]).unwrap();
    let (ok, so, se) = cli(&args, None);
    assert!(ok && so.contains("resumed from 256, computed 14"), "{so}{se}");
    assert_eq!(std::fs::read(&out).unwrap(), full);
    let (ok, so, se) = cli(&["--verify", &out], None);
    assert!(ok, "{se}");
    for want in ["records      270", "classes      10", "top-5 of 10", "temperature  4", "teacher 0", "OK"] {
        assert!(so.contains(want), "'{want}' not in: {so}");
    }
    // A different teacher or data set is refused and the file left as it was.
    let half = dir.join("half.kdc").display().to_string();
    std::fs::write(&half, &full[..full.len() / 2]).unwrap();
    let heldout = fixture("heldout_x.npy").display().to_string();
    one_line_error(
        &cache_args(&[&student], &x, &half, &["--labels", &y, "--top-k", "5"]),
        None,
        &[&half, "another teacher"],
    );
    one_line_error(&cache_args(&[&teacher], &heldout, &half, &["--top-k", "5"]), None, &[&half, "another data set"]);
    assert_eq!(std::fs::read(&half).unwrap(), full[..full.len() / 2].to_vec());
    // One flipped byte inside chunk 0: --verify names the file and the chunk.
    let bad = dir.join("bad.kdc").display().to_string();
    let mut b = full.clone();
    b[v.header.header_len() + 10] ^= 0x40;
    std::fs::write(&bad, &b).unwrap();
    one_line_error(&["--verify", &bad], None, &[&bad, "corrupt chunk 0"]);
    one_line_error(&["--verify", &teacher], None, &["bad magic"]);
    // ONNX Runtime asked for but not loadable (or not built in): said so in one line.
    let o = dir.join("o.kdc").display().to_string();
    one_line_error(&cache_args(&[&teacher], &x, &o, &["--engine", "ort"]), Some("ORT_DYLIB_PATH"), &["ONNX Runtime"]);
    // An ensemble records both members' digests.
    let e = dir.join("e.kdc").display().to_string();
    let (ok, _, se) = cli(&cache_args(&[&teacher, &student], &x, &e, &[]), None);
    assert!(ok, "{se}");
    let r = CacheReader::open(Path::new(&e)).unwrap();
    assert_eq!(r.header().teachers.len(), 2);
    let s: f32 = r.probs(0, 4.0).unwrap().iter().sum();
    assert!((s - 1.0).abs() < 1e-4, "{s}");
}

#[test]
fn cli_tract_and_ort_caches_agree() {
    #[cfg(feature = "ort")]
    let missing = alembic::teacher::ort::available().err().map(|e| e.to_string());
    #[cfg(not(feature = "ort"))]
    let missing = Some("alembic built without the `ort` feature".to_string());
    if let Some(why) = missing {
        println!("skipped: {why}");
        return;
    }
    let dir = tmp("cli-ort");
    let teacher = model("teacher.onnx");
    let x = fixture("refine_x.npy").display().to_string();
    for k in ["0", "3"] {
        let mut files = Vec::new();
        for engine in ["tract", "ort"] {
            let out = dir.join(format!("{engine}-{k}.kdc")).display().to_string();
            let (ok, _, se) = cli(&cache_args(&[&teacher], &x, &out, &["--engine", engine, "--top-k", k]), None);
            assert!(ok, "{engine}: {se}");
            files.push(CacheReader::open(Path::new(&out)).unwrap());
        }
        let (a, b) = (&files[0], &files[1]);
        assert_eq!(a.header(), b.header(), "same teacher and data: same header");
        let t = a.header().temperature as f64;
        let mut worst = 0f64;
        for i in 0..a.len() {
            let (ra, rb) = (a.record(i).unwrap(), b.record(i).unwrap());
            assert_eq!((ra.indices.clone(), ra.digest), (rb.indices.clone(), rb.digest), "k {k} sample {i}");
            // Each stored value v = z - T*lse is f16 (error <= |v| 2^-11); the engines' f32
            // logits differ far less, so the recovered logits agree to two f16 roundings.
            let shift = t * ra.lse as f64;
            for (&za, &zb) in ra.logits.iter().zip(&rb.logits) {
                let v = (za as f64 - shift).abs().max((zb as f64 - shift).abs());
                let d = (za - zb).abs() as f64;
                assert!(d <= v * 2f64.powi(-10) + 1e-4, "k {k} sample {i}: {za} vs {zb}");
                worst = worst.max(d / (v * 2f64.powi(-11) + 1e-6));
            }
            assert!((ra.lse - rb.lse).abs() <= 1e-4 * ra.lse.abs().max(1.0), "lse {} vs {}", ra.lse, rb.lse);
        }
        println!("k {k}: tract vs ort, largest logit difference {worst:.2} f16 ulps of the stored value");
    }
}

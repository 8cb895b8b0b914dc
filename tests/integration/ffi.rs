//! The C ABI: tests/c/smoke.c compiled with `cc` against include/alembic.h and the `alembic-ffi`
//! cdylib (built here with a nested `cargo rustc`), compared with the Rust Session; the same
//! entry points called from Rust on one session from several threads, refinement from a
//! `.kdc` cache with a cancel flag; and the header checked against the exported functions.

use alembic::cache::{build_cache, BuildOptions};
use alembic::data::{DataOptions, DataSource};
use alembic::ffi::*;
use alembic::tensor::npy::read_npy;
use alembic::{Model, Tensor};
use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alembic-ffi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn load(name: &str) -> Tensor {
    read_npy(&root().join(format!("models/data/{name}.npy"))).unwrap()
}

fn first_rows(t: &Tensor, n: usize) -> Tensor {
    alembic::distill::trainer::gather_rows(t, &(0..n).collect::<Vec<_>>()).unwrap()
}

fn rust_logits(model: &str, x: &Tensor) -> Vec<f32> {
    let s = Model::load(root().join("models").join(model)).unwrap().session(Default::default()).unwrap();
    s.run_refs(&[("input", x)]).unwrap().0[0].1.as_slice::<f32>().unwrap().to_vec()
}

fn write_f32(path: &Path, v: &[f32]) {
    std::fs::write(path, v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(alembic_last_error()) }.to_string_lossy().into_owned()
}

/// Builds the cdylib into this test's target dir once per process and returns the directory
/// holding libalembic_ffi.so. Feature `test-unify` makes the dependency features those of this
/// `cargo test --all-features` build, so only alembic-ffi itself compiles and links; only the
/// cdylib crate type, without debug info, so no 1 GB static archive is written. Cargo releases
/// its build lock while tests run.
fn ffi_lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf(); // target/debug
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(root())
            .args([
                "rustc",
                "-p",
                "alembic-ffi",
                "--features",
                "test-unify",
                "--lib",
                "--crate-type",
                "cdylib",
                "--target-dir",
            ])
            .arg(target_dir)
            .args(["--", "-C", "strip=debuginfo"])
            .output()
            .expect("spawn cargo");
        assert!(out.status.success(), "building alembic-ffi failed:\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(profile_dir.join("libalembic_ffi.so").exists(), "no libalembic_ffi.so in {}", profile_dir.display());
        profile_dir
    })
}

/// A two-input model for the general run call: `sum = x + table[ids]` (x f32 [N, 3], ids i64
/// [N], table[r][c] = 10 r + c) and `twice = ids + ids`, written with Alembic's ONNX types.
fn write_two_input_model(path: &Path) {
    use alembic::onnx::pb::*;
    use prost::Message;
    let dim = |d: tensor_shape_proto::dimension::Value| tensor_shape_proto::Dimension {
        value: Some(d),
        ..Default::default()
    };
    let vi = |name: &str, elem_type: i32, rest: &[i64]| {
        let mut dims = vec![dim(tensor_shape_proto::dimension::Value::DimParam("N".into()))];
        dims.extend(rest.iter().map(|&n| dim(tensor_shape_proto::dimension::Value::DimValue(n))));
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: Some(TensorShapeProto { dim: dims }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let node = |op: &str, ins: &[&str], out: &str| NodeProto {
        name: out.into(),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        ..Default::default()
    };
    let table = TensorProto {
        name: "table".into(),
        dims: vec![5, 3],
        data_type: 1,
        float_data: (0..5).flat_map(|r| (0..3).map(move |c| (10 * r + c) as f32)).collect(),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            node: vec![
                node("Gather", &["table", "ids"], "emb"),
                node("Add", &["x", "emb"], "sum"),
                node("Add", &["ids", "ids"], "twice"),
            ],
            initializer: vec![table],
            input: vec![vi("x", 1, &[3]), vi("ids", 7, &[])],
            output: vec![vi("sum", 1, &[3]), vi("twice", 7, &[])],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

#[test]
fn ffi_c_smoke_matches_rust_session_refines_and_reports_misuse() {
    let dir = scratch("smoke");
    write_two_input_model(&dir.join("two_inputs.onnx"));
    let (rows, train_rows) = (8, 64);
    let x = first_rows(&load("heldout_x"), rows);
    write_f32(&dir.join("x.f32"), x.as_slice().unwrap());
    write_f32(&dir.join("expected.f32"), &rust_logits("student.onnx", &x));
    let tx = first_rows(&load("refine_x"), train_rows);
    write_f32(&dir.join("train_x.f32"), tx.as_slice().unwrap());
    write_f32(&dir.join("teacher.f32"), &rust_logits("teacher.onnx", &tx));

    let lib = ffi_lib_dir();
    let exe = dir.join("smoke");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1"])
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join("tests/c/smoke.c"))
        .arg("-L")
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lalembic_ffi", "-lm", "-o"])
        .arg(&exe)
        .output()
        .expect("spawn cc");
    assert!(out.status.success(), "cc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(&exe)
        .arg(root().join("models"))
        .arg(&dir)
        .args([rows.to_string(), train_rows.to_string()])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    println!("{stdout}");
    assert!(run.status.success() && stdout.contains("smoke: ok"), "smoke failed:\n{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The JNI layer from a host JVM: android/'s NativeLib.java plus tests/jvm/JvmSmoke.java,
/// compiled with javac. Skipped (with a note) where no JDK is installed.
#[test]
fn ffi_jvm_smoke_through_jni() {
    if Command::new("javac").arg("-version").output().is_err() {
        println!("ffi_jvm_smoke_through_jni: skipped, no javac on PATH (apt-get install default-jdk-headless)");
        return;
    }
    let dir = scratch("jvm");
    write_two_input_model(&dir.join("two_inputs.onnx"));
    let lib = ffi_lib_dir();
    let classes = dir.join("classes");
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(root().join("android/src/main/java/dev/alembic/NativeLib.java"))
        .arg(root().join("android/src/main/java/dev/alembic/ProgressListener.java"))
        .arg(root().join("tests/jvm/JvmSmoke.java"))
        .output()
        .unwrap();
    assert!(javac.status.success(), "javac failed:\n{}", String::from_utf8_lossy(&javac.stderr));
    let run = Command::new("java")
        .arg(format!("-Djava.library.path={}", lib.display()))
        .arg("-Xcheck:jni")
        .arg("-cp")
        .arg(&classes)
        .arg("JvmSmoke")
        .arg(root().join("models"))
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success() && stdout.contains("jvm: ok"), "JvmSmoke failed:\n{stdout}\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `alembic_session_new_with`: the int8 student on one thread gives the Rust session's floats
/// with the same options; an unknown precision is an invalid argument naming it.
#[test]
fn ffi_session_options_pick_precision_and_threads() {
    use alembic::quant::Precision;
    let path = CString::new(root().join("models/student.onnx").to_str().unwrap()).unwrap();
    let (int8, bad) = (CString::new("int8").unwrap(), CString::new("int7").unwrap());
    let (mut model, mut session, mut none) = (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
    unsafe {
        assert_eq!(alembic_model_load(path.as_ptr(), &mut model), 0, "{}", last_error());
        assert_eq!(
            alembic_session_new_with(model, std::ptr::null(), int8.as_ptr(), 1, &mut session),
            0,
            "{}",
            last_error()
        );
        assert_eq!(alembic_session_new_with(model, std::ptr::null(), bad.as_ptr(), 0, &mut none), 2);
        assert!(none.is_null() && last_error().contains("int7"), "{}", last_error());
        alembic_model_free(model);
    }
    let x = first_rows(&load("heldout_x"), 3);
    let options = alembic::SessionOptions::default().precision(Precision::Int8).threads(1);
    let rust = Model::load(root().join("models/student.onnx")).unwrap().session(options).unwrap();
    let expected = rust.run_refs(&[("input", &x)]).unwrap().0[0].1.as_slice::<f32>().unwrap().to_vec();
    let name = CString::new("input").unwrap();
    let (mut y, mut shape, mut len, mut rank) = (vec![0f32; 30], [0i64; 2], 0usize, 0usize);
    let rc = unsafe {
        alembic_session_run_f32(
            session,
            name.as_ptr(),
            x.as_slice::<f32>().unwrap().as_ptr(),
            3 * 64,
            [3i64, 1, 8, 8].as_ptr(),
            4,
            y.as_mut_ptr(),
            y.len(),
            &mut len,
            shape.as_mut_ptr(),
            2,
            &mut rank,
        )
    };
    assert_eq!(rc, 0, "{}", last_error());
    assert_eq!(y, expected);
    // Int8 weights, not f32's: the outputs differ from the f32 session's.
    assert_ne!(&y[..], &rust_logits("student.onnx", &x)[..]);
    unsafe { alembic_session_free(session) };
}

/// A session handle shared by threads: the C ABI promises `AlembicSession` is thread-safe.
#[derive(Clone, Copy)]
struct Shared(*const AlembicSession);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

#[test]
fn ffi_one_session_runs_from_many_threads() {
    let path = CString::new(root().join("models/student.onnx").to_str().unwrap()).unwrap();
    let (mut model, mut session) = (std::ptr::null_mut(), std::ptr::null_mut());
    unsafe {
        assert_eq!(alembic_model_load(path.as_ptr(), &mut model), 0, "{}", last_error());
        assert_eq!(alembic_session_new(model, std::ptr::null(), &mut session), 0, "{}", last_error());
        alembic_model_free(model);
    }
    let x = load("heldout_x");
    let expected = rust_logits("student.onnx", &x);
    let shared = Shared(session);
    let name = CString::new("input").unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (x, expected, name) = (&x, &expected, &name);
            s.spawn(move || {
                let shared = shared;
                let xs = x.as_slice::<f32>().unwrap();
                // Each thread runs its own rows, one at a time and in batches of 7.
                for (start, n) in (t * 40..t * 40 + 40).step_by(10).map(|i| (i, if i % 20 == 0 { 7 } else { 1 })) {
                    let (mut y, mut shape) = (vec![0f32; n * 10], [0i64; 2]);
                    let (mut len, mut rank) = (0usize, 0usize);
                    let dims = [n as i64, 1, 8, 8];
                    let rc = unsafe {
                        alembic_session_run_f32(
                            shared.0,
                            name.as_ptr(),
                            xs[start * 64..].as_ptr(),
                            n * 64,
                            dims.as_ptr(),
                            4,
                            y.as_mut_ptr(),
                            y.len(),
                            &mut len,
                            shape.as_mut_ptr(),
                            2,
                            &mut rank,
                        )
                    };
                    assert_eq!(rc, 0, "thread {t}: {}", last_error());
                    assert_eq!((len, rank, shape), (n * 10, 2, [n as i64, 10]));
                    assert_eq!(&y[..], &expected[start * 10..(start + n) * 10], "thread {t} rows {start}..");
                }
            });
        }
    });
    unsafe { alembic_session_free(session) };
}

unsafe extern "C" fn cancel_at_3(user: *mut c_void, step: u64, _steps: u64, loss: f32) -> i32 {
    assert!(loss.is_finite());
    if step == 3 {
        unsafe { &*(user as *const AtomicI32) }.store(1, Ordering::Release);
    }
    0
}

#[test]
fn ffi_distill_from_cache_and_cancel_flag() {
    let dir = scratch("cache");
    let n = 48;
    let x = first_rows(&load("refine_x"), n);
    let npy = dir.join("x.npy");
    alembic::tensor::npy::write_npy(&npy, &x).unwrap();
    let src = DataSource::open(&npy, &DataOptions::default()).unwrap();
    let teacher = Model::load(root().join("models/teacher.onnx")).unwrap().session(Default::default()).unwrap();
    let mut run = |x: &Tensor| -> alembic::Result<Tensor> { Ok(teacher.run_refs(&[("input", x)])?.0[0].1.clone()) };
    let kdc = dir.join("t.kdc");
    let digest = alembic::data::sha256_file(&root().join("models/teacher.onnx")).unwrap();
    let opts = BuildOptions { top_k: 5, temperature: 2.0, teacher_digests: vec![digest], ..Default::default() };
    build_cache(&src, &mut [&mut run], &opts, &kdc, &mut |_, _| {}).unwrap();

    let c = |p: &Path| CString::new(p.to_str().unwrap()).unwrap();
    let (student, cache, out) = (c(&root().join("models/student.onnx")), c(&kdc), c(&dir.join("refined.onnx")));
    let shape = [n as i64, 1, 8, 8];
    let xs = x.as_slice::<f32>().unwrap();
    let distill = |flag: &AtomicI32, steps: u64, done: &mut u64| unsafe {
        alembic_distill(
            student.as_ptr(),
            xs.as_ptr(),
            xs.len(),
            shape.as_ptr(),
            4,
            cache.as_ptr(),
            std::ptr::null(),
            0,
            out.as_ptr(),
            steps,
            Some(cancel_at_3),
            flag as *const AtomicI32 as *mut c_void,
            flag.as_ptr(),
            done,
        )
    };
    // The callback raises the flag after step 3; the trainer stops before step 4.
    let (flag, mut done) = (AtomicI32::new(0), 0u64);
    assert_eq!(distill(&flag, 20, &mut done), AlembicStatus::Cancelled as i32, "{}", last_error());
    assert_eq!(done, 3);
    assert!(last_error().contains("cancelled after 3 of 20"), "{}", last_error());
    assert!(!dir.join("refined.onnx").exists());
    // Without cancellation the refined model is written and loads.
    assert_eq!(distill(&flag, 2, &mut done), AlembicStatus::Cancelled as i32, "flag still set");
    flag.store(0, Ordering::Release);
    assert_eq!(distill(&flag, 3, &mut done), 0, "{}", last_error());
    assert_eq!(done, 3);
    Model::load(dir.join("refined.onnx")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every exported `alembic_*` function is declared in include/alembic.h and vice versa, and the
/// status and dtype codes agree. (A name check, not a full signature check: cbindgen would add a
/// build dependency for a header this small.)
#[test]
fn ffi_header_declares_every_exported_function() {
    let header = std::fs::read_to_string(root().join("include/alembic.h")).unwrap();
    let mut exported = Vec::new();
    for entry in std::fs::read_dir(root().join("src/ffi")).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut after_no_mangle = false;
        for line in src.lines().map(str::trim) {
            if line == "#[no_mangle]" {
                after_no_mangle = true;
            } else if after_no_mangle && line.contains("extern \"C\" fn ") {
                let name = line.split("fn ").nth(1).unwrap().split('(').next().unwrap().to_string();
                after_no_mangle = false;
                if name.starts_with("alembic_") {
                    exported.push(name);
                }
            }
        }
    }
    exported.sort();
    // Identifiers `alembic_*` directly followed by '(' are the declared functions.
    let mut declared: Vec<String> = header
        .match_indices("alembic_")
        .filter(|&(i, _)| i == 0 || !header.as_bytes()[i - 1].is_ascii_alphanumeric())
        .filter_map(|(i, _)| {
            let name: String = header[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            header[i + name.len()..].starts_with('(').then_some(name)
        })
        .collect();
    declared.sort();
    declared.dedup();
    assert_eq!(exported, declared, "exported (left) vs declared in include/alembic.h (right)");
    for (status, name) in AlembicStatus::ALL {
        assert!(header.contains(&format!("{name} = {}", status as i32)), "header lacks {name} = {}", status as i32);
    }
    // AlembicDType: every element type Alembic knows, by its ONNX code.
    for code in 0..32 {
        if let Some(d) = alembic::DType::from_onnx(code) {
            let line = format!("ALEMBIC_DTYPE_{} = {code}", d.to_string().to_uppercase());
            assert!(header.contains(&line), "header lacks {line}");
        }
    }
}

//! "No allocation per run after the first": `Session::run_into` on the CPU engine, counted by
//! a global allocator wrapper. Counting is per thread (the test harness runs other tests in
//! parallel), so the sessions run on one thread: every kernel runs on the counting thread.

use alembic::{Model, Outputs, Precision, SessionOptions, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

struct Counting;

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread so far.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down has no counter, and the allocator must not panic.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; counting has no side effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(Cell::get)
}

fn input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    Tensor::from_vec(shape.to_vec(), v).expect("shape matches")
}

fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn cpu_run_into_allocates_nothing_after_the_first_run() {
    let cases = [
        ("models/teacher.onnx", vec![1, 1, 8, 8]),
        ("models/student.onnx", vec![1, 1, 8, 8]),
        ("tests/data/mobilenetv3_tiny.onnx", vec![1, 3, 32, 64]),
    ];
    let precisions = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8];
    for (rel, shape) in &cases {
        let model = Model::load(path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let name = model.inputs()[0].name.clone();
        for &p in &precisions {
            let session = model.session(SessionOptions::default().precision(p).threads(1)).expect("session");
            for batch in [1, 3] {
                let mut s = shape.clone();
                s[0] = batch;
                let x = input(&s);
                let mut outputs = Outputs::default();
                // The first run sizes the arena, scratch and output buffers.
                session.run_into(&[(&name, &x)], &mut outputs).expect("first run");
                let expected = session.run_refs(&[(&name, &x)]).expect("run_refs");
                let before = allocations();
                for _ in 0..3 {
                    session.run_into(&[(&name, &x)], &mut outputs).expect("run");
                }
                let made = allocations() - before;
                assert_eq!(made, 0, "{rel} {p:?} batch {batch}: {made} allocation(s) in 3 steady-state runs");
                // The reused buffers hold this run's values, the same as a fresh run's.
                assert_eq!(outputs.0.len(), expected.0.len());
                for ((n, a), (m, b)) in outputs.0.iter().zip(&expected.0) {
                    assert_eq!(n, m);
                    assert_eq!(a.shape(), b.shape(), "{rel} {p:?}: output {n} shape");
                    assert_eq!(a.as_slice::<f32>(), b.as_slice::<f32>(), "{rel} {p:?}: output {n} values");
                }
            }
        }
    }
}

#[test]
fn run_into_counts_a_fresh_run() {
    // The counter sees allocations at all: the first run of a new session allocates.
    let model = Model::load(path("models/student.onnx")).expect("student");
    let session = model.session(SessionOptions::default().threads(1)).expect("session");
    let x = input(&[2, 1, 8, 8]);
    let before = allocations();
    let mut outputs = Outputs::default();
    session.run_into(&[("input", &x)], &mut outputs).expect("run");
    assert!(allocations() > before, "the first run allocates its arena and outputs");
}

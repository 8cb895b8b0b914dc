//! On-device refinement over the C ABI: a student, inputs from memory, the teacher's soft labels
//! from a `.kdc` cache or as raw logits, a progress callback and two ways to cancel.

use super::{c_str, guard, opt_c_str, shape_for, slice, AlembicStatus, FfiError, FfiResult};
use crate::cache::CacheReader;
use crate::distill::{export_onnx, train, SoftTarget, Student, TrainConfig, TrainData, Trainable};
use crate::Tensor;
use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

/// Called after every step with (user_data, step, steps, loss); a non-zero return cancels.
pub type AlembicProgressFn = Option<unsafe extern "C" fn(*mut c_void, u64, u64, f32) -> i32>;

/// Temperature for soft targets made from raw teacher logits (a cache brings its own).
const LOGITS_TEMPERATURE: f32 = 4.0;

fn invalid(m: String) -> FfiError {
    FfiError::new(AlembicStatus::InvalidArgument, m)
}

/// Soft targets per sample and the temperature to train at.
fn targets(cache: Option<&str>, logits: &[f32], n: usize) -> FfiResult<(Vec<Option<SoftTarget>>, f32)> {
    match (cache, logits.is_empty()) {
        (Some(path), true) => {
            let r = CacheReader::open(Path::new(path))?;
            if r.len() != n {
                return Err(invalid(format!("cache {path} holds {} samples, the inputs {n}", r.len())));
            }
            let t = r.header().temperature;
            let tg = (0..n)
                .map(|i| {
                    let rec = r.record(i).ok_or_else(|| invalid(format!("cache {path}: record {i} unreadable")))?;
                    let (probs, tail) = rec.probs_top(t);
                    Ok(Some(SoftTarget { indices: rec.indices, probs, tail }))
                })
                .collect::<FfiResult<_>>()?;
            Ok((tg, t))
        }
        (None, false) => {
            if !logits.len().is_multiple_of(n) {
                return Err(invalid(format!("{} teacher logits do not split into {n} samples", logits.len())));
            }
            let classes = logits.len() / n;
            let t = LOGITS_TEMPERATURE;
            Ok((logits.chunks(classes).map(|r| Some(SoftTarget::from_logits(r, t))).collect(), t))
        }
        _ => Err(invalid("give exactly one of cache_path and teacher_logits".into())),
    }
}

/// Refines the student at `student_path` on `inputs` (shape `input_shape[0..input_rank]`, the
/// first dimension counting samples) against the teacher's soft labels, either a `.kdc` cache
/// at `cache_path` (one record per sample) or `teacher_logits` (`[samples, classes]`
/// row-major; the other must be null / 0), for `steps` steps, then writes the refined model as
/// ONNX to `out_path`.
///
/// `progress` (may be null) is called on this thread after every step with `user_data`; a
/// non-zero return cancels. `cancel_flag` (may be null) is read with an atomic load before
/// every step; store non-zero from any thread to cancel. A cancelled run returns
/// `ALEMBIC_ERR_CANCELLED` and writes nothing. `*out_steps_done` (may be null) gets the steps
/// completed.
///
/// # Safety
/// Strings are NUL-terminated; buffers are valid for their lengths; `cancel_flag` is null or a
/// 4-byte aligned int that other threads write only atomically.
#[no_mangle]
pub unsafe extern "C" fn alembic_distill(
    student_path: *const c_char,
    inputs: *const f32,
    inputs_len: usize,
    input_shape: *const i64,
    input_rank: usize,
    cache_path: *const c_char,
    teacher_logits: *const f32,
    teacher_logits_len: usize,
    out_path: *const c_char,
    steps: u64,
    progress: AlembicProgressFn,
    user_data: *mut c_void,
    cancel_flag: *const i32,
    out_steps_done: *mut u64,
) -> i32 {
    guard(|| unsafe {
        if !out_steps_done.is_null() {
            *out_steps_done = 0;
        }
        let student_path = c_str(student_path, "student_path")?;
        let out_path = c_str(out_path, "out_path")?;
        let x = slice(inputs, inputs_len, "inputs")?;
        let dims = shape_for(slice(input_shape, input_rank, "input_shape")?, inputs_len, "input shape")?;
        let n = dims.first().copied().unwrap_or(0);
        if n == 0 {
            return Err(invalid(format!("inputs of shape {dims:?} hold no samples")));
        }
        if steps == 0 {
            return Err(invalid("steps must be at least 1".into()));
        }
        let cache = opt_c_str(cache_path, "cache_path")?;
        let logits = slice(teacher_logits, teacher_logits_len, "teacher_logits")?;
        if !cancel_flag.is_null() && !cancel_flag.cast::<AtomicI32>().is_aligned() {
            return Err(invalid("cancel_flag is not 4-byte aligned".into()));
        }
        // SAFETY: non-null, aligned, and only written atomically by the caller's contract.
        let flag = (!cancel_flag.is_null()).then(|| AtomicI32::from_ptr(cancel_flag.cast_mut()));
        let flagged = || flag.is_some_and(|f| f.load(Ordering::Acquire) != 0);

        let (tg, temperature) = targets(cache, logits, n)?;
        let labels = vec![None; n];
        let x = Tensor::from_vec(dims.to_vec(), x.to_vec()).expect("shape checked against len");
        let mut student = Student::load(Path::new(student_path), &Trainable::All)?;
        let cancel = Arc::new(AtomicBool::new(flagged()));
        let mut cfg = TrainConfig { steps, cancel: Some(cancel.clone()), ..Default::default() };
        cfg.kd.temperature = temperature;
        cfg.warmup_steps = cfg.warmup_steps.min(steps / 10);
        let data = TrainData { x: &x, targets: &tg, labels: &labels };
        // The trainer checks `cancel` before each step; the callback and the C flag feed it.
        let report = train(&mut student, &data, &cfg, |s| {
            let stop = progress.is_some_and(|f| f(user_data, s.step, s.steps, s.loss) != 0);
            if stop || flagged() {
                cancel.store(true, Ordering::Release);
            }
        })?;
        if !out_steps_done.is_null() {
            *out_steps_done = report.steps_done;
        }
        if report.cancelled {
            return Err(FfiError::new(
                AlembicStatus::Cancelled,
                format!("refinement cancelled after {} of {steps} steps; nothing written", report.steps_done),
            ));
        }
        export_onnx(&student, Path::new(out_path))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_exactly_one_teacher_source() {
        assert!(targets(None, &[], 2).is_err());
        assert!(targets(Some("x.kdc"), &[1.0, 2.0], 1).is_err());
        assert!(targets(None, &[1.0, 2.0, 3.0], 2).is_err());
        let (tg, t) = targets(None, &[1.0, 2.0, 3.0, 4.0], 2).unwrap();
        assert_eq!((tg.len(), t), (2, LOGITS_TEMPERATURE));
    }
}

//! The refinement loop: batches in a seeded order, Hinton loss against the teacher's soft
//! targets, optimizer + schedule + clipping, budgets (steps, time, memory), atomic checkpoints
//! and exact resumption.

use super::checkpoint::Checkpoint;
use super::loss::{kd_loss, KdConfig, SoftTarget};
use super::optim::{clip_global_norm, Optimizer, OptimizerKind, Schedule};
use super::student::Student;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub kd: KdConfig,
    pub optimizer: OptimizerKind,
    pub lr: f32,
    pub min_lr: f32,
    pub weight_decay: f32,
    pub warmup_steps: u64,
    pub steps: u64,
    pub batch: usize,
    pub clip_norm: f32,
    pub seed: u64,
    pub max_time: Option<Duration>,
    /// Bytes the training state may take (parameters, gradients, optimizer, activations).
    pub max_memory: Option<usize>,
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_every: u64,
    /// Checked before every step: once set, training stops (checkpointing like a time limit)
    /// and the report says `cancelled`. Embedders set it from a progress callback or a UI thread.
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            kd: KdConfig { temperature: 4.0, alpha: 1.0 },
            optimizer: OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            lr: 3e-3,
            min_lr: 3e-5,
            weight_decay: 0.0,
            warmup_steps: 20,
            steps: 300,
            batch: 32,
            clip_norm: 5.0,
            seed: 0,
            max_time: None,
            max_memory: None,
            checkpoint: None,
            checkpoint_every: 50,
            cancel: None,
        }
    }
}

/// What one step reports to a progress callback.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    pub step: u64,
    pub steps: u64,
    pub loss: f32,
    pub kd: f32,
    pub ce: f32,
    pub lr: f32,
    pub grad_norm: f32,
}

#[derive(Clone, Debug)]
pub struct TrainReport {
    pub steps_done: u64,
    pub resumed_from: Option<u64>,
    pub micro_batch: usize,
    pub accumulation: usize,
    pub final_loss: f32,
    pub elapsed: Duration,
    /// Estimated bytes of training state (params, grads, optimizer, activations of a micro-batch).
    pub state_bytes: usize,
    /// Measured peak of the same: parameters, gradients and optimizer state plus the largest
    /// tape (activations kept for backward) any micro-batch of this run actually held.
    pub peak_bytes: usize,
    pub stopped_by_time: bool,
    /// Stopped early because `TrainConfig::cancel` was set.
    pub cancelled: bool,
}

/// The training data: inputs `[N, ...]`, per-sample soft targets and optional hard labels.
pub struct TrainData<'a> {
    pub x: &'a Tensor,
    pub targets: &'a [Option<SoftTarget>],
    pub labels: &'a [Option<i64>],
}

/// splitmix64: a tiny, version-stable generator so a seed means the same order forever.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sample order of an epoch: a Fisher-Yates shuffle seeded by (seed, epoch), so batches are
/// a pure function of the step number and resumption needs no generator state.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut s = seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (splitmix(&mut s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

/// Rows `idx` of `x` (first axis) as a new tensor.
pub fn gather_rows(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let xs =
        x.as_slice::<f32>().ok_or_else(|| Error::input("data", format!("inputs must be f32, are {}", x.dtype())))?;
    let row = x.len() / x.shape()[0].max(1);
    let mut v = Vec::with_capacity(idx.len() * row);
    for &i in idx {
        v.extend_from_slice(&xs[i * row..(i + 1) * row]);
    }
    let mut shape = x.shape().to_vec();
    shape[0] = idx.len();
    Ok(Tensor::from_vec(shape, v).expect("row count"))
}

pub fn train(
    student: &mut Student,
    data: &TrainData,
    cfg: &TrainConfig,
    mut progress: impl FnMut(&StepInfo),
) -> Result<TrainReport> {
    let n = data.x.shape().first().copied().unwrap_or(0);
    if n == 0 || data.targets.len() != n || data.labels.len() != n {
        return Err(Error::input(
            "data",
            format!("{n} samples, {} soft targets, {} labels", data.targets.len(), data.labels.len()),
        ));
    }
    let batch = cfg.batch.clamp(1, n);
    let (micro, accumulation, state_bytes, fixed_bytes) = plan_memory(student, data.x, batch, cfg)?;
    let mut peak_tape = 0usize;
    let sizes: Vec<usize> = student.params.iter().map(|p| p.tensor.len()).collect();
    let mut opt = Optimizer::new(cfg.optimizer, cfg.weight_decay, &sizes);
    let mut step = 0u64;
    let mut resumed_from = None;
    if let Some(path) = cfg.checkpoint.as_ref().filter(|p| p.exists()) {
        let ck = Checkpoint::read(path)?;
        ck.restore(student, &mut opt)?;
        step = ck.step;
        resumed_from = Some(step);
    }
    let sched = Schedule { base: cfg.lr, min: cfg.min_lr, warmup: cfg.warmup_steps, total: cfg.steps };
    let classes = student.graph.values[student.graph.outputs[0]]
        .shape
        .as_ref()
        .and_then(|s| s.0.last().and_then(|d| d.known()))
        .unwrap_or(0);
    let steps_per_epoch = n.div_ceil(batch) as u64;
    let t0 = Instant::now();
    let mut last_loss = f32::NAN;
    let mut stopped_by_time = false;
    let mut cancelled = false;
    let mut order_cache: Option<(u64, Vec<usize>)> = None;
    while step < cfg.steps {
        if cfg.max_time.is_some_and(|m| t0.elapsed() >= m) {
            stopped_by_time = true;
            break;
        }
        if cfg.cancel.as_ref().is_some_and(|c| c.load(Ordering::Acquire)) {
            cancelled = true;
            break;
        }
        let epoch = step / steps_per_epoch;
        if order_cache.as_ref().map(|c| c.0) != Some(epoch) {
            order_cache = Some((epoch, epoch_order(n, cfg.seed, epoch)));
        }
        let order = &order_cache.as_ref().expect("set").1;
        let pos = ((step % steps_per_epoch) as usize) * batch;
        let idx = &order[pos..(pos + batch).min(n)];
        let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![0.0; s]).collect();
        let (mut loss, mut kd, mut ce) = (0.0, 0.0, 0.0);
        for chunk in idx.chunks(micro) {
            let x = gather_rows(data.x, chunk)?;
            let tape = student.forward(&x)?;
            peak_tape = peak_tape.max(Student::tape_bytes(&tape));
            let z = student.logits(&tape)?;
            let zs = z.as_slice::<f32>().ok_or_else(|| Error::input("student", "output must be f32"))?;
            let c = if classes > 0 { classes } else { z.shape().last().copied().unwrap_or(1) };
            let tg: Vec<Option<&SoftTarget>> = chunk.iter().map(|&i| data.targets[i].as_ref()).collect();
            let lb: Vec<Option<i64>> = chunk.iter().map(|&i| data.labels[i]).collect();
            let out = kd_loss(zs, c, &tg, &lb, cfg.kd).map_err(|m| Error::input("loss", m))?;
            // micro-batch means weighted back to the whole batch mean
            let w = chunk.len() as f32 / idx.len() as f32;
            loss += out.loss * w;
            kd += out.kd * w;
            ce += out.ce * w;
            let d = Tensor::from_vec(z.shape().to_vec(), out.grad.iter().map(|g| g * w).collect()).expect("same shape");
            for (acc, g) in grads.iter_mut().zip(student.backward(&tape, d)?) {
                acc.iter_mut().zip(g).for_each(|(a, b)| *a += b);
            }
        }
        let grad_norm = clip_global_norm(&mut grads, cfg.clip_norm);
        let lr = sched.lr(step);
        let mut ps: Vec<&mut [f32]> =
            student.params.iter_mut().map(|p| p.tensor.as_mut_slice::<f32>().expect("f32 params")).collect();
        opt.step(&mut ps, &grads, lr);
        step += 1;
        last_loss = loss;
        progress(&StepInfo { step, steps: cfg.steps, loss, kd, ce, lr, grad_norm });
        if let Some(path) = &cfg.checkpoint {
            if step.is_multiple_of(cfg.checkpoint_every.max(1)) || step == cfg.steps {
                Checkpoint::capture(student, &opt, step).write(path)?;
            }
        }
    }
    if let (Some(path), true) = (&cfg.checkpoint, stopped_by_time || cancelled) {
        Checkpoint::capture(student, &opt, step).write(path)?;
    }
    Ok(TrainReport {
        steps_done: step,
        resumed_from,
        micro_batch: micro,
        accumulation,
        final_loss: last_loss,
        elapsed: t0.elapsed(),
        state_bytes,
        peak_bytes: fixed_bytes + peak_tape,
        stopped_by_time,
        cancelled,
    })
}

/// Chooses the micro-batch (and gradient accumulation) that keeps the training state under
/// `max_memory`: params + grads + optimizer state + the tape of one micro-batch, measured by
/// running one sample forward.
fn plan_memory(student: &Student, x: &Tensor, batch: usize, cfg: &TrainConfig) -> Result<(usize, usize, usize, usize)> {
    let one = gather_rows(x, &[0])?;
    let per_sample = Student::tape_bytes(&student.forward(&one)?);
    let params = 4 * student.param_count();
    let optimizer = match cfg.optimizer {
        OptimizerKind::Sgd { .. } => params,
        OptimizerKind::AdamW { .. } => 2 * params,
    };
    // weights + gradients + optimizer moments (+ LoRA's frozen base weights and their dW buffers)
    let fixed = params * 2 + optimizer + student.frozen_bytes();
    let micro = match cfg.max_memory {
        None => batch,
        Some(budget) => {
            let room = budget.checked_sub(fixed).ok_or_else(|| {
                Error::input(
                    "--max-memory",
                    format!(
                        "{budget} bytes cannot hold the {fixed} bytes of parameters, gradients and optimizer state"
                    ),
                )
            })?;
            let m = (room / per_sample.max(1)).min(batch);
            if m == 0 {
                return Err(Error::input(
                    "--max-memory",
                    format!("{budget} bytes leave no room for one sample's activations ({per_sample} bytes)"),
                ));
            }
            m
        }
    };
    Ok((micro, batch.div_ceil(micro), fixed + micro * per_sample, fixed))
}

//! The bench procedure: prepare each combination in turn, then interleave the measured runs.

use super::inputs::{make_inputs, model_inputs};
use super::system::{reset_peak_rss, rss, DeviceInfo};
use super::targets::{open, Opened, Target};
use super::*;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// Measured runs per combination when neither `runs` nor `max_secs` is given.
pub const DEFAULT_RUNS: usize = 100;
/// Profiled runs per combination (`--profile`), at most.
const PROFILE_RUNS: usize = 20;

struct Live {
    idx: usize,
    target: Box<dyn Target>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the bench. `progress` is called as work advances (fraction 0..=1).
pub fn run(cfg: &Config, progress: &mut dyn FnMut(Progress)) -> Result<Report> {
    let started_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if cfg.backends.is_empty() || cfg.precisions.is_empty() {
        return Err(Error::Unavailable("no backend or precision to bench".into()));
    }
    if cfg.batches.as_ref().is_some_and(|b| b.is_empty() || b.contains(&0)) {
        return Err(Error::Unavailable("batch sizes must be at least 1".into()));
    }
    let decls = model_inputs(&cfg.model)?;
    let file_bytes = std::fs::metadata(&cfg.model).map_err(|e| Error::io(&cfg.model, e))?.len();
    let baseline = cfg.baseline.clone().unwrap_or_else(|| format!("{}:{}", cfg.backends[0], cfg.precisions[0]));
    if !cfg.backends.iter().any(|b| cfg.precisions.iter().any(|p| format!("{b}:{p}") == baseline)) {
        return Err(Error::Unavailable(format!(
            "baseline '{baseline}' is not among the benched backend:precision pairs"
        )));
    }

    // Combinations, batch-major, each with its inputs (shared by the backends at that batch).
    let batch_list: Vec<Option<usize>> = match &cfg.batches {
        Some(b) => b.iter().map(|&b| Some(b)).collect(),
        None => vec![None],
    };
    if cfg.threads.contains(&0) {
        return Err(Error::Unavailable("thread counts must be at least 1".into()));
    }
    let thread_list: Vec<Option<usize>> =
        if cfg.threads.is_empty() { vec![None] } else { cfg.threads.iter().map(|&t| Some(t)).collect() };
    let mut results = Vec::new();
    let mut pending: Vec<(usize, Vec<(String, crate::Tensor)>)> = Vec::new();
    for &b in &batch_list {
        let made = make_inputs(&decls, &cfg.inputs, b)?;
        for &threads in &thread_list {
            for backend in &cfg.backends {
                for p in &cfg.precisions {
                    let (batch, shapes, message) = match &made {
                        Ok((ins, batch)) => (*batch, shapes_of(ins), None),
                        Err(why) => (b.unwrap_or(1), Vec::new(), Some(why.clone())),
                    };
                    let mut r = empty_result(backend, &p.to_string(), batch, shapes);
                    r.threads = threads;
                    if thread_list.len() > 1 {
                        r.id = format!("{}:t{}", r.id, threads.unwrap_or(0));
                    }
                    if let Some(m) = message {
                        r.status = Status::Unsupported;
                        r.message = Some(m);
                    } else if let Ok((ins, _)) = &made {
                        pending.push((results.len(), ins.clone()));
                    }
                    results.push(r);
                }
            }
        }
    }

    // Phase 1, one combination at a time: init, first inference, warm-up, memory.
    let total_steps = (pending.len() * (cfg.warmup + 2)).max(1) as f64;
    let mut step = 0usize;
    let mut peak_reset_ok = true;
    let mut live: Vec<Live> = Vec::new();
    for (idx, ins) in pending {
        let r = &mut results[idx];
        progress(Progress { fraction: 0.5 * step as f64 / total_steps, message: format!("{}: init", r.id) });
        let reset = reset_peak_rss();
        peak_reset_ok &= reset;
        let before = rss();
        let t0 = Instant::now();
        let target = match open(&r.backend, r.precision.parse().expect("our own name"), &cfg.model, ins, r.threads) {
            Ok(Opened::Ready(t, phases)) => {
                r.init_phases = Some(phases);
                t
            }
            Ok(Opened::Unsupported(why)) => {
                r.status = Status::Unsupported;
                r.message = Some(why);
                step += cfg.warmup + 2;
                continue;
            }
            Err(e) => {
                fail(r, &e);
                step += cfg.warmup + 2;
                continue;
            }
        };
        r.init_ms = Some(ms(t0.elapsed()));
        r.engine_detail = target.detail();
        let mut target = target;
        step += 1;
        let mut times = Vec::with_capacity(cfg.warmup + 1);
        let mut failed = None;
        for i in 0..=cfg.warmup {
            if i % 4 == 0 {
                let what = if i == 0 { "first inference".to_string() } else { format!("warm-up {i}/{}", cfg.warmup) };
                progress(Progress { fraction: 0.5 * step as f64 / total_steps, message: format!("{}: {what}", r.id) });
            }
            let t = Instant::now();
            if let Err(e) = target.run() {
                failed = Some(e);
                break;
            }
            times.push(ms(t.elapsed()));
            step += 1;
        }
        if let Some(e) = failed {
            fail(r, &e);
            continue;
        }
        r.first_inference_ms = times.first().copied();
        let w = &times[1..];
        r.warmup =
            Some(Warmup { runs: w.len(), mean_ms: (!w.is_empty()).then(|| w.iter().sum::<f64>() / w.len() as f64) });
        if let (Some(b), Some(a)) = (before, rss()) {
            let peak = a.peak.max(b.current);
            r.memory =
                Some(Memory { rss_before_bytes: b.current, peak_rss_bytes: peak, peak_delta_bytes: peak - b.current });
        }
        r.gpu_buffer_bytes = target.gpu_bytes();
        live.push(Live { idx, target });
    }

    // Phase 2: measured runs, round-robin over the live combinations, rotating the start so
    // no combination always follows the same neighbour.
    let runs = cfg.runs.or(if cfg.max_secs.is_some() { None } else { Some(DEFAULT_RUNS) });
    let budget = cfg.max_secs.map(Duration::from_secs_f64);
    let t_phase = Instant::now();
    let mut round = 0usize;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); results.len()];
    while !live.is_empty() && runs.is_none_or(|n| round < n) {
        if let Some(b) = budget {
            if round > 0 && t_phase.elapsed() >= b {
                break;
            }
        }
        let k = live.len();
        let mut dead = Vec::new();
        for j in 0..k {
            let l = &mut live[(round + j) % k];
            let t = Instant::now();
            match l.target.run() {
                Ok(()) => samples[l.idx].push(ms(t.elapsed())),
                Err(e) => {
                    fail(&mut results[l.idx], &e);
                    dead.push(l.idx);
                }
            }
        }
        live.retain(|l| !dead.contains(&l.idx));
        round += 1;
        let frac = match (runs, budget) {
            (Some(n), Some(b)) => (round as f64 / n as f64).max(t_phase.elapsed().as_secs_f64() / b.as_secs_f64()),
            (Some(n), None) => round as f64 / n as f64,
            (None, Some(b)) => t_phase.elapsed().as_secs_f64() / b.as_secs_f64(),
            (None, None) => 1.0,
        };
        if round.is_multiple_of(5) || frac >= 1.0 {
            progress(Progress { fraction: 0.5 + 0.45 * frac.min(1.0), message: format!("measured round {round}") });
        }
    }

    // Phase 3: per-node profiles.
    if cfg.profile {
        for l in &mut live {
            progress(Progress { fraction: 0.95, message: format!("{}: profile", results[l.idx].id) });
            let r = &mut results[l.idx];
            r.profile = profile(l.target.as_mut(), runs.unwrap_or(PROFILE_RUNS).clamp(1, PROFILE_RUNS));
            r.profile_by_op = r.profile.as_deref().map(by_op);
            r.profile_clock = r.profile.as_ref().and(l.target.profile_clock()).map(String::from);
        }
    }
    drop(live);

    for (r, s) in results.iter_mut().zip(samples) {
        if r.status == Status::Ok {
            r.latency_ms = Summary::of(&s);
            r.throughput_per_s = r.latency_ms.as_ref().map(|l| r.batch as f64 / (l.mean / 1e3));
        }
        r.samples_ms = s;
    }
    set_ratios(&mut results, &baseline);
    progress(Progress { fraction: 1.0, message: "done".into() });

    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: Tool { name: "alembic".into(), version: env!("CARGO_PKG_VERSION").into() },
        started_unix_s,
        model: ModelInfo {
            path: cfg.model.display().to_string(),
            file_bytes,
            inputs: decls
                .iter()
                .map(|d| InputInfo {
                    name: d.name.clone(),
                    dtype: d.dtype.to_string(),
                    shape: d.shape.as_ref().map(|s| s.0.iter().map(|d| d.to_string()).collect()),
                })
                .collect(),
        },
        settings: Settings {
            backends: cfg.backends.clone(),
            precisions: cfg.precisions.iter().map(|p| p.to_string()).collect(),
            batches: {
                let mut b: Vec<usize> = results.iter().map(|r| r.batch).collect();
                b.dedup();
                b
            },
            warmup: cfg.warmup,
            runs,
            max_secs: cfg.max_secs,
            threads: cfg.threads.iter().copied().max(),
            thread_counts: cfg.threads.clone(),
            seed: cfg.inputs.seed,
            baseline,
            input_source: if cfg.inputs.files.is_empty() { "random" } else { "files" }.into(),
            interleaved: true,
        },
        device: DeviceInfo::detect(cfg.probe_gpu || cfg.backends.iter().any(|b| b == "wgpu")),
        peak_rss_reset: peak_reset_ok,
        results,
    })
}

fn shapes_of(ins: &[(String, crate::Tensor)]) -> Vec<NamedShape> {
    ins.iter().map(|(n, t)| NamedShape { name: n.clone(), shape: t.shape().to_vec() }).collect()
}

fn empty_result(backend: &str, precision: &str, batch: usize, input_shapes: Vec<NamedShape>) -> ComboResult {
    ComboResult {
        id: format!("{backend}:{precision}:b{batch}"),
        backend: backend.into(),
        precision: precision.into(),
        batch,
        threads: None,
        status: Status::Ok,
        message: None,
        input_shapes,
        init_ms: None,
        init_phases: None,
        first_inference_ms: None,
        warmup: None,
        latency_ms: None,
        throughput_per_s: None,
        memory: None,
        gpu_buffer_bytes: None,
        engine_detail: None,
        ratio_to_baseline: None,
        samples_ms: Vec::new(),
        profile: None,
        profile_by_op: None,
        profile_clock: None,
    }
}

fn fail(r: &mut ComboResult, e: &Error) {
    r.status = Status::Error;
    r.message = Some(e.to_string().replace('\n', " "));
}

/// Sums per-node times over `n` profiled runs; `None` when the target has no profiling.
fn profile(t: &mut dyn Target, n: usize) -> Option<Vec<NodeProfile>> {
    let mut acc: Vec<(String, &'static str, Duration)> = Vec::new();
    for _ in 0..n {
        let times = t.profile()?.ok()?;
        if acc.is_empty() {
            acc = times;
        } else {
            for (a, t) in acc.iter_mut().zip(times) {
                a.2 += t.2;
            }
        }
    }
    let total: f64 = acc.iter().map(|a| a.2.as_secs_f64()).sum();
    let mut out: Vec<NodeProfile> = acc
        .into_iter()
        .map(|(node, op, d)| NodeProfile {
            node,
            op: op.into(),
            runs: n,
            total_ms: ms(d),
            mean_ms: ms(d) / n as f64,
            share: if total > 0.0 { d.as_secs_f64() / total } else { 0.0 },
        })
        .collect();
    out.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    Some(out)
}

/// Sums a per-node profile per op type, largest total first.
pub fn by_op(nodes: &[NodeProfile]) -> Vec<OpProfile> {
    let mut ops: Vec<OpProfile> = Vec::new();
    for n in nodes {
        match ops.iter_mut().find(|o| o.op == n.op) {
            Some(o) => {
                o.nodes += 1;
                o.total_ms += n.total_ms;
                o.mean_ms += n.mean_ms;
                o.share = (o.share + n.share).min(1.0);
            }
            None => ops.push(OpProfile {
                op: n.op.clone(),
                nodes: 1,
                total_ms: n.total_ms,
                mean_ms: n.mean_ms,
                share: n.share,
            }),
        }
    }
    ops.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    ops
}

fn set_ratios(results: &mut [ComboResult], baseline: &str) {
    let base: Vec<((usize, Option<usize>), f64)> = results
        .iter()
        .filter(|r| format!("{}:{}", r.backend, r.precision) == baseline)
        .filter_map(|r| Some(((r.batch, r.threads), r.latency_ms.as_ref()?.p50)))
        .collect();
    for r in results.iter_mut() {
        let b = base.iter().find(|(key, _)| *key == (r.batch, r.threads)).map(|(_, p)| *p);
        if let (Some(b), Some(l)) = (b, r.latency_ms.as_ref()) {
            r.ratio_to_baseline = (b > 0.0).then(|| l.p50 / b);
        }
    }
}

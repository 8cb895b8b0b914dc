//! The CPU engine's own thread pool, for kernel work the GEMM library does not split (direct
//! depthwise convs, and GEMMs below matrixmultiply's threading threshold, which covers every
//! GEMM of a small model at batch 1).
//!
//! Sized like matrixmultiply's pool so `--threads`/MATMUL_NUM_THREADS governs both: the
//! variable if set, else the available cores, at most 4. Built once, reused by every session;
//! work is split with `rayon::join` (stack-allocated jobs: no allocation per run).

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::OnceLock;

/// Multiply-adds below which handing work to another thread costs more than it saves: a pool
/// wake-up is a few microseconds, and a split waits for its slower half (~150 us of one core;
/// at 1 << 16 the fixture teacher ran 4x slower at 2 threads than at 1, its 300K-MAC convs
/// split in two; the same bound as `packed::PARALLEL_MIN_MACS`).
const MIN_PARALLEL_WORK: usize = 1 << 20;

/// Threads the CPU kernels use.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let env = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok());
        env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 4)
    })
}

fn pool() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        (count() > 1)
            .then(|| {
                ThreadPoolBuilder::new().num_threads(count()).thread_name(|i| format!("alembic-cpu-{i}")).build().ok()
            })
            .flatten()
    })
    .as_ref()
}

/// Workers worth using for `items` independent items of `cost` multiply-adds each.
pub fn workers(items: usize, cost: usize) -> usize {
    if items < 2 || items.saturating_mul(cost) < MIN_PARALLEL_WORK || pool().is_none() {
        1
    } else {
        count().min(items)
    }
}

/// Calls `f(i, chunk_i, scratch_w)` for every `chunk`-long piece of `out` (the last may be
/// shorter), spread over
/// `workers` threads in contiguous runs; worker `w` gets `scratch[w * scratch_len..]` as its
/// private buffer (`scratch` must hold `workers * scratch_len`).
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, scratch: &mut [f32], scratch_len: usize, workers: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    if chunk == 0 {
        return;
    }
    let items = out.len().div_ceil(chunk);
    let serial = |first: usize, out: &mut [f32], scr: &mut [f32]| {
        for (j, o) in out.chunks_mut(chunk).enumerate() {
            f(first + j, o, &mut scr[..scratch_len]);
        }
    };
    match pool() {
        Some(pool) if workers > 1 => {
            let per = items.div_ceil(workers);
            pool.install(|| split(out, scratch, 0, per, chunk, scratch_len, &serial));
        }
        _ => serial(0, out, scratch),
    }
}

/// Calls `f(w)` for every worker `w < workers` (at most 8), each on its own thread of the pool.
pub fn for_each_worker(workers: usize, f: impl Fn(usize) + Sync) {
    let mut ids = [0f32; 8];
    let w = workers.clamp(1, ids.len());
    for_each_chunk(&mut ids[..w], 1, &mut [], 0, w, |i, _, _| f(i));
}

/// Halves the runs of `per` items until one is left per worker, via `rayon::join`.
fn split<G>(out: &mut [f32], scratch: &mut [f32], first: usize, per: usize, chunk: usize, scratch_len: usize, g: &G)
where
    G: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    let runs = out.len().div_ceil(chunk).div_ceil(per);
    if runs <= 1 {
        return g(first, out, scratch);
    }
    let left_runs = runs / 2;
    let (lo, hi) = out.split_at_mut((left_runs * per * chunk).min(out.len()));
    let (slo, shi) = scratch.split_at_mut(left_runs * scratch_len);
    rayon::join(
        || split(lo, slo, first, per, chunk, scratch_len, g),
        || split(hi, shi, first + left_runs * per, per, chunk, scratch_len, g),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_once_with_own_scratch() {
        for workers in 1..=4 {
            for items in [1, 2, 3, 7, 16] {
                // The last chunk is 3 long, not 5.
                let mut out = vec![0.0f32; items * 5 - 2];
                let mut scratch = vec![0.0f32; workers * 2];
                for_each_chunk(&mut out, 5, &mut scratch, 2, workers, |i, o, s| {
                    assert_eq!(s.len(), 2);
                    s[0] += 1.0;
                    o.fill(i as f32 + 1.0);
                });
                for (i, c) in out.chunks(5).enumerate() {
                    assert!(c.iter().all(|&v| v == i as f32 + 1.0), "workers {workers} items {items}: chunk {i}");
                }
                // Every item ran against exactly one worker's scratch.
                assert_eq!(scratch.iter().step_by(2).sum::<f32>(), items as f32);
            }
        }
    }
}

//! Summary statistics of latency samples.
//!
//! Percentiles use linear interpolation between closest ranks, numpy's default
//! (`numpy.percentile(x, q, method="linear")`): for sorted samples `x[0..n]` the q-th percentile
//! sits at fractional rank `h = (n - 1) * q / 100` and is `x[⌊h⌋] + (h - ⌊h⌋) * (x[⌊h⌋+1] - x[⌊h⌋])`.
//! The standard deviation is the sample one (divisor `n - 1`, numpy's `ddof=1`), 0 for one sample.

use serde::{Deserialize, Serialize};

/// Summary of a sample set, in the samples' unit (milliseconds in bench reports).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Summary {
    /// `None` for no samples. NaNs are ordered last and poison the mean; callers pass timings.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let mean = s.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Some(Summary {
            count: n,
            min: s[0],
            max: s[n - 1],
            mean,
            std: var.sqrt(),
            p50: percentile_sorted(&s, 50.0),
            p90: percentile_sorted(&s, 90.0),
            p95: percentile_sorted(&s, 95.0),
            p99: percentile_sorted(&s, 99.0),
        })
    }
}

/// The `q`-th percentile (0..=100) of ascending `sorted` samples, by linear interpolation
/// between closest ranks. NaN for no samples.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// The `q`-th percentile of unsorted samples.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    percentile_sorted(&s, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn numpy_linear_percentiles() {
        // numpy.percentile([1..=10], q) -> 5.5, 9.1, 9.55, 9.91
        let x: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert!(close(percentile(&x, 50.0), 5.5));
        assert!(close(percentile(&x, 90.0), 9.1));
        assert!(close(percentile(&x, 95.0), 9.55));
        assert!(close(percentile(&x, 99.0), 9.91));
        assert!(close(percentile(&x, 0.0), 1.0));
        assert!(close(percentile(&x, 100.0), 10.0));
    }

    #[test]
    fn summary_of_known_samples() {
        // numpy: mean 4.4, std(ddof=1) 3.4351128074635335, median 3.0
        let s = Summary::of(&[3.0, 1.0, 9.0, 2.0, 7.0]).unwrap();
        assert_eq!((s.count, s.min, s.max), (5, 1.0, 9.0));
        assert!(close(s.mean, 4.4));
        assert!(close(s.std, 3.4351128074635335));
        assert!(close(s.p50, 3.0));
        assert!(close(s.p90, 8.2)); // h = 3.6: 7 + 0.6 * 2
    }

    #[test]
    fn single_and_empty() {
        let s = Summary::of(&[2.5]).unwrap();
        assert_eq!((s.std, s.p50, s.p99), (0.0, 2.5, 2.5));
        assert!(Summary::of(&[]).is_none());
        assert!(percentile(&[], 50.0).is_nan());
    }
}

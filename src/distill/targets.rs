//! From a `.kdc` soft-label cache to training targets: check the cache describes the data set,
//! then turn each record into the [`SoftTarget`] of the same data row at the training
//! temperature. Shared by the CLI, the demo and the C ABI so they all match rows the same way.

use super::loss::SoftTarget;
use crate::cache::{CacheReader, SoftLabel};
use crate::data::{hex, DataSource};
use crate::error::{Error, Result};

/// The soft target of one record at temperature `t`: dense when the cache keeps every class,
/// else its top-k classes plus the tail bucket. Exact at the cache temperature and at T = 1.
pub fn soft_target(rec: &SoftLabel, t: f32) -> SoftTarget {
    let (probs, tail) = rec.probs_top(t);
    let tail = if rec.tail_count == 0 { 0.0 } else { tail };
    SoftTarget { indices: rec.indices.clone(), probs, tail }
}

/// Soft targets of every record, in data order (record i is data row i).
pub fn soft_targets(cache: &CacheReader, t: f32) -> Result<Vec<Option<SoftTarget>>> {
    if !(t > 0.0 && t.is_finite()) {
        return Err(Error::input("temperature", format!("must be positive, got {t}")));
    }
    (0..cache.len())
        .map(|i| {
            cache
                .record(i)
                .map(|r| Some(soft_target(&r, t)))
                .ok_or_else(|| Error::input("cache", format!("record {i} unreadable")))
        })
        .collect()
}

/// Hard labels stored in the cache (None per record without one), or None when the cache was
/// built without labels.
pub fn cache_labels(cache: &CacheReader) -> Option<Vec<Option<i64>>> {
    cache
        .header()
        .has_labels
        .then(|| (0..cache.len()).map(|i| cache.record(i).map(|r| r.label).filter(|&l| l >= 0)).collect())
}

/// Checks that `cache` was built from exactly `data` (same number of records as samples, same
/// content digest), so record i is the teacher's view of row i. Reads the data once.
pub fn check_cache_fits(cache: &CacheReader, data: &DataSource) -> Result<()> {
    let (path, h) = (cache.path(), cache.header());
    if cache.len() != data.len() {
        return Err(Error::TensorFile {
            path: path.to_path_buf(),
            message: format!(
                "cache holds {} records but the data {} has {} samples (was it built from other data?)",
                cache.len(),
                data.path().display(),
                data.len()
            ),
        });
    }
    let digest = data.digest(256)?;
    if digest != h.data_digest {
        return Err(Error::TensorFile {
            path: path.to_path_buf(),
            message: format!(
                "cache was built from other data than {} (data digest {} in the cache, {} for the data)",
                data.path().display(),
                hex(&h.data_digest[..6]),
                hex(&digest[..6])
            ),
        });
    }
    Ok(())
}

/// The teacher's log-probabilities at T = 1 for every record, row-major `[n, classes]`: exact
/// for the kept classes; dropped classes share the tail mass equally. Usable wherever teacher
/// logits are expected (softmax of log-probabilities gives the probabilities back).
pub fn teacher_log_probs(cache: &CacheReader) -> Vec<f32> {
    let c = cache.header().classes as usize;
    (0..cache.len())
        .flat_map(|i| match cache.record(i) {
            Some(r) => r.probs(1.0).into_iter().map(|p| p.max(1e-30).ln()).collect(),
            None => vec![0.0; c],
        })
        .collect()
}

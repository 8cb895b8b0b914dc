//! wgpu's on-disk pipeline cache (`Features::PIPELINE_CACHE`, Vulkan only), so a second process
//! start reuses the driver's compiled pipelines instead of compiling them again.
//!
//! One file per adapter, named by `wgpu::util::pipeline_cache_key` (vendor and device), in
//! [`cache_dir`]. Loaded when the device opens (with `fallback: true`: data from another driver
//! version or a corrupt file is ignored by wgpu/the driver, never an error), written atomically
//! (temp file, fsync, rename) after a plan has created new pipelines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// `ALEMBIC_CACHE_DIR`, else `$XDG_CACHE_HOME/alembic`, else `~/.cache/alembic`.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    env("ALEMBIC_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("alembic")))
        .or_else(|| env("HOME").map(|h| h.join(".cache").join("alembic")))
}

pub struct DiskCache {
    pub cache: wgpu::PipelineCache,
    pub path: PathBuf,
    /// Bytes found on disk at start (0 = none).
    pub loaded_bytes: usize,
    /// Pipelines were created since the last save.
    dirty: AtomicBool,
}

impl DiskCache {
    /// The cache for this adapter in `dir` (default [`cache_dir`]), when the device has
    /// `PIPELINE_CACHE` and a directory is known.
    pub fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo, dir: Option<PathBuf>) -> Option<DiskCache> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = dir.or_else(cache_dir)?.join(wgpu::util::pipeline_cache_key(info)?);
        let data = std::fs::read(&path).ok();
        // SAFETY: wgpu requires the data to come from `PipelineCache::get_data` of a compatible
        // adapter; the file is keyed by adapter, and `fallback: true` makes wgpu and the driver
        // validate the header and ignore data that does not match instead of failing.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("alembic"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        let loaded_bytes = data.map_or(0, |d| d.len());
        Some(DiskCache { cache, path, loaded_bytes, dirty: AtomicBool::new(false) })
    }

    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes the cache if pipelines were created since the last save; returns the bytes
    /// written (0 = nothing to do).
    pub fn save(&self) -> std::io::Result<usize> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(0);
        }
        let Some(data) = self.cache.get_data() else { return Ok(0) };
        write_atomic(&self.path, &data).inspect_err(|_| self.mark_dirty())?;
        Ok(data.len())
    }
}

/// Temp file in the same directory, fsync, rename: readers see the old file or the new one.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("cache"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

//! What the bench runs on (CPU model, features, memory, OS) and the process's resident memory.
//!
//! Linux details come from /proc; elsewhere the fields that need it are `None`.

use serde::{Deserialize, Serialize};

/// The machine a report came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// CPU model name (`/proc/cpuinfo` "model name"), when known.
    pub cpu_model: Option<String>,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// Logical CPUs available to this process.
    pub logical_cores: usize,
    /// Distinct (physical id, core id) pairs in /proc/cpuinfo, when known.
    pub physical_cores: Option<usize>,
    /// SIMD features detected at run time that the kernels can use.
    pub cpu_features: Vec<String>,
    pub memory_total_bytes: Option<u64>,
    /// OS family and, where known, its release name and kernel version.
    pub os: String,
    /// GPU adapter in one line, or why there is none (or that it was not probed).
    pub gpu: String,
    /// The wgpu adapter in detail, when it was opened.
    #[serde(default)]
    pub gpu_adapter: Option<GpuAdapter>,
}

/// The wgpu adapter Alembic's GPU engine uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuAdapter {
    pub name: String,
    /// Graphics API: Vulkan, Metal, Dx12, Gl.
    pub backend: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu (a software rasteriser such as lavapipe), Other.
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    /// Features kernels care about: shader-f16, timestamp-query, subgroup, shader-int64, ... and
    /// `wgsl:packed_4x8_integer_dot_product` (WGSL's int8 dot product).
    pub features: Vec<String>,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// Selected limits of the device as opened, by wgpu's field name.
    pub limits: std::collections::BTreeMap<String, u64>,
}

impl DeviceInfo {
    /// Describes this machine; `probe_gpu` opens the wgpu adapter (slow on a software one).
    pub fn detect(probe_gpu: bool) -> DeviceInfo {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |line: &str, key: &str| -> Option<String> {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        };
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| field(l, "model name").or_else(|| field(l, "Model")).or_else(|| field(l, "Hardware")));
        // Physical cores: distinct (physical id, core id) pairs, one per processor block.
        let mut cores = std::collections::HashSet::new();
        let (mut phys, mut core) = (None, None);
        for l in cpuinfo.lines().chain(std::iter::once("")) {
            if l.trim().is_empty() {
                if let Some(c) = core.take() {
                    cores.insert((phys.take().unwrap_or_default(), c));
                }
                phys = None;
            } else if let Some(v) = field(l, "physical id") {
                phys = Some(v);
            } else if let Some(v) = field(l, "core id") {
                core = Some(v);
            }
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_bytes = meminfo.lines().find_map(|l| parse_kb(l, "MemTotal:"));
        DeviceInfo {
            cpu_model,
            arch: std::env::consts::ARCH.to_string(),
            logical_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            physical_cores: (!cores.is_empty()).then_some(cores.len()),
            cpu_features: cpu_features(),
            memory_total_bytes,
            os: os_name(),
            gpu: String::new(),
            gpu_adapter: None,
        }
        .with_gpu(probe_gpu)
    }

    #[cfg(feature = "wgpu")]
    fn with_gpu(mut self, probe: bool) -> DeviceInfo {
        if !probe {
            self.gpu = "not probed (pass --device-info or bench the wgpu backend)".into();
            return self;
        }
        match crate::backend::wgpu::Ctx::shared() {
            Ok(ctx) => {
                let r = &ctx.report;
                let l = &ctx.limits;
                let limits = [
                    ("max_buffer_size", l.max_buffer_size),
                    ("max_storage_buffer_binding_size", l.max_storage_buffer_binding_size),
                    ("max_storage_buffers_per_shader_stage", u64::from(l.max_storage_buffers_per_shader_stage)),
                    ("max_compute_workgroup_storage_size", u64::from(l.max_compute_workgroup_storage_size)),
                    ("max_compute_invocations_per_workgroup", u64::from(l.max_compute_invocations_per_workgroup)),
                    ("max_compute_workgroup_size_x", u64::from(l.max_compute_workgroup_size_x)),
                    ("max_compute_workgroups_per_dimension", u64::from(l.max_compute_workgroups_per_dimension)),
                ];
                self.gpu = r.to_string();
                self.gpu_adapter = Some(GpuAdapter {
                    name: r.name.clone(),
                    backend: r.backend.clone(),
                    device_type: r.device_type.clone(),
                    driver: r.driver.clone(),
                    driver_info: r.driver_info.clone(),
                    features: r.features.clone(),
                    subgroup_min_size: r.subgroup_sizes.0,
                    subgroup_max_size: r.subgroup_sizes.1,
                    limits: limits.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                });
            }
            Err(e) => self.gpu = format!("no wgpu adapter: {e}"),
        }
        self
    }

    #[cfg(not(feature = "wgpu"))]
    fn with_gpu(mut self, _probe: bool) -> DeviceInfo {
        self.gpu = "no wgpu backend in this build (cargo feature 'wgpu')".into();
        self
    }
}

#[allow(clippy::vec_init_then_push)]
fn cpu_features() -> Vec<String> {
    let mut f: Vec<&str> = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($name) {
                    f.push($name);
                }
            )*};
        }
        probe!("sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($name) {
                    f.push($name);
                }
            )*};
        }
        probe!("neon", "fp16", "dotprod", "i8mm", "sve");
    }
    f.into_iter().map(String::from).collect()
}

fn os_name() -> String {
    let mut s = std::env::consts::OS.to_string();
    if let Ok(rel) = std::fs::read_to_string("/etc/os-release") {
        if let Some(name) = rel.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")) {
            s = format!("{s} ({})", name.trim_matches('"'));
        }
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        s = format!("{s}, kernel {}", k.trim());
    }
    s
}

/// `Key:   1234 kB` -> bytes.
fn parse_kb(line: &str, key: &str) -> Option<u64> {
    let v = line.strip_prefix(key)?.trim();
    let kb: u64 = v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()?;
    Some(kb * 1024)
}

/// Resident set size now and its high-water mark, in bytes (Linux `/proc/self/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rss {
    pub current: u64,
    pub peak: u64,
}

pub fn rss() -> Option<Rss> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let current = status.lines().find_map(|l| parse_kb(l, "VmRSS:"))?;
    let peak = status.lines().find_map(|l| parse_kb(l, "VmHWM:"))?;
    Some(Rss { current, peak })
}

/// Resets the RSS high-water mark to the current RSS (writes 5 to /proc/self/clear_refs).
/// `false` where that is not permitted or not Linux: peaks then include earlier phases.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_lines() {
        assert_eq!(parse_kb("VmHWM:\t  1024 kB", "VmHWM:"), Some(1024 * 1024));
        assert_eq!(parse_kb("VmRSS: x kB", "VmRSS:"), None);
    }

    #[test]
    fn detects_something() {
        let d = DeviceInfo::detect(false);
        assert!(d.logical_cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(rss().is_some_and(|r| r.peak >= r.current && r.current > 0));
        }
    }
}

//! Adapter and device selection, shader sources, and the pipeline cache.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Re-exported so callers can name APIs for [`Ctx::new`] without depending on wgpu.
pub use wgpu::Backends;

/// WGSL sources, `include_str!`'d; kernels that use activations get act.wgsl prepended.
pub const SHADERS: &[(&str, &str)] = &[
    ("act", include_str!("../../../shaders/act.wgsl")),
    ("quant", include_str!("../../../shaders/quant.wgsl")),
    ("elementwise", include_str!("../../../shaders/elementwise.wgsl")),
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    ("gemm_io", include_str!("../../../shaders/gemm_io.wgsl")),
    ("conv2d", include_str!("../../../shaders/conv2d.wgsl")),
    ("conv2d_io", include_str!("../../../shaders/conv2d_io.wgsl")),
    ("pool", include_str!("../../../shaders/pool.wgsl")),
    ("softmax", include_str!("../../../shaders/softmax.wgsl")),
    ("norm", include_str!("../../../shaders/norm.wgsl")),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
    ("move", include_str!("../../../shaders/move.wgsl")),
    ("resize", include_str!("../../../shaders/resize.wgsl")),
];

/// One file of shaders/ by name (no prelude).
pub(super) fn part(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Full source of a kernel family as compiled: act.wgsl, quant.wgsl and the kernel's interface
/// (`*_io.wgsl`) prepended where used.
pub fn shader_source(family: &str) -> Option<String> {
    if let Some(src) = super::w8a8::source(family) {
        return Some(src);
    }
    let body = part(family)?;
    Some(match family {
        "elementwise" => format!("{}\n{}", SHADERS[0].1, body),
        "gemm" | "conv2d" => {
            format!("{}\n{}\n{}\n{}", SHADERS[0].1, SHADERS[1].1, part(&format!("{family}_io"))?, body)
        }
        _ => body.to_string(),
    })
}

/// Shader families that take the `W_MODE` override (weight format).
fn has_w_mode(family: &str) -> bool {
    matches!(family, "gemm" | "conv2d")
}

/// What was picked, for reports.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub shader_f16: bool,
    /// Adapter features that matter to ML kernels, by WebGPU/wgpu name (`shader-f16`,
    /// `timestamp-query`, `subgroup`, `shader-int64`, ...), and the WGSL language extension
    /// `packed_4x8_integer_dot_product` when the implementation offers it.
    pub features: Vec<String>,
    /// Subgroup size range the adapter reports (0 when unknown).
    pub subgroup_sizes: (u32, u32),
    /// Whether this device was opened with `TIMESTAMP_QUERY` (GPU-side per-dispatch profiling).
    pub timestamps: bool,
    /// The on-disk pipeline cache file (Vulkan with `PIPELINE_CACHE` only) and the bytes it
    /// held when the device opened.
    pub pipeline_cache: Option<(std::path::PathBuf, usize)>,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}, driver {} {})", self.name, self.backend, self.device_type, self.driver, self.driver_info)
    }
}

/// Key of a compiled pipeline: shader family, entry point, weight-format / variant constant.
pub type PipelineKey = (&'static str, &'static str, u32);

/// A device and queue with the pipelines compiled on it.
pub struct Ctx {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub report: AdapterReport,
    pub limits: wgpu::Limits,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    disk: Option<super::disk_cache::DiskCache>,
    /// Buffers created and command buffers submitted by plans on this device.
    buffers_created: AtomicU64,
    submits: AtomicU64,
    /// Time spent creating pipelines (shader modules included), in nanoseconds.
    compile_nanos: AtomicU64,
    /// Validation errors no scope caught (reported by the next run instead of panicking).
    pub uncaptured: Arc<Mutex<Vec<String>>>,
}

/// Backends selected by `ALEMBIC_WGPU_BACKEND` (all when unset).
pub fn backends_from_env() -> Result<wgpu::Backends> {
    match std::env::var("ALEMBIC_WGPU_BACKEND") {
        Err(_) => Ok(wgpu::Backends::all()),
        Ok(v) => parse_backends(&v),
    }
}

pub fn parse_backends(v: &str) -> Result<wgpu::Backends> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "" | "any" | "all" => wgpu::Backends::all(),
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "metal" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        other => {
            return Err(Error::Unavailable(format!(
                "ALEMBIC_WGPU_BACKEND='{other}' is not one of vulkan, gl, metal, dx12"
            )))
        }
    })
}

/// Options of the shared context from `ALEMBIC_WGPU_LIMITS`: `adapter` (or unset) for all the
/// adapter offers, `downlevel` for a phone's limits on any machine ([`CtxOptions::downlevel`]).
pub fn options_from_env() -> Result<CtxOptions> {
    match std::env::var("ALEMBIC_WGPU_LIMITS") {
        Err(_) => Ok(CtxOptions::default()),
        Ok(v) => parse_limits(&v),
    }
}

pub fn parse_limits(v: &str) -> Result<CtxOptions> {
    match v.to_ascii_lowercase().as_str() {
        "" | "adapter" => Ok(CtxOptions::default()),
        "downlevel" => Ok(CtxOptions { downlevel: true, ..Default::default() }),
        other => Err(Error::Unavailable(format!("ALEMBIC_WGPU_LIMITS='{other}' is not one of adapter, downlevel"))),
    }
}

/// Options of [`Ctx::with_options`].
#[derive(Clone, Debug, Default)]
pub struct CtxOptions {
    /// Directory of the on-disk pipeline cache (default: [`super::disk_cache::cache_dir`]).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Caps the storage binding size plans assume below the adapter's limit (tests use it to
    /// exercise the split paths on small tensors).
    pub max_storage_binding: Option<u32>,
    /// Caps the buffer size plans assume below the adapter's `max_buffer_size` (tests use it to
    /// check the refusal of larger buffers).
    pub max_buffer_size: Option<u64>,
    /// Requests `wgpu::Limits::downlevel_defaults()` (a GLES 3.1 phone: 4 storage buffers per
    /// stage, 16 KiB workgroup memory, 256 invocations, 128 MiB bindings) instead of all the
    /// adapter offers, so wgpu validates every pipeline and binding against a phone's limits.
    pub downlevel: bool,
}

/// Rank of an adapter: real GPUs first, then native APIs before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    (ty, u8::from(info.backend == wgpu::Backend::Gl))
}

impl Ctx {
    /// Opens the best adapter among `backends`: HighPerformance preference, real GPUs before
    /// software ones. No adapter is `Error::Unavailable`, never a panic.
    pub fn new(backends: wgpu::Backends) -> Result<Ctx> {
        Ctx::with_options(backends, CtxOptions::default())
    }

    /// [`Ctx::new`] with a pipeline cache directory or binding limit of its own.
    pub fn with_options(backends: wgpu::Backends, opts: CtxOptions) -> Result<Ctx> {
        let r = std::panic::catch_unwind(|| Ctx::open(backends, opts));
        r.unwrap_or_else(|_| Err(Error::Unavailable("wgpu panicked while opening an adapter".into())))
    }

    fn open(backends: wgpu::Backends, opts: CtxOptions) -> Result<Ctx> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let adapter = match adapters.into_iter().next() {
            Some(a) => a,
            None => {
                // Some platforms only answer request_adapter.
                let opts = wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    ..Default::default()
                };
                pollster::block_on(instance.request_adapter(&opts)).map_err(|e| {
                    Error::Unavailable(format!(
                        "no wgpu adapter for backends {backends:?} ({e}); install a Vulkan/GL driver \
                         (e.g. Mesa's mesa-vulkan-drivers) or use the cpu backend"
                    ))
                })?
            }
        };
        let info = adapter.get_info();
        let shader_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        // Everything the adapter offers (at least the downlevel defaults on any conformant one),
        // or exactly the downlevel defaults when asked to behave like a phone.
        let mut limits = if opts.downlevel { downlevel_limits(&adapter.limits()) } else { adapter.limits() };
        // Timestamp queries cost nothing unless a profiling run writes them.
        let optional = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::PIPELINE_CACHE;
        let enabled = adapter.features() & optional;
        let dd = wgpu::DeviceDescriptor {
            label: Some("alembic"),
            required_features: enabled,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&dd))
            .map_err(|e| Error::Unavailable(format!("wgpu adapter '{}' refused a device: {e}", info.name)))?;
        let disk = super::disk_cache::DiskCache::open(&device, &info, opts.cache_dir);
        if let Some(cap) = opts.max_storage_binding {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(cap.into());
        }
        if let Some(cap) = opts.max_buffer_size {
            limits.max_buffer_size = limits.max_buffer_size.min(cap);
        }
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(one_line(&e.to_string()));
        }));
        let report = AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            shader_f16,
            features: feature_names(adapter.features(), instance.wgsl_language_features()),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            timestamps: enabled.contains(wgpu::Features::TIMESTAMP_QUERY),
            pipeline_cache: disk.as_ref().map(|d| (d.path.clone(), d.loaded_bytes)),
        };
        Ok(Ctx {
            device,
            queue,
            report,
            limits,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            disk,
            buffers_created: AtomicU64::new(0),
            submits: AtomicU64::new(0),
            compile_nanos: AtomicU64::new(0),
            uncaptured,
        })
    }

    /// The process-wide context for the backends `ALEMBIC_WGPU_BACKEND` names, with the limits
    /// `ALEMBIC_WGPU_LIMITS` asks for (opened once).
    pub fn shared() -> Result<Arc<Ctx>> {
        static CTX: OnceLock<std::result::Result<Arc<Ctx>, String>> = OnceLock::new();
        let open = || Ctx::with_options(backends_from_env()?, options_from_env()?);
        CTX.get_or_init(|| open().map(Arc::new).map_err(|e| e.to_string())).clone().map_err(Error::Unavailable)
    }

    /// The compiled pipeline for `key`, compiling (and caching) it on first use. The variant
    /// is passed as the `W_MODE` override constant for the GEMM family.
    pub fn pipeline(&self, key: PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let (family, entry, variant) = key;
        let t0 = std::time::Instant::now();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if !modules.contains_key(family) {
            let src = shader_source(family).ok_or_else(|| Error::Unavailable(format!("no shader '{family}'")))?;
            let m = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(family),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            modules.insert(family, m);
        }
        let module = &modules[family];
        let constants: Vec<(&str, f64)> = if has_w_mode(family) { vec![("W_MODE", variant as f64)] } else { vec![] };
        let p = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
            cache: self.disk.as_ref().map(|d| &d.cache),
        });
        if let Some(d) = &self.disk {
            d.mark_dirty();
        }
        self.compile_nanos.fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Some(e) = pollster::block_on(scope.pop()) {
            modules.remove(family);
            return Err(Error::Unavailable(format!(
                "compiling {family}.wgsl:{entry} on {}: {}",
                self.report.name,
                one_line(&e.to_string())
            )));
        }
        let p = Arc::new(p);
        cache.insert(key, p.clone());
        Ok(p)
    }

    /// Writes the on-disk pipeline cache if pipelines were created since the last save.
    /// Returns the bytes written (0 when there was nothing new or no cache).
    pub fn save_pipeline_cache(&self) -> Result<usize> {
        let Some(d) = &self.disk else { return Ok(0) };
        d.save().map_err(|e| Error::Unavailable(format!("writing the pipeline cache {}: {e}", d.path.display())))
    }

    /// Creates a buffer, counted in [`Ctx::counts`].
    pub fn buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer(desc)
    }

    /// Creates an initialised buffer, counted in [`Ctx::counts`].
    pub fn buffer_init(&self, desc: &wgpu::util::BufferInitDescriptor<'_>) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.buffers_created.fetch_add(1, Ordering::Relaxed);
        self.device.create_buffer_init(desc)
    }

    /// Submits one command buffer, counted in [`Ctx::counts`].
    pub fn submit(&self, cb: wgpu::CommandBuffer) {
        self.submits.fetch_add(1, Ordering::Relaxed);
        self.queue.submit([cb]);
    }

    /// (buffers created, queue submits) by plans on this device so far (profiling runs
    /// excluded): a steady-state run adds no buffer and one submit.
    pub fn counts(&self) -> (u64, u64) {
        (self.buffers_created.load(Ordering::Relaxed), self.submits.load(Ordering::Relaxed))
    }

    /// Total time spent creating pipelines on this device so far.
    pub fn compile_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.compile_nanos.load(Ordering::Relaxed))
    }

    /// Number of pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes validation errors reported outside any scope.
    pub fn take_uncaptured(&self) -> Option<String> {
        let mut v = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        (!v.is_empty()).then(|| std::mem::take(&mut *v).join("; "))
    }
}

/// `Limits::downlevel_defaults()`, each lowered to the adapter's where it offers less (so the
/// request never fails on a device below them).
fn downlevel_limits(adapter: &wgpu::Limits) -> wgpu::Limits {
    wgpu::Limits::downlevel_defaults().or_worse_values_from(adapter)
}

/// Names of the adapter features kernels care about, as wgpu spells them.
fn feature_names(f: wgpu::Features, wgsl: wgpu::WgslLanguageFeatures) -> Vec<String> {
    let known = [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::TIMESTAMP_QUERY, "timestamp-query"),
        (wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES, "timestamp-query-inside-passes"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::SUBGROUP_BARRIER, "subgroup-barrier"),
        (wgpu::Features::SHADER_INT64, "shader-int64"),
        (wgpu::Features::PIPELINE_STATISTICS_QUERY, "pipeline-statistics-query"),
    ];
    let mut v: Vec<String> = known.iter().filter(|(k, _)| f.contains(*k)).map(|(_, n)| n.to_string()).collect();
    if wgsl.contains(wgpu::WgslLanguageFeatures::Packed4x8IntegerDotProduct) {
        v.push("wgsl:packed_4x8_integer_dot_product".into());
    }
    v
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Validates every shader family with naga (no adapter needed): parse + validate.
pub fn validate_shaders() -> Result<(), String> {
    let families = SHADERS.iter().map(|(n, _)| *n).filter(|n| !matches!(*n, "act" | "quant") && !n.ends_with("_io"));
    for family in families.chain(super::w8a8::FAMILIES.iter().copied()) {
        let src = shader_source(family).expect("listed");
        let module = wgpu::naga::front::wgsl::parse_str(&src)
            .map_err(|e| format!("{family}.wgsl: {}", e.emit_to_string(&src)))?;
        let mut v = wgpu::naga::valid::Validator::new(
            wgpu::naga::valid::ValidationFlags::all(),
            wgpu::naga::valid::Capabilities::default(),
        );
        v.validate(&module).map_err(|e| format!("{family}.wgsl: {}", one_line(&format!("{e:?}"))))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_limits;

    #[test]
    fn wgpu_limits_env_values() {
        assert!(!parse_limits("").unwrap().downlevel);
        assert!(!parse_limits("adapter").unwrap().downlevel);
        assert!(parse_limits("Downlevel").unwrap().downlevel);
        let e = parse_limits("phone").unwrap_err().to_string();
        assert!(e.contains("ALEMBIC_WGPU_LIMITS='phone'") && e.contains("downlevel"), "{e}");
    }
}

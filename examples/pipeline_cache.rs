//! Time to create every wgpu pipeline the fixture teacher needs (f32, f16, int8, int4), with
//! the on-disk pipeline cache in `ALEMBIC_CACHE_DIR` (or the default cache dir). Run it twice
//! with the same fresh directory: the first process compiles from scratch and writes the
//! cache, the second loads it.
//!
//!     ALEMBIC_CACHE_DIR=$(mktemp -d) cargo run --example pipeline_cache   # twice

#[cfg(feature = "wgpu")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use alembic::backend::wgpu::{device, Ctx, WgpuBackend};
    use alembic::backend::Executable;
    use alembic::quant::{quantize_graph, Precision};
    use std::sync::Arc;

    let model = alembic::Model::load("models/teacher.onnx")?;
    let t0 = std::time::Instant::now();
    let ctx = Arc::new(Ctx::new(device::backends_from_env()?)?);
    let open = t0.elapsed();
    let cache = match &ctx.report.pipeline_cache {
        Some((p, n)) => format!("{} ({n} bytes at start)", p.display()),
        None => "none (the adapter has no PIPELINE_CACHE)".into(),
    };
    let backend = WgpuBackend::with_context(ctx.clone());
    let x = alembic::Tensor::zeros(alembic::DType::F32, &[1, 1, 8, 8]);
    let t1 = std::time::Instant::now();
    for p in [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4] {
        let plan = backend.plan(Arc::new(quantize_graph(model.graph(), p)))?;
        plan.run(&[&x])?;
    }
    println!("adapter        {}", ctx.report);
    println!("pipeline cache {cache}");
    println!("device open    {open:.2?}");
    println!("pipelines      {} created in {:.2?}", ctx.pipeline_count(), ctx.compile_time());
    println!("first runs     {:.2?} (4 precisions, incl. pipeline creation and cache write)", t1.elapsed());
    Ok(())
}

#[cfg(not(feature = "wgpu"))]
fn main() {
    eprintln!("pipeline_cache needs the wgpu feature");
}

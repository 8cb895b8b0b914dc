//! The wgpu engine within a phone's limits: on a device opened with
//! `Limits::downlevel_defaults()` (`CtxOptions::downlevel`: 4 storage buffers per stage, 16 KiB
//! of workgroup memory, 256 invocations per workgroup, 16 KiB uniforms), on Vulkan (lavapipe)
//! and GL (llvmpipe), every pipeline of every kernel and weight format compiles, and the
//! fixture teacher and student run in every precision with no CPU fallback, matching the CPU
//! engine on the same quantized graph. Without an adapter each test prints that it skipped.

use super::gpu::{close, quiet_mesa};
use super::quant::{agreement, argmax_rows, heldout, models};
use alembic::backend::cpu::CpuBackend;
use alembic::backend::wgpu::device::{shader_source, Backends, PipelineKey, SHADERS};
use alembic::backend::wgpu::{w8a8, Ctx, CtxOptions, WgpuBackend};
use alembic::backend::{Backend, Executable};
use alembic::quant::{quantize_graph, Precision};
use alembic::{Model, Tensor};
use std::sync::Arc;

/// Downlevel contexts on Vulkan and GL (those that open), labelled.
pub(super) fn downlevel_contexts(test: &str) -> Vec<(String, Arc<Ctx>)> {
    quiet_mesa();
    let mut out = Vec::new();
    for (api, b) in [("vulkan", Backends::VULKAN), ("gl", Backends::GL)] {
        match Ctx::with_options(b, CtxOptions { downlevel: true, ..Default::default() }) {
            Ok(c) => {
                let l = c.device.limits();
                assert_eq!(l.max_storage_buffers_per_shader_stage, 4, "{api}: device not opened with downlevel limits");
                assert_eq!(c.limits.max_storage_buffers_per_shader_stage, 4);
                out.push((format!("{api} {} (downlevel limits)", c.report.name), Arc::new(c)));
            }
            Err(e) => println!("SKIPPED {test} on {api}: no wgpu adapter ({e})"),
        }
    }
    out
}

/// Every pipeline plans can create: each entry point of each kernel family (naga lists them),
/// the GEMM and conv families in every weight format (W_MODE 0..=3), and both `dot4` variants
/// of the w8a8 kernels.
fn every_pipeline_key() -> Vec<PipelineKey> {
    let families = SHADERS.iter().map(|(n, _)| *n).filter(|n| !matches!(*n, "act" | "quant") && !n.ends_with("_io"));
    let mut keys = Vec::new();
    for family in families.chain(w8a8::FAMILIES.iter().copied()) {
        let src = shader_source(family).expect("listed family");
        let module = wgpu::naga::front::wgsl::parse_str(&src).expect("shaders_validate_with_naga covers this");
        let modes: &[u32] = match family {
            "gemm" | "conv2d" => &[0, 1, 2, 3],
            f if w8a8::FAMILIES.contains(&f) => &[w8a8::MODE],
            _ => &[0],
        };
        for ep in &module.entry_points {
            let entry: &'static str = Box::leak(ep.name.clone().into_boxed_str());
            keys.extend(modes.iter().map(|&m| (family, entry, m)));
        }
    }
    keys
}

#[test]
fn every_pipeline_compiles_within_downlevel_limits() {
    let keys = every_pipeline_key();
    assert!(keys.len() >= 23, "only {} pipelines found", keys.len());
    for (label, c) in downlevel_contexts("every_pipeline_compiles_within_downlevel_limits") {
        // The limit is enforced: a kernel with five storage buffers is refused on this device.
        let five = "@group(0) @binding(0) var<storage, read> a: array<f32>;
            @group(0) @binding(1) var<storage, read> b: array<f32>;
            @group(0) @binding(2) var<storage, read> c: array<f32>;
            @group(0) @binding(3) var<storage, read> d: array<f32>;
            @group(0) @binding(4) var<storage, read_write> y: array<f32>;
            @compute @workgroup_size(1) fn main() { y[0] = a[0] + b[0] + c[0] + d[0]; }";
        let scope = c.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let m = c.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("five storage buffers"),
            source: wgpu::ShaderSource::Wgsl(five.into()),
        });
        let _ = c.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: None,
            layout: None,
            module: &m,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let refused = pollster::block_on(scope.pop());
        assert!(refused.is_some(), "{label}: a 5-storage-buffer pipeline was accepted");
        for &k in &keys {
            c.pipeline(k).unwrap_or_else(|e| panic!("{label}: {k:?}: {e}"));
        }
        println!("{label}: all {} pipelines compile", keys.len());
    }
}

/// The first `n` held-out samples.
fn samples(n: usize) -> Tensor {
    let x = heldout();
    let per: usize = x.shape()[1..].iter().product();
    let mut shape = x.shape().to_vec();
    shape[0] = n.min(shape[0]);
    Tensor::from_vec(shape.clone(), x.as_slice::<f32>().unwrap()[..shape[0] * per].to_vec()).unwrap()
}

#[test]
fn fixtures_run_in_every_precision_within_downlevel_limits() {
    let ctxs = downlevel_contexts("fixtures_run_in_every_precision_within_downlevel_limits");
    if ctxs.is_empty() {
        return;
    }
    let x = samples(64);
    let precisions = [Precision::F32, Precision::F16, Precision::Int8, Precision::Int4, Precision::W8a8];
    for name in ["teacher", "student"] {
        let model = Model::load(models().join(format!("{name}.onnx"))).unwrap();
        for p in precisions {
            let g = Arc::new(quantize_graph(model.graph(), p));
            let cpu = CpuBackend.prepare(g.clone()).unwrap().run(&[&x]).unwrap().remove(0);
            for (label, c) in &ctxs {
                let plan = WgpuBackend::with_context(c.clone()).plan(g.clone()).unwrap();
                assert_eq!(plan.fallback_nodes(), Vec::<String>::new(), "{label} {name} {p}: nodes on the CPU");
                let gpu = plan.run(&[&x]).unwrap().remove(0);
                let what = format!("{label}: {name} {p} vs the CPU engine");
                if p == Precision::W8a8 {
                    // Activations are quantized on both sides; the GPU's 1 / scale may differ in
                    // the last bit and move a value on a rounding boundary by one step, so
                    // logits agree closely but not to 1e-4 (see quant_gpu::compare).
                    close(&what, &gpu, &cpu, 2e-2, 5e-2);
                    let agree = agreement(&argmax_rows(&cpu), &argmax_rows(&gpu));
                    let worst = gpu
                        .as_slice::<f32>()
                        .unwrap()
                        .iter()
                        .zip(cpu.as_slice::<f32>().unwrap())
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    println!("{what}: max |diff| {worst:e}, top-1 agreement {:.1}%", agree * 100.0);
                    assert!(agree >= 0.98, "{what}: top-1 agreement {agree}");
                } else {
                    close(&what, &gpu, &cpu, 1e-4, 1e-4);
                }
                println!("{what}: ok on {} samples", x.shape()[0]);
            }
        }
    }
}

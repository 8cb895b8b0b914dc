//! Per-step timing of a wgpu run (`Executable::profile`).
//!
//! Where the device was opened with `TIMESTAMP_QUERY` (see [`super::Ctx`]), every dispatch
//! gets its own compute pass with begin/end timestamp writes: the times are GPU execution
//! times, with no CPU round trip between dispatches. Elsewhere every dispatch is submitted
//! alone and waited for, so its time is the CPU-side wall time of submit + execute + wait.
//! CPU-fallback steps are timed on the CPU either way (including reading back their inputs).
//! A fused activation is timed with the step it is fused into.

use super::{Bound, Kind, WgpuPlan};
use crate::backend::cpu::NodeTime;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::time::{Duration, Instant};

/// How a profile was timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileClock {
    /// GPU timestamp queries around each dispatch.
    GpuTimestamps,
    /// CPU wall time of each dispatch submitted and waited for alone.
    CpuWait,
}

impl ProfileClock {
    pub fn name(self) -> &'static str {
        match self {
            ProfileClock::GpuTimestamps => "gpu-timestamp-query",
            ProfileClock::CpuWait => "cpu-submit-wait",
        }
    }
}

pub(super) struct Prof {
    /// The query set and its capacity in dispatches, when timestamps are used.
    queries: Option<(wgpu::QuerySet, u32)>,
    /// (step, query pair) of each timestamped dispatch.
    timed: Vec<(usize, u32)>,
    /// (step, wall time) of CPU-timed steps.
    wall: Vec<(usize, Duration)>,
}

fn gpu_err(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("wgpu profile: {e}"))
}

impl Prof {
    fn new(plan: &WgpuPlan, b: &Bound) -> Prof {
        // One query pair per dispatch (Concat has one per input).
        let n = b.dispatch.iter().map(Vec::len).sum::<usize>() as u32;
        let fits = 2 * n as usize <= wgpu::QUERY_SET_MAX_QUERIES as usize;
        let queries = (plan.clock() == ProfileClock::GpuTimestamps && fits).then(|| {
            let qs = plan.ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * n.max(1),
            });
            (qs, n.max(1))
        });
        Prof { queries, timed: Vec::new(), wall: Vec::new() }
    }

    pub(super) fn cpu_step(&mut self, si: usize, d: Duration) {
        self.wall.push((si, d));
    }

    /// Records the GPU steps from `*si` up to the next CPU step, one pass per dispatch.
    pub(super) fn gpu_steps(
        &mut self,
        plan: &WgpuPlan,
        b: &Bound,
        mut enc: wgpu::CommandEncoder,
        si: &mut usize,
    ) -> Result<wgpu::CommandEncoder> {
        while *si < plan.steps.len() && !matches!(plan.steps[*si].kind, Kind::Cpu) {
            for d in &b.dispatch[*si] {
                match &self.queries {
                    Some((qs, _)) => {
                        let k = self.timed.len() as u32;
                        let tw = wgpu::ComputePassTimestampWrites {
                            query_set: qs,
                            beginning_of_pass_write_index: Some(2 * k),
                            end_of_pass_write_index: Some(2 * k + 1),
                        };
                        let desc = wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(tw) };
                        let mut pass = enc.begin_compute_pass(&desc);
                        pass.set_pipeline(&d.pipeline);
                        pass.set_bind_group(0, &d.bind, &[]);
                        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        drop(pass);
                        self.timed.push((*si, k));
                    }
                    None => {
                        let t0 = Instant::now();
                        {
                            let mut pass = enc.begin_compute_pass(&Default::default());
                            pass.set_pipeline(&d.pipeline);
                            pass.set_bind_group(0, &d.bind, &[]);
                            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        }
                        let done =
                            std::mem::replace(&mut enc, plan.ctx.device.create_command_encoder(&Default::default()));
                        plan.ctx.queue.submit([done.finish()]);
                        plan.ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(gpu_err)?;
                        self.wall.push((*si, t0.elapsed()));
                    }
                }
            }
            *si += 1;
        }
        Ok(enc)
    }

    /// Reads the timestamps back and returns (node, op, time) in step order.
    fn finish(self, plan: &WgpuPlan) -> Result<Vec<NodeTime>> {
        let mut per_step: Vec<Option<Duration>> = vec![None; plan.steps.len()];
        for (si, d) in &self.wall {
            per_step[*si] = Some(per_step[*si].unwrap_or_default() + *d);
        }
        if let (Some((qs, _)), false) = (&self.queries, self.timed.is_empty()) {
            let n = 2 * self.timed.len() as u32;
            let bytes = u64::from(n) * 8;
            let dev = &plan.ctx.device;
            let resolve = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = dev.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps-read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = dev.create_command_encoder(&Default::default());
            enc.resolve_query_set(qs, 0..n, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
            plan.ctx.queue.submit([enc.finish()]);
            read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            dev.poll(wgpu::PollType::wait_indefinitely()).map_err(gpu_err)?;
            let ticks: Vec<u64> = {
                let view = read.slice(..).get_mapped_range().map_err(|e| gpu_err(format!("{e:?}")))?;
                bytemuck::cast_slice::<u8, u64>(&view).to_vec()
            };
            read.unmap();
            let period_ns = f64::from(plan.ctx.queue.get_timestamp_period());
            for (si, k) in &self.timed {
                let (a, z) = (ticks[2 * *k as usize], ticks[2 * *k as usize + 1]);
                let ns = z.saturating_sub(a) as f64 * period_ns;
                per_step[*si] = Some(per_step[*si].unwrap_or_default() + Duration::from_nanos(ns.round() as u64));
            }
        }
        let g = &*plan.graph;
        Ok(per_step
            .into_iter()
            .enumerate()
            .filter_map(|(si, d)| {
                let node = &g.nodes[plan.steps[si].node];
                d.map(|d| (node.name.clone(), node.op.name(), d))
            })
            .collect())
    }
}

impl WgpuPlan {
    /// How [`crate::backend::Executable::profile`] times steps on this plan's device.
    pub fn clock(&self) -> ProfileClock {
        let fits = 2 * self.steps.len() <= wgpu::QUERY_SET_MAX_QUERIES as usize;
        if self.ctx.report.timestamps && fits {
            ProfileClock::GpuTimestamps
        } else {
            ProfileClock::CpuWait
        }
    }

    pub(super) fn profile_run(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<NodeTime>)> {
        let mut guard = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let same = guard
            .as_ref()
            .is_some_and(|b| b.key.len() == inputs.len() && b.key.iter().zip(inputs).all(|(k, t)| k == t.shape()));
        if !same {
            *guard = None;
            *guard = Some(self.bind(inputs)?);
        }
        let b = guard.as_mut().expect("bound");
        let mut prof = Prof::new(self, b);
        let outs = self.exec(b, inputs, Some(&mut prof))?;
        Ok((outs, prof.finish(self)?))
    }

    /// Bytes of GPU buffers this plan holds: constants, packed weights, and (once bound) the
    /// activation slots, input and read-back buffers. Per-dispatch uniforms are not counted.
    pub fn gpu_bytes(&self) -> u64 {
        let mut n: u64 = self.consts.values().map(|b| b.size()).sum();
        n += self.qbufs.values().map(|(_, w, _)| w.size()).sum::<u64>();
        n += self.folded.values().map(|(_, ab)| ab.size()).sum::<u64>();
        n += self.dummy.size();
        if let Some(b) = self.bound.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            n += b.slots.iter().map(|s| s.size()).sum::<u64>();
            n += b.inputs.iter().flatten().map(|s| s.size()).sum::<u64>();
            n += b.staging.values().map(|s| s.size()).sum::<u64>();
        }
        n
    }
}

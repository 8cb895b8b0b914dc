//! Execution plan of the CPU engine: a buffer arena planned over value lifetimes.
//!
//! Each intermediate value gets a slot; a slot is reused by a later value once its last reader
//! has run. Slots keep their allocation between runs, so after the first run with given input
//! shapes, running again allocates nothing but the returned outputs (and nothing at all through
//! `run_into`). The plan runs steps, not
//! nodes: `fuse.rs` folds an activation into the node producing its input.

use super::fuse::{steps, Step};
use super::prepack::prepack;
use crate::backend::Executable;
use crate::error::{Error, Result};
use crate::ir::{Graph, ValueId};
use crate::tensor::{DType, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wall time of one node in a profiled run: node name, op name, time.
pub type NodeTime = (String, &'static str, Duration);

/// Where a node finds a value at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Constant(ValueId),
    Input(usize),
    Arena(usize),
}

/// Per-run mutable state: the arena and per-node scratch. Pooled so concurrent runs of one
/// session each get their own.
struct State {
    arena: Vec<Tensor>,
    scratch: Vec<Vec<f32>>,
    /// The running step's outputs, taken out of the arena so its inputs can be borrowed.
    outs: Vec<Tensor>,
}

/// Inputs of at most this many are gathered on the stack (no allocation per node).
const INLINE_INPUTS: usize = 8;

pub struct CpuPlan {
    graph: Arc<Graph>,
    steps: Vec<Step>,
    slots: Vec<Option<Slot>>,
    arena_len: usize,
    states: Mutex<Vec<State>>,
}

impl CpuPlan {
    pub fn new(graph: Arc<Graph>) -> CpuPlan {
        let mut slots: Vec<Option<Slot>> = vec![None; graph.values.len()];
        for (v, val) in graph.values.iter().enumerate() {
            if val.constant.is_some() {
                slots[v] = Some(Slot::Constant(v));
            }
        }
        for (i, &v) in graph.inputs.iter().enumerate() {
            slots[v] = Some(Slot::Input(i));
        }
        let mut steps = steps(&graph);
        for step in &mut steps {
            step.packed = prepack(&graph, &graph.nodes[step.node]);
        }
        // Last reader (step) of every value; graph outputs live to the end.
        let mut last_use = vec![None; graph.values.len()];
        for (n, step) in steps.iter().enumerate() {
            for &i in graph.nodes[step.node].inputs.iter().flatten() {
                last_use[i] = Some(n);
            }
        }
        for &o in &graph.outputs {
            last_use[o] = Some(usize::MAX);
        }
        // Free slots keyed by the dtype they last held, so reuse rarely changes a slot's type.
        let mut free: HashMap<Option<DType>, Vec<usize>> = HashMap::new();
        let mut arena_len = 0;
        for (n, step) in steps.iter().enumerate() {
            let node = &graph.nodes[step.node];
            for &o in &step.outputs {
                if slots[o].is_some() {
                    continue;
                }
                let dt = graph.values[o].dtype;
                let s = free.get_mut(&dt).and_then(|f| f.pop()).unwrap_or_else(|| {
                    arena_len += 1;
                    arena_len - 1
                });
                slots[o] = Some(Slot::Arena(s));
            }
            let mut release = |v: ValueId| {
                if let Some(Slot::Arena(s)) = slots[v] {
                    free.entry(graph.values[v].dtype).or_default().push(s);
                }
            };
            let mut seen = Vec::new();
            for &i in node.inputs.iter().flatten() {
                if last_use[i] == Some(n) && !seen.contains(&i) {
                    seen.push(i);
                    release(i);
                }
            }
            for &o in &step.outputs {
                if last_use[o].is_none() {
                    release(o);
                }
            }
        }
        CpuPlan { graph, steps, slots, arena_len, states: Mutex::new(Vec::new()) }
    }

    /// Number of arena slots (buffers) the plan uses, against the graph's value count.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    fn new_state(&self) -> State {
        State {
            arena: (0..self.arena_len).map(|_| Tensor::placeholder()).collect(),
            scratch: vec![Vec::new(); self.steps.len()],
            outs: Vec::new(),
        }
    }

    /// Runs once, also returning each node's wall time in execution order.
    pub fn run_profiled(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<NodeTime>)> {
        let mut times = Vec::with_capacity(self.graph.nodes.len());
        let outs = self.with_state(|p, st| {
            p.exec(st, inputs, Some(&mut times))?;
            Ok::<_, Error>(p.outputs(st, inputs).map(Tensor::clone).collect())
        })?;
        Ok((outs, times))
    }

    fn with_state<R>(&self, f: impl FnOnce(&Self, &mut State) -> R) -> R {
        let mut st = self.states.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_else(|| self.new_state());
        let r = f(self, &mut st);
        self.states.lock().unwrap_or_else(|p| p.into_inner()).push(st);
        r
    }

    /// Number of steps the plan runs (graph nodes less the activations fused into producers).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// `times`, when given, receives each step's wall time (a fused activation is timed with
    /// the node it runs in, under that node's name).
    fn exec(&self, st: &mut State, inputs: &[&Tensor], mut times: Option<&mut Vec<NodeTime>>) -> Result<()> {
        let g = &*self.graph;
        let State { arena, scratch, outs } = st;
        for (n, step) in self.steps.iter().enumerate() {
            let node = &g.nodes[step.node];
            // Take the outputs out of the arena so the inputs can be borrowed alongside.
            outs.clear();
            for &o in &step.outputs {
                match self.slots[o] {
                    Some(Slot::Arena(s)) => outs.push(std::mem::replace(&mut arena[s], Tensor::placeholder())),
                    _ => outs.push(Tensor::placeholder()),
                }
            }
            let read = |i: &Option<ValueId>| {
                i.map(|v| match self.slots[v].expect("every read value has a slot") {
                    Slot::Constant(c) => g.values[c].constant.as_deref().expect("constant"),
                    Slot::Input(k) => inputs[k],
                    Slot::Arena(s) => &arena[s],
                })
            };
            let mut inline: [Option<&Tensor>; INLINE_INPUTS] = [None; INLINE_INPUTS];
            let spilled: Vec<Option<&Tensor>>;
            let ins: &[Option<&Tensor>] = if node.inputs.len() <= INLINE_INPUTS {
                for (d, i) in inline.iter_mut().zip(&node.inputs) {
                    *d = read(i);
                }
                &inline[..node.inputs.len()]
            } else {
                spilled = node.inputs.iter().map(read).collect();
                &spilled
            };
            let t0 = times.as_ref().map(|_| Instant::now());
            let res =
                super::prepack::eval(&node.op, step.act.as_ref(), step.packed.as_deref(), ins, outs, &mut scratch[n]);
            if let (Some(t), Some(t0)) = (times.as_deref_mut(), t0) {
                t.push((step.name.clone(), node.op.name(), t0.elapsed()));
            }
            for (k, &o) in step.outputs.iter().enumerate() {
                if let Some(Slot::Arena(s)) = self.slots[o] {
                    arena[s] = std::mem::replace(&mut outs[k], Tensor::placeholder());
                }
            }
            res.map_err(|message| Error::Kernel { node: node.name.clone(), op: node.op.name().to_string(), message })?;
        }
        super::kernels::threads::rest();
        Ok(())
    }

    /// The graph outputs after `exec`, in order, borrowed from where the run left them.
    fn outputs<'a>(&'a self, st: &'a State, inputs: &'a [&'a Tensor]) -> impl Iterator<Item = &'a Tensor> + 'a {
        let g = &*self.graph;
        g.outputs.iter().map(move |&o| match self.slots[o].expect("outputs have slots") {
            Slot::Constant(c) => g.values[c].constant.as_deref().expect("constant"),
            Slot::Input(k) => inputs[k],
            Slot::Arena(s) => &st.arena[s],
        })
    }
}

impl Executable for CpuPlan {
    fn run(&self, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
        self.with_state(|p, st| {
            p.exec(st, inputs, None)?;
            Ok(p.outputs(st, inputs).map(Tensor::clone).collect())
        })
    }

    fn run_into(&self, inputs: &[&Tensor], sink: &mut dyn FnMut(usize, &Tensor)) -> Result<()> {
        self.with_state(|p, st| {
            p.exec(st, inputs, None)?;
            p.outputs(st, inputs).enumerate().for_each(|(k, t)| sink(k, t));
            Ok(())
        })
    }

    fn profile(&self, inputs: &[&Tensor]) -> Result<(Vec<Tensor>, Vec<NodeTime>)> {
        self.run_profiled(inputs)
    }
}

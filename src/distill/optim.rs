//! Optimizers (SGD with momentum, AdamW), the learning-rate schedule (linear warm-up, cosine
//! decay) and gradient clipping by global norm.

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    Sgd { momentum: f32 },
    AdamW { beta1: f32, beta2: f32, eps: f32 },
}

impl std::str::FromStr for OptimizerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sgd" => Ok(OptimizerKind::Sgd { momentum: 0.9 }),
            "adamw" | "adam" => Ok(OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
            other => Err(format!("unknown optimizer '{other}' (sgd, adamw)")),
        }
    }
}

/// Optimizer with per-parameter state (two moment buffers, the second unused by SGD).
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// Updates applied so far (AdamW's bias correction).
    pub t: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, weight_decay: f32, sizes: &[usize]) -> Optimizer {
        let v = match kind {
            OptimizerKind::AdamW { .. } => sizes.iter().map(|&n| vec![0.0; n]).collect(),
            OptimizerKind::Sgd { .. } => sizes.iter().map(|_| Vec::new()).collect(),
        };
        Optimizer { kind, weight_decay, t: 0, m: sizes.iter().map(|&n| vec![0.0; n]).collect(), v }
    }

    /// Bytes of optimizer state.
    pub fn state_bytes(&self) -> usize {
        4 * (self.m.iter().map(Vec::len).sum::<usize>() + self.v.iter().map(Vec::len).sum::<usize>())
    }

    /// One update of every parameter from its gradient at learning rate `lr`.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[Vec<f32>], lr: f32) {
        self.t += 1;
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            match self.kind {
                OptimizerKind::Sgd { momentum } => {
                    let m = &mut self.m[k];
                    for ((w, &gi), mi) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                        let gi = gi + self.weight_decay * *w;
                        *mi = momentum * *mi + gi;
                        *w -= lr * *mi;
                    }
                }
                OptimizerKind::AdamW { beta1, beta2, eps } => {
                    let (bc1, bc2) = (1.0 - beta1.powi(self.t as i32), 1.0 - beta2.powi(self.t as i32));
                    let (m, v) = (&mut self.m[k], &mut self.v[k]);
                    for (((w, &gi), mi), vi) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                        *mi = beta1 * *mi + (1.0 - beta1) * gi;
                        *vi = beta2 * *vi + (1.0 - beta2) * gi * gi;
                        let update = (*mi / bc1) / ((*vi / bc2).sqrt() + eps);
                        // decoupled weight decay (AdamW)
                        *w -= lr * (update + self.weight_decay * *w);
                    }
                }
            }
        }
    }
}

/// Linear warm-up to `base` over `warmup` steps, then cosine decay to `min` at `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub base: f32,
    pub min: f32,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return self.base * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f32 / span as f32).min(1.0);
        self.min + 0.5 * (self.base - self.min) * (1.0 + (std::f32::consts::PI * progress).cos())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_global_norm(grads: &mut [Vec<f32>], max_norm: f32) -> f32 {
    let norm = grads.iter().flatten().map(|g| (*g as f64) * (*g as f64)).sum::<f64>().sqrt() as f32;
    if max_norm > 0.0 && norm > max_norm {
        let s = max_norm / norm;
        grads.iter_mut().flatten().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_first_step_moves_by_lr_against_the_gradient_sign() {
        let mut o = Optimizer::new(OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8 }, 0.0, &[2]);
        let mut w = vec![1.0f32, -1.0];
        o.step(&mut [&mut w], &[vec![0.5, -3.0]], 0.1);
        assert!((w[0] - 0.9).abs() < 1e-5 && (w[1] + 0.9).abs() < 1e-5, "{w:?}");
    }

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        let s = Schedule { base: 1.0, min: 0.1, warmup: 10, total: 110 };
        assert!((s.lr(0) - 0.1).abs() < 1e-6 && (s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-3 && (s.lr(110) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![vec![3.0, 0.0], vec![4.0]];
        assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
        assert!((g[0][0] - 0.6).abs() < 1e-6 && (g[1][0] - 0.8).abs() < 1e-6);
    }
}

//! Distillation losses on logits `[batch, classes]`, each returning the mean loss over the batch
//! and its gradient w.r.t. the logits.
//!
//! Hinton's loss: `alpha * T^2 * KL(p_T || q_T) + (1 - alpha) * CE(label, q_1)`, where `p_T` is the
//! teacher's distribution at temperature T and `q_T = softmax(z / T)` the student's. With a top-k
//! cache the teacher's dropped classes form one *tail* bucket of known mass, and the KL is taken
//! over the k kept classes plus that bucket: exact for what the cache knows, no renormalisation.

/// The teacher's soft target for one sample at the training temperature.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftTarget {
    /// Classes kept (all classes when dense).
    pub indices: Vec<u32>,
    /// Teacher probabilities of those classes at temperature T.
    pub probs: Vec<f32>,
    /// Probability mass of every class not in `indices` (0 when dense).
    pub tail: f32,
}

impl SoftTarget {
    /// A dense target from full teacher logits at temperature `t`.
    pub fn from_logits(logits: &[f32], t: f32) -> SoftTarget {
        let probs = softmax(logits, t);
        SoftTarget { indices: (0..logits.len() as u32).collect(), probs, tail: 0.0 }
    }
}

/// Loss settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KdConfig {
    pub temperature: f32,
    /// Weight of the distillation term; `1 - alpha` goes to the hard-label cross-entropy.
    pub alpha: f32,
}

/// Loss value, its parts (means over the batch), and d loss / d logits.
#[derive(Clone, Debug)]
pub struct LossOut {
    pub loss: f32,
    pub kd: f32,
    pub ce: f32,
    pub grad: Vec<f32>,
}

/// Numerically stable softmax of `z / t`.
pub fn softmax(z: &[f32], t: f32) -> Vec<f32> {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = z.iter().map(|&v| (((v - m) / t) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| (v / s) as f32).collect()
}

/// Hinton's loss. Samples without a label (None) contribute only the KD term; samples without
/// a target (None) only the CE term, weighted as if alpha were 0 for them.
pub fn kd_loss(
    z: &[f32],
    classes: usize,
    targets: &[Option<&SoftTarget>],
    labels: &[Option<i64>],
    cfg: KdConfig,
) -> Result<LossOut, String> {
    let batch = z.len() / classes.max(1);
    if batch * classes != z.len() || targets.len() != batch || labels.len() != batch {
        return Err(format!(
            "loss: {} logits, {} targets, {} labels for {classes} classes",
            z.len(),
            targets.len(),
            labels.len()
        ));
    }
    let t = cfg.temperature;
    let mut grad = vec![0f32; z.len()];
    let (mut kd_sum, mut ce_sum) = (0f64, 0f64);
    for b in 0..batch {
        let zb = &z[b * classes..(b + 1) * classes];
        let gb = &mut grad[b * classes..(b + 1) * classes];
        let (alpha, target) = match targets[b] {
            Some(tg) => (cfg.alpha, Some(tg)),
            None => (0.0, None),
        };
        let label = labels[b];
        let alpha = if label.is_none() {
            if target.is_some() {
                1.0
            } else {
                0.0
            }
        } else {
            alpha
        };
        if let Some(tg) = target.filter(|_| alpha > 0.0) {
            let (kl, g) = sparse_kl(zb, tg, t)?;
            kd_sum += kl as f64;
            // d(T^2 KL)/dz = T^2 * (q - p~)/T = T (q - p~)
            for (o, v) in gb.iter_mut().zip(g) {
                *o += alpha * t * v;
            }
        }
        if let Some(y) = label.filter(|_| alpha < 1.0) {
            let y = usize::try_from(y)
                .ok()
                .filter(|&y| y < classes)
                .ok_or_else(|| format!("label {y} outside 0..{classes}"))?;
            let q = softmax(zb, 1.0);
            ce_sum += -(q[y].max(1e-30) as f64).ln();
            for (j, o) in gb.iter_mut().enumerate() {
                *o += (1.0 - alpha) * (q[j] - (j == y) as u8 as f32);
            }
        }
    }
    let n = batch as f32;
    grad.iter_mut().for_each(|g| *g /= n);
    let (kd, ce) = ((kd_sum / batch as f64) as f32, (ce_sum / batch as f64) as f32);
    Ok(LossOut { loss: cfg.alpha * t * t * kd + (1.0 - cfg.alpha) * ce, kd, ce, grad })
}

/// KL(p || q_T) over the target's kept classes plus the tail bucket, and dKL/dz = (q - p~) / T
/// where p~ spreads the tail mass over the dropped classes in proportion to q.
fn sparse_kl(z: &[f32], tg: &SoftTarget, t: f32) -> Result<(f32, Vec<f32>), String> {
    let c = z.len();
    let q = softmax(z, t);
    let mut in_top = vec![false; c];
    let mut p_tilde = vec![0f32; c];
    let mut kl = 0f64;
    for (&i, &p) in tg.indices.iter().zip(&tg.probs) {
        let i = i as usize;
        if i >= c {
            return Err(format!("soft target class {i} outside 0..{c}"));
        }
        in_top[i] = true;
        p_tilde[i] = p;
        if p > 0.0 {
            kl += p as f64 * ((p as f64).ln() - (q[i].max(1e-30) as f64).ln());
        }
    }
    let q_tail: f64 = (0..c).filter(|&j| !in_top[j]).map(|j| q[j] as f64).sum();
    if tg.tail > 0.0 && q_tail > 0.0 {
        kl += tg.tail as f64 * ((tg.tail as f64).ln() - q_tail.max(1e-30).ln());
        for j in (0..c).filter(|&j| !in_top[j]) {
            p_tilde[j] = (tg.tail as f64 * q[j] as f64 / q_tail) as f32;
        }
    }
    let g = q.iter().zip(&p_tilde).map(|(&qj, &pj)| (qj - pj) / t).collect();
    Ok((kl as f32, g))
}

/// Mean squared error against dense teacher outputs (embeddings, regression heads).
pub fn mse(z: &[f32], target: &[f32]) -> LossOut {
    let n = z.len().max(1) as f32;
    let loss = z.iter().zip(target).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / n;
    let grad = z.iter().zip(target).map(|(a, b)| 2.0 * (a - b) / n).collect();
    LossOut { loss, kd: loss, ce: 0.0, grad }
}

/// Mean over samples of `1 - cos(z_b, t_b)`.
pub fn cosine(z: &[f32], target: &[f32], dim: usize) -> LossOut {
    let batch = z.len() / dim.max(1);
    let mut grad = vec![0f32; z.len()];
    let mut loss = 0f32;
    for b in 0..batch {
        let (zb, tb) = (&z[b * dim..(b + 1) * dim], &target[b * dim..(b + 1) * dim]);
        let dot: f32 = zb.iter().zip(tb).map(|(a, b)| a * b).sum();
        let nz = zb.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        let nt = tb.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        let cos = dot / (nz * nt);
        loss += 1.0 - cos;
        for j in 0..dim {
            // d cos / dz_j = t_j/(|z||t|) - cos * z_j/|z|^2
            grad[b * dim + j] = -(tb[j] / (nz * nt) - cos * zb[j] / (nz * nz)) / batch as f32;
        }
    }
    LossOut { loss: loss / batch.max(1) as f32, kd: loss / batch.max(1) as f32, ce: 0.0, grad }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(f: impl Fn(&[f32]) -> f32, z: &[f32]) -> Vec<f32> {
        (0..z.len())
            .map(|i| {
                let (mut a, mut b) = (z.to_vec(), z.to_vec());
                a[i] += 1e-3;
                b[i] -= 1e-3;
                (f(&a) - f(&b)) / 2e-3
            })
            .collect()
    }

    #[test]
    fn hinton_gradient_matches_finite_differences_dense_and_sparse() {
        let z = [0.3f32, -1.2, 2.0, 0.1, 0.7, -0.4];
        let teacher = [1.0f32, 0.5, 3.0, -2.0, 0.0, 0.2];
        let dense = SoftTarget::from_logits(&teacher, 2.0);
        // top-3 of the same teacher, tail mass exact
        let mut order: Vec<usize> = (0..6).collect();
        order.sort_by(|&a, &b| dense.probs[b].total_cmp(&dense.probs[a]));
        let sparse = SoftTarget {
            indices: order[..3].iter().map(|&i| i as u32).collect(),
            probs: order[..3].iter().map(|&i| dense.probs[i]).collect(),
            tail: order[3..].iter().map(|&i| dense.probs[i]).sum(),
        };
        for tg in [&dense, &sparse] {
            for alpha in [1.0, 0.7, 0.0] {
                let cfg = KdConfig { temperature: 2.0, alpha };
                let f = |z: &[f32]| kd_loss(z, 6, &[Some(tg)], &[Some(2)], cfg).unwrap().loss;
                let g = kd_loss(&z, 6, &[Some(tg)], &[Some(2)], cfg).unwrap().grad;
                for (a, n) in g.iter().zip(numeric(f, &z)) {
                    assert!((a - n).abs() < 2e-3, "alpha {alpha}: {a} vs {n}");
                }
            }
        }
    }

    #[test]
    fn kl_is_zero_when_student_equals_teacher() {
        let z = [0.5f32, 1.5, -0.5];
        let tg = SoftTarget::from_logits(&z, 4.0);
        let out = kd_loss(&z, 3, &[Some(&tg)], &[None], KdConfig { temperature: 4.0, alpha: 1.0 }).unwrap();
        assert!(out.kd.abs() < 1e-6 && out.grad.iter().all(|g| g.abs() < 1e-6));
    }
}

//! Evaluation metrics of a classifier's logits: accuracy, agreement and KL divergence to a
//! teacher, expected calibration error.

use crate::data::DataSource;
use crate::distill::loss::softmax;
use crate::{Error, Result, Session};

/// Metrics over a data set (percentages as fractions in 0..1).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub samples: usize,
    pub accuracy: Option<f64>,
    pub teacher_agreement: Option<f64>,
    /// Mean KL(teacher || model) at T = 1, in nats.
    pub kl_to_teacher: Option<f64>,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: Option<f64>,
}

fn argmax(r: &[f32]) -> usize {
    r.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
}

/// `logits` and `teacher` are row-major `[n, classes]`.
pub fn evaluate(logits: &[f32], classes: usize, labels: Option<&[i64]>, teacher: Option<&[f32]>) -> Metrics {
    let n = logits.len() / classes.max(1);
    let rows = || logits.chunks(classes);
    let pred: Vec<usize> = rows().map(argmax).collect();
    let accuracy =
        labels.map(|y| pred.iter().zip(y).filter(|(p, y)| **p as i64 == **y).count() as f64 / n.max(1) as f64);
    let (teacher_agreement, kl_to_teacher) = match teacher {
        None => (None, None),
        Some(t) => {
            let agree = t.chunks(classes).zip(&pred).filter(|(r, p)| argmax(r) == **p).count() as f64 / n.max(1) as f64;
            let kl: f64 = t
                .chunks(classes)
                .zip(rows())
                .map(|(tr, sr)| {
                    let (p, q) = (softmax(tr, 1.0), softmax(sr, 1.0));
                    p.iter()
                        .zip(&q)
                        .filter(|(p, _)| **p > 0.0)
                        .map(|(&p, &q)| p as f64 * ((p as f64).ln() - (q.max(1e-30) as f64).ln()))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / n.max(1) as f64;
            (Some(agree), Some(kl))
        }
    };
    let ece = labels.map(|y| {
        const BINS: usize = 15;
        let mut conf = [0f64; BINS];
        let mut acc = [0f64; BINS];
        let mut cnt = [0usize; BINS];
        for ((r, p), y) in rows().zip(&pred).zip(y) {
            let c = softmax(r, 1.0)[*p] as f64;
            let b = ((c * BINS as f64) as usize).min(BINS - 1);
            conf[b] += c;
            acc[b] += (*p as i64 == *y) as u8 as f64;
            cnt[b] += 1;
        }
        (0..BINS).filter(|&b| cnt[b] > 0).map(|b| (acc[b] - conf[b]).abs()).sum::<f64>() / n.max(1) as f64
    });
    Metrics { samples: n, accuracy, teacher_agreement, kl_to_teacher, ece }
}

/// Runs a one-input model over every sample of `src` in batches of `batch`; returns its first
/// output as row-major `[n, classes]` f32 logits and the class count.
pub fn predict(session: &Session, src: &DataSource, batch: usize) -> Result<(Vec<f32>, usize)> {
    let g = session.graph();
    let [input] = g.inputs[..] else {
        return Err(Error::input("model", format!("has {} inputs, evaluation needs exactly one", g.inputs.len())));
    };
    let name = g.value(input).name.clone();
    let (mut logits, mut classes) = (Vec::new(), 0);
    for b in src.batches(batch.max(1)) {
        let b = b?;
        let out = session.run_refs(&[(name.as_str(), &b.x)])?;
        let z = &out.0.first().ok_or_else(|| Error::input("model", "has no output"))?.1;
        let n = b.x.shape()[0];
        let z = z.to_f64_vec();
        if n == 0 || z.len() % n != 0 {
            return Err(Error::input("model", format!("output of {} values for {n} samples", z.len())));
        }
        classes = z.len() / n;
        logits.extend(z.iter().map(|&v| v as f32));
    }
    Ok((logits, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_a_known_case() {
        // two samples, 3 classes; first right and confident, second wrong
        let z = [5.0, 0.0, 0.0, 0.0, 3.0, 0.0];
        let m = evaluate(&z, 3, Some(&[0, 0]), Some(&z));
        assert_eq!(m.accuracy, Some(0.5));
        assert_eq!(m.teacher_agreement, Some(1.0));
        assert!(m.kl_to_teacher.unwrap().abs() < 1e-9);
        // confidences: c1 = e^5/(e^5+2) ~ 0.9867 (right), c2 = e^3/(e^3+2) ~ 0.9094 (wrong)
        let c1 = (5f64).exp() / ((5f64).exp() + 2.0);
        let c2 = (3f64).exp() / ((3f64).exp() + 2.0);
        let want = ((1.0 - c1) + c2) / 2.0;
        assert!((m.ece.unwrap() - want).abs() < 1e-6, "{:?} vs {want}", m.ece);
    }
}

//! Broadcast iteration shared by the elementwise kernels.

use crate::tensor::{broadcast_shapes, strides, Dims};

/// Strides of `shape` seen through the broadcast `out` shape (0 along broadcast axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Dims {
    let s = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { s[i - off] }).collect()
}

/// Output shape of broadcasting all `shapes` together.
pub fn broadcast_all(shapes: &[&[usize]]) -> Result<Dims, String> {
    let mut out = Dims::new();
    for s in shapes {
        out = broadcast_shapes(&out, s).ok_or_else(|| format!("shapes {:?} do not broadcast", shapes))?;
    }
    Ok(out)
}

/// For every output element in row-major order, calls `f(out_idx, offsets)` where `offsets[k]`
/// is the element offset of input k. Innermost axis in a tight loop.
pub fn for_each_offsets<const K: usize>(
    out: &[usize],
    in_strides: [&[usize]; K],
    mut f: impl FnMut(usize, [usize; K]),
) {
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    if out.is_empty() {
        f(0, [0; K]);
        return;
    }
    let rank = out.len();
    let inner = out[rank - 1];
    let inner_strides: [usize; K] = std::array::from_fn(|k| in_strides[k][rank - 1]);
    let mut idx: Dims = smallvec::smallvec![0; rank];
    let mut base = [0usize; K];
    let mut o = 0;
    while o < n {
        for j in 0..inner {
            f(o + j, std::array::from_fn(|k| base[k] + j * inner_strides[k]));
        }
        o += inner;
        // advance the outer multi-index
        let mut ax = rank - 1;
        loop {
            if ax == 0 {
                return;
            }
            ax -= 1;
            idx[ax] += 1;
            for k in 0..K {
                base[k] += in_strides[k][ax];
            }
            if idx[ax] < out[ax] {
                break;
            }
            for k in 0..K {
                base[k] -= in_strides[k][ax] * out[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// `out[i] = f(a[ia], b[ib])` with ONNX broadcasting; fast paths for equal shapes and scalars.
pub fn binary<A: Copy, B: Copy, O>(
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    out: &mut [O],
    osh: &[usize],
    f: impl Fn(A, B) -> O,
) {
    if ash == bsh {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    } else if b.len() == 1 && ash == osh {
        let y = b[0];
        for (o, &x) in out.iter_mut().zip(a) {
            *o = f(x, y);
        }
    } else if a.len() == 1 && bsh == osh {
        let x = a[0];
        for (o, &y) in out.iter_mut().zip(b) {
            *o = f(x, y);
        }
    } else {
        let sa = broadcast_strides(ash, osh);
        let sb = broadcast_strides(bsh, osh);
        // One operand constant over the trailing dims the other runs through contiguously (a
        // per-channel scale [N,C,1,1] against [N,C,H,W]): a tight loop per outer element.
        let (ka, kb) = (scalar_suffix(&sa, &sb, osh), scalar_suffix(&sb, &sa, osh));
        let k = ka.min(kb);
        let inner: usize = osh[k..].iter().product();
        if k < osh.len() && inner >= 8 {
            let outer = &osh[..k];
            let (pa, pb) = (&sa[..k], &sb[..k]);
            if ka <= kb {
                // b is constant across each run of `inner` elements of a.
                for_each_offsets(outer, [pa, pb], |i, [ia, ib]| {
                    let (y, run) = (b[ib], &a[ia..ia + inner]);
                    for (o, &x) in out[i * inner..][..inner].iter_mut().zip(run) {
                        *o = f(x, y);
                    }
                });
            } else {
                for_each_offsets(outer, [pa, pb], |i, [ia, ib]| {
                    let (x, run) = (a[ia], &b[ib..ib + inner]);
                    for (o, &y) in out[i * inner..][..inner].iter_mut().zip(run) {
                        *o = f(x, y);
                    }
                });
            }
            return;
        }
        for_each_offsets(osh, [&sa, &sb], |i, [ia, ib]| out[i] = f(a[ia], b[ib]));
    }
}

/// First dim `k` from which `full` (broadcast strides of one operand) is the contiguous
/// row-major layout of `osh[k..]` and `bcast` (the other's) is all zeros, i.e. the second
/// operand is one value across each contiguous run of the first. `osh.len()` if none.
fn scalar_suffix(full: &[usize], bcast: &[usize], osh: &[usize]) -> usize {
    let mut k = osh.len();
    let mut run = 1;
    while k > 0 && bcast[k - 1] == 0 && (full[k - 1] == run || osh[k - 1] == 1) {
        k -= 1;
        run *= osh[k];
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run-wise fast path against the per-element path, for both operand orders.
    #[test]
    fn per_channel_runs_match_elementwise() {
        let cases: [(&[usize], &[usize]); 5] = [
            (&[2, 3, 4, 5], &[2, 3, 1, 1]),
            (&[2, 3, 4, 5], &[1, 3, 1, 1]),
            (&[2, 3, 4, 5], &[3, 1, 1]),
            (&[3, 16], &[3, 1]),
            (&[2, 1, 4, 4], &[2, 3, 1, 1]),
        ];
        for (x, y) in cases {
            for (ash, bsh) in [(x, y), (y, x)] {
                let osh = broadcast_all(&[ash, bsh]).unwrap();
                let a: Vec<f32> = (0..ash.iter().product()).map(|i| i as f32).collect();
                let b: Vec<f32> = (0..bsh.iter().product()).map(|i| 1000.0 * (i + 1) as f32).collect();
                let n: usize = osh.iter().product();
                let mut got = vec![0.0; n];
                binary(&a, ash, &b, bsh, &mut got, &osh, |x, y| x - y);
                let (sa, sb) = (broadcast_strides(ash, &osh), broadcast_strides(bsh, &osh));
                let mut want = vec![0.0; n];
                for_each_offsets(&osh, [&sa, &sb], |i, [ia, ib]| want[i] = a[ia] - b[ib]);
                assert_eq!(got, want, "{ash:?} - {bsh:?}");
            }
        }
    }
}

//! Broadcast iteration shared by the elementwise kernels.

use crate::tensor::{broadcast_shapes, strides};

/// Strides of `shape` seen through the broadcast `out` shape (0 along broadcast axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(shape);
    let off = out.len() - shape.len();
    (0..out.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { s[i - off] }).collect()
}

/// Output shape of broadcasting all `shapes` together.
pub fn broadcast_all(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let mut out: Vec<usize> = Vec::new();
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
    let mut idx = vec![0usize; rank];
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
        for_each_offsets(osh, [&sa, &sb], |i, [ia, ib]| out[i] = f(a[ia], b[ib]));
    }
}

//! Window geometry shared by Conv, ConvTranspose and the pools: resolves defaults, auto_pad and
//! ceil_mode into explicit pads and output sizes, and embeds 1-D/2-D/3-D windows into 3-D so one
//! set of loops serves every rank. Also the dtype bridge that runs f32 kernels on other types.

use super::KResult;
use crate::ir::{AutoPad, Window};
use crate::tensor::{DType, Dims, Tensor};

/// Output extent and (begin, end) pads of one spatial dim of a Conv/pool window.
#[allow(clippy::too_many_arguments)]
pub fn out_dim(
    auto_pad: AutoPad,
    input: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
    ceil_mode: bool,
) -> Result<(usize, usize, usize), String> {
    if s == 0 || d == 0 || k == 0 {
        return Err(format!("kernel {k}, stride {s} and dilation {d} must be positive"));
    }
    let dk = (k - 1) * d + 1;
    match auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => {
            let out = input.div_ceil(s);
            let total = ((out.max(1) - 1) * s + dk).saturating_sub(input);
            let small = total / 2;
            let big = total - small;
            Ok(if auto_pad == AutoPad::SameUpper { (out, small, big) } else { (out, big, small) })
        }
        AutoPad::Valid => {
            if input < dk {
                return Err(format!("window of extent {dk} exceeds the input extent {input}"));
            }
            Ok(((input - dk) / s + 1, 0, 0))
        }
        AutoPad::NotSet => {
            let padded = input + pb + pe;
            if padded < dk {
                return Err(format!("window of extent {dk} exceeds the padded input extent {padded}"));
            }
            let mut out = if ceil_mode { (padded - dk).div_ceil(s) + 1 } else { (padded - dk) / s + 1 };
            // A last window starting in the end padding is dropped (ONNX/PyTorch ceil_mode rule).
            if ceil_mode && (out - 1) * s >= input + pb {
                out -= 1;
            }
            Ok((out, pb, pe))
        }
    }
}

/// Fully resolved geometry, embedded in 3-D (leading dims of extent 1 for 1-D and 2-D).
#[derive(Clone, Debug)]
pub struct Geom {
    pub input: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub dilation: [usize; 3],
    pub pad: [usize; 3],
    /// End pads (count_include_pad needs them).
    pub pad_end: [usize; 3],
    pub out: [usize; 3],
    /// Output spatial dims at the real rank (inline: kernels resolve a geometry every run).
    pub out_dims: Dims,
}

impl Geom {
    pub fn in_size(&self) -> usize {
        self.input.iter().product()
    }
    pub fn out_size(&self) -> usize {
        self.out.iter().product()
    }
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }
}

/// Attribute vector `v` for `n` dims, `default` when absent.
fn per_dim(v: &[usize], n: usize, default: usize, what: &str) -> Result<Dims, String> {
    if v.is_empty() {
        Ok(smallvec::smallvec![default; n])
    } else if v.len() == n {
        Ok(Dims::from_slice(v))
    } else {
        Err(format!("{what} has {} values for {n} spatial dims", v.len()))
    }
}

/// Places `v` at the end of a 3-array filled with `fill`.
pub fn embed3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut a = [fill; 3];
    a[3 - v.len()..].copy_from_slice(v);
    a
}

/// Resolves `w` for input spatial dims `input` and kernel extents `kernel`.
pub fn resolve(w: &Window, input: &[usize], kernel: &[usize]) -> Result<Geom, String> {
    let n = input.len();
    if n == 0 || n > 3 {
        return Err(format!("{n} spatial dims: 1 to 3 are supported"));
    }
    if kernel.len() != n {
        return Err(format!("kernel has {} dims for {n} spatial dims", kernel.len()));
    }
    let strides = per_dim(&w.strides, n, 1, "strides")?;
    let dil = per_dim(&w.dilations, n, 1, "dilations")?;
    let pads = per_dim(&w.pads, 2 * n, 0, "pads")?;
    let mut out: Dims = smallvec::smallvec![0; n];
    let (mut pb, mut pe) = ([0; 3], [0; 3]);
    for i in 0..n {
        let (o, b, e) =
            out_dim(w.auto_pad, input[i], kernel[i], strides[i], dil[i], pads[i], pads[n + i], w.ceil_mode)?;
        out[i] = o;
        pb[i] = b;
        pe[i] = e;
    }
    Ok(Geom {
        input: embed3(input, 1),
        kernel: embed3(kernel, 1),
        stride: embed3(&strides, 1),
        dilation: embed3(&dil, 1),
        pad: embed3(&pb[..n], 0),
        pad_end: embed3(&pe[..n], 0),
        out: embed3(&out, 1),
        out_dims: out,
    })
}

/// Runs an f32 kernel on inputs of another float or integer type: converts the present inputs
/// to f32, runs `f`, and casts outputs back to the dtype of input 0 (outputs listed in `keep`
/// keep the type the kernel wrote, e.g. MaxPool's i64 indices).
pub fn via_f32(
    inputs: &[Option<&Tensor>],
    outputs: &mut [Tensor],
    scratch: &mut Vec<f32>,
    keep: &[usize],
    f: impl Fn(&[Option<&Tensor>], &mut [Tensor], &mut Vec<f32>) -> KResult,
) -> KResult {
    let dt = super::req(inputs, 0)?.dtype();
    if dt == DType::F32 {
        return f(inputs, outputs, scratch);
    }
    if dt == DType::Bool {
        return Err("bool inputs are not supported".into());
    }
    let mut conv = Vec::with_capacity(inputs.len());
    for t in inputs {
        conv.push(match t {
            Some(t) if t.dtype() != DType::F32 => {
                let mut c = Tensor::empty(DType::F32);
                super::elementwise::cast(t, DType::F32, &mut c)?;
                Some(c)
            }
            Some(t) => Some((*t).clone()),
            None => None,
        });
    }
    let refs: Vec<Option<&Tensor>> = conv.iter().map(|t| t.as_ref()).collect();
    let mut tmp: Vec<Tensor> = (0..outputs.len()).map(|_| Tensor::empty(DType::F32)).collect();
    f(&refs, &mut tmp, scratch)?;
    for (k, (t, o)) in tmp.iter().zip(outputs.iter_mut()).enumerate() {
        if keep.contains(&k) {
            o.assign(t);
        } else {
            super::elementwise::cast(t, dt, o)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_ceil() {
        assert_eq!(out_dim(AutoPad::SameUpper, 5, 3, 2, 1, 0, 0, false).unwrap(), (3, 1, 1));
        assert_eq!(out_dim(AutoPad::SameLower, 4, 3, 2, 1, 0, 0, false).unwrap(), (2, 1, 0));
        assert_eq!(out_dim(AutoPad::NotSet, 4, 3, 2, 1, 0, 0, true).unwrap(), (2, 0, 0));
        // The window that would start in the end padding is dropped.
        assert_eq!(out_dim(AutoPad::NotSet, 3, 2, 2, 1, 0, 1, true).unwrap(), (2, 0, 1));
        assert_eq!(out_dim(AutoPad::NotSet, 2, 1, 2, 1, 0, 1, true).unwrap(), (1, 0, 1));
    }
}

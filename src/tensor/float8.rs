//! The four ONNX 8-bit float formats (FLOAT8E4M3FN, FLOAT8E4M3FNUZ, FLOAT8E5M2, FLOAT8E5M2FNUZ)
//! as storage types: bytes that Cast converts to and from; no kernel computes in them.
//!
//! Conversion from wider floats rounds to nearest, ties to even. Out of range values become
//! the largest finite value of the sign when saturating (Cast's default), else infinity (E5M2)
//! or NaN (the formats without infinities), as the ONNX Cast specification tables say.

/// Layout of one format.
struct Format {
    mantissa: u32,
    bias: i32,
    /// FNUZ: no negative zero or infinities; 0x80 is the only NaN.
    fnuz: bool,
    /// IEEE-style infinities and NaNs in the top exponent (E5M2 only).
    ieee: bool,
    /// Largest finite code with the sign bit clear.
    max_code: u8,
}

const E4M3FN: Format = Format { mantissa: 3, bias: 7, fnuz: false, ieee: false, max_code: 0x7E };
const E4M3FNUZ: Format = Format { mantissa: 3, bias: 8, fnuz: true, ieee: false, max_code: 0x7F };
const E5M2: Format = Format { mantissa: 2, bias: 15, fnuz: false, ieee: true, max_code: 0x7B };
const E5M2FNUZ: Format = Format { mantissa: 2, bias: 16, fnuz: true, ieee: false, max_code: 0x7F };

impl Format {
    fn nan(&self, negative: bool) -> u8 {
        match (self.fnuz, self.ieee) {
            (true, _) => 0x80,
            (false, true) => 0x7E | ((negative as u8) << 7),
            (false, false) => 0x7F | ((negative as u8) << 7),
        }
    }

    fn decode(&self, b: u8) -> f64 {
        let negative = b & 0x80 != 0;
        let exp_bits = 7 - self.mantissa;
        let e = ((b & 0x7F) >> self.mantissa) as i32;
        let m = (b & ((1 << self.mantissa) - 1)) as f64;
        let top = (1 << exp_bits) - 1;
        if self.fnuz && b == 0x80 {
            return f64::NAN;
        }
        if !self.fnuz && !self.ieee && b & 0x7F == 0x7F {
            return f64::NAN;
        }
        if self.ieee && e == top {
            return if m == 0.0 {
                if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }
            } else {
                f64::NAN
            };
        }
        let scale = (1u64 << self.mantissa) as f64;
        let v =
            if e == 0 { m / scale * 2f64.powi(1 - self.bias) } else { (1.0 + m / scale) * 2f64.powi(e - self.bias) };
        if negative {
            -v
        } else {
            v
        }
    }

    fn encode(&self, x: f64, saturate: bool) -> u8 {
        let negative = x.is_sign_negative();
        let sign = (negative as u8) << 7;
        if x.is_nan() {
            return self.nan(negative);
        }
        let overflow = || {
            if saturate {
                self.max_code | sign
            } else if self.ieee {
                0x7C | sign
            } else {
                self.nan(negative)
            }
        };
        let a = x.abs();
        if a.is_infinite() {
            return overflow();
        }
        // Positive codes 0..=max_code decode in increasing order: find the last one <= a.
        let (mut lo, mut hi) = (0u8, self.max_code);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.decode(mid) <= a {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let below = self.decode(lo);
        let code = if below == a {
            lo
        } else {
            // Distance to the next code up; past the largest, the step continues the last one.
            let step_up = if lo < self.max_code { self.decode(lo + 1) - below } else { below - self.decode(lo - 1) };
            let d = a - below;
            let up = d > step_up / 2.0 || (d == step_up / 2.0 && lo & 1 == 1);
            if !up {
                lo
            } else if lo < self.max_code {
                lo + 1
            } else {
                return overflow();
            }
        };
        if code == 0 && self.fnuz {
            0
        } else {
            code | sign
        }
    }
}

macro_rules! float8 {
    ($(#[$doc:meta])* $name:ident, $fmt:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(pub u8);

        impl $name {
            pub fn to_f64(self) -> f64 {
                $fmt.decode(self.0)
            }
            pub fn to_f32(self) -> f32 {
                self.to_f64() as f32
            }
            /// Rounds to nearest even; `saturate` clamps out of range values to the largest finite.
            pub fn from_f64(x: f64, saturate: bool) -> Self {
                $name($fmt.encode(x, saturate))
            }
            pub fn to_bits(self) -> u8 {
                self.0
            }
            pub fn from_bits(b: u8) -> Self {
                $name(b)
            }
        }
    };
}

float8!(
    /// FLOAT8E4M3FN: 4 exponent bits (bias 7), 3 mantissa bits, NaN but no infinities.
    F8E4M3FN,
    E4M3FN
);
float8!(
    /// FLOAT8E4M3FNUZ: bias 8, no negative zero or infinities, 0x80 is NaN.
    F8E4M3FNUZ,
    E4M3FNUZ
);
float8!(
    /// FLOAT8E5M2: 5 exponent bits (bias 15), 2 mantissa bits, IEEE-style infinities and NaNs.
    F8E5M2,
    E5M2
);
float8!(
    /// FLOAT8E5M2FNUZ: bias 16, no negative zero or infinities, 0x80 is NaN.
    F8E5M2FNUZ,
    E5M2FNUZ
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_and_limits() {
        assert_eq!(F8E4M3FN(0x7E).to_f64(), 448.0);
        assert_eq!(F8E4M3FNUZ(0x7F).to_f64(), 240.0);
        assert_eq!(F8E5M2(0x7B).to_f64(), 57344.0);
        assert_eq!(F8E5M2FNUZ(0x7F).to_f64(), 57344.0);
        assert_eq!(F8E4M3FN(0x01).to_f64(), 2f64.powi(-9));
        assert_eq!(F8E4M3FN::from_f64(1.0, true).0, 0x38);
        assert_eq!(F8E4M3FN::from_f64(-2.0, true).0, 0xC0);
        assert_eq!(F8E4M3FN::from_f64(1000.0, true).0, 0x7E);
        assert!(F8E4M3FN::from_f64(1000.0, false).to_f64().is_nan());
        assert_eq!(F8E5M2::from_f64(1e6, false).to_f64(), f64::INFINITY);
        assert_eq!(F8E5M2::from_f64(f64::NEG_INFINITY, true).to_f64(), -57344.0);
        assert_eq!(F8E4M3FNUZ::from_f64(-0.0, true).0, 0);
        assert!(F8E5M2FNUZ::from_f64(f64::NAN, true).to_f64().is_nan());
        // 1 + 1/16 is halfway between 1 and 1.125 in E4M3: ties to the even code, 1.
        assert_eq!(F8E4M3FN::from_f64(1.0625, true).to_f64(), 1.0);
        assert_eq!(F8E4M3FN::from_f64(1.1875, true).to_f64(), 1.25);
        // 464 is halfway between 448 and the (absent) 480: rounds down to even 448.
        assert_eq!(F8E4M3FN::from_f64(464.0, false).to_f64(), 448.0);
    }

    #[test]
    fn every_finite_code_round_trips() {
        for b in 0..=255u8 {
            for (v, back) in [
                (F8E4M3FN(b).to_f64(), F8E4M3FN::from_f64(F8E4M3FN(b).to_f64(), false).0),
                (F8E4M3FNUZ(b).to_f64(), F8E4M3FNUZ::from_f64(F8E4M3FNUZ(b).to_f64(), false).0),
                (F8E5M2(b).to_f64(), F8E5M2::from_f64(F8E5M2(b).to_f64(), false).0),
                (F8E5M2FNUZ(b).to_f64(), F8E5M2FNUZ::from_f64(F8E5M2FNUZ(b).to_f64(), false).0),
            ] {
                if v.is_finite() && !(v == 0.0 && b == 0x80) {
                    assert_eq!(back, b, "code {b:#x} = {v}");
                }
            }
        }
    }
}

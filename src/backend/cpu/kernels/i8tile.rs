//! Register-tiled int8 x int8 -> i32 GEMM (the w8a8 QGemm / QConv of `qgemm_i8.rs`).
//!
//! `C[r, j] = sum_k A[r, k] * B[k, j]`, exact in i32. Both sides go in groups of 4 consecutive
//! k (zero padded to a multiple of 4): A is read one group (4 bytes, one i32) per row and
//! broadcast to all lanes; B comes from a packed panel holding, per group, `NR` columns x 4
//! bytes (64 bytes: two 256-bit vectors of 8 columns x 4 k). A tile of up to `MR` rows x `NR`
//! columns (or 1 row x 4 panels, for a GEMV) stays in i32 accumulators over the whole K; there
//! is no horizontal sum per output.
//!
//! Bodies, picked once at run time:
//! - AVX-VNNI `vpdpbusd`: u8 x s8, four products summed straight into i32 (no i16 step). B is
//!   made unsigned in the register (`b ^ 0x80 = b + 128`) and each row starts from
//!   `-128 * sum_k A[r, k]` (the caller passes those row sums), so the result is exact.
//! - AVX2 `vpmaddubsw` + `vpmaddwd` with the sign trick: `|x|` (u8) times `y * sign(x)` (i8)
//!   equals `x * y`. `y * sign(x)` overflows i8 only for y = -128, so the operand negated is the
//!   one that never holds -128 (the int8 weights, in [-127, 127]); [`Operands`] says which
//!   that is. The i16 pair sums are at most 2 * 128 * 127 = 32512 < 32767: `vpmaddubsw` never
//!   saturates. Where B is known to lie in [0, 127] (patches of a ReLU output), B is already
//!   the unsigned operand and the sign steps go (3 instead of 4 ALU ops per 32 products).
//! - AVX-512 VNNI: the same `vpdpbusd` 512 bits wide, one register per row and panel (a panel's
//!   k group is 64 bytes, one load); conv tiles take two panels at once (12 accumulators).
//! - Portable: a widening i32 loop LLVM vectorizes.
//!
//! Every body accumulates in i32 (wrapping), exact while `k * 128 * 127 < 2^31`: `k <= MAX_K`.

use super::activation::InRegister;

/// Rows of a full tile.
pub const MR: usize = 6;
/// Columns of a packed B panel (and of a one-panel tile).
pub const NR: usize = 16;
/// Bytes of one k group of a B panel.
const GROUP: usize = 4 * NR;
/// Largest K the i32 accumulators hold exactly (131072 * 128 * 127 < 2^31).
pub const MAX_K: usize = 1 << 17;

/// Instruction set a tile runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Isa {
    /// The best the running CPU has (detected once).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::OnceLock;
            static ISA: OnceLock<Isa> = OnceLock::new();
            *ISA.get_or_init(|| {
                // `ALEMBIC_CPU_NO_AVX512=1` keeps the 256-bit bodies (to compare in one binary).
                let no512 = std::env::var("ALEMBIC_CPU_NO_AVX512").is_ok_and(|v| v.trim() == "1");
                if has_avx512_vnni() && !no512 {
                    Isa::Avx512Vnni
                } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avxvnni")
                {
                    Isa::AvxVnni
                } else if std::arch::is_x86_feature_detected!("avx2") {
                    Isa::Avx2
                } else {
                    Isa::Portable
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Portable
    }

    /// Every body this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avxvnni") {
                v.push(Isa::AvxVnni);
            }
            if has_avx512_vnni() {
                v.push(Isa::Avx512Vnni);
            }
        }
        v
    }
}

/// Whether the CPU runs the AVX-512 VNNI body (which also uses AVX2 for its epilogue).
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

impl Isa {
    /// Column panels a conv tile takes at once: two where 32 registers hold 6 x 2 accumulators.
    pub fn conv_panels(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => 2,
            _ => 1,
        }
    }
}

/// What the operands' values let the AVX2 body assume (the other bodies need nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operands {
    /// A never holds -128: the sign trick negates B by A's signs.
    NegA,
    /// B never holds -128.
    NegB,
    /// B lies in [0, 127] (A anything): `vpmaddubsw` takes B as its unsigned operand as it is.
    BNonNeg,
}

/// Groups of 4 k for a depth of `k`.
pub fn groups(k: usize) -> usize {
    k.div_ceil(4)
}

/// Where a tile reads A: the 4-byte group `g` of row `r` is the i32 at `ptr[r * rs + g * gs]`.
#[derive(Clone, Copy)]
pub struct AView {
    pub ptr: *const i32,
    pub rs: usize,
    pub gs: usize,
}

/// A tile's finished sums: `acc[r][j]` for row r, column j (of up to 4 panels).
pub type Acc = [[i32; 4 * NR]; MR];

/// A tile's f32 results (one or two panels), written straight from its registers:
/// `dst[r * ld + j] = act((col_scale[j] * row_scale[r]) * sum + row_bias[r])` for `j < cols`
/// (the w8a8 QConv's rescale, bias and activation, in that order). `col_scale` covers every
/// column of the tile's panels.
pub struct Dequant<'a> {
    pub col_scale: &'a [f32],
    pub row_scale: &'a [f32],
    pub row_bias: &'a [f32],
    pub act: InRegister,
    pub dst: *mut f32,
    pub ld: usize,
    pub cols: usize,
}

/// Where a tile's sums go.
enum Sink<'a> {
    Acc(&'a mut Acc),
    F32(&'a Dequant<'a>),
}

/// Packs the `k x cols` matrix `b(k, j)` (cols <= NR) as one panel at `dst` (`groups(k) * 64`
/// bytes); k past `k` and columns past `cols` are zero.
pub fn pack_panel(dst: &mut [i8], k: usize, cols: usize, b: impl Fn(usize, usize) -> i8) {
    for (g, grp) in dst.chunks_exact_mut(GROUP).take(groups(k)).enumerate() {
        for j in 0..NR {
            for u in 0..4 {
                let kk = 4 * g + u;
                grp[4 * j + u] = if j < cols && kk < k { b(kk, j) } else { 0 };
            }
        }
    }
}

/// A constant `B[K, N]` (the QGemm weight, `B(k, j) = w[j * K + k]`) in `NR`-column panels.
#[derive(Debug)]
pub struct PackedCols {
    pub k: usize,
    pub n: usize,
    data: Vec<i8>,
}

impl PackedCols {
    /// Packs the row-major `w[n, k]` (column j of B is row j of w).
    pub fn pack(w: &[i8], n: usize, k: usize) -> PackedCols {
        let ps = groups(k) * GROUP;
        let mut data = vec![0i8; n.div_ceil(NR) * ps];
        for (p, dst) in data.chunks_exact_mut(ps.max(1)).enumerate() {
            let cols = NR.min(n - p * NR);
            pack_panel(dst, k, cols, |kk, j| w[(p * NR + j) * k + kk]);
        }
        PackedCols { k, n, data }
    }

    /// Bytes from one panel to the next.
    pub fn panel_stride(&self) -> usize {
        groups(self.k) * GROUP
    }

    pub fn panel(&self, p: usize) -> *const i8 {
        self.data[p * self.panel_stride()..].as_ptr()
    }
}

/// A constant `A[M, K]` per group (the QConv weight), in `MR`-row panels: group `g` of row r of
/// panel p is `data[(panel_index * groups(K) + g) * MR + r]`; rows past M are zero. `sums`
/// holds each row's sum (what the VNNI body subtracts).
#[derive(Debug)]
pub struct PackedRows {
    pub groups: usize,
    pub m: usize,
    pub k: usize,
    data: Vec<i32>,
    sums: Vec<i32>,
}

impl PackedRows {
    /// Packs `groups` row-major `m x k` matrices stored one after another in `w`.
    pub fn pack(w: &[i8], ngroups: usize, m: usize, k: usize) -> PackedRows {
        let (panels, kg) = (m.div_ceil(MR), groups(k));
        let mut data = vec![0i32; ngroups * panels * kg * MR];
        let mut sums = vec![0i32; ngroups * panels * MR];
        for g in 0..ngroups {
            for r in 0..m {
                let row = &w[(g * m + r) * k..][..k];
                let pi = g * panels + r / MR;
                sums[pi * MR + r % MR] = row.iter().map(|&v| v as i32).sum();
                for gi in 0..kg {
                    let mut b = [0u8; 4];
                    for (u, d) in b.iter_mut().enumerate() {
                        *d = row.get(4 * gi + u).map_or(0, |&v| v as u8);
                    }
                    data[(pi * kg + gi) * MR + r % MR] = i32::from_le_bytes(b);
                }
            }
        }
        PackedRows { groups: ngroups, m, k, data, sums }
    }

    /// Panel `p` of group `g`: its A view and row sums.
    pub fn panel(&self, g: usize, p: usize) -> (AView, &[i32]) {
        let pi = g * self.m.div_ceil(MR) + p;
        let kg = groups(self.k);
        (AView { ptr: self.data[pi * kg * MR..].as_ptr(), rs: 1, gs: MR }, &self.sums[pi * MR..][..MR])
    }
}

/// `acc[r][j] = sum_k A(r, k) * B(k, j)` for `r < rows`, `j < panels * NR`, over `kg` groups of
/// 4 k; B panel q at `b + q * ps`. Shapes: 1..=MR rows with 1 panel, 1 row with 4 panels.
/// `asum[r]` must be row r's sum over k (read by the VNNI body only); `ops` must hold for A and
/// B.
///
/// # Safety
/// A must be readable at every (r, g) named, each panel must hold `kg * 64` bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    isa: Isa,
    ops: Operands,
    rows: usize,
    panels: usize,
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    asum: &[i32],
    acc: &mut Acc,
) {
    dispatch(isa, ops, rows, panels, kg, a, b, ps, asum, Sink::Acc(acc))
}

/// [`tile`] for one or two panels (`ps` bytes apart), its sums rescaled to f32 and stored as
/// `out` says, from registers.
///
/// # Safety
/// As [`tile`]; `out.dst` must be writable at `r * ld + j` for `r < rows`,
/// `j < cols <= panels * NR`, `out.col_scale` must hold `panels * NR` values and
/// `out.row_scale`, `out.row_bias` `rows` values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile_f32(
    isa: Isa,
    ops: Operands,
    rows: usize,
    panels: usize,
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    asum: &[i32],
    out: &Dequant,
) {
    debug_assert!((1..=2).contains(&panels) && out.cols <= panels * NR && out.col_scale.len() >= panels * NR);
    debug_assert!(out.row_scale.len() >= rows && out.row_bias.len() >= rows);
    dispatch(isa, ops, rows, panels, kg, a, b, ps, asum, Sink::F32(out))
}

#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(
    isa: Isa,
    ops: Operands,
    rows: usize,
    panels: usize,
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    asum: &[i32],
    sink: Sink,
) {
    macro_rules! shapes {
        ($f:ident $(, $na:expr)?) => {
            match (rows, panels) {
                (6, 1) => $f::<6, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (5, 1) => $f::<5, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (4, 1) => $f::<4, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (3, 1) => $f::<3, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (2, 1) => $f::<2, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (1, 1) => $f::<1, 1 $(, $na)?>(kg, a, b, ps, asum, sink),
                (6, 2) => $f::<6, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (5, 2) => $f::<5, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (4, 2) => $f::<4, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (3, 2) => $f::<3, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (2, 2) => $f::<2, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (1, 2) => $f::<1, 2 $(, $na)?>(kg, a, b, ps, asum, sink),
                (1, 4) => $f::<1, 4 $(, $na)?>(kg, a, b, ps, asum, sink),
                _ => unreachable!("no {rows}-row {panels}-panel int8 tile"),
            }
        };
    }
    match isa {
        Isa::Portable => shapes!(tile_portable),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => shapes!(tile_vnni),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => shapes!(tile_vnni512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => match ops {
            Operands::NegA => shapes!(tile_avx2, NEG_A),
            Operands::NegB => shapes!(tile_avx2, NEG_B),
            Operands::BNonNeg => shapes!(tile_avx2, B_NONNEG),
        },
    }
}

#[inline(always)]
unsafe fn tile_portable<const R: usize, const P: usize>(
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    _asum: &[i32],
    sink: Sink,
) {
    let mut s = [[0i32; 4 * NR]; R];
    for g in 0..kg {
        for q in 0..P {
            let bg = &*(b.add(q * ps + g * GROUP) as *const [i8; GROUP]);
            for (r, sr) in s.iter_mut().enumerate() {
                let av = (*a.ptr.add(r * a.rs + g * a.gs)).to_le_bytes().map(|x| x as i8 as i32);
                for (j, d) in sr[q * NR..][..NR].iter_mut().enumerate() {
                    let bj = &bg[4 * j..][..4];
                    *d = d.wrapping_add(
                        av[0] * bj[0] as i32 + av[1] * bj[1] as i32 + av[2] * bj[2] as i32 + av[3] * bj[3] as i32,
                    );
                }
            }
        }
    }
    match sink {
        Sink::Acc(acc) => acc[..R].copy_from_slice(&s),
        Sink::F32(d) => {
            for (r, sr) in s.iter().enumerate() {
                let dst = std::slice::from_raw_parts_mut(d.dst.add(r * d.ld), d.cols);
                for ((y, &v), &cs) in dst.iter_mut().zip(sr).zip(d.col_scale) {
                    *y = d.act.scalar(cs * d.row_scale[r] * v as f32 + d.row_bias[r]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn tile_vnni<const R: usize, const P: usize>(
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    asum: &[i32],
    sink: Sink,
) {
    use std::arch::x86_64::*;
    let flip = _mm256_set1_epi8(-128);
    let mut s = [[[_mm256_setzero_si256(); 2]; P]; R];
    for (r, sr) in s.iter_mut().enumerate() {
        // sum (b + 128) a = sum a b + 128 sum a: start from -128 sum a (wrapping; the final sum fits).
        *sr = [[_mm256_set1_epi32(asum[r].wrapping_mul(-128)); 2]; P];
    }
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..kg {
        for q in 0..P {
            let b0 = _mm256_xor_si256(_mm256_loadu_si256(bp.add(q * ps).cast()), flip);
            let b1 = _mm256_xor_si256(_mm256_loadu_si256(bp.add(q * ps + 32).cast()), flip);
            for (r, sr) in s.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*ap.add(r * a.rs));
                sr[q][0] = _mm256_dpbusd_avx_epi32(sr[q][0], b0, av);
                sr[q][1] = _mm256_dpbusd_avx_epi32(sr[q][1], b1, av);
            }
        }
        ap = ap.add(a.gs);
        bp = bp.add(GROUP);
    }
    finish(&s, sink);
}

/// [`tile_vnni`] 512 bits wide: a panel's k group (16 columns x 4 bytes) is one register, so a
/// row needs one accumulator per panel; the sums leave as the 256-bit halves [`finish`] takes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni512<const R: usize, const P: usize>(
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    asum: &[i32],
    sink: Sink,
) {
    use std::arch::x86_64::*;
    let flip = _mm512_set1_epi8(-128);
    let mut s = [[_mm512_setzero_si512(); P]; R];
    for (r, sr) in s.iter_mut().enumerate() {
        *sr = [_mm512_set1_epi32(asum[r].wrapping_mul(-128)); P];
    }
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..kg {
        // Plain loops, no closures: a closure does not inherit the target features, and its
        // intrinsics would become calls.
        let mut bq = [flip; P];
        for (q, v) in bq.iter_mut().enumerate() {
            *v = _mm512_xor_si512(_mm512_loadu_si512(bp.add(q * ps).cast()), flip);
        }
        for (r, sr) in s.iter_mut().enumerate() {
            let av = _mm512_set1_epi32(*ap.add(r * a.rs));
            for (acc, &bv) in sr.iter_mut().zip(&bq) {
                *acc = _mm512_dpbusd_epi32(*acc, bv, av);
            }
        }
        ap = ap.add(a.gs);
        bp = bp.add(GROUP);
    }
    if let Sink::F32(d) = sink {
        return store_f32_512(&s, d);
    }
    let mut halves = [[[_mm256_setzero_si256(); 2]; P]; R];
    for (hr, sr) in halves.iter_mut().zip(&s) {
        for (h, &v) in hr.iter_mut().zip(sr) {
            *h = [_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v)];
        }
    }
    finish(&halves, sink);
}

/// [`store_f32`] on 16 lanes, one (masked) store per panel: the same operations in the same
/// order. The 256-bit epilogue took as long as the 512-bit k loop on MobileNetV3's 1x1 convs.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn store_f32_512<const R: usize, const P: usize>(s: &[[std::arch::x86_64::__m512i; P]; R], d: &Dequant) {
    use std::arch::x86_64::*;
    let (mut masks, mut cs) = ([0 as __mmask16; P], [_mm512_setzero_ps(); P]);
    for q in 0..P {
        masks[q] = ((1u32 << d.cols.saturating_sub(NR * q).min(NR)) - 1) as __mmask16;
        cs[q] = _mm512_loadu_ps(d.col_scale[NR * q..][..NR].as_ptr());
    }
    for (r, sr) in s.iter().enumerate() {
        let (rs, rb) = (_mm512_set1_ps(d.row_scale[r]), _mm512_set1_ps(d.row_bias[r]));
        let dst = d.dst.add(r * d.ld);
        for q in 0..P {
            if masks[q] == 0 {
                continue;
            }
            let v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(cs[q], rs), _mm512_cvtepi32_ps(sr[q])), rb);
            _mm512_mask_storeu_ps(dst.add(q * NR), masks[q], d.act.avx512(v));
        }
    }
}

/// [`Operands`] as the AVX2 body's const parameter.
const NEG_A: u8 = 0;
const NEG_B: u8 = 1;
const B_NONNEG: u8 = 2;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize, const P: usize, const OPS: u8>(
    kg: usize,
    a: AView,
    b: *const i8,
    ps: usize,
    _asum: &[i32],
    sink: Sink,
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut s = [[[_mm256_setzero_si256(); 2]; P]; R];
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..kg {
        for q in 0..P {
            let bv = [_mm256_loadu_si256(bp.add(q * ps).cast()), _mm256_loadu_si256(bp.add(q * ps + 32).cast())];
            let babs = [_mm256_sign_epi8(bv[0], bv[0]), _mm256_sign_epi8(bv[1], bv[1])];
            for (r, sr) in s.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*ap.add(r * a.rs));
                let aabs = _mm256_sign_epi8(av, av);
                for h in 0..2 {
                    // |x| (u8) * (y * sign x) (i8) = x y, pairs to i16 (no saturation), then i32.
                    let pair = match OPS {
                        NEG_A => _mm256_maddubs_epi16(babs[h], _mm256_sign_epi8(av, bv[h])),
                        NEG_B => _mm256_maddubs_epi16(aabs, _mm256_sign_epi8(bv[h], av)),
                        _ => _mm256_maddubs_epi16(bv[h], av),
                    };
                    sr[q][h] = _mm256_add_epi32(sr[q][h], _mm256_madd_epi16(pair, ones));
                }
            }
        }
        ap = ap.add(a.gs);
        bp = bp.add(GROUP);
    }
    finish(&s, sink);
}

/// Hands a body's accumulators to its sink.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn finish<const R: usize, const P: usize>(s: &[[[std::arch::x86_64::__m256i; 2]; P]; R], sink: Sink) {
    match sink {
        Sink::Acc(acc) => spill(s, acc),
        Sink::F32(d) => store_f32(s, d),
    }
}

/// The [`Dequant`] epilogue on 8 lanes: `(col_scale * row_scale) * sum + bias`, the
/// activation, one store per vector (masked past `cols`).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_f32<const R: usize, const P: usize>(s: &[[[std::arch::x86_64::__m256i; 2]; P]; R], d: &Dequant) {
    use std::arch::x86_64::*;
    // Column block i (8 columns) of the tile: panel i / 2, half i % 2.
    let (mut lanes, mut cs) = ([[0usize; 2]; P], [[_mm256_setzero_ps(); 2]; P]);
    for q in 0..P {
        for h in 0..2 {
            lanes[q][h] = d.cols.saturating_sub(8 * (2 * q + h)).min(8);
            cs[q][h] = _mm256_loadu_ps(d.col_scale[8 * (2 * q + h)..][..8].as_ptr());
        }
    }
    for (r, sr) in s.iter().enumerate() {
        let (rs, rb) = (_mm256_set1_ps(d.row_scale[r]), _mm256_set1_ps(d.row_bias[r]));
        let dst = d.dst.add(r * d.ld);
        for q in 0..P {
            for h in 0..2 {
                let n = lanes[q][h];
                if n == 0 {
                    continue;
                }
                let v = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(cs[q][h], rs), _mm256_cvtepi32_ps(sr[q][h])), rb);
                let v = d.act.avx2(v);
                let at = dst.add(q * NR + 8 * h);
                if n == 8 {
                    _mm256_storeu_ps(at, v);
                } else {
                    _mm256_maskstore_ps(at, super::direct::first_lanes(n), v);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn spill<const R: usize, const P: usize>(s: &[[[std::arch::x86_64::__m256i; 2]; P]; R], acc: &mut Acc) {
    use std::arch::x86_64::*;
    for (sr, dst) in s.iter().zip(acc.iter_mut()) {
        for (q, v) in sr.iter().enumerate() {
            _mm256_storeu_si256(dst[q * NR..].as_mut_ptr().cast(), v[0]);
            _mm256_storeu_si256(dst[q * NR + 8..].as_mut_ptr().cast(), v[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize, seed: u32, lo: i32) -> Vec<i8> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (lo + ((s >> 9) % (128 - lo) as u32) as i32) as i8
            })
            .collect()
    }

    /// Every shape and body, both packings and both sign-trick sides, k tails, against i32 loops.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn tiles_are_exact() {
        for k in [1, 3, 4, 5, 17, 64, 131] {
            let kg = groups(k);
            // A rows as row-major groups (activations) and as a packed weight.
            let (m, n) = (MR, 4 * NR);
            let all = [Operands::NegA, Operands::NegB, Operands::BNonNeg];
            for (isa, ops) in Isa::available().into_iter().flat_map(|i| all.map(|o| (i, o))) {
                // The side that is negated never holds -128; the other reaches it.
                let (alo, blo) = match ops {
                    Operands::NegA => (-127, -128),
                    Operands::NegB => (-128, -127),
                    Operands::BNonNeg => (-128, 0),
                };
                let a = bytes(m * k, 1 + k as u32, alo);
                let bt = bytes(n * k, 2 + k as u32, blo); // B^T, row-major [n, k]
                let packed = PackedCols::pack(&bt, n, k);
                let rows_packed = PackedRows::pack(&a, 1, m, k);
                let mut arow = vec![0i32; m * kg];
                for r in 0..m {
                    for g in 0..kg {
                        let b: [u8; 4] = std::array::from_fn(|u| {
                            a.get(r * k + 4 * g + u).filter(|_| 4 * g + u < k).map_or(0, |&v| v as u8)
                        });
                        arow[r * kg + g] = i32::from_le_bytes(b);
                    }
                }
                let sums: Vec<i32> = (0..m).map(|r| a[r * k..][..k].iter().map(|&v| v as i32).sum()).collect();
                let want = |r: usize, j: usize| (0..k).map(|t| a[r * k + t] as i32 * bt[j * k + t] as i32).sum::<i32>();
                for (rows, panels) in (1..=MR).flat_map(|r| [(r, 1), (r, 2)]).chain([(1, 4)]) {
                    for packed_a in [false, true] {
                        let view = if packed_a {
                            rows_packed.panel(0, 0).0
                        } else {
                            AView { ptr: arow.as_ptr(), rs: kg, gs: 1 }
                        };
                        let mut acc = [[i32::MIN; 4 * NR]; MR];
                        // SAFETY: views and panels cover rows x kg groups and panels x kg x 64 bytes.
                        unsafe {
                            tile(
                                isa,
                                ops,
                                rows,
                                panels,
                                kg,
                                view,
                                packed.panel(0),
                                packed.panel_stride(),
                                &sums,
                                &mut acc,
                            )
                        };
                        for r in 0..rows {
                            for j in 0..panels * NR {
                                assert_eq!(acc[r][j], want(r, j), "{isa:?} {ops:?} k {k} {rows}x{panels} ({r},{j})");
                            }
                        }
                    }
                }
                assert_eq!(rows_packed.panel(0, 0).1, &sums[..]);
            }
        }
    }

    /// Extremes: -128 against +-127 everywhere (largest pair sums), long K, a partial panel.
    #[test]
    fn extremes_do_not_saturate() {
        let (k, n) = (1001, 5);
        let a: Vec<i8> = (0..k).map(|i| if i % 7 == 3 { 127 } else { -128 }).collect();
        let bt: Vec<i8> = (0..n * k).map(|i| if i % 3 == 0 { 127 } else { -127 }).collect();
        let kg = groups(k);
        let mut arow = vec![0i32; kg];
        for (g, d) in arow.iter_mut().enumerate() {
            *d = i32::from_le_bytes(std::array::from_fn(|u| a.get(4 * g + u).map_or(0, |&v| v as u8)));
        }
        let p = PackedCols::pack(&bt, n, k);
        let sum = [a.iter().map(|&v| v as i32).sum::<i32>()];
        for isa in Isa::available() {
            let mut acc = [[0; 4 * NR]; MR];
            let view = AView { ptr: arow.as_ptr(), rs: kg, gs: 1 };
            // SAFETY: one row of kg groups, one panel of kg * 64 bytes.
            unsafe { tile(isa, Operands::NegB, 1, 1, kg, view, p.panel(0), p.panel_stride(), &sum, &mut acc) };
            for j in 0..NR {
                let e: i32 = if j < n { (0..k).map(|t| a[t] as i32 * bt[j * k + t] as i32).sum() } else { 0 };
                assert_eq!(acc[0][j], e, "{isa:?} column {j}");
            }
        }
    }
}

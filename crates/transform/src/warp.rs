//! One-pass affine resampling of 8-bit RGB images, with scipy.ndimage's `order=1` (bilinear)
//! interpolation and boundary modes, which is what Keras' ImageDataGenerator calls.
//!
//! Coordinates are `(row, col)` pixel centres, as in scipy (and Keras, whose matrices act on
//! `(row, col)`): output pixel `(r, c)` takes the input value at `m * (r, c, 1)`. The inverse map
//! is evaluated in 32.32 fixed point, stepping along each output row by the matrix' column
//! increment; interpolation weights use the top `W_BITS` (7) fractional bits. For each row the stretch of
//! columns whose four neighbours all lie inside the image is computed exactly (integer
//! arithmetic on the same fixed-point values), so the inner loop has no boundary logic; only the
//! pixels outside it take the fill-mode path.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How input coordinates outside the image are filled; the semantics of scipy.ndimage's modes
/// of the same names (scipy >= 1.6), which Keras passes through unchanged. With `a b c d` the
/// input row:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FillMode {
    /// `a a a | a b c d | d d d`: the edge pixel repeats (Keras' default).
    #[default]
    Nearest,
    /// `c b a | a b c d | d c b`: mirrored about the pixel edge, so the edge pixel appears
    /// twice (scipy `reflect`, half-sample symmetric; scipy's `mirror` would not repeat it).
    Reflect,
    /// Periodic with period `n - 1` in coordinates, so the first and last samples coincide:
    /// what scipy's `wrap` does (Keras' docs draw `abcd|abcd|abcd`, which is scipy's
    /// `grid-wrap`; we match the code Keras runs, not its docs).
    Wrap,
    /// `cval` wherever a coordinate lies outside `[0, n - 1]`; no interpolation towards it.
    Constant,
}

impl FillMode {
    pub const NAMES: &'static [&'static str] = &["nearest", "reflect", "wrap", "constant"];
}

impl FromStr for FillMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "reflect" => Ok(Self::Reflect),
            "wrap" => Ok(Self::Wrap),
            "constant" => Ok(Self::Constant),
            _ => Err(format!("unknown fill mode '{s}' (expected one of: {})", Self::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for FillMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[*self as usize])
    }
}

/// An affine map of `(row, col)` coordinates: `(r', c') = (m[0] . (r, c, 1), m[1] . (r, c, 1))`.
/// Used as the inverse map: output pixel -> input coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    pub const IDENTITY: Affine = Affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);

    /// `self * other` as 3x3 homogeneous matrices: apply `other` first, then `self`.
    pub fn then_before(self, other: Affine) -> Affine {
        let (a, b) = (self.0, other.0);
        let mut m = [[0.0; 3]; 2];
        for i in 0..2 {
            for j in 0..3 {
                m[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + if j == 2 { a[i][2] } else { 0.0 };
            }
        }
        Affine(m)
    }

    pub fn translation(dr: f64, dc: f64) -> Affine {
        Affine([[1.0, 0.0, dr], [0.0, 1.0, dc]])
    }

    /// Maps `p` (row, col).
    pub fn apply(&self, [r, c]: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [m[0][0] * r + m[0][1] * c + m[0][2], m[1][0] * r + m[1][1] * c + m[1][2]]
    }
}

const FRAC_BITS: u32 = 32;
const ONE: f64 = (1u64 << FRAC_BITS) as f64;
/// Fractional bits of the interpolation weights (1/128 pixel). The four 2-D weights sum to
/// `1 << 2 * W_BITS` and each fits an i16, which the SSE2 kernel's `pmaddwd` needs.
const W_BITS: u32 = 7;
const W_ONE: u32 = 1 << W_BITS;
const ROUND: u32 = 1 << (2 * W_BITS - 1);

#[inline]
fn fixed(v: f64) -> i64 {
    // `as` saturates: absurd coordinates land far outside and take the fill path.
    (v * ONE).round() as i64
}

/// The weight of the second neighbour, the fraction rounded to `0..=W_ONE` (W_ONE puts all
/// the weight on the second neighbour, which is how rounding up carries).
#[inline]
fn weight(v: i64) -> u32 {
    ((((v >> (FRAC_BITS - W_BITS - 1)) & (2 * W_ONE as i64 - 1)) + 1) >> 1) as u32
}

/// Input coordinates of the first pixel of output row `r`, fixed point.
#[inline]
fn row_origin(m: &Affine, r: usize) -> (i64, i64) {
    (fixed(m.0[0][0] * r as f64 + m.0[0][2]), fixed(m.0[1][0] * r as f64 + m.0[1][2]))
}

/// Resamples `src` (`height` x `width` interleaved RGB) through `m` into `out` (same size):
/// `out(r, c) = bilinear(src, m * (r, c))`, filled per `mode` (`cval` for `Constant`).
pub fn warp_rgb(src: &[u8], height: usize, width: usize, m: &Affine, mode: FillMode, cval: u8, out: &mut [u8]) {
    let (h, w) = (height, width);
    assert_eq!(src.len(), h * w * 3, "source must be height * width * 3 bytes");
    assert_eq!(out.len(), src.len(), "output must be as large as the source");
    if h == 0 || w == 0 {
        return;
    }
    // One copy of the loop per mode, so that the border path's mode match is resolved at
    // compile time.
    match mode {
        FillMode::Nearest => warp_mode(Sampler { src, h, w, mode: FillMode::Nearest, cval: [cval; 4] }, m, out),
        FillMode::Reflect => warp_mode(Sampler { src, h, w, mode: FillMode::Reflect, cval: [cval; 4] }, m, out),
        FillMode::Wrap => warp_mode(Sampler { src, h, w, mode: FillMode::Wrap, cval: [cval; 4] }, m, out),
        FillMode::Constant => warp_mode(Sampler { src, h, w, mode: FillMode::Constant, cval: [cval; 4] }, m, out),
    }
}

#[inline(always)]
fn warp_mode(s: Sampler, m: &Affine, out: &mut [u8]) {
    let (src, h, w) = (s.src, s.h, s.w);
    let (dy, dx) = (fixed(m.0[0][1]), fixed(m.0[1][1]));
    // The fast path needs floor(y) + 1 <= h - 1, i.e. 0 <= y < h - 1 (and the same for x).
    let (y_end, x_end) = (((h - 1) as i64) << FRAC_BITS, ((w - 1) as i64) << FRAC_BITS);
    let stride = w * 3;
    for (r, row) in out.chunks_exact_mut(stride).enumerate() {
        let (y0, x0) = row_origin(m, r);
        let (ya, yb) = inside(y0, dy, y_end, w);
        let (xa, xb) = inside(x0, dx, x_end, w);
        let (a, b) = (ya.max(xa), yb.min(xb));
        let (a, b) = if a < b { (a, b) } else { (w, w) };
        let at = |c: usize| (y0 + c as i64 * dy, x0 + c as i64 * dx);
        for c in (0..a).chain(b..w) {
            let (y, x) = at(c);
            row[c * 3..c * 3 + 3].copy_from_slice(&s.border(y, x)[..3]);
        }
        let (y, x) = at(a);
        interior(src, w, (y, x), (dy, dx), &mut row[a * 3..b * 3]);
    }
}

/// The fast path: every output pixel of `out` has all four neighbours inside the image.
fn interior(src: &[u8], w: usize, (mut y, mut x): (i64, i64), (dy, dx): (i64, i64), out: &mut [u8]) {
    let stride = w * 3;
    let base = src.as_ptr();
    // SAFETY: `inside` proved 0 <= floor(y) < h - 1 and 0 <= floor(x) < w - 1 for every pixel
    // here (exact integer arithmetic on these same values), so the 4-byte reads at i, i + 2,
    // i + stride and i + stride + 2 (the last one ends at the last byte of pixel
    // (yi + 1, xi + 1)) stay inside `src`; debug builds re-check each one.
    unsafe {
        let load = |p: *const u8| (p as *const u32).read_unaligned();
        // The right neighbour's bytes, read from one byte earlier so as not to read past it.
        let load_right = |p: *const u8| (p.sub(1) as *const u32).read_unaligned() >> 8;
        for px in out.chunks_exact_mut(3) {
            let i = ((y >> FRAC_BITS) as usize * w + (x >> FRAC_BITS) as usize) * 3;
            debug_assert!(i + stride + 6 <= src.len());
            let p = base.add(i);
            let q = p.add(stride);
            let v = blend([load(p), load_right(p.add(3)), load(q), load_right(q.add(3))], weight(y), weight(x));
            px.copy_from_slice(&v[..3]);
            y += dy;
            x += dx;
        }
    }
}

/// Bilinear blend of four pixels (RGB in the low three bytes of each) with second-neighbour
/// weights `fy`, `fx`: one `pmaddwd` per pair of rows.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn blend([p00, p01, p10, p11]: [u32; 4], fy: u32, fx: u32) -> [u8; 4] {
    use std::arch::x86_64::*;
    let [w00, w01, w10, w11] = weights(fy, fx);
    // SAFETY: SSE2 is part of x86_64; these are register-only operations.
    unsafe {
        let zero = _mm_setzero_si128();
        let v = |p: u32| _mm_cvtsi32_si128(p as i32);
        // i16 lanes [R0 R1 G0 G1 B0 B1 X0 X1]: pmaddwd gives R0*wa + R1*wb per channel.
        let top = _mm_unpacklo_epi8(_mm_unpacklo_epi8(v(p00), v(p01)), zero);
        let bottom = _mm_unpacklo_epi8(_mm_unpacklo_epi8(v(p10), v(p11)), zero);
        let wt = _mm_set1_epi32((w00 | w01 << 16) as i32);
        let wb = _mm_set1_epi32((w10 | w11 << 16) as i32);
        let sum = _mm_add_epi32(_mm_madd_epi16(top, wt), _mm_madd_epi16(bottom, wb));
        let sum = _mm_srli_epi32(_mm_add_epi32(sum, _mm_set1_epi32(ROUND as i32)), 2 * W_BITS as i32);
        let packed = _mm_packus_epi16(_mm_packs_epi32(sum, zero), zero);
        (_mm_cvtsi128_si32(packed) as u32).to_le_bytes()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn blend(p: [u32; 4], fy: u32, fx: u32) -> [u8; 4] {
    let [w00, w01, w10, w11] = weights(fy, fx);
    let ch = |v: u32, k: u32| (v >> (8 * k)) & 0xff;
    std::array::from_fn(|k| {
        let k = k as u32;
        let v = ch(p[0], k) * w00 + ch(p[1], k) * w01 + ch(p[2], k) * w10 + ch(p[3], k) * w11;
        ((v + ROUND) >> (2 * W_BITS)) as u8
    })
}

/// Reference for [`interior`]: the textbook formula, bounds-checked.
#[cfg(test)]
fn interior_scalar(src: &[u8], w: usize, (mut y, mut x): (i64, i64), (dy, dx): (i64, i64), out: &mut [u8]) {
    let stride = w * 3;
    for px in out.chunks_exact_mut(3) {
        let i = ((y >> FRAC_BITS) as usize * w + (x >> FRAC_BITS) as usize) * 3;
        let [w00, w01, w10, w11] = weights(weight(y), weight(x));
        let (p, q) = (&src[i..i + 6], &src[i + stride..i + stride + 6]);
        for k in 0..3 {
            let v = p[k] as u32 * w00 + p[k + 3] as u32 * w01 + q[k] as u32 * w10 + q[k + 3] as u32 * w11;
            px[k] = ((v + ROUND) >> (2 * W_BITS)) as u8;
        }
        y += dy;
        x += dx;
    }
}

/// Bilinear weights of the four neighbours `(y0,x0), (y0,x1), (y1,x0), (y1,x1)`; they sum to
/// `W_ONE^2`.
#[inline]
fn weights(fy: u32, fx: u32) -> [u32; 4] {
    let (gy, gx) = (W_ONE - fy, W_ONE - fx);
    [gy * gx, gy * fx, fy * gx, fy * fx]
}

/// The columns `c` in `0..n` (as a half-open range) with `0 <= f0 + c * d < end`.
fn inside(f0: i64, d: i64, end: i64, n: usize) -> (usize, usize) {
    let (f0, d, last, n) = (f0 as i128, d as i128, end as i128 - 1, n as i128);
    let floor = |a: i128, b: i128| a.div_euclid(b);
    let ceil = |a: i128, b: i128| -(-a).div_euclid(b);
    let (lo, hi) = match d.signum() {
        0 if 0 <= f0 && f0 <= last => (0, n),
        0 => (0, 0),
        1 => (ceil(-f0, d), floor(last - f0, d) + 1),
        _ => (ceil(f0 - last, -d), floor(f0, -d) + 1),
    };
    let (lo, hi) = (lo.clamp(0, n), hi.clamp(0, n));
    (lo as usize, hi.max(lo) as usize)
}

struct Sampler<'a> {
    src: &'a [u8],
    h: usize,
    w: usize,
    mode: FillMode,
    cval: [u8; 4],
}

impl Sampler<'_> {
    /// One output pixel at input coordinate `(y, x)` (fixed point), any position.
    #[inline(always)]
    fn border(&self, y: i64, x: i64) -> [u8; 4] {
        let Some((y0, y1, fy)) = self.axis(y, self.h) else { return self.cval };
        let Some((x0, x1, fx)) = self.axis(x, self.w) else { return self.cval };
        let px = |r: usize, c: usize| {
            let i = (r * self.w + c) * 3;
            u32::from_le_bytes([self.src[i], self.src[i + 1], self.src[i + 2], 0])
        };
        blend([px(y0, x0), px(y0, x1), px(y1, x0), px(y1, x1)], fy, fx)
    }

    /// The two neighbour indices along an axis of length `n` and the weight of the second, or
    /// `None` for `Constant` outside the image.
    #[inline(always)]
    fn axis(&self, v: i64, n: usize) -> Option<(usize, usize, u32)> {
        let end = ((n - 1) as i64) << FRAC_BITS;
        let v = match self.mode {
            FillMode::Constant if v < 0 || v > end => return None,
            FillMode::Constant => v,
            FillMode::Nearest => v.clamp(0, end),
            FillMode::Wrap => wrap(v, end),
            FillMode::Reflect => {
                // Interpolate on the reflected sequence `.. b a | a b .. d | d c ..`.
                let i = v >> FRAC_BITS;
                return Some((reflect(i, n), reflect(i + 1, n), weight(v)));
            }
        };
        let i = (v >> FRAC_BITS) as usize;
        Some((i, (i + 1).min(n - 1), weight(v)))
    }
}

/// scipy's `wrap` coordinate map: period `end` (= n - 1), into `[0, end]`.
fn wrap(v: i64, end: i64) -> i64 {
    if end == 0 {
        0
    } else if v < 0 {
        v + end * (-v / end + 1)
    } else if v > end {
        v - end * (v / end)
    } else {
        v
    }
}

/// Index map of the half-sample symmetric extension, period `2n`.
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let i = i.rem_euclid(2 * n);
    (if i < n { i } else { 2 * n - 1 - i }) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-channel view: a 1 x n row repeated on RGB, warped by a column offset.
    fn row_at(values: &[u8], offset: f64, mode: FillMode) -> Vec<u8> {
        let src: Vec<u8> = values.iter().flat_map(|&v| [v, v, v]).collect();
        let mut out = vec![0; src.len()];
        let m = Affine::translation(0.0, offset);
        warp_rgb(&src, 1, values.len(), &m, mode, 7, &mut out);
        out.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn identity_copies_exactly() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 37 % 256) as u8).collect();
        for mode in [FillMode::Nearest, FillMode::Reflect, FillMode::Wrap, FillMode::Constant] {
            let mut out = vec![0; src.len()];
            warp_rgb(&src, 5, 4, &Affine::IDENTITY, mode, 0, &mut out);
            assert_eq!(out, src, "{mode}");
        }
    }

    // Expectations below were computed by hand from scipy's documented extensions and checked
    // against scipy.ndimage.affine_transform(order=1) on the row [10, 20, 30, 40].
    const ROW: [u8; 4] = [10, 20, 30, 40];

    #[test]
    fn nearest_repeats_the_edge() {
        assert_eq!(row_at(&ROW, -1.5, FillMode::Nearest), [10, 10, 15, 25]);
        assert_eq!(row_at(&ROW, 2.5, FillMode::Nearest), [35, 40, 40, 40]);
    }

    #[test]
    fn reflect_repeats_the_edge_pixel_then_mirrors() {
        // Extended: 30 20 10 | 10 20 30 40 | 40 30 20
        assert_eq!(row_at(&ROW, -2.5, FillMode::Reflect), [25, 15, 10, 15]);
        assert_eq!(row_at(&ROW, 2.5, FillMode::Reflect), [35, 40, 35, 25]);
    }

    #[test]
    fn wrap_has_period_n_minus_one_like_scipy() {
        // Coordinates -1.5, -0.5, 0.5, 1.5 wrap (period 3) to 1.5, 2.5, 0.5, 1.5.
        assert_eq!(row_at(&ROW, -1.5, FillMode::Wrap), [25, 35, 15, 25]);
        // 3.25, 4.25, 5.25, 6.25 -> 0.25, 1.25, 2.25, 0.25
        assert_eq!(row_at(&ROW, 3.25, FillMode::Wrap), [13, 23, 33, 13]);
    }

    #[test]
    fn constant_fills_outside_without_blending() {
        assert_eq!(row_at(&ROW, -0.5, FillMode::Constant), [7, 15, 25, 35]);
        assert_eq!(row_at(&ROW, 1.0, FillMode::Constant), [20, 30, 40, 7]);
        assert_eq!(row_at(&ROW, 0.75, FillMode::Constant), [18, 28, 38, 7]);
    }

    #[test]
    fn fast_path_matches_border_path_everywhere() {
        // Every pixel computed through the general (border) sampler must equal the warp output,
        // whichever path produced it.
        let (h, w) = (9, 11);
        let src: Vec<u8> = (0..h * w * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let m = Affine([[0.93, -0.41, 2.3], [0.37, 1.07, -1.9]]);
        for mode in [FillMode::Nearest, FillMode::Reflect, FillMode::Wrap, FillMode::Constant] {
            let mut out = vec![0; src.len()];
            warp_rgb(&src, h, w, &m, mode, 99, &mut out);
            let s = Sampler { src: &src, h, w, mode, cval: [99; 4] };
            for r in 0..h {
                for c in 0..w {
                    let (y0, x0) = row_origin(&m, r);
                    let want = s.border(y0 + c as i64 * fixed(m.0[0][1]), x0 + c as i64 * fixed(m.0[1][1]));
                    assert_eq!(&out[(r * w + c) * 3..][..3], &want[..3], "{mode} at ({r}, {c})");
                }
            }
        }
    }

    #[test]
    fn fast_path_matches_the_textbook_formula() {
        let (h, w) = (12, 17);
        let src: Vec<u8> = (0..h * w * 3).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
        let step = (fixed(0.3791), fixed(0.8123));
        let start = (fixed(0.25), fixed(0.0));
        let n = 13; // the last pixel reaches row 4.9, column 9.8: all inside
        let (mut a, mut b) = (vec![0; n * 3], vec![0; n * 3]);
        interior(&src, w, start, step, &mut a);
        interior_scalar(&src, w, start, step, &mut b);
        assert_eq!(a, b);
        // The bottom-right corner pixel, whose right neighbour is the last byte of the image.
        let start = (fixed(h as f64 - 1.5), fixed(w as f64 - 1.5));
        let (mut a, mut b) = (vec![0; 3], vec![0; 3]);
        interior(&src, w, start, step, &mut a);
        interior_scalar(&src, w, start, step, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn inside_is_exact() {
        for (f0, d, end, n) in [(-5, 2, 10, 20), (30, -3, 10, 20), (3, 0, 10, 5), (11, 0, 10, 5), (0, 1, 0, 4)] {
            let (a, b) = inside(f0, d, end, n);
            for c in 0..n {
                let v = f0 + c as i64 * d;
                assert_eq!((a..b).contains(&c), 0 <= v && v < end, "f0={f0} d={d} c={c}");
            }
        }
    }

    #[test]
    fn single_pixel_axes_do_not_panic() {
        let src = vec![5u8, 6, 7];
        let m = Affine([[1.0, 0.3, 0.2], [0.1, 1.0, -0.6]]);
        for mode in [FillMode::Nearest, FillMode::Reflect, FillMode::Wrap] {
            let mut out = vec![0; 3];
            warp_rgb(&src, 1, 1, &m, mode, 0, &mut out);
            assert_eq!(out, src, "{mode}");
        }
    }

    #[test]
    fn fill_mode_names_round_trip() {
        for n in FillMode::NAMES {
            assert_eq!(n.parse::<FillMode>().unwrap().to_string(), *n);
        }
        assert!("mirror".parse::<FillMode>().unwrap_err().contains("reflect"));
    }
}

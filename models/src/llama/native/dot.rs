//! Block dot products in ggml's exact order: a portable version, an AVX2 +
//! FMA one (x86-64) and two NEON ones (aarch64), all giving identical bits.
//!
//! ggml (`ggml_vec_dot_q4_1_q8_1`, `ggml_vec_dot_q8_0_q8_0`, AVX2 path)
//! sums each block of 32 products in integers, four consecutive products
//! per lane of an 8-lane register, converts the lane sums to f32 (exact),
//! and accumulates `acc[lane] = fma(d_w·d_x, lane_sum, acc[lane])` over the
//! blocks; the result is `((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7))`, plus, for
//! Q4_1, the minimums' term `Σ m_w·s_x` accumulated with FMA (GCC contracts
//! ggml's `summs += m*s` under its default `-ffp-contract=fast`). Every
//! step is an IEEE-defined operation, so both versions below agree to the
//! bit on every CPU.

/// The lanes of one weight row's accumulator, reduced as ggml's
/// `hsum_float_8` does.
#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The 8 lane sums of one block: lane `l` holds `Σ_{e=4l}^{4l+3} w_e·x_e`,
/// in integers (exact). Written as whole-array steps so the compiler can
/// vectorise it (NEON on ARM).
#[inline(always)]
fn lane_sums(w: &[i32; 32], x: &[i8; 32]) -> [i32; 8] {
    let mut p = [0i32; 32];
    for ((o, &a), &b) in p.iter_mut().zip(w).zip(x) {
        *o = a * i32::from(b);
    }
    let mut s = [0i32; 8];
    for (o, c) in s.iter_mut().zip(p.chunks_exact(4)) {
        *o = (c[0] + c[1]) + (c[2] + c[3]);
    }
    s
}

/// One activation row of a tile: its Q8 blocks, scales and (for Q4_1)
/// block sums.
#[derive(Clone, Copy)]
pub(super) struct XRow<'a> {
    /// Quantised values, one array per block.
    pub q: &'a [[i8; 32]],
    /// Scale per block.
    pub d: &'a [f32],
    /// `d·Σq` per block (Q8_1); empty for Q8_0.
    pub s: &'a [f32],
}

/// Σ_blocks `d_w·d_x·Σ q_w q_x + m_w·s_x` of one Q4_1 weight row against
/// `R` Q8_1 activation rows, portable Rust. Each weight block is unpacked
/// once for all `R` rows (the register tiling of prefill); every output is
/// summed in exactly the order of `R = 1`, so the tile size never changes
/// a bit.
pub(super) fn q4_1_portable_tile<const R: usize>(
    wq: &[[u8; 16]],
    wd: &[f32],
    wm: &[f32],
    x: [XRow<'_>; R],
) -> [f32; R] {
    let mut acc = [[0f32; 8]; R];
    let mut summs = [0f32; R];
    let mut w = [0i32; 32];
    for (b, q) in wq.iter().enumerate() {
        let (lo, hi) = w.split_at_mut(16);
        for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = i32::from(byte & 0x0f);
            *h = i32::from(byte >> 4);
        }
        for ((a, sm), y) in acc.iter_mut().zip(summs.iter_mut()).zip(&x) {
            *sm = wm[b].mul_add(y.s[b], *sm);
            let dd = wd[b] * y.d[b];
            for (a, s) in a.iter_mut().zip(lane_sums(&w, &y.q[b])) {
                *a = dd.mul_add(s as f32, *a);
            }
        }
    }
    let mut out = [0f32; R];
    for ((o, a), sm) in out.iter_mut().zip(acc).zip(summs) {
        *o = hsum8(a) + sm;
    }
    out
}

/// Σ_blocks `d_w·d_x·Σ q_w q_x` of one Q8_0 weight row against `R` Q8_0
/// activation rows, portable Rust (same bits as `R` calls with `R = 1`).
pub(super) fn q8_0_portable_tile<const R: usize>(
    wq: &[[i8; 32]],
    wd: &[f32],
    x: [XRow<'_>; R],
) -> [f32; R] {
    let mut acc = [[0f32; 8]; R];
    let mut w = [0i32; 32];
    for (b, q) in wq.iter().enumerate() {
        for (o, &v) in w.iter_mut().zip(q) {
            *o = i32::from(v);
        }
        for (a, y) in acc.iter_mut().zip(&x) {
            let dd = wd[b] * y.d[b];
            for (a, s) in a.iter_mut().zip(lane_sums(&w, &y.q[b])) {
                *a = dd.mul_add(s as f32, *a);
            }
        }
    }
    acc.map(hsum8)
}

fast_fn! {
    /// One Q5_1 weight row (values `0..=31` widened to bytes) against one
    /// Q8_1 activation row, as `ggml_vec_dot_q5_1_q8_1` (AVX2): the Q4_1
    /// rule with a fifth bit — lanes of four products, `fma(d_w·d_x, lane,
    /// acc)`, the minimums' term `fma(m_w, s_x, summs)`, then
    /// `hsum_float_8(acc) + summs`.
    pub(super) fn q5_1_dot(wq: &[[i8; 32]], wd: &[f32], wm: &[f32], x: XRow<'_>) -> f32 {
        let mut acc = [0f32; 8];
        let mut summs = 0f32;
        let mut w = [0i32; 32];
        for (b, q) in wq.iter().enumerate() {
            for (o, &v) in w.iter_mut().zip(q) {
                *o = i32::from(v);
            }
            summs = wm[b].mul_add(x.s[b], summs);
            let dd = wd[b] * x.d[b];
            for (a, s) in acc.iter_mut().zip(lane_sums(&w, &x.q[b])) {
                *a = dd.mul_add(s as f32, *a);
            }
        }
        hsum8(acc) + summs
    }
}

fast_fn! {
    /// One Q4_0 weight row (values `q − 8` widened to bytes) against one
    /// Q8_0 activation row, as llama.cpp's repacked Q4_0 kernels compute
    /// it on AVX2 (`ggml_gemv_q4_0_8x8_q8_0` and the gemm for groups of
    /// four rows alike): per block the exact integer `Σ w·x`, then one
    /// `acc = fma(Σ, d_w·d_x, acc)`.
    pub(super) fn q4_0_repacked_dot(wq: &[[i8; 32]], wd: &[f32], x: XRow<'_>) -> f32 {
        let mut acc = 0f32;
        for (b, q) in wq.iter().enumerate() {
            let mut sum = 0i32;
            for (&w, &v) in q.iter().zip(&x.q[b]) {
                sum += i32::from(w) * i32::from(v);
            }
            acc = (wd[b] * x.d[b]).mul_add(sum as f32, acc);
        }
        acc
    }
}

/// The AVX2 + FMA versions (x86-64 only, chosen at run time).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use core::arch::x86_64::*;

    /// Whether this CPU can run the functions of this module.
    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[inline(always)]
    fn hsum(acc: __m256) -> f32 {
        let mut a = [0f32; 8];
        // SAFETY: `a` is 8 writable f32s; storeu has no alignment demand.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), acc) };
        super::hsum8(a)
    }

    /// [`super::q4_1_portable_tile`] with AVX2 + FMA: the weight block is
    /// loaded and unpacked once for `R` activation rows.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`available`]); every row of `x`
    /// must have at least `wq.len()` blocks, scales and sums.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_1_tile<const R: usize>(
        wq: &[[u8; 16]],
        wd: &[f32],
        wm: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        let n = wq.len().min(wd.len()).min(wm.len());
        let mut acc = [_mm256_setzero_ps(); R];
        let mut summs = [0f32; R];
        let low = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        for b in 0..n {
            // SAFETY: the block is 16 readable bytes; loadu is unaligned.
            let raw = unsafe { _mm_loadu_si128(wq[b].as_ptr().cast()) };
            let qx = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16(raw, 4), low),
                _mm_and_si128(raw, low),
            );
            for r in 0..R {
                let y = &x[r];
                // SAFETY: the caller guarantees `b` is inside every row.
                let (yq, yd, ys) = unsafe {
                    (
                        y.q.get_unchecked(b),
                        *y.d.get_unchecked(b),
                        *y.s.get_unchecked(b),
                    )
                };
                summs[r] = wm[b].mul_add(ys, summs[r]);
                let dd = _mm256_set1_ps(wd[b] * yd);
                // SAFETY: the block is 32 readable bytes.
                let qy = unsafe { _mm256_loadu_si256(yq.as_ptr().cast()) };
                let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones);
                acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[r]);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(acc[r]) + summs[r];
        }
        out
    }

    /// [`super::q8_0_portable_tile`] with AVX2 + FMA.
    ///
    /// # Safety
    /// As [`q4_1_tile`] (sums are not read).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_0_tile<const R: usize>(
        wq: &[[i8; 32]],
        wd: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        let n = wq.len().min(wd.len());
        let mut acc = [_mm256_setzero_ps(); R];
        let ones = _mm256_set1_epi16(1);
        for b in 0..n {
            // SAFETY: the block is 32 readable bytes.
            let qx = unsafe { _mm256_loadu_si256(wq[b].as_ptr().cast()) };
            let ax = _mm256_sign_epi8(qx, qx);
            for r in 0..R {
                let y = &x[r];
                // SAFETY: the caller guarantees `b` is inside every row.
                let (yq, yd) = unsafe { (y.q.get_unchecked(b), *y.d.get_unchecked(b)) };
                let dd = _mm256_set1_ps(wd[b] * yd);
                // SAFETY: the block is 32 readable bytes.
                let qy = unsafe { _mm256_loadu_si256(yq.as_ptr().cast()) };
                let sy = _mm256_sign_epi8(qy, qx);
                let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                acc[r] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc[r]);
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(acc[r]);
        }
        out
    }
}

/// The NEON versions (aarch64: Raspberry Pi, Jetson), chosen at run time.
///
/// Each block's 8 lane sums are built in integers — with `SDOT` where the
/// CPU has the dot-product extension (Armv8.2+: Pi 5, Jetson Orin), else
/// with widening multiplies and pairwise adds (Armv8.0: Pi 4) — then
/// converted and accumulated with one FMA per lane into two 4-lane
/// registers, the low and high halves of ggml's 8 lanes. Integer sums are
/// exact, and the float steps are the portable ones lane for lane, so both
/// variants give the portable bits.
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use core::arch::aarch64::*;

    /// Whether this CPU has the dot-product instructions (`SDOT`).
    pub fn has_dotprod() -> bool {
        std::arch::is_aarch64_feature_detected!("dotprod")
    }

    /// `[Σ w·x over bytes 4l..4l+3]` for `l` in 0..4 of one 16-byte half.
    ///
    /// # Safety
    /// With `DOT`, the CPU must have the dot-product extension and the
    /// caller must be compiled with it enabled.
    #[inline(always)]
    unsafe fn lanes<const DOT: bool>(w: int8x16_t, x: int8x16_t) -> int32x4_t {
        // SAFETY: NEON is part of every aarch64 CPU; with `DOT` the caller
        // guarantees SDOT exists, and the instruction only reads and
        // writes the named registers.
        unsafe {
            if DOT {
                let mut acc = vdupq_n_s32(0);
                core::arch::asm!(
                    "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
                    acc = inout(vreg) acc,
                    w = in(vreg) w,
                    x = in(vreg) x,
                    options(pure, nomem, nostack, preserves_flags),
                );
                acc
            } else {
                // |w·x| ≤ 128·128 fits i16; pairs then quads are summed in i32.
                let lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x)));
                let hi = vpaddlq_s16(vmull_high_s8(w, x));
                vpaddq_s32(lo, hi)
            }
        }
    }

    /// ggml's 8-lane reduction of the two halves.
    #[inline(always)]
    fn hsum(acc: [float32x4_t; 2]) -> f32 {
        let mut a = [0f32; 8];
        // SAFETY: `a` is 8 writable f32s.
        unsafe {
            vst1q_f32(a.as_mut_ptr(), acc[0]);
            vst1q_f32(a.as_mut_ptr().add(4), acc[1]);
        }
        super::hsum8(a)
    }

    /// The body of [`q4_1_tile`] / [`q4_1_tile_dot`].
    #[inline(always)]
    unsafe fn q4_1_body<const R: usize, const DOT: bool>(
        wq: &[[u8; 16]],
        wd: &[f32],
        wm: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: NEON is part of every aarch64 CPU; the loads and
        // unchecked reads are inside the blocks the caller vouches
        // for, and SDOT runs only when the caller has it (`DOT`).
        unsafe {
            let n = wq.len().min(wd.len()).min(wm.len());
            let mut acc = [[vdupq_n_f32(0.0); 2]; R];
            let mut summs = [0f32; R];
            let low = vdupq_n_u8(0x0f);
            for b in 0..n {
                // the block is 16 readable bytes.
                let raw = vld1q_u8(wq[b].as_ptr());
                // Nibbles 0..15 are elements 0..15, the high nibbles 16..31.
                let lo = vreinterpretq_s8_u8(vandq_u8(raw, low));
                let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw));
                for r in 0..R {
                    let y = &x[r];
                    // the caller guarantees `b` is inside every row.
                    let (yq, yd, ys) = {
                        (
                            y.q.get_unchecked(b),
                            *y.d.get_unchecked(b),
                            *y.s.get_unchecked(b),
                        )
                    };
                    summs[r] = wm[b].mul_add(ys, summs[r]);
                    let dd = vdupq_n_f32(wd[b] * yd);
                    // the block is 32 readable bytes; the caller
                    // guarantees SDOT when `DOT`.
                    let (l0, l1) = {
                        let x0 = vld1q_s8(yq.as_ptr());
                        let x1 = vld1q_s8(yq.as_ptr().add(16));
                        (lanes::<DOT>(lo, x0), lanes::<DOT>(hi, x1))
                    };
                    acc[r][0] = vfmaq_f32(acc[r][0], dd, vcvtq_f32_s32(l0));
                    acc[r][1] = vfmaq_f32(acc[r][1], dd, vcvtq_f32_s32(l1));
                }
            }
            let mut out = [0f32; R];
            for r in 0..R {
                out[r] = hsum(acc[r]) + summs[r];
            }
            out
        }
    }

    /// The body of [`q8_0_tile`] / [`q8_0_tile_dot`].
    #[inline(always)]
    unsafe fn q8_0_body<const R: usize, const DOT: bool>(
        wq: &[[i8; 32]],
        wd: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: NEON is part of every aarch64 CPU; the loads and
        // unchecked reads are inside the blocks the caller vouches
        // for, and SDOT runs only when the caller has it (`DOT`).
        unsafe {
            let n = wq.len().min(wd.len());
            let mut acc = [[vdupq_n_f32(0.0); 2]; R];
            for b in 0..n {
                // the block is 32 readable bytes.
                let (w0, w1) = (vld1q_s8(wq[b].as_ptr()), vld1q_s8(wq[b].as_ptr().add(16)));
                for r in 0..R {
                    let y = &x[r];
                    // the caller guarantees `b` is inside every row.
                    let (yq, yd) = (y.q.get_unchecked(b), *y.d.get_unchecked(b));
                    let dd = vdupq_n_f32(wd[b] * yd);
                    // as in `q4_1_body`.
                    let (l0, l1) = {
                        let x0 = vld1q_s8(yq.as_ptr());
                        let x1 = vld1q_s8(yq.as_ptr().add(16));
                        (lanes::<DOT>(w0, x0), lanes::<DOT>(w1, x1))
                    };
                    acc[r][0] = vfmaq_f32(acc[r][0], dd, vcvtq_f32_s32(l0));
                    acc[r][1] = vfmaq_f32(acc[r][1], dd, vcvtq_f32_s32(l1));
                }
            }
            acc.map(hsum)
        }
    }

    /// [`super::q4_1_portable_tile`] with NEON (Armv8.0).
    ///
    /// # Safety
    /// Every row of `x` must have at least `wq.len()` blocks, scales and
    /// sums.
    #[target_feature(enable = "neon")]
    pub unsafe fn q4_1_tile<const R: usize>(
        wq: &[[u8; 16]],
        wd: &[f32],
        wm: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: forwarded; no SDOT without `DOT`.
        unsafe { q4_1_body::<R, false>(wq, wd, wm, x) }
    }

    /// [`q4_1_tile`] with `SDOT`.
    ///
    /// # Safety
    /// As [`q4_1_tile`], and the CPU must have the dot-product extension
    /// ([`has_dotprod`]).
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn q4_1_tile_dot<const R: usize>(
        wq: &[[u8; 16]],
        wd: &[f32],
        wm: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: forwarded; this function is compiled with SDOT.
        unsafe { q4_1_body::<R, true>(wq, wd, wm, x) }
    }

    /// [`super::q8_0_portable_tile`] with NEON (Armv8.0).
    ///
    /// # Safety
    /// As [`q4_1_tile`] (sums are not read).
    #[target_feature(enable = "neon")]
    pub unsafe fn q8_0_tile<const R: usize>(
        wq: &[[i8; 32]],
        wd: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: forwarded; no SDOT without `DOT`.
        unsafe { q8_0_body::<R, false>(wq, wd, x) }
    }

    /// [`q8_0_tile`] with `SDOT`.
    ///
    /// # Safety
    /// As [`q4_1_tile_dot`].
    #[target_feature(enable = "neon,dotprod")]
    pub unsafe fn q8_0_tile_dot<const R: usize>(
        wq: &[[i8; 32]],
        wd: &[f32],
        x: [super::XRow<'_>; R],
    ) -> [f32; R] {
        // SAFETY: forwarded; this function is compiled with SDOT.
        unsafe { q8_0_body::<R, true>(wq, wd, x) }
    }
}

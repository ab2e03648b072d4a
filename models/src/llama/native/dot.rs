//! Block dot products in ggml's exact order: a portable version and an
//! AVX2 + FMA one that give identical bits.
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

/// Σ_blocks `d_w·d_x·Σ q_w q_x + m_w·s_x` of one Q4_1 weight row against
/// one Q8_1 activation row, portable Rust.
pub(super) fn q4_1_portable(
    wq: &[[u8; 16]],
    wd: &[f32],
    wm: &[f32],
    xq: &[[i8; 32]],
    xd: &[f32],
    xs: &[f32],
) -> f32 {
    let mut acc = [0f32; 8];
    let mut summs = 0f32;
    let mut w = [0i32; 32];
    for (b, (q, y)) in wq.iter().zip(xq).enumerate() {
        summs = wm[b].mul_add(xs[b], summs);
        let dd = wd[b] * xd[b];
        // Low nibbles are weights 0..16, high nibbles 16..32.
        let (lo, hi) = w.split_at_mut(16);
        for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = i32::from(byte & 0x0f);
            *h = i32::from(byte >> 4);
        }
        for (a, s) in acc.iter_mut().zip(lane_sums(&w, y)) {
            *a = dd.mul_add(s as f32, *a);
        }
    }
    hsum8(acc) + summs
}

/// Σ_blocks `d_w·d_x·Σ q_w q_x` of one Q8_0 weight row against one Q8_0
/// activation row, portable Rust.
pub(super) fn q8_0_portable(wq: &[[i8; 32]], wd: &[f32], xq: &[[i8; 32]], xd: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut w = [0i32; 32];
    for (b, (q, y)) in wq.iter().zip(xq).enumerate() {
        let dd = wd[b] * xd[b];
        for (o, &v) in w.iter_mut().zip(q) {
            *o = i32::from(v);
        }
        for (a, s) in acc.iter_mut().zip(lane_sums(&w, y)) {
            *a = dd.mul_add(s as f32, *a);
        }
    }
    hsum8(acc)
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

    /// [`super::q4_1_portable`] with AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q4_1(
        wq: &[[u8; 16]],
        wd: &[f32],
        wm: &[f32],
        xq: &[[i8; 32]],
        xd: &[f32],
        xs: &[f32],
    ) -> f32 {
        let n = wq.len().min(xq.len()).min(wd.len()).min(wm.len());
        let n = n.min(xd.len()).min(xs.len());
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        let low = _mm_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        for b in 0..n {
            summs = wm[b].mul_add(xs[b], summs);
            let dd = _mm256_set1_ps(wd[b] * xd[b]);
            // SAFETY: the block is 16 readable bytes; loadu is unaligned.
            let raw = unsafe { _mm_loadu_si128(wq[b].as_ptr().cast()) };
            let qx = _mm256_set_m128i(
                _mm_and_si128(_mm_srli_epi16(raw, 4), low),
                _mm_and_si128(raw, low),
            );
            // SAFETY: the block is 32 readable bytes.
            let qy = unsafe { _mm256_loadu_si256(xq[b].as_ptr().cast()) };
            let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(qx, qy), ones);
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc);
        }
        hsum(acc) + summs
    }

    /// [`super::q8_0_portable`] with AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA ([`available`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn q8_0(wq: &[[i8; 32]], wd: &[f32], xq: &[[i8; 32]], xd: &[f32]) -> f32 {
        let n = wq.len().min(xq.len()).min(wd.len()).min(xd.len());
        let mut acc = _mm256_setzero_ps();
        let ones = _mm256_set1_epi16(1);
        for b in 0..n {
            let dd = _mm256_set1_ps(wd[b] * xd[b]);
            // SAFETY: both blocks are 32 readable bytes.
            let (qx, qy) = unsafe {
                (
                    _mm256_loadu_si256(wq[b].as_ptr().cast()),
                    _mm256_loadu_si256(xq[b].as_ptr().cast()),
                )
            };
            // ggml's sign trick: |x|·sign(y, x) = x·y, exactly.
            let ax = _mm256_sign_epi8(qx, qx);
            let sy = _mm256_sign_epi8(qy, qx);
            let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), acc);
        }
        hsum(acc)
    }
}

//! RMSNorm, SwiGLU, RoPE and attention the way ggml's CPU code computes
//! them (x86 AVX2 + FMA build), on host rows.
//!
//! Each function names the ggml routine it follows. Only IEEE-defined
//! operations are used (products, sums, fused multiply-adds, square
//! roots, glibc's `expf` where ggml calls it), in ggml's order, so the
//! results do not depend on the CPU this runs on.

/// Which of ggml's x86 builds to reproduce.
///
/// Exists because their SIMD code differs where it matters: the f16 dot
/// product of attention sums 8-lane or 16-lane partial sums, and SiLU's
/// vectorised `expf` is a different routine (AVX-512 scales by `2^n` with
/// `vscalefps`). Both are reproduced here in portable code, so either can
/// be chosen on any CPU. The reference fixture
/// (`shared/fixtures/smollm2_reference.jsonl`) was made by an AVX-512
/// build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GgmlIsa {
    /// `-DGGML_AVX2=ON` (with FMA and F16C): what most x86 machines run.
    Avx2,
    /// `-DGGML_AVX512=ON` (AVX-512F): the reference fixture's build.
    #[default]
    Avx512,
}

/// Rounds to the nearest f16 (ties to even) and widens back: what ggml's
/// f16 stores do.
///
/// Bit arithmetic instead of a conversion round trip (this runs for every
/// value of every attention accumulator update): the mantissa is rounded
/// to 10 bits with ties to even; f16's subnormal range rounds to multiples
/// of 2⁻²⁴; beyond 65 504 + ½ ulp it overflows to ±∞. Tested against
/// `half` over 2²⁴ bit patterns.
#[inline(always)]
pub fn round_f16(x: f32) -> f32 {
    let a = x.abs();
    if a < 1.0 / 16_384.0 {
        // Below 2^-14, f16 spacing is 2^-24: an exact scaling, one rounding.
        return (x * 16_777_216.0).round_ties_even() * (1.0 / 16_777_216.0);
    }
    if x.is_nan() {
        return x;
    }
    if a >= 65_520.0 {
        return f32::INFINITY.copysign(x);
    }
    let b = x.to_bits();
    f32::from_bits((b + 0x0fff + ((b >> 13) & 1)) & !0x1fff)
}

/// `ggml_compute_forward_rms_norm_f32` followed by the multiplication with
/// the norm weight: per row, `Σx²` in f64 over f32 squares, `mean` as f32,
/// `scale = 1/√(mean + ε)`, `y = (x·scale)·w`.
///
/// `x` is `rows × w.len()`, row-major.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let cols = w.len().max(1);
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let sum: f64 = xr.iter().map(|v| f64::from(v * v)).sum();
        let mean = (sum / cols as f64) as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        for ((o, v), g) in yr.iter_mut().zip(xr).zip(w) {
            *o = (v * scale) * g;
        }
    }
    y
}

/// ggml's vectorised `expf` (`ggml_v_expf`, AVX2 + FMA: ARM's optimised
/// routine, max error 1.5 ulp), one lane. Used by its SiLU.
#[inline(always)]
pub fn expf_ggml(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f(0x3fb8_aa3b), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(f(0x35bf_be8e), (-n).mul_add(f(0x3f31_7200), x));
    let e = z.to_bits().wrapping_shl(23);
    let k = f(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let j = f(0x3c07_2010)
        .mul_add(b, f(0x3d2b_9f17))
        .mul_add(u, f(0x3e2a_af33).mul_add(b, f(0x3eff_fedb)))
        .mul_add(u, f(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml's AVX-512 `ggml_v_expf`, one lane: the same reduction and
/// polynomial as [`expf_ggml`] but `j = p(b) + 1` scaled by `2^n`
/// (`vscalefps`, one rounding), 0 or ∞ beyond |n| > 192.
#[inline(always)]
pub fn expf_ggml_avx512(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(0x4b40_0000);
    let z = x.mul_add(f(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(f(0x35bf_be8e), (-n).mul_add(f(0x3f31_7200), x));
    let u = b * b;
    let j = f(0x3c07_2010)
        .mul_add(b, f(0x3d2b_9f17))
        .mul_add(u, f(0x3e2a_af33).mul_add(b, f(0x3eff_fedb)))
        .mul_add(u, f(0x3f7f_fff6).mul_add(b, 1.0));
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    // j·2^n is exact in f64 (|n| ≤ 192); one rounding to f32, as vscalefps.
    // 2^n is built from its exponent bits (n is a whole number in range).
    let two_n = f64::from_bits(((n as i64 + 1023) as u64) << 52);
    (f64::from(j) * two_n) as f32
}

/// Elements per parallel task of the elementwise passes.
const ELEMENTS_PER_TASK: usize = 4096;

/// `ggml_vec_swiglu_f32`: `silu(gate)·up` with
/// `silu(x) = x / (1 + expf(0 − x))`, `expf` being `isa`'s vectorised one.
/// Spread over the thread pool in fixed chunks (elementwise: the thread
/// count changes no bit).
pub fn swiglu(gate: &[f32], up: &[f32], isa: GgmlIsa) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; gate.len().min(up.len())];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .enumerate()
        .for_each(|(i, o)| {
            let at = i * ELEMENTS_PER_TASK;
            let n = o.len();
            swiglu_into(o, &gate[at..at + n], &up[at..at + n], isa);
        });
    out
}

fast_fn! {
    /// One chunk of [`swiglu`].
    fn swiglu_into(out: &mut [f32], gate: &[f32], up: &[f32], isa: GgmlIsa) {
        match isa {
            GgmlIsa::Avx2 => {
                for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
                    *o = (x / (1.0 + expf_ggml(0.0 - x))) * u;
                }
            }
            GgmlIsa::Avx512 => {
                for ((o, &x), &u) in out.iter_mut().zip(gate).zip(up) {
                    *o = (x / (1.0 + expf_ggml_avx512(0.0 - x))) * u;
                }
            }
        }
    }
}

/// ggml's GELU table (`ggml_table_gelu_f16`): for every f16 bit pattern
/// `h`, `f16(gelu(f32(h)))` with `gelu(x) = 0.5·x·(1 + tanhf(√(2/π)·x·(1 +
/// 0.044715·x·x)))`, the inner `1 + 0.044715·x·x` fused as GCC contracts
/// it.
///
/// Exists because ggml's CPU GELU (`GGML_GELU_FP16`) does not evaluate the
/// formula per value: it rounds the input to f16 and looks the result up
/// here, so reproducing its bits takes the same table (built once, 128
/// KiB).
fn gelu_table() -> &'static [u16] {
    use std::sync::OnceLock;
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        const GELU_COEF_A: f32 = 0.044715;
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|h| {
                let x = half::f16::from_bits(h).to_f32();
                let inner = (GELU_COEF_A * x).mul_add(x, 1.0);
                let g = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * inner).tanh());
                half::f16::from_f32(g).to_bits()
            })
            .collect()
    })
}

/// `ggml_vec_geglu_f32` (`GGML_GELU_FP16`): `gelu(gate)·up`, with `0` for
/// `gate ≤ −10`, `gate·up` for `gate ≥ 10` and otherwise the f16 table
/// looked up at `f16(gate)`. Spread over the thread pool in fixed chunks
/// (elementwise: the thread count changes no bit).
pub fn geglu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    use rayon::prelude::*;
    let table = gelu_table();
    let mut out = vec![0f32; gate.len().min(up.len())];
    out.par_chunks_mut(ELEMENTS_PER_TASK)
        .enumerate()
        .for_each(|(i, o)| {
            let at = i * ELEMENTS_PER_TASK;
            for ((o, &x), &u) in o.iter_mut().zip(&gate[at..]).zip(&up[at..]) {
                *o = if x <= -10.0 {
                    0.0
                } else if x >= 10.0 {
                    x * u
                } else {
                    let h = half::f16::from_f32(x).to_bits();
                    half::f16::from_bits(table[usize::from(h)]).to_f32() * u
                };
            }
        });
    out
}

fast_fn! {
    /// `rotate_pairs` of ggml's RoPE (`GGML_ROPE_TYPE_NORMAL`: adjacent
    /// pairs) on one head's values, with `cos`/`sin` of its position.
    ///
    /// `x0·cos − x1·sin` and `x0·sin + x1·cos` with the first product fused
    /// into the sum: GCC contracts ggml's C++ this way under its default
    /// `-ffp-contract=fast` (measured: the unfused and the other fused forms
    /// differ from llama.cpp's logits, this one matches them to the bit).
    pub fn rope_pairs(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        for ((p, &c), &s) in x.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (x0, x1) = (p[0], p[1]);
            p[0] = x0.mul_add(c, -(x1 * s));
            p[1] = x0.mul_add(s, x1 * c);
        }
    }
}

fast_fn! {
    /// `rotate_pairs` of ggml's RoPE for `GGML_ROPE_TYPE_NEOX` (Gemma,
    /// Qwen): pair `i` is `(x[i], x[i + d/2])`, rotated by `cos[i]`,
    /// `sin[i]` with [`rope_pairs`]' arithmetic.
    pub fn rope_halves(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = x.len() / 2;
        let (lo, hi) = x.split_at_mut(half);
        for (((a, b), &c), &s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
            let (x0, x1) = (*a, *b);
            *a = x0.mul_add(c, -(x1 * s));
            *b = x0.mul_add(s, x1 * c);
        }
    }
}

/// `ggml_vec_dot_f16` of two rows of f16 values (held as f32), as `isa`
/// computes it: four FMA accumulators of 8 (AVX2) or 16 (AVX-512) lanes
/// over 32- or 64-value steps, reduced pairwise, the tail added in f64.
fn dot_f16(x: &[f32], y: &[f32], isa: GgmlIsa) -> f32 {
    match isa {
        GgmlIsa::Avx2 => dot_f16_lanes::<8>(x, y),
        GgmlIsa::Avx512 => dot_f16_lanes::<16>(x, y),
    }
}

/// [`dot_f16`] with `L` lanes per register.
fn dot_f16_lanes<const L: usize>(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let step = 4 * L;
    let np = n - n % step;
    let mut sum = [[0f32; L]; 4];
    for i in (0..np).step_by(step) {
        for (j, acc) in sum.iter_mut().enumerate() {
            for (l, a) in acc.iter_mut().enumerate() {
                let e = i + L * j + l;
                *a = x[e].mul_add(y[e], *a);
            }
        }
    }
    let mut flat = [0f32; 64];
    for (j, acc) in sum.iter().enumerate() {
        flat[j * L..(j + 1) * L].copy_from_slice(acc);
    }
    let r = reduce_lanes(&flat[..4 * L], L);
    let mut sumf = f64::from(r);
    for e in np..n {
        sumf += f64::from(x[e] * y[e]);
    }
    sumf as f32
}

/// ggml's reduction of four `lanes`-wide accumulators (`acc[j·lanes + l]`):
/// `(a0 + a2) + (a1 + a3)` lane-wise, then the register halved until four
/// values are left — `hsum` of the 256-bit register (low + high 128 bits,
/// then two `hadd`s) and GCC's `_mm512_reduce_add_ps` (halves of 256, 128,
/// then 64 and 32 bits) both add element i to element i + width/2 — and
/// finally `(v0 + v1) + (v2 + v3)` for 8 lanes, `(v0 + v2) + (v1 + v3)`
/// for 16.
fn reduce_lanes(acc: &[f32], lanes: usize) -> f32 {
    let mut v = [0f32; 16];
    for l in 0..lanes {
        v[l] = (acc[l] + acc[2 * lanes + l]) + (acc[lanes + l] + acc[3 * lanes + l]);
    }
    reduce_tail(v, lanes)
}

/// The part of [`reduce_lanes`] after the four accumulators were combined
/// lane-wise into `v[..lanes]`.
#[inline(always)]
fn reduce_tail(mut v: [f32; 16], lanes: usize) -> f32 {
    let mut w = lanes;
    while w > 4 {
        w /= 2;
        for l in 0..w {
            v[l] += v[l + w];
        }
    }
    if lanes == 8 {
        (v[0] + v[1]) + (v[2] + v[3])
    } else {
        (v[0] + v[2]) + (v[1] + v[3])
    }
}

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Query rows (tokens) in this call.
    pub seq: usize,
    /// Absolute position of the first query row.
    pub start: usize,
    /// Which ggml build's f16 dot product to reproduce.
    pub isa: GgmlIsa,
    /// Cached positions the keys and values cover (`start + seq`).
    pub total: usize,
    /// Positions each head's block of keys and values has room for
    /// (`≥ total`; the KV cache's capacity).
    pub stride: usize,
    /// The factor applied to `q·k` (`1/√head_dim` for Llama; 1 for Gemma
    /// 3, whose queries are scaled before).
    pub scale: f32,
    /// Positions a query sees, its own included (`None`: every earlier
    /// one): the sliding window of a local layer.
    pub window: Option<usize>,
}

/// Causal grouped-query attention as ggml's CPU flash attention
/// (`ggml_compute_forward_flash_attn_ext_f16`, f16 K/V) computes it, for
/// query rows `q` (`[seq][heads·head_dim]`, after RoPE, f32) over keys and
/// values `k`, `v` (`[kv_heads][stride][head_dim]`, f16 values). Returns
/// `[seq][heads·head_dim]`.
///
/// ggml takes one of two routes, and so does this function:
/// - under [`FA_TILE_Q`] query rows (decoding, short prompts),
///   `…_one_chunk`: per query, the query rounded to f16; for each visible
///   key `s = dot_f16(k, q)·scale`, online softmax with `expf`, the value
///   accumulator kept in f16 (`VKQ16 = f16(fma(v, e^{s−M}, VKQ16))`,
///   scaled when the maximum moves), `S = S·ms + vs` fused; finally
///   `VKQ / S`;
/// - from [`FA_TILE_Q`] rows on (long prompts), `…_tiled`: f32 queries,
///   keys in tiles of [`FA_TILE_KV`] with one maximum update per tile,
///   vectorised `expf`, an f32 accumulator ([`attend_row_tiled`]).
///
/// A query at position `p` sees keys `0..=p`, or with a sliding `window`
/// only `p − window + 1 ..= p` (masked keys contribute nothing in either
/// route, as ggml's `−∞` mask).
pub fn attention(q: &[f32], k: &[f32], v: &[f32], sh: AttnShape) -> Vec<f32> {
    use rayon::prelude::*;
    let AttnShape {
        heads,
        kv_heads,
        head_dim: d,
        seq,
        start,
        total,
        stride,
        isa,
        scale,
        window,
    } = sh;
    let fa = Fa { isa, scale };
    let group = (heads / kv_heads.max(1)).max(1);
    let mut out = vec![0f32; seq * heads * d];
    let tiled = seq >= FA_TILE_Q;
    // One task per (query, KV head): the query heads of the group share
    // its keys. Each row is independent and sequential inside, so neither
    // the thread count nor the grouping changes a bit.
    let width = (group * d).max(1);
    // The tiled route reads keys column by column (ggml packs each tile
    // transposed): transpose each KV head's keys once, `[d][total]`.
    let keys_t: Vec<Vec<f32>> = if tiled {
        (0..kv_heads)
            .map(|h| {
                let block = k
                    .get(h * stride * d..(h * stride + total) * d)
                    .unwrap_or(&[]);
                let n = block.len() / d.max(1);
                let mut t = vec![0f32; n * d];
                for (j, row) in block.chunks_exact(d.max(1)).enumerate() {
                    for (c, &x) in row.iter().enumerate() {
                        t[c * n + j] = x;
                    }
                }
                t
            })
            .collect()
    } else {
        Vec::new()
    };
    out.par_chunks_mut(width).enumerate().for_each(|(unit, o)| {
        let (i, kvh) = (unit / kv_heads.max(1), unit % kv_heads.max(1));
        let visible = (start + i + 1).min(total);
        let first = window
            .map_or(0, |w| (start + i + 1).saturating_sub(w))
            .min(visible);
        let at = kvh * stride * d;
        let rows = q.get(unit * width..(unit + 1) * width).unwrap_or(&[]);
        // Callers pass buffers of kv_heads·stride·d values; a short
        // one attends to nothing rather than panicking.
        if tiled {
            let keys_t = keys_t.get(kvh).map_or(&[][..], |t| &t[..]);
            let values = v.get(at..at + visible * d).unwrap_or(&[]);
            for (qr, or) in rows
                .chunks_exact(d.max(1))
                .zip(o.chunks_exact_mut(d.max(1)))
            {
                attend_row_tiled(qr, keys_t, values, first, or, fa);
            }
        } else {
            let keys = k.get(at + first * d..at + visible * d).unwrap_or(&[]);
            let values = v.get(at + first * d..at + visible * d).unwrap_or(&[]);
            attend_group(rows, keys, values, o, d, fa);
        }
    });
    out
}

/// Query rows from which ggml's CPU flash attention takes its tiled route
/// (`GGML_FA_TILE_Q`).
pub const FA_TILE_Q: usize = 64;
/// Keys per tile of the tiled route (`GGML_FA_TILE_KV`).
pub const FA_TILE_KV: usize = 64;

/// What one attention row needs besides its data: the ggml build
/// reproduced and the factor applied to `q·k`.
#[derive(Clone, Copy, Debug)]
struct Fa {
    isa: GgmlIsa,
    scale: f32,
}

fast_fn! {
    /// One query row of ggml's tiled flash attention
    /// (`ggml_compute_forward_flash_attn_ext_tiled`) over keys and values
    /// `0..visible` of one KV head, of which those before `first` are masked.
    ///
    /// Per tile of [`FA_TILE_KV`] keys (aligned to key 0): scores `q·k` as one
    /// f32 FMA chain over the head (`simd_gemm`; the query stays f32), times
    /// `scale`; the tile's maximum moves the running maximum once (`expf` of
    /// the difference rescales the accumulator and the sum); `p = e^{s−M}` by
    /// ggml's vectorised `expf`, summed per 16 (AVX-512) or 8 (AVX2) lanes,
    /// each partial widened to f64 and the tile's sum added to `S` in f64;
    /// then `VKQ += p·v` as f32 FMA chains over the tile's keys. Finally
    /// `VKQ · (1/S)`.
    fn attend_row_tiled(
        q: &[f32],
        keys_t: &[f32],
        values: &[f32],
        first: usize,
        out: &mut [f32],
        fa: Fa,
    ) {
        let d = q.len();
        if d == 0 {
            return;
        }
        // keys_t is [d][total] (total ≥ visible); values hold the visible rows.
        let total = keys_t.len() / d;
        let n = (values.len() / d).min(total);
        let mut acc = vec![0f32; d];
        let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
        let mut p = [0f32; FA_TILE_KV];
        let mut tile = 0;
        while tile < n {
            let end = (tile + FA_TILE_KV).min(n);
            if end <= first {
                tile = end;
                continue;
            }
            let len = end - tile;
            // Scores: one FMA chain over the head per key, the keys of the
            // tile side by side (each lane its own chain, as simd_gemm).
            p.fill(0.0);
            for (c, &qc) in q.iter().enumerate() {
                let col = &keys_t[c * total + tile..c * total + end];
                for (s, &kv) in p[..len].iter_mut().zip(col) {
                    *s = qc.mul_add(kv, *s);
                }
            }
            let mut tile_max = f32::NEG_INFINITY;
            for (j, s) in p.iter_mut().enumerate() {
                let key = tile + j;
                *s = if key >= first && key < end {
                    *s * fa.scale
                } else {
                    f32::NEG_INFINITY
                };
                tile_max = tile_max.max(*s);
            }
            if tile_max == f32::NEG_INFINITY {
                tile = end;
                continue;
            }
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                acc.iter_mut().for_each(|a| *a *= ms);
                s_sum *= ms;
            }
            m = m_new;
            s_sum = (f64::from(s_sum) + softmax_tile(&mut p, m, fa.isa)) as f32;
            for (j, &pj) in p[..len].iter().enumerate() {
                let key = tile + j;
                if key < first {
                    continue;
                }
                let vr = &values[key * d..(key + 1) * d];
                for (a, &x) in acc.iter_mut().zip(vr) {
                    *a = pj.mul_add(x, *a);
                }
            }
            tile = end;
        }
        let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = a * inv;
        }
    }
}

/// `ggml_vec_soft_max_f32` on one tile: `p ← e^{p − max}` with `isa`'s
/// vectorised `expf`, returning the sum as ggml forms it — each register
/// of 16 (AVX-512) or 8 (AVX2) lanes reduced to f32 (halves added until
/// four lanes are left, then `(v0 + v2) + (v1 + v3)`), widened to f64 and
/// added in order.
#[inline(always)]
fn softmax_tile(p: &mut [f32; FA_TILE_KV], max: f32, isa: GgmlIsa) -> f64 {
    let lanes = match isa {
        GgmlIsa::Avx2 => 8,
        GgmlIsa::Avx512 => 16,
    };
    let mut sum = 0f64;
    for chunk in p.chunks_exact_mut(lanes) {
        let mut v = [0f32; 16];
        for (x, w) in chunk.iter_mut().zip(v.iter_mut()) {
            *x = match isa {
                GgmlIsa::Avx2 => expf_ggml(*x - max),
                GgmlIsa::Avx512 => expf_ggml_avx512(*x - max),
            };
            *w = *x;
        }
        let mut width = lanes;
        while width > 4 {
            width /= 2;
            for l in 0..width {
                v[l] += v[l + width];
            }
        }
        sum += f64::from((v[0] + v[2]) + (v[1] + v[3]));
    }
    sum
}

/// The query rows `q` (`g × d`) of the heads that share one KV head, over
/// its `keys` / `values`, written to `out` (`g × d`).
fn attend_group(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32], d: usize, fa: Fa) {
    if attend_regs(q, keys, values, out, d, fa) {
        return;
    }
    for (qr, o) in q.chunks_exact(d.max(1)).zip(out.chunks_exact_mut(d.max(1))) {
        attend_row(qr, keys, values, o, fa);
    }
}

/// One query row of [`attention`] over `keys` / `values` (`visible ×
/// head_dim`), written to `out`.
fn attend_row(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32], fa: Fa) {
    if !attend_regs(q, keys, values, out, q.len(), fa) {
        attend_row_portable(q, keys, values, out, fa);
    }
}

/// Runs the register kernel of this CPU (AVX2 + FMA + F16C on x86-64,
/// NEON on aarch64) for the `q.len() / d` rows of `q` when one is compiled
/// for that head size and row count; `false` when none ran.
fn attend_regs(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32], d: usize, fa: Fa) -> bool {
    if d == 0 || q.len() != out.len() || !q.len().is_multiple_of(d) {
        return false;
    }
    let g = q.len() / d;
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above); q
        // and out hold g rows of d values.
        return unsafe { avx2::attend(q, keys, values, out, d, g, fa) };
    }
    #[cfg(target_arch = "aarch64")]
    if neon::available() {
        // SAFETY: NEON is part of every aarch64 CPU; shapes as above.
        return unsafe { neon::attend(q, keys, values, out, d, g, fa) };
    }
    let _ = (keys, values, g, fa);
    false
}

/// The portable version of [`attend_row`].
fn attend_row_portable(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32], fa: Fa) {
    let d = q.len();
    let scale = fa.scale;
    let qh: Vec<f32> = q.iter().map(|&x| round_f16(x)).collect();
    let mut acc = vec![0f32; d];
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    for (kr, vr) in keys.chunks_exact(d).zip(values.chunks_exact(d)) {
        let s = dot_f16(kr, &qh, fa.isa) * scale;
        let (mut ms, mut vs) = (1f32, 1f32);
        if s > m {
            ms = (m - s).exp();
            m = s;
            for a in acc.iter_mut() {
                *a = round_f16(*a * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        for (a, &x) in acc.iter_mut().zip(vr) {
            *a = round_f16(x.mul_add(vs, *a));
        }
        s_sum = s_sum.mul_add(ms, vs);
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = a * inv;
    }
}

/// [`attend_row_portable`] on SIMD registers of eight f32 lanes: the same
/// operations lane for lane (FMAs, adds, products, hardware f16
/// rounding), so every ISA gives the portable bits.
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]
mod simd {
    use super::{Fa, GgmlIsa, reduce_tail};

    /// Eight f32 lanes of one ISA: what [`attend_rows`] computes with.
    ///
    /// Exists so the one kernel below runs on AVX2 (one 256-bit register)
    /// and NEON (two 128-bit registers) alike.
    pub(super) trait Lanes8: Copy {
        /// All lanes `x`.
        ///
        /// # Safety (every method)
        /// The CPU must have the ISA's features, and the calling function
        /// must be compiled with them.
        unsafe fn splat(x: f32) -> Self;
        /// Eight values from `p`.
        ///
        /// # Safety
        /// As [`Self::splat`]; `p` must point at 8 readable f32s.
        unsafe fn load(p: *const f32) -> Self;
        /// Writes the lanes to `p`.
        ///
        /// # Safety
        /// As [`Self::splat`]; `p` must point at 8 writable f32s.
        unsafe fn store(self, p: *mut f32);
        /// Lane-wise sum.
        ///
        /// # Safety
        /// As [`Self::splat`].
        unsafe fn add(self, o: Self) -> Self;
        /// Lane-wise product.
        ///
        /// # Safety
        /// As [`Self::splat`].
        unsafe fn mul(self, o: Self) -> Self;
        /// Lane-wise `self·b + c`, rounded once.
        ///
        /// # Safety
        /// As [`Self::splat`].
        unsafe fn fma(self, b: Self, c: Self) -> Self;
        /// Each lane rounded to the nearest f16 (ties to even) and widened.
        ///
        /// # Safety
        /// As [`Self::splat`].
        unsafe fn f16_round(self) -> Self;
    }

    /// Runs [`attend_rows`] for head size `d` and `g` rows when it is
    /// compiled for that shape; `false` otherwise.
    ///
    /// # Safety
    /// As [`attend_rows`] (the shapes are checked here).
    #[inline(always)]
    pub(super) unsafe fn dispatch<L: Lanes8>(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        out: &mut [f32],
        d: usize,
        g: usize,
        fa: Fa,
    ) -> bool {
        // SAFETY: each arm's NV·8 = d and G = g, and the caller holds the
        // ISA's features.
        unsafe {
            match (d, g) {
                (64, 1) => attend_rows::<L, 8, 1>(q, keys, values, out, fa),
                (64, 2) => attend_rows::<L, 8, 2>(q, keys, values, out, fa),
                (64, 3) => attend_rows::<L, 8, 3>(q, keys, values, out, fa),
                (64, 4) => attend_rows::<L, 8, 4>(q, keys, values, out, fa),
                (128, 1) => attend_rows::<L, 16, 1>(q, keys, values, out, fa),
                (192, 1) => attend_rows::<L, 24, 1>(q, keys, values, out, fa),
                (256, 1) => attend_rows::<L, 32, 1>(q, keys, values, out, fa),
                _ => return false,
            }
        }
        true
    }

    /// [`super::attend_row`] for `G` query rows over the same keys and
    /// values (the query heads that share one KV head), head size `NV`·8,
    /// with the accumulators and queries in registers and each dot product
    /// reduced in registers up to its last eight lanes. The rows'
    /// dependency chains (dot, max, `expf`, accumulate) interleave; each
    /// row still runs exactly [`super::attend_row_portable`]'s operations
    /// in its order.
    ///
    /// # Safety
    /// The CPU must have `L`'s features and the caller be compiled with
    /// them; `q` and `out` must hold `G`·`NV`·8 values, `NV`·8 a multiple
    /// of 64; `keys` and `values` whole rows of `NV`·8 values.
    #[inline(always)]
    unsafe fn attend_rows<L: Lanes8, const NV: usize, const G: usize>(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        out: &mut [f32],
        fa: Fa,
    ) {
        let d = NV * 8;
        let scale = fa.scale;
        // SAFETY (every block of this function): the caller holds L's
        // features; every pointer offset is inside the slices as the
        // comments say.
        let zero = unsafe { L::splat(0.0) };
        let mut qh = [[zero; NV]; G];
        for (g, row) in qh.iter_mut().enumerate() {
            for (c, r) in row.iter_mut().enumerate() {
                // q holds G·d values.
                *r = unsafe { L::load(q.as_ptr().add(g * d + c * 8)).f16_round() };
            }
        }
        let mut acc = [[zero; NV]; G];
        let mut m = [f32::NEG_INFINITY; G];
        let mut s_sum = [0f32; G];
        let n = keys.len().min(values.len()) / d;
        for t in 0..n {
            // Row t of keys and values is inside both slices.
            let (kr, vr) = unsafe { (keys.as_ptr().add(t * d), values.as_ptr().add(t * d)) };
            let mut score = [0f32; G];
            for g in 0..G {
                // ggml_vec_dot_f16 with four accumulators of `lanes` lanes
                // (two registers each for 16): register c of the row holds
                // elements c·8..c·8+8, step i covering 4·lanes of them.
                let mut v = [0f32; 16];
                let lanes = match fa.isa {
                    GgmlIsa::Avx2 => {
                        let mut sum = [zero; 4];
                        for i in 0..NV / 4 {
                            for (j, s) in sum.iter_mut().enumerate() {
                                let c = i * 4 + j;
                                // c·8 + 8 ≤ d.
                                *s = unsafe { L::load(kr.add(c * 8)).fma(qh[g][c], *s) };
                            }
                        }
                        unsafe {
                            let r = sum[0].add(sum[2]).add(sum[1].add(sum[3]));
                            r.store(v.as_mut_ptr());
                        }
                        8
                    }
                    GgmlIsa::Avx512 => {
                        let mut sum = [zero; 8];
                        for i in 0..NV / 8 {
                            for (j, s) in sum.iter_mut().enumerate() {
                                let c = i * 8 + j;
                                // c·8 + 8 ≤ d.
                                *s = unsafe { L::load(kr.add(c * 8)).fma(qh[g][c], *s) };
                            }
                        }
                        // Accumulator j is registers 2j (lanes 0–7) and
                        // 2j+1 (lanes 8–15); v has 16 writable f32s.
                        unsafe {
                            let lo = sum[0].add(sum[4]).add(sum[2].add(sum[6]));
                            let hi = sum[1].add(sum[5]).add(sum[3].add(sum[7]));
                            lo.store(v.as_mut_ptr());
                            hi.store(v.as_mut_ptr().add(8));
                        }
                        16
                    }
                };
                score[g] = reduce_tail(v, lanes) * scale;
            }
            for g in 0..G {
                let s = score[g];
                let (mut ms, mut vs) = (1f32, 1f32);
                if s > m[g] {
                    ms = (m[g] - s).exp();
                    m[g] = s;
                    let msv = unsafe { L::splat(ms) };
                    for a in acc[g].iter_mut() {
                        *a = unsafe { a.mul(msv).f16_round() };
                    }
                } else {
                    vs = (s - m[g]).exp();
                }
                let vsv = unsafe { L::splat(vs) };
                for (c, a) in acc[g].iter_mut().enumerate() {
                    // c·8 + 8 ≤ d.
                    *a = unsafe { L::load(vr.add(c * 8)).fma(vsv, *a).f16_round() };
                }
                s_sum[g] = s_sum[g].mul_add(ms, vs);
            }
        }
        for g in 0..G {
            let inv = unsafe { L::splat(if s_sum[g] == 0.0 { 0.0 } else { 1.0 / s_sum[g] }) };
            for (c, a) in acc[g].iter().enumerate() {
                // out holds G·d values.
                unsafe { a.mul(inv).store(out.as_mut_ptr().add(g * d + c * 8)) };
            }
        }
    }
}

/// The attention kernel on AVX2 + FMA + F16C (one 256-bit register per
/// eight lanes).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use super::Fa;
    use super::simd::{Lanes8, dispatch};

    /// Whether this CPU can run [`attend`] (`MEMKERN_PORTABLE_KERNELS`
    /// says no).
    pub fn available() -> bool {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            std::env::var_os("MEMKERN_PORTABLE_KERNELS").is_none()
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
        })
    }

    /// Eight lanes in one AVX register.
    #[derive(Clone, Copy)]
    struct V(__m256);

    impl Lanes8 for V {
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            V(unsafe { _mm256_set1_ps(x) })
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V(unsafe { _mm256_loadu_ps(p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self.0) }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            V(unsafe { _mm256_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            V(unsafe { _mm256_mul_ps(self.0, o.0) })
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            V(unsafe { _mm256_fmadd_ps(self.0, b.0, c.0) })
        }
        #[inline(always)]
        unsafe fn f16_round(self) -> Self {
            V(unsafe { _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0)) })
        }
    }

    /// [`dispatch`] compiled for AVX2 + FMA + F16C.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C ([`available`]); `q` and `out`
    /// hold `g` rows of `d` values, `keys` and `values` whole rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        out: &mut [f32],
        d: usize,
        g: usize,
        fa: Fa,
    ) -> bool {
        // SAFETY: forwarded; this function has V's features.
        unsafe { dispatch::<V>(q, keys, values, out, d, g, fa) }
    }
}

/// The attention kernel on NEON (two 128-bit registers per eight lanes).
#[cfg(target_arch = "aarch64")]
mod neon {
    use core::arch::aarch64::*;

    use super::Fa;
    use super::simd::{Lanes8, dispatch};

    /// Whether [`attend`] may run (always on aarch64, unless
    /// `MEMKERN_PORTABLE_KERNELS` is set).
    pub fn available() -> bool {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| std::env::var_os("MEMKERN_PORTABLE_KERNELS").is_none())
    }

    /// Eight lanes in two NEON registers (lanes 0–3, 4–7).
    #[derive(Clone, Copy)]
    struct V(float32x4_t, float32x4_t);

    /// Rounds each lane to f16 and back (`FCVTN`, `FCVTL`: round to nearest
    /// even under Linux's default FPCR, as `round_f16`).
    #[inline(always)]
    fn f16_round4(mut x: float32x4_t) -> float32x4_t {
        // SAFETY: two base ASIMD instructions on registers only.
        unsafe {
            core::arch::asm!(
                "fcvtn {t:v}.4h, {x:v}.4s",
                "fcvtl {x:v}.4s, {t:v}.4h",
                x = inout(vreg) x,
                t = out(vreg) _,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        x
    }

    impl Lanes8 for V {
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            let v = unsafe { vdupq_n_f32(x) };
            V(v, v)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { V(vld1q_f32(p), vld1q_f32(p.add(4))) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe {
                vst1q_f32(p, self.0);
                vst1q_f32(p.add(4), self.1);
            }
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            unsafe { V(vaddq_f32(self.0, o.0), vaddq_f32(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            unsafe { V(vmulq_f32(self.0, o.0), vmulq_f32(self.1, o.1)) }
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            // vfmaq_f32(c, a, b) = c + a·b, rounded once.
            unsafe { V(vfmaq_f32(c.0, self.0, b.0), vfmaq_f32(c.1, self.1, b.1)) }
        }
        #[inline(always)]
        unsafe fn f16_round(self) -> Self {
            V(f16_round4(self.0), f16_round4(self.1))
        }
    }

    /// [`dispatch`] compiled for NEON.
    ///
    /// # Safety
    /// `q` and `out` hold `g` rows of `d` values, `keys` and `values` whole
    /// rows.
    #[target_feature(enable = "neon")]
    pub unsafe fn attend(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        out: &mut [f32],
        d: usize,
        g: usize,
        fa: Fa,
    ) -> bool {
        // SAFETY: forwarded; NEON is enabled here.
        unsafe { dispatch::<V>(q, keys, values, out, d, g, fa) }
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::*;

    #[test]
    fn round_f16_matches_half() {
        for i in 0..(1u32 << 24) {
            let bits = i.wrapping_mul(0x9e37_79b9) ^ (i << 8);
            let x = f32::from_bits(bits);
            let want = f16::from_f32(x).to_f32();
            let got = round_f16(x);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{x:e} ({bits:#x}): {got:e} vs {want:e}"
            );
        }
    }

    #[test]
    fn expf_ggml_is_close_to_expf() {
        for i in -1700..1700 {
            let x = i as f32 * 0.05;
            let (a, b) = (expf_ggml(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(expf_ggml(-200.0), 0.0);
        assert!(expf_ggml(100.0).is_infinite());
        for i in -1700..1700 {
            let x = i as f32 * 0.05;
            let (a, b) = (expf_ggml_avx512(x), x.exp());
            assert!(((a - b) / b).abs() < 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(expf_ggml_avx512(-200.0), 0.0);
    }

    #[test]
    fn rms_norm_normalises() {
        let x = [3.0f32, 4.0, 0.0, 0.0];
        let y = rms_norm(&x, &[1.0; 4], 0.0);
        let rms = (y.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn attention_of_one_key_is_its_value() {
        let sh = AttnShape {
            heads: 2,
            kv_heads: 1,
            head_dim: 32,
            seq: 1,
            start: 0,
            total: 1,
            stride: 1,
            isa: GgmlIsa::Avx2,
            scale: 0.125,
            window: None,
        };
        let q = vec![0.5f32; 64];
        let k = vec![0.25f32; 32];
        let v: Vec<f32> = (0..32).map(|i| round_f16(i as f32 * 0.1)).collect();
        let out = attention(&q, &k, &v, sh);
        assert_eq!(&out[..32], &v[..]);
        assert_eq!(&out[32..], &v[..]);
    }

    #[test]
    fn attention_kernels_agree_to_the_bit() {
        // Pseudo-random rows; 40 keys so the running maximum moves often.
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 6.0
        };
        for d in [64usize, 128, 192, 256] {
            let keys: Vec<f32> = (0..40 * d).map(|_| round_f16(next())).collect();
            let values: Vec<f32> = (0..40 * d).map(|_| round_f16(next())).collect();
            let q: Vec<f32> = (0..d).map(|_| next()).collect();
            for isa in [GgmlIsa::Avx2, GgmlIsa::Avx512] {
                let fa = Fa {
                    isa,
                    scale: 1.0 / (d as f32).sqrt(),
                };
                for visible in [1, 7, 40] {
                    let (k, v) = (&keys[..visible * d], &values[..visible * d]);
                    let mut want = vec![0f32; d];
                    attend_row_portable(&q, k, v, &mut want, fa);
                    let mut got = vec![0f32; d];
                    attend_row(&q, k, v, &mut got, fa);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "d {d} {isa:?} {visible} keys");
                    // Three query rows sharing the keys, as a GQA group.
                    let q3: Vec<f32> = q.iter().chain(&q).chain(&q).map(|x| x * 0.75).collect();
                    let mut grouped = vec![0f32; 3 * d];
                    attend_group(&q3, k, v, &mut grouped, d, fa);
                    for (g, (qr, o)) in q3.chunks(d).zip(grouped.chunks(d)).enumerate() {
                        let mut one = vec![0f32; d];
                        attend_row_portable(qr, k, v, &mut one, fa);
                        assert_eq!(bits(o), bits(&one), "group row {g} d {d} {isa:?}");
                    }
                }
            }
        }
    }
}

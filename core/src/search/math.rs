//! The two non-arithmetic functions search needs, without `std` or `libm`:
//! a natural logarithm (BM25) and a square root (cosine on an MCU).
//!
//! BM25's inverse document frequency needs a natural logarithm; `core` has
//! none, and pulling a math crate into the MCU build for one function is not
//! worth it. Computed in `f64` so the result is exact to `f32` precision.

/// Square root of `x` (`NaN` for negative or NaN input): Newton's method
/// from an exponent-halving first guess; exact to `f64` rounding for the
/// magnitudes cosine needs.
pub(crate) fn sqrt(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 || x.is_infinite() {
        return x;
    }
    // Halving the biased exponent gives a guess within a factor of 2.
    let mut y = f64::from_bits((x.to_bits() >> 1) + (1023u64 << 51));
    for _ in 0..6 {
        y = 0.5 * (y + x / y);
    }
    y
}

/// ln 2.
const LN_2: f64 = core::f64::consts::LN_2;

/// Natural logarithm of `x`: `NaN` for negative or NaN input, `-∞` for zero,
/// `+∞` for `+∞`. Relative error below 1e-15 on normal inputs.
pub(crate) fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    let (mut bits, mut exp_adjust) = (x.to_bits(), 0i64);
    if bits >> 52 == 0 {
        // Subnormal: scale into the normal range by 2^54.
        bits = (x * f64::from_bits(0x4350_0000_0000_0000)).to_bits();
        exp_adjust = -54;
    }
    // The biased exponent has 11 bits, so the cast is lossless.
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023 + exp_adjust;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > core::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2·atanh(z), z = (m−1)/(m+1), |z| ≤ 0.172: the series converges fast.
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    let mut k = 1.0;
    for _ in 0..12 {
        sum += term / k;
        term *= z2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::{ln, sqrt};

    #[test]
    fn sqrt_matches_std() {
        for &x in &[1e-300, 1e-12, 0.25, 1.0, 2.0, 3.0, 16_129.0, 1e9, 1.7e308] {
            let got = sqrt(x);
            let want = x.sqrt();
            assert!(
                (got - want).abs() <= want * 1e-15,
                "sqrt({x}) = {got}, want {want}"
            );
        }
        assert!(sqrt(-1.0).is_nan());
        assert_eq!(sqrt(0.0), 0.0);
    }

    #[test]
    fn matches_std() {
        for &x in &[
            1e-310, 1e-300, 1e-9, 0.001, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 2.5, 10.0, 123.456, 1e6,
            3.3e17, 1e300,
        ] {
            let (got, want) = (ln(x), x.ln());
            assert!(
                (got - want).abs() <= 1e-14 * want.abs().max(1.0),
                "{x}: {got} vs {want}"
            );
        }
        assert!(ln(-1.0).is_nan());
        assert!(ln(f64::NAN).is_nan());
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
    }
}

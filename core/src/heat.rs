//! Heat: an exponentially decayed access count in pure integer arithmetic.
//!
//! It exists so the scheduler can rank memories by "how much and how
//! recently used" with a number that an MCU without an FPU and a Linux host
//! compute bit for bit identically.
//!
//! # Model
//!
//! A [`Heat`] stores a count `value` (unsigned Q16.16 fixed point, so
//! [`ONE`] = 65 536 is one access) as of the instant `at`. Between accesses
//! the count decays as `value · 2^(−Δt / half_life)`; every
//! [`Heat::touch`] first decays the stored count to *now* and then adds one.
//! Nothing is stored about the half-life: it is a system-wide policy
//! ([`HalfLife`]) passed to each call, so changing it never requires
//! rewriting stored cubes.
//!
//! # Arithmetic and precision
//!
//! [`decay`] splits `Δt / half_life` into an integer part `k` and a
//! fraction `f`, rounded **up** to 32 bits (`f = ⌈2³²·(Δt mod h)/h⌉`).
//! `2^(−f)` is the product, over the set bits `j` of `f`, of the constants
//! `2^(−2^(−j))` held in a 32-entry Q1.63 table (each rounded down, each
//! product truncated); the count is then multiplied by that factor and
//! shifted right by `63 + k`. Consequences, for every input:
//!
//! - the result is **never above** the exact value `v · 2^(−Δt/h)`, and at
//!   most one unit in the last place (2⁻¹⁶ of an access) below its floor;
//!   whole half-lives (`f = 0`) are exact shifts;
//! - it is **monotone**: a later time never gives a larger value (the
//!   factor's rounding error, ≈ 2⁻⁵⁷, is far below the ≈ 2⁻³³ step between
//!   neighbouring fractions);
//! - it **never overflows or panics**: counts saturate at `u32::MAX`
//!   (≈ 65 536 accesses), any `Δt` up to `u64::MAX` ms is fine, and a time
//!   before `at` (a clock that went backwards) means "no time passed".
//!
//! # Stable binary form
//!
//! `Heat` is stored inside cube metadata. Its postcard form is the two fields
//! in order: `value` as a varint `u32`, then `at` as a zig-zag varint `i64`.
//! Changing either field is a cube format change.

use core::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Number of fractional bits in a heat value.
pub const FRAC_BITS: u32 = 16;

/// One access, as a Q16.16 heat value: the unit of [`Heat::value`].
pub const ONE: u32 = 1 << FRAC_BITS;

/// How long it takes an unused memory's heat to halve.
///
/// Exists as a newtype so a half-life can never be zero (an instant decay
/// would make every count meaningless) and so its unit (milliseconds, like
/// [`Timestamp`]) is explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct HalfLife(NonZeroU64);

impl HalfLife {
    /// One hour.
    pub const HOUR: HalfLife = HalfLife::from_millis_or_min(3_600_000);
    /// One day.
    pub const DAY: HalfLife = HalfLife::from_millis_or_min(Timestamp::DAY as u64);
    /// One week: the default, a memory unused for a month keeps ≈ 1/16 of
    /// its heat.
    pub const WEEK: HalfLife = HalfLife::from_millis_or_min(7 * Timestamp::DAY as u64);

    /// A half-life of `millis` milliseconds; `None` when `millis` is zero.
    pub const fn from_millis(millis: u64) -> Option<HalfLife> {
        match NonZeroU64::new(millis) {
            Some(n) => Some(HalfLife(n)),
            None => None,
        }
    }

    /// Const helper for the named constants (none of them is zero).
    const fn from_millis_or_min(millis: u64) -> HalfLife {
        match NonZeroU64::new(millis) {
            Some(n) => HalfLife(n),
            None => HalfLife(NonZeroU64::MIN),
        }
    }

    /// The half-life in milliseconds (never zero).
    pub const fn millis(self) -> u64 {
        self.0.get()
    }
}

impl Default for HalfLife {
    fn default() -> Self {
        HalfLife::WEEK
    }
}

/// A decayed access count and the instant it was last brought up to date.
///
/// Exists so usage statistics can rank memories by recency-weighted use with
/// a small, `Copy`, platform-independent value; see the [module
/// docs](self) for the model, precision and binary form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Heat {
    /// Decayed access count as of `at`, unsigned Q16.16 ([`ONE`] = one access).
    pub value: u32,
    /// The instant `value` refers to.
    pub at: Timestamp,
}

impl Heat {
    /// No accesses at all (the value of a fresh memory).
    pub const COLD: Heat = Heat {
        value: 0,
        at: Timestamp(0),
    };

    /// The count decayed to `now` (Q16.16). A `now` before `at` returns the
    /// stored value unchanged.
    pub fn value_at(&self, now: Timestamp, half_life: HalfLife) -> u32 {
        decay(self.value, elapsed(self.at, now), half_life)
    }

    /// Records one access at `now`: decays the count to `now`, adds [`ONE`]
    /// (saturating) and moves `at` to `now`.
    ///
    /// If `now` is before `at` (the clock went backwards) no decay happens
    /// and `at` stays where it is, so heat never grows by time travel.
    pub fn touch(&mut self, now: Timestamp, half_life: HalfLife) {
        self.touch_by(now, half_life, ONE);
    }

    /// Like [`Heat::touch`] but adds `amount` (Q16.16) instead of one access,
    /// e.g. to weight an access by how useful it was.
    pub fn touch_by(&mut self, now: Timestamp, half_life: HalfLife, amount: u32) {
        let decayed = self.value_at(now, half_life);
        self.value = decayed.saturating_add(amount);
        if now > self.at {
            self.at = now;
        }
    }
}

/// Milliseconds from `at` to `now`: exact over the whole `i64` range (unlike a
/// subtraction, which could overflow), and zero when `now` is not later.
fn elapsed(at: Timestamp, now: Timestamp) -> u64 {
    if now > at { now.0.abs_diff(at.0) } else { 0 }
}

/// `2^(−2^(−j)) · 2⁶³`, rounded down, for `j = 1..=32` (index `j − 1`).
const HALVING_ROOTS: [u64; 32] = [
    0x5a82_7999_fcef_3242,
    0x6ba2_7e65_6b4e_b57a,
    0x7560_6373_ee92_1c97,
    0x7a92_be8a_9243_6616,
    0x7d41_d96d_b915_019d,
    0x7e9f_0606_7a43_60ba,
    0x7f4f_08ae_3dc7_c425,
    0x7fa7_65ac_a88f_6452,
    0x7fd3_ab29_0e46_d768,
    0x7fe9_d3a8_e07b_f085,
    0x7ff4_e959_7bed_93aa,
    0x7ffa_748d_ff8d_c61e,
    0x7ffd_3a3f_5002_0332,
    0x7ffe_9d1d_bc0a_75a9,
    0x7fff_4e8e_6306_ed58,
    0x7fff_a747_12c3_cdfd,
    0x7fff_d3a3_81b1_fa28,
    0x7fff_e9d1_beed_0189,
    0x7fff_f4e8_defb_81d7,
    0x7fff_fa74_6f5f_012f,
    0x7fff_fd3a_37a7_d0a8,
    0x7fff_fe9d_1bd1_fc58,
    0x7fff_ff4e_8de8_832d,
    0x7fff_ffa7_46f4_22d6,
    0x7fff_ffd3_a37a_09bb,
    0x7fff_ffe9_d1bd_02f1,
    0x7fff_fff4_e8de_80fd,
    0x7fff_fffa_746f_4060,
    0x7fff_fffd_3a37_a028,
    0x7fff_fffe_9d1b_d012,
    0x7fff_ffff_4e8d_e808,
    0x7fff_ffff_a746_f404,
];

/// 1.0 in the Q1.63 format of [`HALVING_ROOTS`].
const Q63_ONE: u64 = 1 << 63;

/// `2^(−frac / 2³²)` in Q1.63, never above the exact value.
fn exp2_neg_frac(frac: u32) -> u64 {
    let mut acc = Q63_ONE;
    for (bit, root) in HALVING_ROOTS.iter().enumerate() {
        // Bit 31 of `frac` weighs 2^-1 (table index 0), bit 0 weighs 2^-32.
        if frac & (1 << (31 - bit)) != 0 {
            // acc ≤ 2^63 and root < 2^63, so the product is < 2^126 and the
            // shifted result is < 2^63: the narrowing cannot lose bits.
            acc = ((u128::from(acc) * u128::from(*root)) >> 63) as u64;
        }
    }
    acc
}

/// `value · 2^(−elapsed_ms / half_life)`, in integer arithmetic.
///
/// Exists on its own so callers can decay any Q16.16 count (not only a
/// stored [`Heat`]); see the [module docs](self) for the precision bounds.
pub fn decay(value: u32, elapsed_ms: u64, half_life: HalfLife) -> u32 {
    let h = half_life.millis();
    let mut whole = elapsed_ms / h;
    let rem = elapsed_ms % h;
    // Fraction rem/h as a 32-bit binary fraction, rounded up so the factor
    // stays at or below the exact one. rem < h, so the quotient is ≤ 2^32.
    let num = u128::from(rem) << 32;
    let den = u128::from(h);
    let mut frac = num.div_ceil(den);
    if frac >> 32 != 0 {
        // Rounding up reached a whole half-life (only for h > 2^32 ms).
        whole = whole.saturating_add(1);
        frac = 0;
    }
    // value < 2^32 and the factor ≤ 2^63, so the product is < 2^95: any
    // total shift of 95 or more gives zero.
    if whole >= 32 {
        return 0;
    }
    // `frac < 2^32` was established above; `whole < 32` here.
    let factor = exp2_neg_frac(frac as u32);
    let shift = 63 + whole as u32;
    // The factor is ≤ 1.0, so the result is ≤ value and fits a u32.
    ((u128::from(value) * u128::from(factor)) >> shift) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 1_000_000;

    fn hl(ms: u64) -> HalfLife {
        HalfLife::from_millis(ms).expect("non-zero")
    }

    #[test]
    fn zero_half_life_is_rejected() {
        assert_eq!(HalfLife::from_millis(0), None);
        assert_eq!(HalfLife::DAY.millis(), 86_400_000);
        assert_eq!(HalfLife::default(), HalfLife::WEEK);
    }

    #[test]
    fn table_entries_square_to_their_predecessor() {
        // Pure-integer check of the table: r_j² ≈ r_{j−1}, with r_0 = 1/2.
        let mut prev = Q63_ONE / 2;
        for root in HALVING_ROOTS {
            let sq = ((u128::from(root) * u128::from(root)) >> 63) as u64;
            assert!(prev.abs_diff(sq) <= 2, "{prev:#x} vs {sq:#x}");
            prev = root;
        }
    }

    #[test]
    fn exact_values() {
        let h = hl(H);
        assert_eq!(decay(ONE, 0, h), ONE);
        assert_eq!(decay(ONE, H, h), ONE / 2);
        assert_eq!(decay(ONE, 2 * H, h), ONE / 4);
        assert_eq!(decay(100 * ONE, 10 * H, h), 6_400);
        // 65536 / √2 = 46340.95…
        assert_eq!(decay(ONE, H / 2, h), 46_340);
        // 65536 · 2^-0.25 = 55108.98…
        assert_eq!(decay(ONE, H / 4, h), 55_108);
        // 3 · 65536 · 2^-1.5 = 69511.43…
        assert_eq!(decay(3 * ONE, 3 * H / 2, h), 69_511);
        // u32::MAX · 2^-0.5 = 3037000499.26…
        assert_eq!(decay(u32::MAX, H / 2, h), 3_037_000_499);
        // One millisecond of a one-second half-life: 65536 · 2^-0.001 = 65490.59…
        assert_eq!(decay(ONE, 1, hl(1_000)), 65_490);
        assert_eq!(decay(0, 123, h), 0);
    }

    #[test]
    fn saturates_and_never_panics() {
        let h = hl(H);
        assert_eq!(decay(u32::MAX, u64::MAX, h), 0);
        assert_eq!(decay(u32::MAX, 31 * H, h), 1);
        assert_eq!(decay(u32::MAX, 32 * H, h), 0);
        assert_eq!(decay(u32::MAX, u64::MAX, hl(u64::MAX)), u32::MAX / 2);
        assert_eq!(decay(u32::MAX, u64::MAX - 1, hl(u64::MAX)), u32::MAX / 2);
        assert_eq!(decay(u32::MAX, 1, hl(u64::MAX)), u32::MAX - 1);
        assert_eq!(decay(ONE, u64::MAX, hl(1)), 0);
        let mut heat = Heat {
            value: u32::MAX,
            at: Timestamp(i64::MIN),
        };
        heat.touch(Timestamp(i64::MIN), h);
        assert_eq!(heat.value, u32::MAX);
        heat.touch(Timestamp(i64::MAX), h);
        assert_eq!(
            heat,
            Heat {
                value: ONE,
                at: Timestamp(i64::MAX)
            }
        );
    }

    #[test]
    fn matches_floating_point_within_one_ulp() {
        // Not used by the code; only a cross-check of the integer method.
        let mut seed = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let value = next() as u32;
            let h = (next() % 10_000_000) + 1;
            let dt = next() % (40 * h);
            let got = decay(value, dt, hl(h));
            let exact = f64::from(value) * (-(dt as f64) / (h as f64)).exp2();
            assert!(
                f64::from(got) <= exact + 1e-3,
                "{value} {dt} {h}: {got} > {exact}"
            );
            assert!(
                f64::from(got) >= exact.floor() - 1.0,
                "{value} {dt} {h}: {got} << {exact}"
            );
        }
    }

    #[test]
    fn decay_is_monotone_in_time() {
        let h = hl(997);
        for value in [1, 3, ONE, 12_345_678, u32::MAX] {
            let mut prev = value;
            for dt in 0..40_000 {
                let v = decay(value, dt, h);
                assert!(v <= prev, "value {value} rose at dt {dt}");
                prev = v;
            }
            assert_eq!(prev, 0);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 5_000, ..Default::default() })]

        /// Later never hotter, more never colder, decay never adds, and
        /// decaying in two steps is never above decaying in one (± 1 ulp).
        #[test]
        fn decay_laws(
            v in proptest::prelude::any::<u32>(),
            w in proptest::prelude::any::<u32>(),
            a in 0..u64::MAX / 2,
            b in 0..u64::MAX / 2,
            h in proptest::prop_oneof![1..100_000u64, proptest::prelude::any::<u64>()],
        ) {
            let h = hl(h.max(1));
            let (lo, hi) = (v.min(w), v.max(w));
            proptest::prop_assert!(decay(v, a, h) >= decay(v, a + b, h));
            proptest::prop_assert!(decay(lo, a, h) <= decay(hi, a, h));
            proptest::prop_assert!(decay(v, a, h) <= v);
            proptest::prop_assert!(decay(decay(v, a, h), b, h) <= decay(v, a + b, h) + 1);
        }
    }

    #[test]
    fn touch_decays_then_adds() {
        let h = hl(H);
        let mut heat = Heat::COLD;
        heat.touch(Timestamp(10), h);
        assert_eq!(
            heat,
            Heat {
                value: ONE,
                at: Timestamp(10)
            }
        );
        heat.touch(Timestamp(10 + H as i64), h);
        assert_eq!(
            heat,
            Heat {
                value: ONE + ONE / 2,
                at: Timestamp(10 + H as i64)
            }
        );
        assert_eq!(
            heat.value_at(Timestamp(10 + 2 * H as i64), h),
            (ONE + ONE / 2) / 2
        );
        // A clock that went backwards: no decay, `at` kept.
        heat.touch(Timestamp(0), h);
        assert_eq!(
            heat,
            Heat {
                value: 2 * ONE + ONE / 2,
                at: Timestamp(10 + H as i64)
            }
        );
        assert_eq!(heat.value_at(Timestamp(-5), h), 2 * ONE + ONE / 2);
        heat.touch_by(Timestamp(10 + H as i64), h, u32::MAX);
        assert_eq!(heat.value, u32::MAX);
    }

    #[test]
    fn stable_binary_and_json_forms() {
        let heat = Heat {
            value: ONE,
            at: Timestamp(1_000),
        };
        let mut buf = [0u8; 16];
        let bytes = postcard::to_slice(&heat, &mut buf).expect("fits");
        assert_eq!(bytes, &[0x80, 0x80, 0x04, 0xd0, 0x0f]);
        let back: Heat = postcard::from_bytes(bytes).expect("decodes");
        assert_eq!(back, heat);
        let json = serde_json::to_string(&heat).expect("json");
        assert_eq!(json, r#"{"value":65536,"at":1000}"#);
        assert_eq!(
            serde_json::to_string(&HalfLife::HOUR).expect("json"),
            "3600000"
        );
    }
}

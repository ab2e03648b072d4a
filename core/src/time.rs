//! Time as the core sees it: integer milliseconds since the Unix epoch.
//!
//! Integer time keeps every computation (expiry, heat decay, bi-temporal
//! queries) bit-identical on an MCU without an FPU and on a Linux host.

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z (UTC). Negative values are allowed
/// for facts about the past before 1970.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// One second in timestamp units.
    pub const SECOND: i64 = 1_000;
    /// One day in timestamp units.
    pub const DAY: i64 = 86_400_000;

    /// Milliseconds elapsed from `earlier` to `self`, saturating at zero when
    /// `earlier` is in the future.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        // `abs_diff` is exact over the whole i64 range (no overflow);
        // negative spans clamp to 0.
        if self.0 >= earlier.0 {
            self.0.abs_diff(earlier.0)
        } else {
            0
        }
    }

    /// `self` moved forward by `millis`, saturating at the end of time.
    pub fn saturating_add_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn millis_since_is_exact_over_the_whole_range() {
        assert_eq!(
            Timestamp(i64::MAX).millis_since(Timestamp(i64::MIN)),
            u64::MAX
        );
        assert_eq!(Timestamp(5).millis_since(Timestamp(7)), 0);
        assert_eq!(Timestamp(7).millis_since(Timestamp(5)), 2);
    }
}

//! Small statistics helpers for benchmark reports.
//!
//! They exist so that every benchmark computes percentiles the same way.

use std::time::Duration;

/// The `p`-th percentile (0–100) of `samples` by the nearest-rank method
/// (the smallest sample with at least p % of samples at or below it);
/// zero for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Latency summary of one operation, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
}

impl Latency {
    /// Summarises samples.
    pub fn of(samples: &[Duration]) -> Latency {
        Latency {
            p50_ms: percentile(samples, 50.0).as_secs_f64() * 1e3,
            p95_ms: percentile(samples, 95.0).as_secs_f64() * 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let s: Vec<Duration> = (1..=20).map(ms).collect();
        assert_eq!(percentile(&s, 50.0), ms(10));
        assert_eq!(percentile(&s, 95.0), ms(19));
        assert_eq!(percentile(&s, 100.0), ms(20));
        assert_eq!(percentile(&s, 0.0), ms(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}

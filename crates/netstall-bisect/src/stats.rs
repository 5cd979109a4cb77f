//! The statistics bisect's verdict rests on. Pure functions, no I/O.
//!
//! * Episode counts are treated as Poisson: [`rate_interval`] is the exact
//!   (Garwood) interval of a rate, [`excess_p`] tests a count against a
//!   healthy floor rate, [`fewer_p`] compares two paths probed for the same
//!   time (conditional binomial test: given `a + b` episodes, each falls on
//!   either path with probability 1/2 when their rates are equal).
//! * Quantiles get distribution-free order-statistic intervals
//!   ([`quantile_interval`]): the ranks between which the true quantile lies
//!   with the given confidence, from the binomial distribution.
//! * [`missing_flows_p`]: how unlikely it is that some flows never took part
//!   in any episode if every flow were equally exposed (per-host stalls).

pub use netstall_events::bisect::Interval;
use statrs::distribution::{Binomial, ContinuousCDF, DiscreteCDF, Gamma, Poisson};

/// The exact two-sided `confidence` interval of a Poisson mean after seeing
/// `count` events, scaled by `per` (e.g. `60 / seconds` for a rate per minute).
pub fn rate_interval(count: u64, per: f64, confidence: f64) -> Interval {
    let tail = (1.0 - confidence) / 2.0;
    let low = if count == 0 {
        0.0
    } else {
        gamma_quantile(count as f64, tail)
    };
    let high = gamma_quantile(count as f64 + 1.0, 1.0 - tail);
    Interval {
        low: Some(low * per),
        high: Some(high * per),
    }
}

fn gamma_quantile(shape: f64, p: f64) -> f64 {
    Gamma::new(shape, 1.0)
        .expect("a positive shape")
        .inverse_cdf(p)
}

/// One-sided p-value of seeing `count` or more events where `expected` were
/// expected: small when the count is significantly above the expectation.
pub fn excess_p(count: u64, expected: f64) -> f64 {
    if count == 0 {
        return 1.0;
    }
    if expected <= 0.0 {
        return 0.0;
    }
    let poisson = Poisson::new(expected).expect("a positive mean");
    // sf(x) = P(X > x), so P(X >= count) = sf(count - 1).
    poisson.sf(count - 1)
}

/// One-sided p-value of seeing `count` or fewer events where `expected`
/// were expected: small when the count is significantly below it.
pub fn shortfall_p(count: u64, expected: f64) -> f64 {
    if expected <= 0.0 {
        return 1.0;
    }
    Poisson::new(expected).expect("a positive mean").cdf(count)
}

/// One-sided p-value that a path with `low` events in `low_secs` has a
/// lower rate than a path with `high` events in `high_secs`: given all the
/// events, the probability of a split at least this lopsided if the rates
/// were equal (each event falls on the first path with probability
/// `low_secs / (low_secs + high_secs)`).
pub fn fewer_p(low: u64, low_secs: f64, high: u64, high_secs: f64) -> f64 {
    let total = low + high;
    if total == 0 || low_secs <= 0.0 || high_secs <= 0.0 {
        return 1.0;
    }
    let share = low_secs / (low_secs + high_secs);
    let binomial = Binomial::new(share, total).expect("valid binomial");
    binomial.cdf(low)
}

/// The order-statistic interval for quantile `q` of `sorted` values: the
/// values at the ranks between which the quantile lies with `confidence`.
/// A bound is `None` when the sample is too small to reach it (for p99.9
/// from a few hundred samples, the upper bound lies beyond the maximum).
pub fn quantile_interval(sorted: &[f64], q: f64, confidence: f64) -> Interval {
    let n = sorted.len() as u64;
    if n == 0 {
        return Interval {
            low: None,
            high: None,
        };
    }
    let tail = (1.0 - confidence) / 2.0;
    let binomial = Binomial::new(q, n).expect("valid binomial");
    // The number of samples below the true quantile is Binomial(n, q). The
    // lower bound is the largest rank l with P(B < l) <= tail, the upper
    // the smallest rank u with P(B >= u) <= tail (ranks 1-based).
    let mut low = None;
    for rank in (1..=n).rev() {
        if binomial.cdf(rank - 1) <= tail {
            low = Some(sorted[(rank - 1) as usize]);
            break;
        }
    }
    let mut high = None;
    for rank in 1..=n {
        if binomial.sf(rank - 1) <= tail {
            high = Some(sorted[(rank - 1) as usize]);
            break;
        }
    }
    Interval { low, high }
}

/// The sample quantile (nearest rank) of `sorted` values.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// How unlikely it is that `zero_flows` of `flows` flows took part in none
/// of `participations` episode memberships if each membership fell on a
/// uniformly random flow: a union bound, `flows · (1 − 1/flows)^n`, when at
/// least one flow is missing; 1 otherwise.
pub fn missing_flows_p(flows: u16, zero_flows: u16, participations: u64) -> f64 {
    if zero_flows == 0 || flows < 2 {
        return 1.0;
    }
    let flows = f64::from(flows);
    (flows * (1.0 - 1.0 / flows).powf(participations as f64)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn poisson_intervals_match_published_tables() {
        // Garwood 95% intervals: 0 -> (0, 3.689), 1 -> (0.0253, 5.572),
        // 10 -> (4.795, 18.39).
        let zero = rate_interval(0, 1.0, 0.95);
        assert_eq!(zero.low, Some(0.0));
        assert!(close(zero.high.unwrap(), 3.689, 0.01), "{zero:?}");
        let one = rate_interval(1, 1.0, 0.95);
        assert!(close(one.low.unwrap(), 0.0253, 0.001), "{one:?}");
        assert!(close(one.high.unwrap(), 5.572, 0.01), "{one:?}");
        let ten = rate_interval(10, 2.0, 0.95);
        assert!(close(ten.low.unwrap(), 2.0 * 4.795, 0.02), "{ten:?}");
        assert!(close(ten.high.unwrap(), 2.0 * 18.39, 0.05), "{ten:?}");
    }

    #[test]
    fn excess_and_shortfall_are_poisson_tails() {
        assert_eq!(excess_p(0, 1.0), 1.0);
        // P(X >= 1 | 1) = 1 - e^-1.
        assert!(close(excess_p(1, 1.0), 1.0 - (-1.0f64).exp(), 1e-9));
        assert!(excess_p(10, 0.33) < 1e-9);
        assert!(excess_p(1, 0.33) > 0.2);
        // P(X <= 0 | 6) = e^-6.
        assert!(close(shortfall_p(0, 6.0), (-6.0f64).exp(), 1e-9));
    }

    #[test]
    fn equal_counts_are_not_significant_lopsided_ones_are() {
        assert!(fewer_p(20, 20.0, 20, 20.0) > 0.5);
        assert!(fewer_p(15, 20.0, 25, 20.0) > 0.05);
        // 0 vs 10 under equal rates: 0.5^10.
        assert!(close(fewer_p(0, 20.0, 10, 20.0), 0.5f64.powi(10), 1e-12));
        assert!(fewer_p(2, 20.0, 40, 20.0) < 1e-8);
        assert_eq!(fewer_p(0, 20.0, 0, 20.0), 1.0);
        // A path probed for a quarter of the time is expected to see fewer.
        assert!(fewer_p(5, 5.0, 20, 20.0) > 0.4);
    }

    #[test]
    fn quantile_intervals_cover_the_estimate_and_widen_with_fewer_samples() {
        let values: Vec<f64> = (1..=10_000).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.99), Some(9_900.0));
        let ci = quantile_interval(&values, 0.99, 0.95);
        let (low, high) = (ci.low.unwrap(), ci.high.unwrap());
        // sqrt(n q (1-q)) ~ 10 ranks: about +/- 2 sigma.
        assert!((9_875.0..9_900.0).contains(&low), "{ci:?}");
        assert!((9_900.0..9_925.0).contains(&high), "{ci:?}");

        let few: Vec<f64> = (1..=500).map(f64::from).collect();
        let p999 = quantile_interval(&few, 0.999, 0.95);
        assert!(p999.low.is_some());
        assert_eq!(p999.high, None, "500 samples cannot bound p99.9 from above");
        assert_eq!(
            quantile_interval(&[], 0.99, 0.95),
            Interval {
                low: None,
                high: None
            }
        );
    }

    #[test]
    fn missing_flows_are_suspicious_only_with_enough_episodes() {
        assert_eq!(missing_flows_p(8, 0, 100), 1.0);
        // 4 memberships over 8 flows easily miss some.
        assert!(missing_flows_p(8, 4, 4) > 0.5);
        // 120 memberships missing a flow entirely: 8 * (7/8)^120.
        assert!(missing_flows_p(8, 4, 120) < 1e-5);
        assert_eq!(missing_flows_p(1, 1, 100), 1.0);
    }
}

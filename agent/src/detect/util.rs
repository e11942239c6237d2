//! Small statistics over event times.

/// Nanoseconds to seconds.
pub fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// The median of `values` (which it sorts); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// Gaps between consecutive times (ns), in seconds.
pub fn intervals(times: &[u64]) -> Vec<f64> {
    times.windows(2).map(|w| secs(w[1].saturating_sub(w[0]))).collect()
}

/// Whether every interval is within `tolerance` (a fraction) of their median, and
/// the median and the largest deviation from it.
pub fn regularity(intervals: &[f64], tolerance: f64) -> Option<(bool, f64, f64)> {
    let mut sorted = intervals.to_vec();
    let med = median(&mut sorted)?;
    let jitter = intervals.iter().map(|i| (i - med).abs()).fold(0.0, f64::max);
    Some((med > 0.0 && jitter <= tolerance * med, med, jitter))
}

/// Whether retransmission gaps grow roughly geometrically: never shrinking by more
/// than 10 %, and the last at least twice the first (1, 2, 4 s; 1, 1, 2, 4 s).
pub fn is_backoff(gaps: &[f64]) -> bool {
    gaps.len() >= 2 && gaps.windows(2).all(|w| w[1] >= w[0] * 0.9) && gaps[gaps.len() - 1] >= 2.0 * gaps[0]
}

/// Rounds to milliseconds (for evidence that reads well).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_regularity() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        let (periodic, med, jitter) = regularity(&[15.05, 15.04, 15.06], 0.1).unwrap();
        assert!(periodic && (med - 15.05).abs() < 1e-9 && (jitter - 0.01).abs() < 1e-9);
        assert!(!regularity(&[1.0, 2.0, 4.0], 0.1).unwrap().0);
    }

    #[test]
    fn backoff_shapes() {
        assert!(is_backoff(&[1.0, 2.0, 4.0]));
        assert!(is_backoff(&[1.0, 1.0, 2.0, 4.0]));
        assert!(!is_backoff(&[15.0, 15.0, 15.0]));
        assert!(!is_backoff(&[4.0, 2.0, 1.0]));
        assert!(!is_backoff(&[1.0]));
    }
}

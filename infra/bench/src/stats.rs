//! The few statistics every section needs: percentiles of samples, medians over rounds, and
//! the formatting of microseconds for the report.

/// The `p`-th percentile (0–100) of `samples`, nearest-rank; `None` when empty.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples.get(rank.clamp(1, samples.len()) - 1).copied()
}

/// The median of per-round values (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match (
        v.len() % 2,
        v.get(mid),
        mid.checked_sub(1).and_then(|i| v.get(i)),
    ) {
        (1, Some(m), _) => *m,
        (_, Some(hi), Some(lo)) => (hi + lo) / 2.0,
        _ => f64::NAN,
    }
}

/// Microseconds for a table cell: `87 µs`, `1.24 ms`; signed when `signed`.
pub fn us(v: f64, signed: bool) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let sign = if signed && v >= 0.0 { "+" } else { "" };
    if v.abs() >= 1000.0 {
        format!("{sign}{:.2} ms", v / 1000.0)
    } else {
        format!("{sign}{v:.0} µs")
    }
}

/// `a / b` as `0.93×`, or `n/a` when `b` is not a positive number.
pub fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 50.0), Some(50.0));
        assert_eq!(percentile(&mut s, 99.0), Some(99.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(us(1500.0, true), "+1.50 ms");
        assert_eq!(ratio(1.0, 0.0), "n/a");
    }
}

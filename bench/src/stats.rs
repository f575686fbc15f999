//! Per engine and rule count: medians over rounds, their spread, and the
//! median of each round's ratio to the `none` baseline of the same round
//! (rounds drift on a shared machine; a ratio within one round does not).

use crate::load::Sample;

/// The figures of one metric.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Figure {
    pub median: f64,
    /// (max - min) / median over the rounds, in percent.
    pub spread_pct: f64,
    /// Median over rounds of value / `none`'s value in that round; absent
    /// without a baseline.
    pub ratio_to_none: Option<f64>,
}

pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn spread_pct(values: &[f64]) -> f64 {
    let m = median(values);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    if m > 0.0 {
        (max - min) / m * 100.0
    } else {
        f64::NAN
    }
}

/// `rounds[k]` and `baseline[k]` are the same round.
pub fn figure(
    rounds: &[Sample],
    baseline: Option<&[Sample]>,
    metric: fn(&Sample) -> f64,
) -> Figure {
    let values: Vec<f64> = rounds.iter().map(metric).collect();
    let ratio_to_none = baseline.map(|b| {
        let ratios: Vec<f64> = rounds
            .iter()
            .zip(b)
            .map(|(s, base)| metric(s) / metric(base))
            .collect();
        median(&ratios)
    });
    Figure {
        median: median(&values),
        spread_pct: spread_pct(&values),
        ratio_to_none,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_spreads_and_ratios() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(spread_pct(&[90.0, 100.0, 110.0]), 20.0);
        let s = |rr| Sample {
            rr_tps: rr,
            ..Sample::default()
        };
        let f = figure(
            &[s(50.0), s(90.0), s(80.0)],
            Some(&[s(100.0), s(100.0), s(200.0)]),
            |x| x.rr_tps,
        );
        assert_eq!(f.median, 80.0);
        assert_eq!(f.ratio_to_none, Some(0.5));
    }
}

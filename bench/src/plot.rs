//! `report.png`: round-trip latency (p50) and connection rate against the
//! rule count, one line per engine. Text is drawn with DejaVu Sans embedded
//! in the binary, so the plot needs no system fonts.
//!
//! Rule counts go on a log scale; R = 0 (no policy at all) has no place on
//! one, so it gets its own first tick, one decade left of R = 1.

use crate::report::Entry;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

const FONT: &str = "dejavu-sans";
const SIZE: (u32, u32) = (1400, 600);

/// Engine order and colours: the baseline dark, Palisade blue, the
/// netfilter engines warm.
const ENGINES: [(&str, RGBColor); 5] = [
    ("none", RGBColor(30, 30, 30)),
    ("noop", RGBColor(150, 150, 150)),
    ("palisade", RGBColor(31, 119, 180)),
    ("iptables", RGBColor(214, 39, 40)),
    ("nftables", RGBColor(255, 127, 14)),
];

/// Where R sits on the x axis: decades, R = 0 one left of R = 1.
pub fn x_of(rules: usize) -> f64 {
    if rules == 0 {
        0.0
    } else {
        1.0 + (rules as f64).log10()
    }
}

/// The tick label at `x`: only whole decades are labelled.
pub fn label_of(x: f64) -> String {
    if (x - x.round()).abs() > 1e-6 || x < -1e-6 {
        return String::new();
    }
    match x.round() as i32 {
        0 => "0".into(),
        d => {
            let r = 10f64.powi(d - 1);
            if r >= 1000.0 {
                format!("{}k", r / 1000.0)
            } else {
                format!("{r}")
            }
        }
    }
}

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| anyhow!("the embedded DejaVu Sans font does not parse"));
    });
    result
}

/// Draws the two panels of `entries` into the PNG at `path`.
pub fn write(entries: &[Entry], path: &Path) -> Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let (top, rest) = root.split_vertically(50);
    let (body, foot) = rest.split_vertically(SIZE.1 - 50 - 30);
    top.draw_text(
        "Palisade datapath benchmark: one client, one server selected by policies of R rules",
        &(FONT, 22).into_font().color(&BLACK),
        (20, 15),
    )
    .map_err(|e| anyhow!("{e}"))?;
    foot.draw_text(
        "medians over rounds; rules on a log scale, R = 0 (no policy) at the first tick",
        &(FONT, 15).into_font().color(&RGBColor(90, 90, 90)),
        (20, 5),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let panels = body.split_evenly((1, 2));
    panel(&panels[0], entries, "round-trip latency, p50 (µs)", |e| {
        e.rtt_p50_us
    })?;
    panel(&panels[1], entries, "new connections per second", |e| {
        e.crr_cps
    })?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    entries: &[Entry],
    title: &str,
    metric: fn(&Entry) -> f64,
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let xs: Vec<f64> = entries.iter().map(|e| x_of(e.rules)).collect();
    let x_max = xs.iter().copied().fold(1.0, f64::max);
    let y_max = entries
        .iter()
        .map(metric)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3..x_max + 0.3, 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_labels((x_max.round() as usize + 1) * 2 + 1)
        .x_label_formatter(&|x| label_of(*x))
        .x_desc("rules (R)")
        .y_labels(8)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    for (engine, color) in ENGINES {
        let mut points: Vec<(f64, f64)> = entries
            .iter()
            .filter(|e| e.engine == engine)
            .map(|e| (x_of(e.rules), metric(e)))
            .filter(|(_, y)| y.is_finite())
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = ShapeStyle::from(&color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| err(&e))?
            .label(engine)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new(*p, 4, ShapeStyle::from(&color).filled())),
            )
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_counts_on_the_axis() {
        assert_eq!(x_of(0), 0.0);
        assert_eq!(x_of(1), 1.0);
        assert!((x_of(100) - 3.0).abs() < 1e-12);
        assert!((x_of(10000) - 5.0).abs() < 1e-12);
        assert_eq!(label_of(0.0), "0");
        assert_eq!(label_of(1.0), "1");
        assert_eq!(label_of(3.0), "100");
        assert_eq!(label_of(5.0), "10k");
        assert_eq!(label_of(2.5), "");
        assert_eq!(label_of(-0.5), "");
    }
}

#[cfg(test)]
mod png_tests {
    use super::*;
    use crate::load::Sample;
    use crate::report::{entries, Series};

    #[test]
    fn draws_a_png_of_the_expected_size() {
        let series: Vec<Series> = [
            ("none", 0, 60.0),
            ("none", 100, 61.0),
            ("palisade", 0, 62.0),
        ]
        .iter()
        .map(|&(engine, rules, rtt)| Series {
            engine,
            rules,
            rounds: vec![Sample {
                rr_tps: 1.0,
                crr_cps: 10_000.0,
                stream_gbps: 1.0,
                rtt_p50_us: rtt,
                rtt_p99_us: rtt * 2.0,
            }],
            install_s: vec![0.0],
            extras: Vec::new(),
        })
        .collect();
        let dir = std::env::temp_dir().join(format!("palisade-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.png");
        write(&entries(&series), &path).unwrap();
        let png = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((w, h), SIZE);
    }
}

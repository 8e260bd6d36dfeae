//! The report's distributions as SVG charts: request latency by route, time to match, and the
//! rating gaps of the matches, one file each.

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::LoadTestError;
use crate::report::Report;

/// Bars (or points of a line) per chart.
const BINS: u64 = 60;

const SIZE: (u32, u32) = (960, 540);

/// Colours of the routes' lines, in the order of the report's routes.
const LINE_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

/// One line (or the bars) of a chart: its name, the largest value shown, and its points.
type Series = (String, f64, Vec<(f64, f64)>);

/// A histogram's values, divided by `scale`, in `BINS` bins of equal width up to its
/// 99.9th percentile (the rest in the last bin): (bin start, share of all values in %).
fn bins(histogram: &Histogram<u64>, scale: f64) -> (f64, Vec<(f64, f64)>) {
    let top = histogram.value_at_quantile(0.999).max(1) as f64 / scale;
    let width = (top / BINS as f64).max(f64::MIN_POSITIVE);
    let mut counts = vec![0_u64; BINS as usize];
    for value in histogram.iter_recorded() {
        let at = value.value_iterated_to() as f64 / scale;
        let bin = ((at / width) as usize).min(counts.len() - 1);
        counts[bin] += value.count_at_value();
    }
    let total = histogram.len().max(1) as f64;
    let points = counts
        .iter()
        .enumerate()
        .map(|(bin, &count)| (bin as f64 * width, count as f64 * 100.0 / total))
        .collect();
    (top, points)
}

fn drawing_error(path: &Path, error: impl std::fmt::Display) -> LoadTestError {
    LoadTestError::Output {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// One chart: `series` as lines (several) or bars (one), on axes named `x_label` and
/// `y_label`.
fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<(), LoadTestError> {
    let x_max = series.iter().map(|(_, top, _)| *top).fold(1e-9, f64::max);
    let y_max = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, share)| *share))
        .fold(1.0, f64::max)
        * 1.1;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|error| drawing_error(path, error))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|error| drawing_error(path, error))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(|error| drawing_error(path, error))?;
    if let [(name, top, points)] = series {
        let width = top / BINS as f64;
        chart
            .draw_series(points.iter().map(|&(start, share)| {
                Rectangle::new(
                    [(start, 0.0), (start + width * 0.9, share)],
                    LINE_COLOURS[0].filled(),
                )
            }))
            .map_err(|error| drawing_error(path, error))?
            .label(name.as_str())
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], LINE_COLOURS[0].filled())
            });
    } else {
        for (n, (name, top, points)) in series.iter().enumerate() {
            let colour = LINE_COLOURS[n % LINE_COLOURS.len()];
            let half = top / BINS as f64 / 2.0;
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|&(start, share)| (start + half, share)),
                    colour.stroke_width(2),
                ))
                .map_err(|error| drawing_error(path, error))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|error| drawing_error(path, error))?;
    root.present().map_err(|error| drawing_error(path, error))
}

/// Writes `latency.svg`, `time_to_match.svg` and `rating_gap.svg` into `dir`.
pub(crate) fn write(report: &Report, dir: &Path) -> Result<(), LoadTestError> {
    std::fs::create_dir_all(dir).map_err(|error| drawing_error(dir, error))?;
    let Some(histograms) = &report.histograms else {
        return Ok(());
    };
    let subtitle = format!(
        "{}, {} scenario, seed {}",
        report.target, report.scenario, report.seed
    );
    let latency: Vec<Series> = histograms
        .latency
        .iter()
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(route, histogram)| {
            let (top, points) = bins(histogram, 1_000.0);
            (route.clone(), top, points)
        })
        .collect();
    chart(
        &dir.join("latency.svg"),
        &format!("Request latency by route ({subtitle})"),
        "latency (ms)",
        "share of the route's requests (%)",
        &latency,
    )?;
    let (top, points) = bins(&histograms.time_to_match, 1_000.0);
    chart(
        &dir.join("time_to_match.svg"),
        &format!("Time to match, as players saw it ({subtitle})"),
        "from sending the enqueue to learning of the match (ms)",
        "share of matched players (%)",
        &[("matched players".into(), top, points)],
    )?;
    let (top, points) = bins(&histograms.rating_gap, 1.0);
    chart(
        &dir.join("rating_gap.svg"),
        &format!("Rating gap of matches ({subtitle})"),
        "rating gap between the two players (points)",
        "share of matched players (%)",
        &[("matched players".into(), top, points)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_hold_every_value_and_shares_add_up_to_all() {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for value in 1..=1_000 {
            histogram.record(value).unwrap();
        }
        histogram.record(1_000_000).unwrap();
        let (top, points) = bins(&histogram, 1.0);
        assert_eq!(points.len(), BINS as usize);
        assert!(
            (999.0..1_100.0).contains(&top),
            "the top is the 99.9th percentile, {top}"
        );
        let total: f64 = points.iter().map(|(_, share)| share).sum();
        assert!((total - 100.0).abs() < 1e-6, "{total}");
        assert!(points.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
}

//! SVG plot of the latency distributions: one empirical CDF per combination (latency on x,
//! percentile on y), so medians, tails and spread compare at a glance.

use super::Report;
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes the plot of every combination that has samples to `path` (SVG).
pub fn write_svg(report: &Report, path: &Path) -> Result<()> {
    let svg = render_svg(report)?;
    crate::tensor::npy::write_atomic(path, svg.as_bytes())
}

/// The plot as an SVG document.
pub fn render_svg(report: &Report) -> Result<String> {
    let series: Vec<(&str, Vec<f64>)> = report
        .results
        .iter()
        .filter(|r| !r.samples_ms.is_empty())
        .map(|r| {
            let mut s = r.samples_ms.clone();
            s.sort_by(|a, b| a.total_cmp(b));
            (r.id.as_str(), s)
        })
        .collect();
    let err = |e: String| Error::Unavailable(format!("plot: {e}"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let lo = series.iter().filter_map(|(_, s)| s.first()).copied().fold(f64::INFINITY, f64::min);
        let hi = series.iter().filter_map(|(_, s)| s.last()).copied().fold(0.0, f64::max);
        // Log latency axis: tails (one slow run in a hundred) stay visible without flattening
        // the body of the distribution.
        let (lo, hi) = if lo.is_finite() && lo > 0.0 && hi > lo { (lo, hi) } else { (1e-3, hi.max(1.0)) };
        let (lo, hi) = (lo / 1.1, hi * 1.1);
        let title = format!("latency distribution: {}", file_name(&report.model.path));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("percentile")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, (id, s)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let n = s.len();
            // Step CDF: at each sorted sample, the share of samples <= it.
            let pts = s.iter().enumerate().map(move |(k, &x)| {
                let y = if n > 1 { k as f64 * 100.0 / (n - 1) as f64 } else { 50.0 };
                (x, y)
            });
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?
                .label(*id)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

fn file_name(p: &str) -> &str {
    Path::new(p).file_name().and_then(|n| n.to_str()).unwrap_or(p)
}

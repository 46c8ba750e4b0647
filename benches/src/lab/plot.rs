//! SVG plots of a lab run: latency CDFs, and residual loss against link loss. Text is
//! left to the SVG viewer's fonts (plotters' SVG backend, no font libraries).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// The empirical CDF of `samples`, as plot points.
pub fn cdf(samples: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, x)| (*x, (i + 1) as f64 / n))
        .collect()
}

/// Axis labels and title.
#[derive(Debug, Clone, Copy)]
pub struct Axes<'a> {
    /// Title.
    pub title: &'a str,
    /// X axis.
    pub x: &'a str,
    /// Y axis.
    pub y: &'a str,
}

/// Draws `series` as lines (with points) into an SVG file at `path`.
pub fn lines(path: &Path, axes: Axes<'_>, series: &[Series]) -> Result<()> {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    for &(x, y) in all {
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let x_max = if x_max > 0.0 { x_max * 1.05 } else { 1.0 };
    let y_max = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let err = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(axes.title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(axes.x)
        .y_desc(axes.y)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if s.points.len() <= 30 {
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                )
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_rises_to_one_in_sample_order() {
        let points = cdf(&[30.0, 10.0, f64::NAN, 20.0]);
        assert_eq!(
            points,
            vec![(10.0, 1.0 / 3.0), (20.0, 2.0 / 3.0), (30.0, 1.0)]
        );
        assert!(cdf(&[]).is_empty());
    }

    #[test]
    fn a_plot_is_an_svg_file_with_its_labels() {
        let dir = std::env::temp_dir().join(format!("losslab-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.svg");
        let series = [Series {
            label: "loss 5%".into(),
            points: vec![(0.0, 0.0), (5.0, 0.2)],
        }];
        let axes = Axes {
            title: "residual",
            x: "link loss (%)",
            y: "residual (%)",
        };
        lines(&path, axes, &series).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("loss 5%") && svg.contains("link loss (%)"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

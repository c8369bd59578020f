//! SVG plots of a run (plotters): CDN egress with P2P against the CDN-only control, viewers,
//! and the offload against its bound, per second.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::metrics::Counters;

/// Writes the plot of `run` (and its control, if any) to `path`.
pub fn write(
    path: &Path,
    title: &str,
    run: &Counters,
    control: Option<&Counters>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 720)).into_drawing_area();
    root.fill(&WHITE).context("plot background")?;
    let (top, bottom) = root.split_vertically(360);
    let t_max = run.series.last().map_or(1, |r| r.t).max(1) as f64;
    let mbps = |b: u64| b as f64 * 8e-6;
    let peak = run
        .series
        .iter()
        .chain(control.map(|c| c.series.as_slice()).unwrap_or_default())
        .map(|r| mbps(r.origin_bytes).max(mbps(r.p2p_bytes + r.http_bytes)))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{title}: bytes per second (seed {})", run.seed),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..peak * 1.05)
        .context("plot axes")?;
    chart
        .configure_mesh()
        .x_desc("virtual seconds")
        .y_desc("Mbit/s")
        .draw()
        .context("plot mesh")?;
    let series = |f: &dyn Fn(&crate::metrics::Row) -> f64, c: &Counters| {
        c.series
            .iter()
            .map(|r| (r.t as f64, f(r)))
            .collect::<Vec<_>>()
    };
    chart
        .draw_series(LineSeries::new(series(&|r| mbps(r.origin_bytes), run), RED))
        .context("plot")?
        .label("CDN egress with P2P")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(series(&|r| mbps(r.p2p_bytes), run), GREEN))
        .context("plot")?
        .label("delivered from peers")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    if let Some(c) = control {
        chart
            .draw_series(LineSeries::new(series(&|r| mbps(r.origin_bytes), c), BLUE))
            .context("plot")?
            .label("CDN egress, CDN-only control")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("plot legend")?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            "offload per second and its bound; viewers (right axis)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..1.0)
        .context("plot axes")?
        .set_secondary_coord(
            0.0..t_max,
            0.0..(run
                .series
                .iter()
                .map(|r| r.viewers)
                .max()
                .unwrap_or(1)
                .max(1) as f64
                * 1.1),
        );
    chart
        .configure_mesh()
        .x_desc("virtual seconds")
        .y_desc("share of bytes from peers")
        .draw()
        .context("plot mesh")?;
    chart
        .configure_secondary_axes()
        .y_desc("viewers")
        .draw()
        .context("plot axes")?;
    let offload = series(
        &|r| {
            let t = (r.p2p_bytes + r.http_bytes) as f64;
            if t > 0.0 { r.p2p_bytes as f64 / t } else { 0.0 }
        },
        run,
    );
    chart
        .draw_series(LineSeries::new(offload, GREEN))
        .context("plot")?
        .label("offload")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    let bound = series(
        &|r| {
            if r.demand > 0.0 {
                (r.supply / r.demand).min(1.0)
            } else {
                0.0
            }
        },
        run,
    );
    chart
        .draw_series(LineSeries::new(bound, BLACK))
        .context("plot")?
        .label("bound")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    chart
        .draw_secondary_series(LineSeries::new(series(&|r| r.viewers as f64, run), MAGENTA))
        .context("plot")?
        .label("viewers")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], MAGENTA));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("plot legend")?;
    root.present().context("write plot")?;
    Ok(())
}

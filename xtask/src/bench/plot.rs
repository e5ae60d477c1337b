//! SVG plots of the results (plotters), one per figure family.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

use super::{control, datapath, wire};

type Series = (String, Vec<(f64, f64)>);

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `series` with a log x axis; y is linear from 0, or log when `log_y`.
fn chart(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    log_y: bool,
    legend: SeriesLabelPosition,
) -> Result<()> {
    let pts = || {
        series
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|p| p.1.is_finite())
    };
    let x_min = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = pts().map(|p| p.0).fold(0.0, f64::max);
    let y_max = pts().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let y_min = pts()
        .map(|p| p.1)
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !x_min.is_finite() || y_max <= 0.0 {
        return Ok(());
    }
    let root = SVGBackend::new(path, (860, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70);
    let x = (x_min * 0.8..x_max * 1.25).log_scale();
    macro_rules! body {
        ($chart:expr) => {{
            let mut chart = $chart.map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (i, (name, points)) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let points: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite() && (!log_y || p.1 > 0.0))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow!("{e}"))?;
            }
            chart
                .configure_series_labels()
                .position(legend.clone())
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }};
    }
    if log_y {
        body!(builder.build_cartesian_2d(x, (y_min * 0.7..y_max * 1.5).log_scale()));
    } else {
        body!(builder.build_cartesian_2d(x, 0.0..y_max));
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

pub fn datapath(result: &Value, dir: &Path) -> Result<()> {
    let names = [
        ("ct_hit", "conntrack hit"),
        ("not_isolated", "not isolated (ct miss)"),
        ("new_flow", "new flow, lookups only"),
        ("new_flow_insert", "new flow + conntrack insert"),
        ("deny", "deny"),
        ("new_flow_v6", "new flow IPv6, lookups only"),
    ];
    let series: Vec<Series> = names
        .iter()
        .map(|(case, label)| {
            let pts = datapath::RULES
                .iter()
                .filter_map(|&r| {
                    let c = datapath::config(result, r, datapath::IPCACHE_HEADLINE)?;
                    Some((r as f64, datapath::delta(c, case)))
                })
                .collect();
            ((*label).to_string(), pts)
        })
        .collect();
    chart(
        &dir.join("datapath_rules.svg"),
        &format!(
            "Per-packet cost vs rules (ipcache {}), BPF_PROG_TEST_RUN",
            datapath::IPCACHE_HEADLINE
        ),
        (
            "policy entries on the endpoint",
            "ns/packet above the empty program",
        ),
        &series,
        false,
        SeriesLabelPosition::LowerRight,
    )?;
    let mut series: Vec<Series> = Vec::new();
    for m in datapath::IPCACHE {
        for (case, label) in [("new_flow", "lookups"), ("new_flow_insert", "+ ct insert")] {
            let pts = datapath::RULES
                .iter()
                .filter_map(|&r| {
                    let c = datapath::config(result, r, m)?;
                    Some((r as f64, datapath::delta(c, case)))
                })
                .collect();
            series.push((format!("new flow {label}, ipcache {m}"), pts));
        }
    }
    chart(
        &dir.join("datapath_ipcache.svg"),
        "New-flow cost vs rules and ipcache size",
        (
            "policy entries on the endpoint",
            "ns/packet above the empty program",
        ),
        &series,
        false,
        SeriesLabelPosition::LowerRight,
    )
}

pub fn wire(result: &Value, dir: &Path) -> Result<()> {
    let mut series: Vec<Series> = Vec::new();
    for (m, label) in [("rr_tps", "RR"), ("crr_cps", "CRR"), ("bulk_gbps", "bulk")] {
        let none = wire::metric(result, "none", m);
        for (prefix, who) in [("palisade", "Palisade"), ("nft", "nftables")] {
            let pts = wire::RULES
                .iter()
                .map(|&n| {
                    (
                        n as f64,
                        wire::metric(result, &format!("{prefix}-{n}"), m) / none,
                    )
                })
                .collect();
            series.push((format!("{label} {who} / no program"), pts));
        }
    }
    chart(
        &dir.join("wire.svg"),
        "Pod-to-pod performance relative to no program",
        ("rules checked", "ratio to no program"),
        &series,
        false,
        SeriesLabelPosition::LowerRight,
    )
}

pub fn control(result: &Value, dir: &Path) -> Result<()> {
    let grid = result["grid"].as_array().cloned().unwrap_or_default();
    let series: Vec<Series> = control::GRID_POLICIES
        .iter()
        .map(|&q| {
            let pts = grid
                .iter()
                .filter(|g| g["policies"] == q && g["skipped"] != true)
                .filter_map(|g| Some((g["pods"].as_f64()?, g["compile_cold_s"].as_f64()? * 1e3)))
                .collect();
            (format!("{q} policies"), pts)
        })
        .collect();
    chart(
        &dir.join("control_compile.svg"),
        "Full compile time for one node",
        ("pods in the cluster", "ms"),
        &series,
        true,
        SeriesLabelPosition::UpperLeft,
    )
}

//! Result rows, and the Markdown table and JSON file they end up in.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::measure::Stats;

/// One figure beside its baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// The measurement.
    pub figure: Stats,
    /// What bounds it, measured in the same run.
    pub baseline_name: Option<String>,
    /// That bound.
    pub baseline: Option<Stats>,
    /// figure rate / baseline rate.
    pub ratio: Option<f64>,
    /// The target, if the issue set one.
    pub target: String,
}

impl Row {
    /// A row; the ratio is computed here.
    pub fn new(
        scenario: String,
        figure: Stats,
        baseline: Option<(&str, Stats)>,
        target: &str,
    ) -> Row {
        let ratio = baseline
            .as_ref()
            .filter(|(_, b)| b.rate > 0.0)
            .map(|(_, b)| figure.rate / b.rate);
        Row {
            scenario,
            figure,
            baseline_name: baseline.as_ref().map(|(n, _)| (*n).to_owned()),
            baseline: baseline.map(|(_, b)| b),
            ratio,
            target: target.to_owned(),
        }
    }
}

/// Saves rows as JSON.
pub fn write_rows(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(rows)?)?;
    for row in rows {
        eprintln!("{}", line(row));
    }
    Ok(())
}

fn ms(us: Option<u64>) -> String {
    us.map_or("–".into(), |us| format!("{:.2}", us as f64 / 1000.0))
}

fn line(row: &Row) -> String {
    let f = &row.figure;
    let baseline = match (&row.baseline_name, &row.baseline) {
        (Some(name), Some(b)) => format!(
            "{name}: {:.0}/s{}",
            b.rate,
            b.mean_us
                .map(|m| format!(" (mean {:.2} ms)", m / 1000.0))
                .unwrap_or_default()
        ),
        _ => "–".into(),
    };
    format!(
        "| {} | {:.0}/s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        row.scenario,
        f.rate,
        ms(f.p50_us),
        ms(f.p95_us),
        ms(f.p99_us),
        ms(f.p999_us),
        ms(f.max_us),
        f.errors,
        baseline,
        row.ratio.map_or("–".into(), |r| format!("{r:.2}")),
        if row.target.is_empty() {
            "–"
        } else {
            &row.target
        },
    )
}

/// Merges result files into the Markdown table and one JSON file.
pub fn merge(inputs: &[PathBuf], markdown: &Path, json: &Path) -> anyhow::Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    for input in inputs {
        rows.extend(serde_json::from_str::<Vec<Row>>(&std::fs::read_to_string(
            input,
        )?)?);
    }
    let mut table = String::from(
        "| scenario | rate | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors | baseline (same run) | ratio | target |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        table.push_str(&line(row));
        table.push('\n');
    }
    std::fs::write(markdown, &table)?;
    std::fs::write(json, serde_json::to_string_pretty(&rows)?)?;
    println!("{table}");
    println!("bench: {} passed, 0 failed", rows.len());
    Ok(())
}

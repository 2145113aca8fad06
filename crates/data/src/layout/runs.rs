//! `.pipeline/runs/N.json`: one record per `pipeline run` (and per variant of a sweep): when,
//! the params, what each stage did and the metrics. `pipeline` writes a record when a run starts
//! (status `running`) and again when it ends; `pipeline runs` and `report` show them as one table,
//! one row per run, like `dvc exp show`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::pipeline::{Metrics, STATE_DIR};

/// The runs folder of the pipeline in folder `pipeline_dir`.
pub fn runs_dir(pipeline_dir: &Path) -> PathBuf {
    pipeline_dir.join(STATE_DIR).join("runs")
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// 1, 2, ... in the order the runs started.
    pub id: u64,
    /// The `pipeline` process (to tell a run in progress from a killed one).
    pub pid: u32,
    /// Unix time, seconds.
    pub started: u64,
    /// Wall time of the whole run.
    #[serde(default)]
    pub seconds: f64,
    pub status: RunStatus,
    /// `--params NAME`, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param_set: Option<String>,
    /// Every param of the pipeline, as the run used it.
    pub params: BTreeMap<String, String>,
    /// The selected stages, in run order.
    #[serde(default)]
    pub stages: Vec<StageRun>,
    /// The metrics of each stage (its files' values together), by stage.
    #[serde(default)]
    pub metrics: BTreeMap<String, Metrics>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    Running,
    Ok,
    Failed,
    /// Stopped by Ctrl-C, SIGTERM or SIGHUP.
    Interrupted,
    /// Recorded as running by a process that is gone (a SIGKILL, a crash).
    Killed,
}

/// What one stage did in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    pub stage: String,
    pub state: StageState,
    /// How long running or restoring it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// What its outs are stored under in the run cache (`pipeline checkout` restores them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    Ran,
    /// Its outs came from the run cache.
    Restored,
    UpToDate,
    Failed,
    NotRun,
}

impl RunRecord {
    /// Writes (or rewrites) the record into `dir`, atomically.
    pub fn write(&self, dir: &Path) -> Result<(), crate::artifact::WriteError> {
        crate::artifact::write_json(dir.join(format!("{}.json", self.id)), self)
    }
}

/// Every run recorded in `dir`, oldest first; a record left `running` by a process that no
/// longer runs is `killed`. Unreadable records are skipped with a warning.
pub fn read_all(dir: &Path) -> Vec<RunRecord> {
    let Ok(items) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut runs = Vec::new();
    for item in items.flatten() {
        let path = item.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        match super::read_json::<RunRecord>(&path, "") {
            Ok(mut r) => {
                if r.status == RunStatus::Running && !Path::new("/proc").join(r.pid.to_string()).exists() {
                    r.status = RunStatus::Killed;
                }
                runs.push(r);
            }
            Err(e) => tracing::warn!("skipping an unreadable run record: {e}"),
        }
    }
    runs.sort_by_key(|r| r.id);
    runs
}

/// The id the next run gets.
pub fn next_id(dir: &Path) -> u64 {
    let Ok(items) = std::fs::read_dir(dir) else { return 1 };
    items
        .flatten()
        .filter_map(|i| i.file_name().to_str()?.strip_suffix(".json")?.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1)
}

/// Which columns [`table`] shows and how it orders the rows.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// Every param, not only those that differ between the runs shown.
    pub all_params: bool,
    /// Every metric, not only each file's top-level numbers.
    pub all_metrics: bool,
    /// More metric columns: those whose name contains one of these.
    pub metrics: Vec<String>,
    /// Order by this metric (a column name `stage:metric`, or a metric name only one stage has),
    /// highest first (with `ascending`, lowest first); runs without it last. Else by run.
    pub sort: Option<String>,
    pub ascending: bool,
    /// The run to mark as the current one.
    pub current: Option<u64>,
}

/// The runs as a table: `run`, `when` (UTC), `status`, the params, `ran`, `restored`, `seconds`,
/// then one column per metric (`stage:metric`).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    /// Display cells (numbers rounded to 4 decimals).
    pub rows: Vec<Vec<String>>,
    /// The same cells with numbers in full (for CSV).
    pub exact: Vec<Vec<String>>,
    /// Each row's run id.
    pub ids: Vec<u64>,
    /// The index of the first metric column.
    pub first_metric: usize,
}

/// The runs table; an error names a `sort` metric no run has.
pub fn table(runs: &[RunRecord], opts: &TableOptions) -> Result<Table, String> {
    let column = |stage: &str, key: &str| format!("{stage}:{key}");
    let all: BTreeSet<(String, String)> = runs
        .iter()
        .flat_map(|r| r.metrics.iter().flat_map(|(s, m)| m.keys().map(|k| (s.clone(), k.clone()))))
        .collect();
    let sort = match &opts.sort {
        None => None,
        Some(want) => {
            let hits: Vec<&(String, String)> = all.iter().filter(|(s, k)| column(s, k) == *want || k == want).collect();
            match hits[..] {
                [one] => Some(one.clone()),
                [] => return Err(format!("no run has a metric `{want}` (see `pipeline runs --all-metrics`)")),
                _ => {
                    let names: Vec<String> = hits.iter().map(|(s, k)| column(s, k)).collect();
                    return Err(format!("`{want}` is ambiguous: {}", names.join(", ")));
                }
            }
        }
    };
    let metrics: Vec<&(String, String)> = all
        .iter()
        .filter(|(s, k)| {
            opts.all_metrics
                || !k.contains('.')
                || opts.metrics.iter().any(|m| column(s, k).contains(m.as_str()))
                || sort.as_ref().is_some_and(|(ss, sk)| ss == s && sk == k)
        })
        .collect();
    let names: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let params: Vec<&String> = names
        .into_iter()
        .filter(|n| opts.all_params || runs.iter().any(|r| r.params.get(*n) != runs[0].params.get(*n)))
        .collect();

    let mut order: Vec<&RunRecord> = runs.iter().collect();
    if let Some((s, k)) = &sort {
        let value = |r: &RunRecord| r.metrics.get(s).and_then(|m| m.get(k)).copied().filter(|v| !v.is_nan());
        order.sort_by(|a, b| match (value(a), value(b)) {
            (Some(x), Some(y)) if opts.ascending => x.total_cmp(&y),
            (Some(x), Some(y)) => y.total_cmp(&x),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
    }

    let mut header: Vec<String> = ["run", "when", "status"].map(String::from).to_vec();
    header.extend(params.iter().map(|p| p.to_string()));
    header.extend(["ran", "restored", "seconds"].map(String::from));
    let first_metric = header.len();
    header.extend(metrics.iter().map(|(s, k)| column(s, k)));
    let (mut rows, mut exact, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for r in order {
        let count = |state| r.stages.iter().filter(|s| s.state == state).count().to_string();
        let mark = if opts.current == Some(r.id) { " *" } else { "" };
        let mut row = vec![format!("{}{mark}", r.id), when(r.started), status(r.status).into()];
        row.extend(params.iter().map(|p| r.params.get(*p).cloned().unwrap_or_else(|| "-".into())));
        row.extend([count(StageState::Ran), count(StageState::Restored), format!("{:.1}", r.seconds)]);
        let values: Vec<Option<f64>> =
            metrics.iter().map(|(s, k)| r.metrics.get(s).and_then(|m| m.get(k)).copied()).collect();
        let mut full = row.clone();
        row.extend(values.iter().map(|v| show(*v)));
        full.extend(values.iter().map(|v| v.map_or_else(String::new, |v| v.to_string())));
        rows.push(row);
        exact.push(full);
        ids.push(r.id);
    }
    Ok(Table { header, rows, exact, ids, first_metric })
}

impl Table {
    /// Aligned columns.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// RFC 4180 CSV with the numbers in full.
    pub fn csv(&self) -> String {
        let field = |c: &String| {
            if c.contains([',', '"', '\n']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() }
        };
        std::iter::once(&self.header)
            .chain(&self.exact)
            .map(|row| row.iter().map(field).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }

    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let line = |row: &[String]| {
            format!("| {} |\n", row.iter().map(|c| c.replace('|', "\\|")).collect::<Vec<_>>().join(" | "))
        };
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Ok => "ok",
        RunStatus::Failed => "failed",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Killed => "killed",
    }
}

/// A metric: whole numbers as such, the rest to 4 decimals; `-` when missing.
fn show(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM` (UTC).
fn when(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: u64, lr: &str, size: &str, acc: Option<f64>, states: &[StageState]) -> RunRecord {
        let mut metrics = BTreeMap::new();
        if let Some(acc) = acc {
            metrics.insert(
                "predict".to_string(),
                Metrics::from([("accuracy".into(), acc), ("per_class.a.f1".into(), 0.5)]),
            );
        }
        RunRecord {
            id,
            pid: 1,
            started: 1_796_587_200 + id * 60,
            seconds: id as f64,
            status: if acc.is_some() { RunStatus::Ok } else { RunStatus::Failed },
            param_set: None,
            params: BTreeMap::from([
                ("lr".into(), lr.into()),
                ("size".into(), size.into()),
                ("seed".into(), "0".into()),
            ]),
            stages: states
                .iter()
                .enumerate()
                .map(|(i, &state)| StageRun { stage: format!("s{i}"), state, seconds: None, signature: None })
                .collect(),
            metrics,
        }
    }

    #[test]
    fn rows_per_run_params_that_differ_and_metrics_as_columns() {
        use StageState::*;
        let runs = [
            run(1, "1e-3", "150", Some(0.9), &[Ran, Ran]),
            run(2, "1e-3", "224", Some(0.95), &[Ran, Restored]),
            run(3, "1e-4", "150", None, &[Restored, Failed]),
        ];
        let t = table(&runs, &TableOptions::default()).unwrap();
        assert_eq!(t.header, ["run", "when", "status", "lr", "size", "ran", "restored", "seconds", "predict:accuracy"]);
        assert_eq!(t.rows[0], ["1", "2026-12-06 20:01", "ok", "1e-3", "150", "2", "0", "1.0", "0.9000"]);
        assert_eq!(t.rows[2][2..], ["failed", "1e-4", "150", "0", "1", "3.0", "-"]);
        assert_eq!(t.first_metric, 8);

        let opts =
            TableOptions { sort: Some("accuracy".into()), all_params: true, current: Some(1), ..Default::default() };
        let t = table(&runs, &opts).unwrap();
        assert_eq!(t.ids, [2, 1, 3], "best first, runs without the metric last");
        assert_eq!(t.header[3..6], ["lr", "seed", "size"]);
        assert_eq!(t.rows[1][0], "1 *");
        let asc = TableOptions { sort: Some("predict:accuracy".into()), ascending: true, ..Default::default() };
        assert_eq!(table(&runs, &asc).unwrap().ids, [1, 2, 3]);
        let all = TableOptions { all_metrics: true, ..Default::default() };
        assert_eq!(table(&runs, &all).unwrap().header.last().unwrap(), "predict:per_class.a.f1");
        let more = TableOptions { metrics: vec!["f1".into()], ..Default::default() };
        assert_eq!(table(&runs, &more).unwrap().header.len(), 10);
        let bad = TableOptions { sort: Some("nope".into()), ..Default::default() };
        assert!(table(&runs, &bad).unwrap_err().contains("no run has a metric `nope`"));

        let t = table(&runs[..1], &TableOptions::default()).unwrap();
        assert_eq!(
            t.csv(),
            "run,when,status,ran,restored,seconds,predict:accuracy\n1,2026-12-06 20:01,ok,2,0,1.0,0.9\n"
        );
        assert!(t.markdown().starts_with("| run | when | status |"), "{}", t.markdown());
        assert!(t.text().starts_with("run  when              status  ran"), "{}", t.text());
    }

    #[test]
    fn records_are_written_numbered_and_read_back_in_order() {
        let t = tempfile::tempdir().unwrap();
        let dir = runs_dir(t.path());
        assert_eq!(next_id(&dir), 1);
        for id in [2, 1, 10] {
            let mut r = run(id, "1", "2", Some(0.5), &[]);
            r.pid = std::process::id();
            r.status = RunStatus::Running;
            r.write(&dir).unwrap();
        }
        assert_eq!(next_id(&dir), 11);
        let mut gone = run(11, "1", "2", Some(0.5), &[]);
        (gone.pid, gone.status) = (999_999_999, RunStatus::Running);
        gone.write(&dir).unwrap();
        std::fs::write(dir.join("12.json"), "{").unwrap();
        let runs = read_all(&dir);
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 10, 11]);
        assert_eq!(runs[0].status, RunStatus::Running);
        assert_eq!(runs[3].status, RunStatus::Killed);
    }
}

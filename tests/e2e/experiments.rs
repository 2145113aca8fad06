//! End-to-end tests of `pipeline`'s experiments: the run cache (restore instead of run, damaged
//! entries, a kill while storing, gc), the runs it records (`runs`, `checkout`) and `sweep`, on a
//! tiny pipeline of shell stages. Each stage appends its name to runs.log and writes a value that
//! differs on every run (the time in nanoseconds), so a restored output is told from a recomputed one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::wait_for;

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

const YAML: &str = r#"params:
  n: 1
  lr: 1e-3
  delay: 0
stages:
  make:
    cmd: >-
      echo make >> runs.log && sleep ${delay} && mkdir -p out/sub && echo ${n} > out/n.txt
      && date +%s%N > out/sub/stamp.txt
    params: [n, delay]
    outs: [out]
  train:
    cmd: >-
      echo train >> runs.log && test ${lr} != bad && mkdir -p model && cat out/n.txt > model/w.txt
      && date +%s%N >> model/w.txt
      && awk -v n=${n} 'BEGIN { printf "{\"accuracy\": %.1f, \"detail\": {\"n\": %d}}\n", 0.5 + n / 10, n }' > metrics.json
    deps: [out]
    params: [n, lr]
    outs: [model]
    metrics: [metrics.json]
"#;

struct Tiny {
    dir: tempfile::TempDir,
}

impl Tiny {
    fn new() -> Tiny {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.yaml"), YAML).unwrap();
        Tiny { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(PIPELINE);
        c.args(args).current_dir(self.dir.path());
        c
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `pipeline ARGS`, expects success, returns stdout and stderr.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(out.status.success(), "pipeline {args:?} failed:\n{}", text(&out));
        text(&out)
    }

    /// The stages that ran since the last call, in order.
    fn runs(&self) -> Vec<String> {
        let log = self.path("runs.log");
        let runs = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(log);
        runs.lines().map(String::from).collect()
    }

    /// Every output file's bytes, by path.
    fn outputs(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for rel in ["out/n.txt", "out/sub/stamp.txt", "model/w.txt", "metrics.json"] {
            if let Ok(bytes) = std::fs::read(self.path(rel)) {
                files.insert(rel.to_string(), bytes);
            }
        }
        files
    }

    /// The cache's object files.
    fn objects(&self) -> Vec<PathBuf> {
        let mut objects = Vec::new();
        for sub in std::fs::read_dir(self.path(".pipeline/cache/objects")).unwrap() {
            for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
                objects.push(f.unwrap().path());
            }
        }
        objects
    }

    fn entries(&self) -> usize {
        std::fs::read_dir(self.path(".pipeline/cache/entries")).map_or(0, |d| d.count())
    }
}

/// Each line with runs of spaces made one (status output aligns its columns).
fn squash(s: &str) -> String {
    s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_param_changed_and_changed_back_restores_every_stage_byte_identical() {
    let t = Tiny::new();
    t.ok(&["run"]);
    assert_eq!(t.runs(), ["make", "train"]);
    let first = t.outputs();
    assert_eq!(first.len(), 4);

    t.ok(&["--set", "n=2", "run"]);
    assert_eq!(t.runs(), ["make", "train"]);
    assert_ne!(t.outputs(), first);

    // What would happen is known before: train's dep is what make would restore.
    let status = squash(&t.ok(&["status"]));
    assert!(status.contains("make changed: param n: 2 -> 1; restore from cache\n"), "{status}");
    assert!(status.contains("train changed: param n: 2 -> 1; dep out changed; restore from cache\n"), "{status}");
    let plan = t.ok(&["run", "--dry-run"]);
    assert!(
        plan.starts_with("would restore make from cache: param n: 2 -> 1\nwould restore train from cache: "),
        "{plan}"
    );
    assert!(plan.ends_with("pipeline: would run 0, would restore 2 from cache, 0 up to date\n"), "{plan}");

    let third = t.ok(&["run"]);
    assert!(t.runs().is_empty(), "no stage command ran: {third}");
    assert!(third.contains("restored make from cache ("), "{third}");
    assert!(third.ends_with("pipeline: ran 0, restored 2 from cache, 0 up to date\n"), "{third}");
    assert_eq!(t.outputs(), first, "byte-identical to the first run's");
    assert!(t.ok(&["status"]).lines().all(|l| l.ends_with("up to date")));
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(t.path("pipeline.lock")).unwrap()).unwrap();
    assert_eq!(lock["stages"]["train"]["metrics"]["metrics.json"]["accuracy"], 0.6);

    // --no-cache runs the commands; a deleted out comes back from the cache.
    t.ok(&["--set", "n=2", "run", "--no-cache"]);
    assert_eq!(t.runs(), ["make", "train"]);
    std::fs::remove_dir_all(t.path("model")).unwrap();
    assert!(t.ok(&["--set", "n=2", "run"]).contains("restoring train from cache: out model missing"));
    assert!(t.runs().is_empty());
}

#[test]
fn a_damaged_cache_entry_is_not_restored() {
    let t = Tiny::new();
    t.ok(&["run"]);
    let stamp = std::fs::read(t.path("out/sub/stamp.txt")).unwrap();
    t.ok(&["--set", "n=2", "run"]);
    t.runs();
    // The first run's stamp, as stored (no artifact shares it any more), is changed.
    let stored = t.objects().into_iter().find(|o| std::fs::read(o).unwrap() == stamp).expect("stamp stored");
    std::fs::write(&stored, "tampered\n").unwrap();

    assert!(!t.ok(&["status"]).contains("restore from cache"));
    let out = t.ok(&["run"]);
    assert!(
        out.contains("ignoring the run cache's entry for stage make: the stored copy of out/sub/stamp.txt changed"),
        "{out}"
    );
    assert_eq!(t.runs(), ["make", "train"], "run, not restored");
    assert_ne!(std::fs::read(t.path("out/sub/stamp.txt")).unwrap(), b"tampered\n");

    // A vanished file: the same.
    t.ok(&["--set", "n=2", "run"]);
    t.runs();
    let n1 = t.objects().into_iter().find(|o| std::fs::read(o).unwrap() == b"1\n").expect("n.txt stored");
    std::fs::remove_file(n1).unwrap();
    let out = t.ok(&["run"]);
    assert!(out.contains("the stored copy of out/n.txt is gone"), "{out}");
    assert_eq!(t.runs(), ["make", "train"]);
}

#[test]
fn a_store_killed_at_any_point_leaves_no_entry_that_would_be_restored() {
    let t = Tiny::new();
    // make's outs are two files: a kill before the first, between them, and before the entry.
    for kill_after in 0..=2 {
        let _ = std::fs::remove_dir_all(t.path(".pipeline/cache"));
        let _ = std::fs::remove_dir_all(t.path("out"));
        let out = t
            .command(&["run", "make"])
            .env("SD_PIPELINE_TEST_KILL_STORE_AFTER", kill_after.to_string())
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "killed while storing: {}", text(&out));
        assert_eq!(t.runs(), ["make"]);
        assert_eq!(t.entries(), 0, "kill after {kill_after} files");
        std::fs::remove_dir_all(t.path("out")).unwrap();
        assert!(!t.ok(&["status"]).contains("restore from cache"));
        t.ok(&["run", "make"]);
        assert_eq!(t.runs(), ["make"], "kill after {kill_after} files: run again, not restored");
    }
    // Not killed: the entry is complete and restores.
    std::fs::remove_dir_all(t.path("out")).unwrap();
    assert!(t.ok(&["run", "make"]).contains("restored make from cache"));
    assert!(t.runs().is_empty());
}

#[test]
fn gc_keeps_the_newest_entries_and_drops_unused_files() {
    let t = Tiny::new();
    for n in ["1", "2", "3"] {
        t.ok(&["--set", &format!("n={n}"), "run"]);
    }
    t.runs();
    assert_eq!(t.entries(), 6);
    let out = t.ok(&["gc", "--keep-last", "2"]);
    assert!(out.contains("pipeline gc: kept 2 entries ("), "{out}");
    assert!(out.contains("removed 4 entries and "), "{out}");
    // n=3's stages are the newest: still restorable; n=2's are gone.
    t.ok(&["--set", "n=2", "run"]);
    assert_eq!(t.runs(), ["make", "train"]);
    t.ok(&["--set", "n=3", "run"]);
    assert!(t.runs().is_empty(), "restored");
    let before = t.objects().len();
    t.ok(&["gc", "--max-size", "0"]);
    assert_eq!(t.entries(), 0);
    assert!(t.objects().is_empty(), "{before} objects before");
    let bad = t.pipeline(&["gc", "--max-size", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
}

#[test]
fn runs_shows_a_row_per_run_the_params_that_differ_and_metrics_as_columns() {
    let t = Tiny::new();
    t.ok(&["run"]);
    t.ok(&["--set", "n=2", "run"]);
    t.ok(&["run"]);
    assert_eq!(t.pipeline(&["run", "nope"]).status.code(), Some(2), "not a run: not recorded");
    let csv = t.ok(&["runs", "--csv"]);
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert_eq!(rows[0], ["run", "when", "status", "n", "ran", "restored", "seconds", "train:accuracy"]);
    let cells = |r: &[&str]| [r[0], r[2], r[3], r[4], r[5], r[7]].map(String::from);
    assert_eq!(cells(&rows[1]), ["1", "ok", "1", "2", "0", "0.6"]);
    assert_eq!(cells(&rows[2]), ["2", "ok", "2", "2", "0", "0.7"]);
    assert_eq!(cells(&rows[3]), ["3", "ok", "1", "0", "2", "0.6"]);

    let sorted = t.ok(&["runs", "--sort", "accuracy", "--all-params", "--metric", "detail"]);
    let lines: Vec<&str> = sorted.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["run", "when", "status", "delay", "lr", "n", "ran", "restored", "seconds", "train:accuracy", "train:detail.n"]
    );
    let order: Vec<&str> = lines[1..].iter().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(order, ["2", "1", "3"], "best first: {sorted}");
    assert!(t.ok(&["runs", "--md"]).starts_with("| run | when | status | n | ran |"));
    let json: serde_json::Value = serde_json::from_str(&t.ok(&["runs", "--json"])).unwrap();
    let third = &json[2];
    assert_eq!(third["params"], serde_json::json!({"delay": "0", "lr": "1e-3", "n": "1"}));
    assert_eq!(third["stages"][0]["state"], "restored");
    assert_eq!(third["metrics"]["train"]["detail.n"], 1.0);
    let bad = t.pipeline(&["runs", "--sort", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("no run has a metric `nope`"), "{}", text(&bad));
}

#[test]
fn checkout_brings_a_runs_outputs_back_and_changes_nothing_when_some_are_gone() {
    let t = Tiny::new();
    t.ok(&["run"]);
    let first = t.outputs();
    t.ok(&["--set", "n=2", "run"]);
    let second = t.outputs();
    t.runs();

    let out = t.ok(&["checkout", "1"]);
    assert!(out.contains("pipeline: checked out run 1: restored 2 (make, train)"), "{out}");
    assert_eq!(t.outputs(), first);
    assert!(t.runs().is_empty());
    assert!(t.ok(&["status"]).lines().all(|l| l.ends_with("up to date")), "the lock is run 1's");
    t.ok(&["checkout", "2"]);
    assert_eq!(t.outputs(), second);
    assert!(t.ok(&["--set", "n=2", "status"]).lines().all(|l| l.ends_with("up to date")));

    t.ok(&["gc", "--keep-last", "2"]);
    let gone = t.pipeline(&["checkout", "1"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(
        text(&gone).contains("run 1's outs are no longer all in the run cache (removed by `pipeline gc`, or damaged): stages (make, train); nothing was changed"),
        "{}",
        text(&gone)
    );
    assert_eq!(t.outputs(), second, "nothing changed");
    assert_eq!(t.pipeline(&["checkout", "9"]).status.code(), Some(2));
}

#[test]
fn a_sweep_runs_the_grid_records_a_failed_variant_and_goes_on() {
    let t = Tiny::new();
    let out = t.ok(&["sweep", "--set", "n=1,2", "--set", "lr=1e-3,1e-2", "--csv"]);
    // make runs once per n; train once per variant.
    assert_eq!(t.runs(), ["make", "train", "train", "make", "train", "train"]);
    assert!(out.contains("pipeline sweep: variant 4 of 4: n=2 lr=1e-2\n"), "{out}");
    let rows: Vec<&str> =
        out.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit()) || l.starts_with("run,")).collect();
    assert_eq!(rows[0], "run,when,status,lr,n,ran,restored,seconds,train:accuracy");
    let cells: Vec<String> = rows[1..]
        .iter()
        .map(|r| {
            let c: Vec<&str> = r.split(',').collect();
            format!("{} {} {} {}", c[0], c[3], c[4], c[8])
        })
        .collect();
    assert_eq!(cells, ["1 1e-3 1 0.6", "2 1e-2 1 0.6", "3 1e-3 2 0.7", "4 1e-2 2 0.7"]);

    // Again: the cache serves every variant.
    t.ok(&["sweep", "--set", "n=1,2", "--set", "lr=1e-3,1e-2"]);
    assert!(t.runs().is_empty());

    let out = t.pipeline(&["sweep", "--set", "lr=bad,1e-4"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(t.runs(), ["train", "train"], "the variant after the failed one ran");
    let json: serde_json::Value = serde_json::from_str(&t.ok(&["runs", "--json"])).unwrap();
    let last: Vec<&str> = json.as_array().unwrap()[8..].iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(last, ["failed", "ok"]);

    let usage = t.pipeline(&["sweep"]);
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(t.pipeline(&["sweep", "--set", "nope=1,2"]).status.code(), Some(2));
}

#[test]
fn sweep_and_run_refuse_each_others_lock() {
    let t = Tiny::new();
    let lock = t.path(".pipeline/run.lock");
    let holder = |what: &str| {
        wait_for(Duration::from_secs(20), || {
            let held = std::fs::read_to_string(&lock).ok()?;
            (held.contains(&format!("\"command\":\"{what}\"")) && held.contains("\"make\"")).then_some(())
        })
        .unwrap_or_else(|| panic!("{what} did not start its stage"))
    };

    let sweep = t
        .command(&["sweep", "--set", "delay=2", "--set", "n=5"])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    holder("sweep");
    let run = t.pipeline(&["run"]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert!(text(&run).contains(&format!("`pipeline sweep` (pid {}, for ", sweep.id())), "{}", text(&run));
    assert!(sweep.wait_with_output().unwrap().status.success());

    let run = t.command(&["--set", "delay=2", "--set", "n=6", "run"]).stderr(Stdio::null()).spawn().unwrap();
    holder("run");
    let sweep = t.pipeline(&["sweep", "--set", "n=1,2"]);
    assert_eq!(sweep.status.code(), Some(2), "{}", text(&sweep));
    assert!(text(&sweep).contains(&format!("`pipeline run` (pid {}, for ", run.id())), "{}", text(&sweep));
    assert!(text(&sweep).contains("use `pipeline sweep --wait`"), "{}", text(&sweep));
    assert!(run.wait_with_output().unwrap().status.success());
}

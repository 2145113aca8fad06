//! End-to-end tests of the `pipeline` binary on tests/fixtures/pipeline/pipeline.yaml (the real
//! `split` stage plus small shell stages; each stage appends its name to runs.log).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use crate::common::wait_for;

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");
const ALL: [&str; 8] = ["flaky", "after-flaky", "split", "list-train", "list-validation", "report", "greet", "shout"];

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// The example pipeline in a fresh folder, with a raw Kaggle-like folder of 6 cats and 6 dogs.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipeline/pipeline.yaml");
        std::fs::copy(yaml, dir.path().join("pipeline.yaml")).unwrap();
        let raw = dir.path().join("raw");
        std::fs::create_dir(&raw).unwrap();
        for i in 0..6 {
            for class in ["cat", "dog"] {
                std::fs::write(raw.join(format!("{class}.{i}.jpg")), format!("{class} {i}")).unwrap();
            }
        }
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pipeline(&self, args: &[&str]) -> Output {
        Command::new(PIPELINE).args(args).current_dir(self.dir.path()).output().unwrap()
    }

    /// Runs `pipeline ARGS`, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.pipeline(args);
        assert!(out.status.success(), "pipeline {args:?} failed:\n{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The stages that ran since the last call, in order.
    fn runs(&self) -> Vec<String> {
        let log = self.path("runs.log");
        let runs = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(log);
        runs.lines().map(String::from).collect()
    }

    fn set_param(&self, name: &str, value: &str) {
        let file = self.path("pipeline.yaml");
        let yaml = std::fs::read_to_string(&file).unwrap();
        let prefix = format!("  {name}: ");
        let lines: Vec<String> = yaml
            .lines()
            .map(|l| if l.starts_with(&prefix) { format!("{prefix}{value}") } else { l.to_string() })
            .collect();
        assert_ne!(lines.join("\n") + "\n", yaml, "param {name} not found");
        std::fs::write(file, lines.join("\n") + "\n").unwrap();
    }

    fn lock(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("pipeline.lock")).unwrap()).unwrap()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Each line with runs of spaces made one (status output aligns its columns).
fn squash(s: &str) -> String {
    s.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n").collect()
}

fn touch(path: &Path) {
    let later = SystemTime::now() + Duration::from_secs(60);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(later).unwrap();
}

#[test]
fn first_run_runs_everything_then_nothing() {
    let f = Fixture::new();
    f.ok(&["run"]);
    assert_eq!(f.runs(), ALL);
    assert_eq!(std::fs::read_dir(f.path("data/train/cats")).unwrap().count(), 3);
    assert_eq!(f.read("report.json"), "{\"train\": 6, \"validation\": {\"files\": 4}}\n");
    assert_eq!(f.read("shout.txt"), "HELLO\n");

    f.ok(&["run"]);
    assert!(f.runs().is_empty());
    let status = f.ok(&["status"]);
    assert_eq!(status.lines().filter(|l| l.ends_with("up to date")).count(), 8, "{status}");
    let json: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["up_to_date"], true);
    assert_eq!(json["stages"].as_array().unwrap().len(), 8);
    // The lock records the resolved command, the params, the program and content hashes.
    let split = &f.lock()["stages"]["split"];
    assert_eq!(split["cmd"], "split --source raw --out data --train 3 --validation 2 && echo split >> runs.log");
    assert_eq!(split["params"], serde_json::json!({"n_train": "3", "n_validation": "2"}));
    assert_eq!(split["program"]["name"], "split");
    assert_eq!(split["deps"]["raw"]["files"], 12);
    assert_eq!(split["outs"]["data"]["files"], 10);
}

#[test]
fn changing_a_param_reruns_the_stages_using_it_and_their_downstream() {
    let f = Fixture::new();
    f.ok(&["run"]);
    f.runs();

    f.set_param("greeting", "hi");
    let status = squash(&f.ok(&["status"]));
    assert!(status.contains("\ngreet changed: param greeting: hello -> hi\n"), "{status}");
    assert!(status.contains("\nshout changed: upstream greet out of date\n"), "{status}");
    assert_eq!(status.matches("up to date\n").count(), 6, "{status}");
    let json: serde_json::Value = serde_json::from_str(&f.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["up_to_date"], false);
    let greet = &json["stages"][6];
    assert_eq!(greet["stage"], "greet");
    assert_eq!(greet["cmd"], "echo greet >> runs.log && echo hi > greet.txt", "the command a scheduler would run");
    assert_eq!(
        greet["reasons"],
        serde_json::json!([{"reason": "param-changed", "param": "greeting", "old": "hello", "new": "hi",
                            "message": "param greeting: hello -> hi"}])
    );
    assert_eq!(json["stages"][7]["upstream"], serde_json::json!(["greet"]));
    let plan = f.ok(&["run", "--dry-run"]);
    assert_eq!(plan, "would run greet: param greeting: hello -> hi\nwould run shout: upstream greet out of date\n");
    assert!(f.runs().is_empty(), "a dry run runs nothing");
    f.ok(&["run"]);
    assert_eq!(f.runs(), ["greet", "shout"]);
    assert_eq!(f.read("shout.txt"), "HI\n");

    // n_validation changes data/validation only: list-train's dep is unchanged, so it is skipped.
    f.set_param("n_validation", "3");
    f.ok(&["run"]);
    assert_eq!(f.runs(), ["split", "list-validation", "report"]);
    assert_eq!(f.read("report.json"), "{\"train\": 6, \"validation\": {\"files\": 6}}\n");
}

#[test]
fn touching_reruns_nothing_and_deleting_an_output_reruns_its_stage() {
    let f = Fixture::new();
    f.ok(&["run"]);
    f.runs();

    for file in ["raw/cat.0.jpg", "data/train/cats/cat.1.jpg", "greet.txt", "lists/train.txt", "pipeline.yaml"] {
        touch(&f.path(file));
    }
    f.ok(&["run"]);
    assert!(f.runs().is_empty());

    // A deleted out comes back from the run cache (experiments.rs tests the cache itself).
    std::fs::remove_file(f.path("shout.txt")).unwrap();
    let plan = f.ok(&["run", "-n"]);
    assert_eq!(plan, "would restore shout from cache: out shout.txt missing\n");
    f.ok(&["run"]);
    assert!(f.runs().is_empty());
    assert_eq!(f.read("shout.txt"), "HELLO\n");
    std::fs::remove_file(f.path("shout.txt")).unwrap();
    assert_eq!(f.ok(&["run", "-n", "--no-cache"]), "would run shout: out shout.txt missing\n");
    f.ok(&["run", "--no-cache"]);
    assert_eq!(f.runs(), ["shout"]);

    // Part of a folder out: the stage runs again; identical outputs leave downstream alone.
    std::fs::remove_dir_all(f.path("data/validation/dogs")).unwrap();
    f.ok(&["run", "--no-cache"]);
    assert_eq!(f.runs(), ["split"]);

    // A content change propagates as far as outputs change: the list of names stays the same.
    std::fs::write(f.path("raw/dog.4.jpg"), "another dog").unwrap();
    f.ok(&["run"]);
    assert_eq!(f.runs(), ["split", "list-validation"]);
}

#[test]
fn a_failing_stage_keeps_its_lock_and_stops_its_downstream() {
    let f = Fixture::new();
    f.ok(&["run"]);
    f.runs();
    let flaky = f.lock()["stages"]["flaky"].clone();

    f.set_param("mode", "broken");
    f.set_param("greeting", "hi");
    let out = f.pipeline(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED flaky"), "{}", text(&out));
    assert_eq!(f.runs(), ["flaky"], "stops at the first failure");
    assert_eq!(f.lock()["stages"]["flaky"], flaky, "lock untouched for the failed stage");
    assert!(!f.path("flaky.txt").exists(), "no stale output survives a failed run");

    let out = f.pipeline(&["run", "--keep-going"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(f.runs(), ["flaky", "greet", "shout"], "independent branch finished, after-flaky not run");
    assert!(text(&out).contains("not running after-flaky: an upstream stage failed"), "{}", text(&out));
    assert_eq!(f.lock()["stages"]["flaky"], flaky);
    assert_eq!(f.lock()["stages"]["greet"]["params"]["greeting"], "hi");

    f.set_param("mode", "ok");
    f.ok(&["run"]);
    // flaky.txt is back from the run cache: after-flaky's inputs did not change.
    assert!(f.runs().is_empty());
    assert_eq!(f.read("flaky.txt"), "ok\n");
}

#[test]
fn parallel_runs_prefix_output_and_targets_select_stages() {
    let f = Fixture::new();
    let out = f.ok(&["run", "-j", "2"]);
    let mut runs = f.runs();
    runs.sort();
    let mut all = ALL.map(String::from).to_vec();
    all.sort();
    assert_eq!(runs, all);
    assert!(out.contains("[split] split: cats 3+2, dogs 3+2"), "{out}");

    f.ok(&["run", "shout", "--force"]);
    assert_eq!(f.runs(), ["shout"]);
    f.ok(&["run", "greet", "--force", "--downstream"]);
    assert_eq!(f.runs(), ["greet", "shout"]);
    std::fs::remove_file(f.path("greet.txt")).unwrap();
    f.ok(&["run", "after-flaky", "shout", "--no-cache"]);
    assert_eq!(f.runs(), ["greet"], "upstream of a target is brought up to date");

    let out = f.pipeline(&["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no stage named `nope` (stages: flaky, after-flaky, split"), "{}", text(&out));
}

#[test]
fn metrics_are_shown_and_diffed_with_the_previous_run() {
    let f = Fixture::new();
    f.ok(&["run"]);
    let shown = f.ok(&["metrics"]);
    let rows: Vec<Vec<&str>> = shown.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [["file", "metric", "value"], ["report.json", "train", "6"], ["report.json", "validation.files", "4"]]
    );
    f.set_param("n_validation", "3");
    f.ok(&["run"]);
    let diff = f.ok(&["metrics", "--diff"]);
    let row: Vec<&str> = diff.lines().find(|l| l.contains("validation.files")).unwrap().split_whitespace().collect();
    assert_eq!(row, ["report.json", "validation.files", "4", "6", "+2"], "{diff}");
    let row: Vec<&str> = diff.lines().find(|l| l.contains(" train ")).unwrap().split_whitespace().collect();
    assert_eq!(row, ["report.json", "train", "6", "6", "0"], "{diff}");
}

#[test]
fn dag_prints_text_and_dot() {
    let f = Fixture::new();
    let text = f.ok(&["dag"]);
    assert!(text.contains("\nreport <- list-train, list-validation\n"), "{text}");
    assert!(text.contains("\nshout <- greet\n"), "{text}");
    assert!(text.starts_with("flaky\nafter-flaky <- flaky\nsplit\n"), "{text}");
    let dot = f.ok(&["dag", "--dot"]);
    assert!(dot.starts_with("digraph pipeline {"), "{dot}");
    assert!(dot.contains("  \"split\" -> \"list-train\";\n"), "{dot}");
}

#[test]
fn the_makefile_runs_the_same_stages_with_make() {
    let f = Fixture::new();
    let makefile = f.ok(&["makefile"]);
    std::fs::write(f.path("Makefile"), makefile).unwrap();
    let make = |args: &[&str]| {
        let out = Command::new("make").args(args).current_dir(f.dir.path()).output().unwrap();
        assert!(out.status.success(), "make {args:?}:\n{}", text(&out));
    };
    make(&["-j2"]);
    let mut runs = f.runs();
    runs.sort();
    let mut all = ALL.map(String::from).to_vec();
    all.sort();
    assert_eq!(runs, all);
    assert_eq!(f.read("report.json"), "{\"train\": 6, \"validation\": {\"files\": 4}}\n");
    make(&["-j2"]);
    assert!(f.runs().is_empty(), "nothing changed");
    std::fs::remove_file(f.path("shout.txt")).unwrap();
    make(&["-j2", "shout"]);
    assert_eq!(f.runs(), ["shout"]);
    assert_eq!(f.read("shout.txt"), "HELLO\n");
}

fn write_pipeline(yaml: &str) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let out = Command::new(PIPELINE).args(["status"]).current_dir(dir.path()).output().unwrap();
    (dir, out)
}

fn config_error(yaml: &str) -> String {
    let (_dir, out) = write_pipeline(yaml);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn config_errors_name_file_line_and_column() {
    let cycle = "stages:\n  a:\n    cmd: cp b a\n    deps: [b]\n    outs: [a]\n  b:\n    cmd: cp a b\n    deps: [a]\n    outs: [b]\n";
    assert_eq!(
        config_error(cycle),
        "error: pipeline.yaml:8:12: cycle between stages: a -> b -> a (each writes what the next one reads)\n"
    );
    let unknown = "params:\n  lr: 1\nstages:\n  a:\n    cmd: train --lr ${lr} --epochs ${epochs}\n    params: [lr]\n";
    assert_eq!(config_error(unknown), "error: pipeline.yaml:5:36: unknown param `epochs` (defined: lr)\n");
    let malformed = "stages:\n  a:\n    cmd: x\n      deps: [b\n";
    let err = config_error(malformed);
    assert!(err.starts_with("error: pipeline.yaml:4:11: invalid YAML"), "{err}");
    let missing = "stages:\n  a:\n    cmd: x\n    deps: [nowhere]\n";
    assert_eq!(
        config_error(missing),
        "error: pipeline.yaml:4:12: dep `nowhere` of stage `a` does not exist and no stage writes it\n"
    );
    let two_writers = "stages:\n  a:\n    cmd: x\n    outs: [o]\n  b:\n    cmd: y\n    outs: [o]\n";
    assert!(config_error(two_writers).contains("pipeline.yaml:7:12: `o` of stage `b` overlaps `o` of stage `a`"));

    let (dir, out) = write_pipeline("stages:\n  a:\n    cmd: x\n");
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.path().join("pipeline.lock"), "{").unwrap();
    let out = Command::new(PIPELINE).args(["run"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("pipeline.lock:1:1: corrupt lock file"), "{}", text(&out));

    let out = Command::new(PIPELINE).args(["--file", "other.yaml", "status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("other.yaml: cannot read the pipeline file"), "{}", text(&out));
}

#[test]
fn a_stage_that_does_not_write_its_out_fails() {
    let (dir, _) = write_pipeline("stages:\n  a:\n    cmd: echo hi\n    outs: [never]\n");
    let out = Command::new(PIPELINE).args(["run"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("FAILED a (") && text(&out).contains("it did not write its out never"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("pipeline.lock").exists());
}

#[test]
fn a_waiting_run_of_other_stages_keeps_the_first_runs_lock_entries() {
    // As a scheduler would: one `pipeline run STAGE` per stage, at the same time; they take turns.
    let (dir, _) = write_pipeline(
        "stages:\n  slow:\n    cmd: sleep 1 && echo slow > slow.txt\n    outs: [slow.txt]\n  \
         fast:\n    cmd: echo fast > fast.txt\n    outs: [fast.txt]\n",
    );
    let slow = Command::new(PIPELINE).args(["run", "slow", "--wait"]).current_dir(dir.path()).spawn().unwrap();
    let fast = Command::new(PIPELINE).args(["run", "fast", "--wait"]).current_dir(dir.path()).output().unwrap();
    assert!(fast.status.success());
    assert!(slow.wait_with_output().unwrap().status.success());
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pipeline.lock")).unwrap()).unwrap();
    let stages: Vec<&String> = lock["stages"].as_object().unwrap().keys().collect();
    assert_eq!(stages, ["fast", "slow"]);
}

#[test]
fn a_second_run_is_refused_while_one_holds_the_pipeline_and_waits_with_wait() {
    let (dir, _) = write_pipeline(
        "stages:\n  slow:\n    cmd: echo run >> runs.log && touch started && sleep 2 && echo slow > slow.txt\n    \
         outs: [slow.txt]\n",
    );
    let first = Command::new(PIPELINE).arg("run").current_dir(dir.path()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(Duration::from_secs(20), || dir.path().join("started").exists().then_some(())).expect("stage started");

    let second = Command::new(PIPELINE).arg("run").current_dir(dir.path()).output().unwrap();
    assert_eq!(second.status.code(), Some(2), "{}", text(&second));
    let err = String::from_utf8_lossy(&second.stderr);
    let holder = format!("error: ./.pipeline/run.lock: `pipeline run` (pid {}, for ", first.id());
    assert!(err.starts_with(&holder), "{err}");
    assert!(err.contains(", running `slow` (process group ") && err.contains("use `pipeline run --wait`"), "{err}");
    // Read-only commands do not need the pipeline to themselves.
    let read_only = [&["status"][..], &["dag"], &["metrics"], &["makefile"], &["export", "snakemake"], &["run", "-n"]];
    for args in read_only {
        let out = Command::new(PIPELINE).args(args).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?} while a run holds the lock: {}", text(&out));
    }

    let waiting =
        Command::new(PIPELINE).args(["run", "--wait"]).current_dir(dir.path()).stderr(Stdio::piped()).spawn().unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    let waited = waiting.wait_with_output().unwrap();
    assert!(waited.status.success(), "{}", text(&waited));
    let err = String::from_utf8_lossy(&waited.stderr);
    assert!(err.starts_with("pipeline: waiting for `pipeline run` (pid "), "{err}");
    assert!(err.ends_with("pipeline: ran 0, 1 up to date\n"), "it saw the first run's lock entry: {err}");
    assert_eq!(std::fs::read_to_string(dir.path().join("runs.log")).unwrap(), "run\n", "the stage ran once");
}

/// The process `pid` exists and is not a zombie.
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s[s.rfind(')').unwrap()..].starts_with(") Z"))
}

#[cfg(target_os = "linux")]
#[test]
fn a_killed_pipeline_takes_its_stage_along_and_the_next_run_waits_for_it() {
    // The worker is a grandchild of `pipeline` (its `sh` stays to run the next line), writes
    // all the time, and ignores SIGTERM: only SIGKILL, after the grace period, stops it.
    let yaml = "stages:\n  slow:\n    cmd: |\n      \
                if [ -e second-run ]; then echo done > out.txt; exit; fi\n      \
                touch second-run\n      \
                sh -c 'trap \"\" TERM; echo $$ > worker.pid; while :; do echo tick >> ticks.txt; sleep 0.02; done'\n      \
                echo never > out.txt\n    \
                outs: [out.txt]\n";
    let (dir, _) = write_pipeline(yaml);
    let mut first = Command::new(PIPELINE).arg("run").current_dir(dir.path()).stderr(Stdio::null()).spawn().unwrap();
    let pid_file = dir.path().join("worker.pid");
    let worker = wait_for(Duration::from_secs(20), || {
        let pid = std::fs::read_to_string(&pid_file).ok()?;
        pid.ends_with('\n').then(|| pid.trim().to_string())
    })
    .expect("the worker did not start");
    struct Reap(String);
    impl Drop for Reap {
        fn drop(&mut self) {
            // SAFETY: kill(2); the worker must not outlive a failed test either.
            unsafe { libc::kill(self.0.parse().unwrap(), libc::SIGKILL) };
        }
    }
    let _reap = Reap(worker.clone());
    assert!(running(&worker));

    first.kill().unwrap(); // SIGKILL: no handler runs
    first.wait().unwrap();
    let next = Command::new(PIPELINE).arg("run").current_dir(dir.path()).output().unwrap();
    assert_eq!(next.status.code(), Some(2), "a run raced with the orphaned stage: {}", text(&next));
    let err = String::from_utf8_lossy(&next.stderr);
    assert!(
        err.contains(&format!(
            "the stopping of the stages of `pipeline run` pid {}, which was killed: `slow`",
            first.id()
        )),
        "{err}"
    );

    let started = std::time::Instant::now();
    let waited = Command::new(PIPELINE).args(["run", "--wait"]).current_dir(dir.path()).output().unwrap();
    assert!(waited.status.success(), "{}", text(&waited));
    assert!(text(&waited).contains("pipeline: waiting for the stopping of the stages"), "{}", text(&waited));
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(!running(&worker), "the orphaned worker {worker} still runs");
    let ticks = std::fs::metadata(dir.path().join("ticks.txt")).unwrap().len();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::metadata(dir.path().join("ticks.txt")).unwrap().len(), ticks, "something still writes");
    assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap(), "done\n");
}

#[test]
fn changing_the_stage_program_reruns_it_and_commands_run_in_the_pipeline_folder() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("project");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("pipeline.yaml"), "stages:\n  make:\n    cmd: ./tool.sh out.txt\n    outs: [out.txt]\n")
        .unwrap();
    let tool = sub.join("tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho v1 > \"$1\"\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(PIPELINE)
            .args(["--file", "project/pipeline.yaml"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    run(&["run"]);
    assert_eq!(std::fs::read_to_string(sub.join("out.txt")).unwrap(), "v1\n");
    assert!(sub.join("pipeline.lock").exists(), "the lock lives next to the pipeline file");
    assert!(run(&["run", "-n"]).contains("would run 0"));

    std::fs::write(&tool, "#!/bin/sh\necho v2 > \"$1\"\n").unwrap();
    assert_eq!(run(&["run", "--dry-run", "-q"]), "would run make: program ./tool.sh changed\n");
    run(&["run"]);
    assert_eq!(std::fs::read_to_string(sub.join("out.txt")).unwrap(), "v2\n");
}

#[cfg(unix)]
#[test]
fn a_signal_to_pipeline_stops_its_running_stage_and_pipeline_dies_of_it() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let yaml = "stages:\n  slow:\n    cmd: echo $$ > stage.pid && exec sleep 60\n    outs: [never.txt]\n";
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).unwrap();
    let mut child = Command::new(PIPELINE)
        .arg("run")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("stage.pid");
    let stage_pid = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse::<libc::pid_t>().ok()
    })
    .expect("the stage did not start");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status =
        wait_for(Duration::from_secs(20), || child.try_wait().unwrap()).expect("pipeline did not stop within 20 s");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
    // The stage's own process (its `sh` exec'd into `sleep`) got the signal too, not left running.
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let gone = wait_for(Duration::from_secs(20), || (unsafe { libc::kill(stage_pid, 0) } != 0).then_some(()));
    assert!(gone.is_some(), "stage process {stage_pid} still runs");
    let lock = std::fs::read_to_string(dir.path().join("pipeline.lock")).unwrap_or_default();
    assert!(!lock.contains("slow"), "an interrupted stage got a lock entry: {lock}");
}

#[test]
fn outs_may_not_delete_the_pipelines_own_files_or_reach_outside_through_a_symlink() {
    let t = tempfile::tempdir().unwrap();
    let (dir, outside) = (t.path().join("project"), t.path().join("outside"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), "not the pipeline's").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
    let run = |stage_b: &str| {
        let yaml = format!("stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n{stage_b}");
        std::fs::write(dir.join("pipeline.yaml"), &yaml).unwrap();
        Command::new(PIPELINE).arg("run").current_dir(&dir).output().unwrap()
    };
    let out = run("");
    assert!(out.status.success(), "{}", text(&out));
    let lock = std::fs::read(dir.join("pipeline.lock")).unwrap();

    for (out_path, col, what) in [
        ("pipeline.lock", 12, "its lock file `pipeline.lock`"),
        ("pipeline.yaml", 12, "the pipeline file `pipeline.yaml`"),
    ] {
        let out = run(&format!("  b:\n    cmd: echo b > {out_path}\n    outs: [{out_path}]\n"));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: pipeline.yaml:7:{col}: `outs` path `{out_path}` would delete {what} (outs are deleted before their stage runs)\n"
            )
        );
        assert_eq!(std::fs::read(dir.join("pipeline.lock")).unwrap(), lock, "the lock survives");
    }

    let out = run("  b:\n    cmd: echo b > link/victim.txt\n    outs: [a2.txt, link/victim.txt]\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(
            "error: pipeline.yaml:7:20: `outs` path `link/victim.txt` of stage `b` leads through a symlink to "
        ),
        "{err}"
    );
    assert!(err.contains("outside the pipeline folder"), "{err}");
    assert_eq!(std::fs::read_to_string(outside.join("victim.txt")).unwrap(), "not the pipeline's");
    assert!(!dir.join("a2.txt").exists(), "nothing ran");
}

#[cfg(unix)]
#[test]
fn output_into_a_closed_pipe_ends_quietly_not_in_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // like `pipeline dag | head -0`
    let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline.yaml");
    let o = Command::new(PIPELINE)
        .args(["--file", yaml.to_str().unwrap(), "dag"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}: {err}", o.status);
}

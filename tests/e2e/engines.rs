//! The exports on real engines: `pipeline export snakemake` run by Snakemake (the one
//! scripts/setup.sh installs into .cache/python) and `pipeline export make` by GNU make, on the
//! first stages of the recipe with a tiny model (tests/fixtures/pipeline/tiny.yaml): the same
//! bytes as `pipeline run`, the bottleneck features sharded and merged included; nothing to do
//! afterwards; a touched image re-runs exactly the stages downstream of it; a failing stage
//! leaves no output behind.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use crate::common::{colour_dataset, root, snakemake_for};

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

/// The stages of tiny.yaml and what they write.
const OUTS: [(&str, &str); 4] = [
    ("prepare-model", "model"),
    ("features-train", "features/train"),
    ("features-validation", "features/validation"),
    ("report", "report"),
];

/// Snakemake's own mark in the folders it wrote (the modification time it goes by).
const SNAKEMAKE_MARK: &str = ".snakemake_timestamp";

fn snakemake() -> Option<PathBuf> {
    snakemake_for("running the exported Snakefile")
}

/// A fresh folder with tiny.yaml as pipeline.yaml, the tiny model and 12 + 6 images, the same
/// bytes each time.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let yaml = root().join("tests/fixtures/pipeline/tiny.yaml");
    std::fs::copy(yaml, dir.path().join("pipeline.yaml")).unwrap();
    let tiny = sd_model::testing::tiny_vgg(&[2, 3, 4, 5, 6], sd_model::structure::Layout::Nhwc, 11);
    sd_onnx::save(&tiny, dir.path().join("tiny.onnx")).unwrap();
    colour_dataset(&dir.path().join("train"), 6, 1);
    colour_dataset(&dir.path().join("validation"), 3, 2);
    dir
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn in_dir(program: impl AsRef<std::ffi::OsStr>, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).current_dir(dir);
    c
}

/// `pipeline export ENGINE ARGS > FILE`.
fn export(dir: &Path, file: &str, args: &[&str]) {
    let out = run(in_dir(PIPELINE, dir, &[&["export"], args].concat()));
    std::fs::write(dir.join(file), out.stdout).unwrap();
}

/// Every file the stages wrote, by path, with its bytes (an engine's own marks left out).
fn outputs(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, base: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, base, files);
            } else if path.file_name().unwrap() != SNAKEMAKE_MARK {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    for (_, out) in OUTS {
        walk(&dir.join(out), dir, &mut files);
    }
    files
}

/// Identity of each stage's out (inode, modification and change time): a stage that ran
/// replaced it.
fn stamps(dir: &Path) -> BTreeMap<&'static str, (u64, i64, i64, i64, i64)> {
    OUTS.iter()
        .map(|&(stage, out)| {
            let m = std::fs::symlink_metadata(dir.join(out)).unwrap();
            (stage, (m.ino(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
        })
        .collect()
}

/// The stages whose outs were replaced since `before`.
fn ran_since(dir: &Path, before: &BTreeMap<&'static str, (u64, i64, i64, i64, i64)>) -> BTreeSet<&'static str> {
    let now = stamps(dir);
    OUTS.iter().map(|(s, _)| *s).filter(|s| before[s] != now[s]).collect()
}

const IMAGE: &str = "train/cats/cats.0.png";

/// A new modification time for one training image, same content.
fn touch_an_image(dir: &Path) {
    std::fs::File::options().write(true).open(dir.join(IMAGE)).unwrap().set_modified(SystemTime::now()).unwrap();
}

/// Another picture in the same file.
fn change_an_image(dir: &Path) {
    std::fs::copy(dir.join("train/dogs/dogs.0.png"), dir.join(IMAGE)).unwrap();
}

/// What `pipeline run` writes for the tiny recipe (with `change` made to the project first).
fn reference(change: fn(&Path)) -> BTreeMap<String, Vec<u8>> {
    let dir = project();
    change(dir.path());
    run(in_dir(PIPELINE, dir.path(), &["run", "-q"]));
    let files = outputs(dir.path());
    assert!(files.contains_key("features/train/features.npy") && files.contains_key("report/counts.json"));
    files
}

#[test]
fn snakemake_runs_the_exported_snakefile_like_pipeline_run() {
    let Some(snakemake) = snakemake() else { return };
    let expected = reference(|_| {});
    let dir = project();
    let d = dir.path();
    export(d, "Snakefile", &["snakemake", "--shards", "2"]);
    let out = run(in_dir(&snakemake, d, &["--cores", "2", "--printshellcmds"]));
    let log = text(&out);
    for shard in ["--shard 0/2", "--shard 1/2", "--merge .pipeline/shards/features-train/0"] {
        assert!(log.contains(shard), "no `{shard}` job:\n{log}");
    }
    assert_eq!(outputs(d), expected, "Snakemake's outputs differ from pipeline run's");
    assert!(d.join(".pipeline/shards/features-train/1/features.npy").is_file(), "where the slices are");

    let dry = run(in_dir(&snakemake, d, &["-n"]));
    assert!(text(&dry).contains("Nothing to be done"), "{}", text(&dry));

    // Snakemake re-runs a job for an input newer than its output only if its content changed
    // (it records checksums), as `pipeline run` does.
    let before = stamps(d);
    touch_an_image(d);
    run(in_dir(&snakemake, d, &["--cores", "2"]));
    assert_eq!(ran_since(d, &before), BTreeSet::new());
    change_an_image(d);
    run(in_dir(&snakemake, d, &["--cores", "2"]));
    assert_eq!(ran_since(d, &before), BTreeSet::from(["features-train", "report"]));
    assert_eq!(outputs(d), reference(change_an_image));

    // A param from the command line; the stage fails after writing part of its folder.
    let out = in_dir(&snakemake, d, &["--cores", "2", "--config", "mode=broken"]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!d.join("report").exists(), "the failed stage's output survived:\n{}", text(&out));
    let dry = run(in_dir(&snakemake, d, &["-n"]));
    assert!(text(&dry).contains("report"), "the failed stage is to run again: {}", text(&dry));
}

#[test]
fn make_runs_the_exported_makefile_like_pipeline_run() {
    let expected = reference(|_| {});
    let dir = project();
    let d = dir.path();
    export(d, "Makefile", &["make"]);
    run(in_dir("make", d, &["-j2"]));
    assert_eq!(outputs(d), expected, "make's outputs differ from pipeline run's");
    let dry = run(in_dir("make", d, &["-n"]));
    assert!(text(&dry).contains("Nothing to be done for 'all'"), "{}", text(&dry));

    let before = stamps(d);
    touch_an_image(d);
    run(in_dir("make", d, &["-j2"]));
    assert_eq!(ran_since(d, &before), BTreeSet::from(["features-train", "report"]));
    assert_eq!(outputs(d), expected);

    // make does not see params: the Makefile is exported again, and the stage made to run.
    let yaml = std::fs::read_to_string(d.join("pipeline.yaml")).unwrap().replace("mode: ok", "mode: broken");
    std::fs::write(d.join("pipeline.yaml"), yaml).unwrap();
    export(d, "Makefile", &["make"]);
    let out = in_dir("make", d, &["-j2", "-W", "features/train", "report"]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!d.join("report").exists(), "the failed stage's output survived:\n{}", text(&out));
}

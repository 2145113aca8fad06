//! Params are data, never code: a data folder whose name holds a space, quotes, `$( )`,
//! backticks, `;` and `*` reaches the stage's program as exactly its text through
//! `pipeline run`, the `pipeline export make` Makefile run by GNU make and the
//! `pipeline export snakemake` Snakefile run by Snakemake, and no command it holds runs; a
//! value no quoting can pass (a newline) is a configuration error naming the param.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::snakemake_for;

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

/// A folder name that runs `touch PWNED...` if any shell reads it as code.
const NAME: &str = "my photos 'it's' \"q\" $(touch PWNED1) `touch PWNED2`; touch PWNED3 *";

/// The stage puts `${data}` outside quotes, in double and in single quotes, and in a path.
const YAML: &str = r#"params:
  data: plain
stages:
  look:
    cmd: >-
      mkdir -p out && printf '%s\n' ${data} "${data}/train" '${data}' > out/args
      && ls ${data}/train > out/train.txt
    deps: ["${data}/train"]
    params: [data]
    outs: [out/]
"#;

/// A project whose data folder is NAME, with two files whose names make needs escaped.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pipeline.yaml"), YAML).unwrap();
    let train = dir.path().join(NAME).join("train");
    std::fs::create_dir_all(&train).unwrap();
    for f in ["a photo.jpg", "b;c:d|e*.jpg"] {
        std::fs::write(train.join(f), f).unwrap();
    }
    dir
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn pipeline(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(PIPELINE);
    c.arg("--set").arg(format!("data={NAME}")).args(args).current_dir(dir);
    c
}

/// What the stage saw, and that nothing the name holds ran.
fn check(dir: &Path, engine: &str) {
    let args = std::fs::read_to_string(dir.join("out/args")).unwrap();
    let train = format!("{NAME}/train");
    assert_eq!(args.lines().collect::<Vec<_>>(), [NAME, &train, NAME], "{engine}");
    let listed = std::fs::read_to_string(dir.join("out/train.txt")).unwrap();
    assert_eq!(listed, "a photo.jpg\nb;c:d|e*.jpg\n", "{engine}");
    let ran: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("PWNED"))
        .collect();
    assert!(ran.is_empty(), "{engine} ran a command from the folder name: {ran:?}");
}

#[test]
fn a_folder_name_reaches_the_program_as_its_text_through_pipeline_run() {
    let dir = project();
    let d = dir.path();
    run(&mut pipeline(d, &["run"]));
    check(d, "pipeline run");
    let again = run(&mut pipeline(d, &["run"]));
    assert!(!text(&again).contains("running"), "up to date: {}", text(&again));
}

#[test]
fn a_folder_name_reaches_the_program_as_its_text_through_make() {
    let dir = project();
    let d = dir.path();
    let makefile = run(&mut pipeline(d, &["export", "make"])).stdout;
    std::fs::write(d.join("Makefile"), makefile).unwrap();
    run(Command::new("make").current_dir(d));
    check(d, "make");
    let dry = run(Command::new("make").arg("-n").current_dir(d));
    assert!(text(&dry).contains("Nothing to be done for 'all'"), "{}", text(&dry));
    // A changed photo is seen through the escaped names.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(d.join(NAME).join("train/b;c:d|e*.jpg"), "changed").unwrap();
    let dry = run(Command::new("make").arg("-n").current_dir(d));
    assert!(text(&dry).contains("sh -c"), "{}", text(&dry));
}

#[test]
fn a_folder_name_reaches_the_program_as_its_text_through_snakemake() {
    let Some(snakemake) = snakemake_for("folder names through Snakemake") else { return };
    let dir = project();
    let d = dir.path();
    let snakefile = run(&mut pipeline(d, &["export", "snakemake"])).stdout;
    std::fs::write(d.join("Snakefile"), snakefile).unwrap();
    run(Command::new(&snakemake).args(["--cores", "1"]).current_dir(d));
    check(d, "snakemake");
}

#[test]
fn a_value_no_quoting_can_pass_is_a_configuration_error_naming_the_param() {
    let dir = project();
    let out =
        Command::new(PIPELINE).args(["--set", "data=two\nlines", "run"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(err.contains("param `data`") && err.contains("a newline"), "{err}");
    assert!(!dir.path().join("out").exists());
}

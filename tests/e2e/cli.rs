//! The command line as a new user meets it: every binary's `--help` (and its subcommands')
//! gives every flag a description and lists logging apart; a path flag that names the wrong
//! thing is a usage error (exit 2) whose advice names the right file or the stage that makes it;
//! old spellings of renamed flags still work and say what to write instead; `pipeline init`
//! starts a pipeline in an empty folder; logs written to a file hold no colour codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{ok, root, stderr, tiny_recipe};

const BINARIES: [(&str, &str); 9] = [
    ("prepare-model", env!("CARGO_BIN_EXE_prepare-model")),
    ("augment", env!("CARGO_BIN_EXE_augment")),
    ("bottleneck", env!("CARGO_BIN_EXE_bottleneck")),
    ("train-head", env!("CARGO_BIN_EXE_train-head")),
    ("finetune", env!("CARGO_BIN_EXE_finetune")),
    ("predict", env!("CARGO_BIN_EXE_predict")),
    ("split", env!("CARGO_BIN_EXE_split")),
    ("report", env!("CARGO_BIN_EXE_report")),
    ("pipeline", env!("CARGO_BIN_EXE_pipeline")),
];

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

/// A command's `--help`: its flags, each with whether a description follows it, and its
/// subcommands.
struct Help {
    text: String,
    flags: Vec<(String, bool)>,
    subcommands: Vec<String>,
}

fn help(exe: &str, words: &[&str]) -> Help {
    let out = Command::new(exe).args(words).arg("--help").env("COLUMNS", "100").output().unwrap();
    assert!(out.status.success(), "{words:?} --help: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let (mut flags, mut subcommands, mut section) = (Vec::new(), Vec::new(), "");
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':');
            continue;
        }
        let item = line.trim_start();
        if section == "Commands" && indent(line) == 2 {
            let name = item.split_whitespace().next().unwrap();
            if name != "help" {
                subcommands.push(name.to_string());
            }
        } else if item.starts_with('-') && (2..=6).contains(&indent(line)) && !section.is_empty() {
            // `-v, --verbose...  Help` or, in the long help, the description on the lines below.
            let spec = item.split("  ").next().unwrap();
            let Some(flag) = spec.split([',', ' ', '=']).find(|w| w.starts_with("--")) else { continue };
            let same_line = item.len() > spec.len() && !item[spec.len()..].trim().is_empty();
            let below = lines.get(i + 1).is_some_and(|n| indent(n) > indent(line) && !n.trim().starts_with('-'));
            flags.push((flag.to_string(), same_line || below));
        }
    }
    Help { text, flags, subcommands }
}

/// Every binary and subcommand: (words after the binary, its help).
fn every_help() -> Vec<(String, Help)> {
    let mut all = Vec::new();
    for (name, exe) in BINARIES {
        let mut todo = vec![Vec::<String>::new()];
        while let Some(words) = todo.pop() {
            let h = help(exe, &words.iter().map(String::as_str).collect::<Vec<_>>());
            todo.extend(h.subcommands.iter().map(|s| [words.clone(), vec![s.clone()]].concat()));
            all.push((format!("{name} {}", words.join(" ")).trim().to_string(), h));
        }
    }
    all
}

#[test]
fn every_flag_of_every_binary_has_help_text_and_logging_is_apart() {
    let mut missing = Vec::new();
    let all = every_help();
    assert!(all.len() >= BINARIES.len() + 10, "subcommands are walked: {}", all.len());
    for (command, h) in &all {
        assert!(h.flags.len() >= 3, "{command}: flags found in\n{}", h.text);
        missing.extend(h.flags.iter().filter(|(_, has)| !has).map(|(f, _)| format!("{command} {f}")));
        if h.flags.iter().any(|(f, _)| f == "--verbose") {
            let logging = h.text.find("\nLogging:").unwrap_or_else(|| panic!("{command}: no Logging section"));
            assert!(h.text[logging..].contains("--verbose"), "{command}: -v is under Logging");
            assert!(!h.text[..logging].contains("--log-format"), "{command}: logging apart from the stage's options");
        }
    }
    assert!(missing.is_empty(), "flags without help text: {missing:?}");
}

#[test]
fn old_spellings_are_hidden_from_help() {
    let help = |bin: &str, words: &[&str]| {
        help(BINARIES.iter().find(|(n, _)| *n == bin).unwrap().1, words)
            .flags
            .into_iter()
            .map(|(f, _)| f)
            .collect::<Vec<_>>()
    };
    let finetune = help("finetune", &[]);
    assert!(finetune.contains(&"--model-dir".into()) && !finetune.contains(&"--model".into()), "{finetune:?}");
    assert!(finetune.contains(&"--augment".into()) && !finetune.contains(&"--preset".into()));
    let head = help("train-head", &[]);
    assert!(head.contains(&"--train-features".into()) && !head.contains(&"--train".into()), "{head:?}");
    assert!(head.contains(&"--preset".into()), "train-head's --preset is the training preset");
    let report = help("report", &[]);
    assert!(report.contains(&"--data-root".into()) && !report.contains(&"--data".into()), "{report:?}");
    assert!(help("augment", &["rounds"]).contains(&"--augment".into()));
}

#[test]
fn the_cli_reference_lists_every_flag() {
    let doc = std::fs::read_to_string(root().join("docs/cli.md")).unwrap();
    let mut missing = Vec::new();
    for (command, h) in every_help() {
        assert!(doc.contains(&format!("`{command}`")), "docs/cli.md has no section for `{command}`");
        missing
            .extend(h.flags.iter().filter(|(f, _)| !doc.contains(f.as_str())).map(|(f, _)| format!("{command} {f}")));
    }
    assert!(missing.is_empty(), "docs/cli.md lacks {missing:?}: regenerate it with scripts/cli-reference.sh");
}

/// A folder with what the stages write, as far as the checks look: prepare-model's folder,
/// train-head's, finetune's, bottleneck's, and a class-folder set of images.
fn artifacts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [
        "artifacts/model/conv_base.onnx",
        "artifacts/model/frozen_base.onnx",
        "artifacts/model/model.json",
        "artifacts/head/head.json",
        "artifacts/head/head.onnx",
        "artifacts/finetune/classifier.onnx",
        "artifacts/features/train/features.npy",
        "artifacts/features/train/labels.npy",
    ] {
        std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        std::fs::write(d.join(f), b"x").unwrap();
    }
    // The checks look at names, not content.
    for split in ["train", "validation"] {
        for class in ["cats", "dogs"] {
            let to = d.join("images").join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            std::fs::write(to.join("1.jpg"), b"x").unwrap();
        }
    }
    dir
}

/// Runs `bin args` in `dir`, expects exit 2 and every one of `says` in stderr; returns stderr.
fn refused(bin: &str, args: &[&str], dir: &Path, says: &[&str]) -> String {
    let o = output(bin, args, dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{bin} {args:?}: {err}");
    for s in says {
        assert!(err.contains(s), "{bin} {args:?}: expected {s:?} in:\n{err}");
    }
    err
}

fn output(bin: &str, args: &[&str], dir: &Path) -> Output {
    let exe = BINARIES.iter().find(|(n, _)| *n == bin).unwrap().1;
    Command::new(exe).args(args).current_dir(dir).output().unwrap()
}

#[test]
fn a_path_flag_naming_the_wrong_thing_is_refused_with_the_right_path() {
    let dir = artifacts();
    let d = dir.path();
    let out = ["--out", "out"];
    // A folder where the conv base file goes.
    refused(
        "bottleneck",
        &[&["--data", "images/train", "--model", "artifacts/model"][..], &out].concat(),
        d,
        &["--model artifacts/model is a folder; pass the file in it: --model artifacts/model/conv_base.onnx"],
    );
    refused(
        "bottleneck",
        &[&["--data", "images", "--model", "artifacts/model/conv_base.onnx"][..], &out].concat(),
        d,
        &["--data images holds train/ and validation/; pass one of them, e.g. --data images/train"],
    );
    // predict runs a classifier: prepare-model's folder is not one; finetune's holds one.
    refused(
        "predict",
        &["--model", "artifacts/model", "images/validation/cats"],
        d,
        &["--model artifacts/model is prepare-model's folder", "artifacts/finetune/classifier.onnx"],
    );
    refused(
        "predict",
        &["--model", "artifacts/finetune", "--data", "images/validation"],
        d,
        &["is a folder; pass the file in it: --model artifacts/finetune/classifier.onnx"],
    );
    refused("predict", &["--model", "artifacts/finetune/nope.onnx", "x.jpg"], d, &["does not exist", "finetune"]);
    // finetune takes train-head's folder, not the head.onnx in it; prepare-model's folder likewise.
    let finetune = ["--train", "images/train", "--validation", "images/validation", "--out", "out"];
    refused(
        "finetune",
        &[&finetune[..], &["--head", "artifacts/head/head.onnx"]].concat(),
        d,
        &["--head artifacts/head/head.onnx is a file; pass the folder holding it: --head artifacts/head"],
    );
    refused(
        "finetune",
        &[&finetune[..], &["--model-dir", "artifacts/model/conv_base.onnx"]].concat(),
        d,
        &[
            "--model-dir artifacts/model/conv_base.onnx is a file; pass the folder holding it: --model-dir artifacts/model",
        ],
    );
    // The old spelling still works, and says what to write.
    refused(
        "finetune",
        &[&finetune[..], &["--model", "artifacts/model", "--head", "artifacts/nohead"]].concat(),
        d,
        &["--model is now --model-dir", "--head artifacts/nohead does not exist", "train-head --out DIR"],
    );
    // train-head reads features, not images.
    let bottleneck =
        "bottleneck --data images/train --model artifacts/model/conv_base.onnx --out artifacts/features/train";
    for flag in ["--train-features", "--train"] {
        let err = refused(
            "train-head",
            &[flag, "images/train", "--validation-features", "artifacts/features/train", "--out", "head"],
            d,
            &[
                "images/train holds images, not features",
                bottleneck,
                "then pass --train-features artifacts/features/train",
            ],
        );
        assert_eq!(err.contains("--train is now --train-features"), flag == "--train", "{err}");
    }
    refused(
        "train-head",
        &["--train-features", "artifacts/features/train/features.npy", "--validation-features", "x", "--out", "h"],
        d,
        &["is a file; pass the folder holding it: --train-features artifacts/features/train"],
    );
    // report takes the folder holding train/ and validation/.
    refused(
        "report",
        &["--data-root", "images/train"],
        d,
        &["is one class-folder set; pass the folder above it: --data-root images"],
    );
    // A device that is not one.
    let err = refused(
        "bottleneck",
        &[&["--data", "images/train", "--model", "artifacts/model/conv_base.onnx", "--device", "gpu"][..], &out]
            .concat(),
        d,
        &["--device", "say cuda (the first CUDA GPU) or cuda:N"],
    );
    assert!(!err.contains("cuda:0"), "{err}");
    assert!(!d.join("out").exists(), "nothing was written");
}

#[test]
fn a_param_value_of_the_wrong_type_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("pipeline.yaml"), dir.path().join("pipeline.yaml")).unwrap();
    let pipeline = |args: &[&str]| Command::new(PIPELINE).args(args).current_dir(dir.path()).output().unwrap();
    let o = pipeline(&["--set", "size=abc", "status"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = std::fs::read_to_string(dir.path().join("pipeline.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.starts_with("  size:"))
        .unwrap()
        + 1;
    assert!(
        stderr(&o)
            .contains(&format!("pipeline.yaml:{line}:3: --set size=abc: `abc` is not a whole number (type: int)")),
        "{}",
        stderr(&o)
    );
    let o = pipeline(&["--set", "preprocess=bgr", "dag"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`bgr` is not one of caffe, rescale"), "{}", stderr(&o));
    assert!(pipeline(&["--set", "size=96", "dag"]).status.success());
}

#[test]
fn old_spellings_of_renamed_flags_work_and_say_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let image = root().join("data/sample/train/cats/cat.1.jpg");
    let args =
        ["preview", image.to_str().unwrap(), "--count", "2", "--size", "32", "--out", "prev", "--preset", "finetune"];
    let o = output("augment", &args, dir.path());
    ok(o.clone());
    assert!(stderr(&o).contains("--preset is now --augment"), "{}", stderr(&o));
    let new = output("augment", &[&args[..6], &["--augment", "finetune", "--out", "prev2"]].concat(), dir.path());
    assert!(!stderr(&ok_output(new.clone())).contains("is now"), "no warning for the new spelling");
    for i in 0..2 {
        assert_eq!(
            std::fs::read(dir.path().join(format!("prev/aug_{i}.jpeg"))).unwrap(),
            std::fs::read(dir.path().join(format!("prev2/aug_{i}.jpeg"))).unwrap(),
            "same copies either way"
        );
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("wrote 2 augmented copies"), "plural");
}

fn ok_output(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

#[test]
fn a_verbose_log_written_to_a_file_holds_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let log = d.join("train-head.log");
    let args = ["--train-features", "features/train", "--validation-features", "features/validation", "--out", "h2"];
    let o = crate::common::cmd("train-head", d)
        .args(args)
        .args(["--hidden", "8", "--epochs", "1", "-v"])
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    let summary = ok(o);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("INFO") && text.contains("training the head"), "{text}");
    assert!(!text.contains('\x1b'), "escape codes in the log:\n{text:?}");
    assert!(summary.contains(" 1 epoch in "), "{summary}");
    // NO_COLOR is honoured even where colour would be on; a file never gets it.
    let o = crate::common::cmd("bottleneck", d)
        .args(["--data", "train", "--model", "model/conv_base.onnx", "--out", "f2", "--size", "32", "-v"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!stderr(&ok_output(o)).contains('\x1b'));
}

/// 6 + 3 photos a class from data/sample, as a user's folder of their own photos.
fn photos(dir: &Path) -> PathBuf {
    let photos = dir.join("photos");
    for (split, n) in [("train", 6), ("validation", 3)] {
        for class in ["cats", "dogs"] {
            let from = root().join("data/sample").join(split).join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            std::fs::create_dir_all(photos.join(split).join(class)).unwrap();
            for f in files.iter().take(n) {
                std::fs::copy(f, photos.join(split).join(class).join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    photos
}

#[test]
fn pipeline_init_in_an_empty_folder_then_run() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let data = photos(dir.path());
    let pipeline = |args: &[&str]| Command::new(PIPELINE).args(args).current_dir(&work).output().unwrap();
    // A folder of images that are not in class folders gets advice.
    let o = pipeline(&["init", "--data", data.join("train/cats").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds no images in class folders"), "{}", stderr(&o));
    assert!(!work.join("pipeline.yaml").exists());

    let o = ok_output(pipeline(&["init", "--data", data.to_str().unwrap()]));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("2 classes: cats, dogs") && said.contains("next: pipeline run"), "{said}");
    let yaml = std::fs::read_to_string(work.join("pipeline.yaml")).unwrap();
    // Nothing points into the checkout by a relative path: the model is the set-up's, found.
    let model = std::fs::canonicalize(root().join(".cache/models/vgg16-keras-imagenet.onnx")).unwrap();
    assert!(yaml.contains(&format!("  weights: {} ", model.display())), "{yaml}");
    assert!(yaml.contains(&format!("  data: {}\n", data.display())), "{yaml}");
    // A second init keeps the file unless forced.
    let o = pipeline(&["init", "--data", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pipeline.yaml already exists; pass --force"), "{}", stderr(&o));
    ok_output(pipeline(&["init", "--data", data.to_str().unwrap(), "--force"]));

    let settings = [
        "size=32",
        "batch_size=4",
        "epochs=2",
        "augment_rounds=1",
        "finetune_epochs=1",
        "cache_rounds=1",
        "device=cpu",
    ];
    let mut run = vec!["run"];
    for s in &settings {
        run.extend(["--set", s]);
    }
    let o = ok_output(pipeline(&run));
    let stages = sd_pipeline::Pipeline::load(&work.join("pipeline.yaml")).unwrap().stages.len();
    assert!(stderr(&o).contains(&format!("pipeline: ran {stages}, 0 up to date")), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("artifacts/predict/metrics.json")).unwrap()).unwrap();
    assert!(metrics["accuracy"].as_f64().is_some(), "{metrics}");
    assert!(work.join("artifacts/report/index.html").is_file());
}

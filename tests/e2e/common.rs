//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The VGG16 source model fetched by scripts/setup.sh.
pub fn source_model() -> PathBuf {
    let p = root().join(".cache/models/vgg16-keras-imagenet.onnx");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first (the README's test command does)", p.display());
    p
}

/// The Python venv made by scripts/setup.sh (numpy, onnxruntime), if present.
pub fn python() -> Option<PathBuf> {
    let p = root().join(".cache/python/bin/python");
    p.is_file().then_some(p)
}

/// Whether the tests run in CI (`CI=true`), where a missing optional tool is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The one policy for the optional tools some checks need (the Python venv, Snakemake, Chromium
/// with Playwright): `found`, or where it is `None`, a failure in CI and elsewhere a skip that
/// shows: `SKIPPED: <what> — run <setup>` is written straight to the terminal, past the test
/// harness' capture of a passing test's output.
pub fn optional<T>(found: Option<T>, what: &str, setup: &str) -> Option<T> {
    optional_in(in_ci(), found, what, setup)
}

fn optional_in<T>(ci: bool, found: Option<T>, what: &str, setup: &str) -> Option<T> {
    if found.is_none() {
        let message = format!("{what} — run {setup}");
        assert!(!ci, "{message} (CI=true: a missing tool fails the test)");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {message}");
    }
    found
}

/// The Python venv of scripts/setup.sh (numpy, onnxruntime) for `check`, under [`optional`]'s
/// policy.
pub fn python_for(check: &str) -> Option<PathBuf> {
    optional(python(), &format!("{check} (needs .cache/python)"), "scripts/setup.sh")
}

/// Snakemake in the venv, for `check`, under [`optional`]'s policy.
pub fn snakemake_for(check: &str) -> Option<PathBuf> {
    let exe = root().join(".cache/python/bin/snakemake");
    optional(exe.is_file().then_some(exe), &format!("{check} (needs .cache/python/bin/snakemake)"), "scripts/setup.sh")
}

/// Python with Playwright and Chromium (`(python, chromium)`), for `check`, under [`optional`]'s
/// policy.
pub fn browser_for(check: &str) -> Option<(PathBuf, PathBuf)> {
    let chromium = PathBuf::from("/usr/bin/chromium");
    let found = python().filter(|py| {
        let playwright = Command::new(py).args(["-c", "import playwright"]).status();
        chromium.is_file() && playwright.is_ok_and(|s| s.success())
    });
    let what = format!("{check} (needs {} and Playwright in .cache/python)", chromium.display());
    optional(found.map(|py| (py, chromium)), &what, "scripts/setup.sh --browser")
}

/// A command for a binary of this package, run in `cwd`.
pub fn cmd(bin: &str, cwd: &Path) -> Command {
    let exe = match bin {
        "prepare-model" => env!("CARGO_BIN_EXE_prepare-model"),
        "audit" => env!("CARGO_BIN_EXE_audit"),
        "augment" => env!("CARGO_BIN_EXE_augment"),
        "bottleneck" => env!("CARGO_BIN_EXE_bottleneck"),
        "train-head" => env!("CARGO_BIN_EXE_train-head"),
        "finetune" => env!("CARGO_BIN_EXE_finetune"),
        "predict" => env!("CARGO_BIN_EXE_predict"),
        "split" => env!("CARGO_BIN_EXE_split"),
        other => panic!("unknown binary {other}"),
    };
    let mut c = Command::new(exe);
    c.current_dir(cwd);
    c
}

/// Runs a binary of this package and returns its output.
pub fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    cmd(bin, cwd).args(args).output().expect("binary runs")
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The real VGG16 conv base, prepared once per test binary into the target's temp folder.
pub fn prepared_model() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        // One folder per test binary: binaries may run in parallel (nextest), runs of one reuse it.
        let exe = std::env::current_exe().unwrap();
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("model-{}", exe.file_stem().unwrap().to_string_lossy()));
        ok(run(
            "prepare-model",
            &["--source", source_model().to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"],
            &root(),
        ));
        out
    })
}

/// Copies files from data/sample into a fresh class-folder data set: (class, file name) pairs.
pub fn sample_subset(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (class, name) in files {
        let to = dir.join(class).join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join("data/sample/train").join(class).join(name), to).unwrap();
    }
    dir.to_path_buf()
}

/// Asserts that `bin args` is refused as a usage error (exit 2, before any work) naming `flag`.
pub fn usage_error(bin: &str, args: &[&str], cwd: &Path, flag: &str) {
    let o = run(bin, args, cwd);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(flag), "{args:?}: expected '{flag}' in: {err}");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Max |a-b| relative to max |b|.
pub fn rel_max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Noisy solid-colour images, `per_class` reddish "cats" and bluish "dogs", in `dir/<class>/`.
pub fn colour_dataset(dir: &Path, per_class: usize, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut noise = move |range: u32| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) % range as u64) as u8
    };
    for (class, base) in [("cats", [190u8, 40, 40]), ("dogs", [40, 60, 190])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..per_class {
            let tint = [noise(50), noise(50), noise(50)];
            let img = image::RgbImage::from_fn(40 + 3 * i as u32, 36, |_, _| {
                let n = noise(20);
                image::Rgb([0, 1, 2].map(|c| base[c].saturating_add(tint[c]).saturating_add(n)))
            });
            img.save(dir.join(class).join(format!("{class}.{i}.png"))).unwrap();
        }
    }
}

/// The whole recipe on a tiny VGG16-shaped model at 32x32, in `dir`: `model/` (prepare-model),
/// `train/` and `validation/` images, `features/{train,validation}` (bottleneck) and `head/`
/// (train-head). Seconds, not minutes.
pub fn tiny_recipe(dir: &Path) {
    let src = dir.join("tiny.onnx");
    let tiny = sd_model::testing::tiny_vgg(&[2, 3, 4, 5, 6], sd_model::structure::Layout::Nhwc, 11);
    sd_onnx::save(&tiny, &src).unwrap();
    ok(run("prepare-model", &["--source", "tiny.onnx", "--out", "model", "--skip-fingerprint", "-q"], dir));
    colour_dataset(&dir.join("train"), 6, 1);
    colour_dataset(&dir.join("validation"), 3, 2);
    for split in ["train", "validation"] {
        let out = format!("features/{split}");
        let args = [
            "--data",
            split,
            "--model",
            "model/conv_base.onnx",
            "--out",
            &out,
            "--size",
            "32",
            "--device",
            "cpu",
            "-q",
        ];
        ok(run("bottleneck", &args, dir));
    }
    let args = [
        "--train-features",
        "features/train",
        "--validation-features",
        "features/validation",
        "--out",
        "head",
        "--hidden",
        "8",
        "--epochs",
        "100",
        "--lr",
        "0.01",
        "--seed",
        "1",
        "-q",
    ];
    ok(run("train-head", &args, dir));
}

/// Polls `f` every 10 ms until it gives a value or `limit` has passed.
pub fn wait_for<T>(limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_missing_tool_is_a_visible_skip_outside_ci_and_a_failure_in_ci() {
    assert_eq!(optional_in(false, Some(1), "x", "y"), Some(1));
    assert_eq!(optional_in(true, Some(1), "x", "y"), Some(1));
    assert_eq!(optional_in(false, None::<u8>, "a check (needs a tool)", "scripts/setup.sh"), None);
    let failed = std::panic::catch_unwind(|| optional_in(true, None::<u8>, "the check", "scripts/setup.sh --browser"));
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    assert!(message.starts_with("the check — run scripts/setup.sh --browser (CI=true"), "{message}");
}

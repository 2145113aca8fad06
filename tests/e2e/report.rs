//! The report stage of the default pipeline.yaml, on a reduced run (12 + 6 photos of
//! data/sample, VGG16 at 32x32, a few epochs, one augmented round): `pipeline run` writes
//! artifacts/report, a second run does nothing, and a changed param re-runs the report with the
//! stages that use it. The page is then opened in headless Chromium (tests/e2e/browser.py,
//! Playwright from scripts/setup.sh --browser; `common::optional`'s policy where either is missing):
//! no console error, no network request, every image loads, a sensibly sized screenshot, and
//! the accuracy on the page is predict's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{browser_for, root};

const PIPELINE: &str = env!("CARGO_BIN_EXE_pipeline");

/// Training file names: markup, quotes, a comma and an ampersand (escaped on the page, quoted in
/// predictions.csv); it sorts first, so it is also the image the page augments.
const HOSTILE: &str = "<img src=x onerror=alert(1)> \"cat\", & co.jpg";

/// A class name with markup: class names are user data too.
const DOGS: &str = "dogs <&> \"x\"";

/// The reduced run: small enough for seconds per stage on two cores.
const SETTINGS: [&str; 8] = [
    "data=data",
    "size=32",
    "batch_size=4",
    "epochs=4",
    "augment_rounds=1",
    "finetune_epochs=1",
    "cache_rounds=1",
    "device=cpu",
];

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("pipeline.yaml"), dir.path().join("pipeline.yaml")).unwrap();
    // prepare-model reads the VGG16 source model from .cache/ (scripts/setup.sh).
    std::os::unix::fs::symlink(root().join(".cache"), dir.path().join(".cache")).unwrap();
    for (split, per_class) in [("train", 6), ("validation", 3)] {
        for class in ["cats", "dogs"] {
            let from = root().join("data/sample").join(split).join(class);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
            files.sort();
            let to = dir.path().join("data").join(split).join(if class == "dogs" { DOGS } else { class });
            std::fs::create_dir_all(&to).unwrap();
            for (i, f) in files.iter().take(per_class).enumerate() {
                let name = match (split, class, i) {
                    ("train", "cats", 0) | ("validation", "dogs", 0) => HOSTILE.to_string(),
                    _ => f.file_name().unwrap().to_string_lossy().into_owned(),
                };
                std::fs::copy(f, to.join(name)).unwrap();
            }
        }
    }
    dir
}

fn pipeline(dir: &Path, extra: &[&str], args: &[&str]) -> Output {
    let mut c = Command::new(PIPELINE);
    for s in SETTINGS.iter().chain(extra) {
        c.args(["--set", s]);
    }
    let out = c.args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "pipeline {args:?} failed:\n{}", text(&out));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The stages a run started, in order.
fn ran(out: &Output) -> Vec<String> {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines().filter_map(|l| l.strip_prefix("running ")).map(|l| l.split(':').next().unwrap().to_string()).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_default_pipeline_writes_a_report_that_a_browser_shows() {
    let project = project();
    let dir = project.path();
    let first = pipeline(dir, &[], &["run"]);
    assert_eq!(ran(&first).last().map(String::as_str), Some("report"), "{}", text(&first));
    let report = dir.join("artifacts/report");
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    let accuracy = json(&dir.join("artifacts/predict/metrics.json"))["accuracy"].as_f64().unwrap();
    // Fine-tuning never ships a classifier worse on validation than the head it began with.
    let [head, finetune] = ["head", "finetune"].map(|s| json(&dir.join(format!("artifacts/{s}/metrics.json"))));
    let exported = finetune["exported"]["val_acc"].as_f64().unwrap();
    assert!(exported >= finetune["initial"]["val_acc"].as_f64().unwrap(), "{finetune:#}");
    assert!(exported >= head["exported"]["val_acc"].as_f64().unwrap(), "{head:#}\n{finetune:#}");
    assert!(html.contains(&format!(r#"id="accuracy" data-value="{accuracy}">{accuracy:.4}<"#)), "{html}");
    // User data is escaped everywhere: no markup of theirs gets into the page.
    assert!(!html.contains("<img src=x"), "an unescaped file name");
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt; &quot;cat&quot;, &amp; co.jpg"));
    let confusion = std::fs::read_to_string(report.join("confusion.svg")).unwrap();
    for page in [&html, &confusion] {
        assert!(page.contains("dogs &lt;&amp;&gt; &quot;x&quot;") && !page.contains("dogs <&>"), "class name escaped");
    }
    assert!(!html.contains("<script"), "no script");
    for section in ["data", "stages", "training", "evaluation", "mistakes", "runs"] {
        assert!(html.contains(&format!(r#"<section id="{section}">"#)), "{section}");
    }
    for stage in ["prepare-model", "features-train", "train-head", "finetune", "predict"] {
        assert!(html.contains(&format!("<summary>{stage}</summary>")), "{stage} in the stages table");
    }
    assert!(!html.contains("<summary>report</summary>"), "the running stage is not listed");
    // Every stage's time is in the lock; the total is on the page.
    let lock = json(&dir.join("pipeline.lock"));
    let seconds: f64 = ["split", "prepare-model", "features-train", "features-validation", "audit", "augment-train"]
        .iter()
        .chain(&["features-augmented", "train-head", "finetune", "predict"])
        .map(|s| lock["stages"][s]["seconds"].as_f64().unwrap_or_else(|| panic!("{s} has no seconds")))
        .sum();
    let shown = html.split("<b>total</b>").nth(1).map(|t| &t[..t.len().min(40)]);
    assert!(html.contains(&format!("<b>{seconds:.1} s</b>")), "total {seconds:.1} s, the page: {shown:?}");
    // The files the page links exist, thumbnails are small JPEGs.
    // The audit's section has thumbnails of its own (suspects, duplicate pairs): checked, not counted.
    let mut thumbs = 0;
    let audit_section = html.find(r#"<section id="audit">"#).map(|start| {
        let end = html[start..].find("</section>").map_or(html.len(), |e| start + e);
        start..end
    });
    for (at, rest) in html.match_indices(r#"<img src=""#).map(|(i, m)| (i, &html[i + m.len()..])) {
        let src = rest.split('"').next().unwrap();
        let img = image::open(report.join(src)).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(src.ends_with(".jpg") && img.width().max(img.height()) <= 192, "{src}");
        if !audit_section.as_ref().is_some_and(|r| r.contains(&at)) {
            assert!(src.starts_with("thumbs/"), "{src}");
            thumbs += 1;
        }
    }
    assert!(audit_section.is_some(), "the data audit's section");
    let mistakes = mistakes_in(&dir.join("artifacts/predict/predictions.csv"));
    assert_eq!(thumbs, 2 * 6 + 7 + mistakes.min(24), "train thumbnails, original + 6 augmented, mistakes");
    // The page's augmented copies are augment-train's: round 0 of the first training image (up
    // to JPEG's losses).
    let stem = HOSTILE.strip_suffix(".jpg").unwrap();
    let want = image::open(dir.join(format!("artifacts/augmented/cats/{stem}_r0.png"))).unwrap().to_rgb8();
    let got = image::open(report.join("thumbs/augment-0.jpg")).unwrap().to_rgb8();
    assert_eq!(want.dimensions(), got.dimensions());
    let diff = want.as_raw().iter().zip(got.as_raw()).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
        / want.as_raw().len() as f64;
    assert!(diff < 6.0, "mean |difference| {diff} from augment-train's round 0");
    // Standalone SVGs and the histories as CSV (for dvc plots).
    for f in ["confusion.svg", "curves-train-head.svg", "curves-finetune.svg"] {
        assert!(std::fs::read_to_string(report.join(f)).unwrap().starts_with("<svg"), "{f}");
    }
    let history = std::fs::read_to_string(report.join("history-train-head.csv")).unwrap();
    assert_eq!(history.lines().next(), Some("epoch,loss,acc,val_loss,val_acc,lr,seconds"));
    assert_eq!(history.lines().count(), 1 + 4, "one line per epoch");

    // Nothing changed: nothing runs.
    let again = pipeline(dir, &[], &["run"]);
    assert!(ran(&again).is_empty(), "{}", text(&again));
    // A param: the stages that use it, their downstream and the report run again.
    let changed = pipeline(dir, &["epochs=3"], &["run"]);
    assert_eq!(ran(&changed), ["train-head", "finetune", "predict", "report"], "{}", text(&changed));
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    let history = std::fs::read_to_string(report.join("history-train-head.csv")).unwrap();
    assert_eq!(history.lines().count(), 1 + 3);
    assert!(html.contains(r#"<span class="chip">epochs=3</span>"#));
    // Every run recorded so far is a row of the runs table (the no-op run too), this one marked,
    // with the param that differs as a column.
    let runs = &html[html.find(r#"<table class="runs">"#).expect("the runs table")..];
    let runs = &runs[..runs.find("</table>").unwrap()];
    assert!(runs.contains("<th>epochs</th>") && runs.contains("<th>predict:accuracy</th>"), "{runs}");
    assert_eq!(runs.matches("<tr").count(), 1 + 3, "header and three runs: {runs}");
    assert!(runs.contains(r#"<tr class="current"><td>3 *</td>"#), "{runs}");

    // Without a test split, the number is said to be the validation score that chose the model.
    assert!(html.contains("<p class=\"summary\">Validation accuracy <strong") && html.contains("No test split"));
    // With one, predict scores it (once) and the page shows test and validation apart.
    for class in ["cats", "dogs"] {
        let from = root().join("data/sample/validation").join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&from).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        let to = dir.join("data/test").join(if class == "dogs" { DOGS } else { class });
        std::fs::create_dir_all(&to).unwrap();
        for f in &files[3..5] {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    let tested = pipeline(dir, &["epochs=3"], &["run"]);
    assert_eq!(ran(&tested), ["split", "audit", "predict", "report"], "{}", text(&tested));
    let predicted = json(&dir.join("artifacts/predict/metrics.json"));
    assert_eq!((predicted["split"].as_str(), predicted["samples"].as_u64()), (Some("test"), Some(4)));
    let test = predicted["accuracy"].as_f64().unwrap();
    let validation = json(&dir.join("artifacts/finetune/metrics.json"))["evaluation"]["accuracy"].as_f64().unwrap();
    let html = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(html.contains(&format!(r#"Test accuracy <strong id="accuracy" data-value="{test}">{test:.4}<"#)), "{html}");
    assert!(html.contains(&format!(r#"Validation accuracy <b id="validation-accuracy" data-value="{validation}">"#)));
    assert!(html.contains("<th>test (held out)</th>") && html.contains("on the held-out test split"), "{html}");
    assert!(!html.contains("No test split"));

    browser_check(&report, test);
}

/// The wrong rows of predictions.csv, counted with a plain reader of its own.
fn mistakes_in(csv: &Path) -> usize {
    let records = sd_predict::csv_records(&std::fs::read_to_string(csv).unwrap()).unwrap();
    records.iter().skip(1).filter(|r| r[1] != r[2]).count()
}

fn browser_check(report: &Path, accuracy: f64) {
    let Some((python, _chromium)) = browser_for("the report's browser check") else { return };
    let shot = report.parent().unwrap().join("report.png");
    let out = Command::new(&python)
        .arg(root().join("tests/e2e/browser.py"))
        .arg(report.join("index.html"))
        .arg(&shot)
        .output()
        .unwrap();
    assert!(out.status.success(), "browser.py failed:\n{}", text(&out));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["network_requests"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["broken_images"], serde_json::json!([]), "{seen}");
    let shown: f64 = seen["accuracy"].as_str().unwrap().parse().unwrap();
    assert_eq!(format!("{shown:.4}"), format!("{accuracy:.4}"), "{seen}");
    assert_eq!(seen["accuracy_value"].as_str().unwrap().parse::<f64>().unwrap(), accuracy);
    let (w, h) = (seen["screenshot"][0].as_u64().unwrap(), seen["screenshot"][1].as_u64().unwrap());
    assert_eq!(w, 1280, "{seen}");
    assert!((1500..20000).contains(&h), "a page of every section, not a blank one: {h} px");
    assert!(image::open(&shot).unwrap().width() == 1280);
}

//! End-to-end tests of `predict` on a classifier fine-tuned from a tiny VGG16-shaped model.

use std::path::Path;

use crate::common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The tiny recipe through finetune: `out/classifier.onnx`.
fn classifier(d: &Path) {
    tiny_recipe(d);
    let args =
        ["--train", "train", "--validation", "validation", "--model-dir", "model", "--head", "head", "--out", "out"];
    ok(run(
        "finetune",
        &[&args[..], &["--size", "32", "--epochs", "2", "--batch-size", "4", "--device", "cpu", "-q"]].concat(),
        d,
    ));
}

#[test]
fn predicts_every_image_with_metrics_and_confusion_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    // A set with a misleading image: a reddish "dog" (the classifier calls it a cat).
    colour_dataset(&d.join("test"), 4, 9);
    std::fs::copy(d.join("test/cats/cats.0.png"), d.join("test/dogs/red-dog.png")).unwrap();
    let stdout = ok(run(
        "predict",
        &["--model", "out/classifier.onnx", "--data", "test", "--out", "pred", "--batch-size", "3"],
        d,
    ));
    let m = json(&d.join("pred/metrics.json"));
    assert_eq!(m["samples"], 9);
    assert_eq!(m["confusion_matrix"], serde_json::json!([[4, 0], [1, 4]]), "{m}");
    assert_eq!(m["correct"], 8);
    assert!((m["accuracy"].as_f64().unwrap() - 8.0 / 9.0).abs() < 1e-12);
    // Recall (the per-class accuracy) and precision.
    assert_eq!(
        (m["per_class"]["cats"]["recall"].as_f64(), m["per_class"]["dogs"]["recall"].as_f64()),
        (Some(1.0), Some(0.8))
    );
    assert_eq!(m["per_class"]["cats"]["precision"], 0.8);
    assert_eq!((m["top_k"]["k"].as_u64(), m["top_k"]["accuracy"].as_f64()), (Some(1), m["accuracy"].as_f64()));
    assert_eq!(m["classes"], serde_json::json!(["cats", "dogs"]));
    // Defaults come from the classifier's metadata.
    assert_eq!((m["size"]["width"].as_u64(), m["preprocess"].as_str()), (Some(32), Some("caffe")));
    assert!(m["loss"].as_f64().unwrap() > 0.0);
    assert!(stdout.contains("accuracy 0.8889 (8/9)"), "{stdout}");

    let csv = std::fs::read_to_string(d.join("pred/predictions.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,label,predicted,confidence,p_cats,p_dogs");
    assert_eq!(lines.len(), 10);
    let red_dog = lines.iter().find(|l| l.starts_with("dogs/red-dog.png,")).unwrap();
    assert!(red_dog.starts_with("dogs/red-dog.png,dogs,cats,"), "{red_dog}");
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        let [confidence, cats, dogs] = [3, 4, 5].map(|i| f[i].parse::<f64>().unwrap());
        assert!((cats + dogs - 1.0).abs() < 2e-6 && confidence == cats.max(dogs), "{l}");
        assert_eq!(f[2] == "dogs", dogs > 0.5, "{l}");
    }
    // Without --out: the summary only.
    let stdout = ok(run("predict", &["--model", "out/classifier.onnx", "--data", "validation", "-q"], d));
    assert!(stdout.is_empty());
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    let fails = |args: &[&str], needles: &[&str]| {
        let o = run("predict", &[args, &["--out", "pred"]].concat(), d);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!d.join("pred").exists(), "{args:?} left output behind");
    };
    // Paths that name nothing or the wrong artifact: usage errors (exit 2) naming the right one.
    for (args, says) in [
        (&["--model", "nope.onnx", "--data", "validation"][..], "nope.onnx does not exist"),
        (&["--model", "model/conv_base.onnx", "--data", "validation"], "is prepare-model's conv base"),
        (&["--model", "out", "--data", "validation"], "pass the file in it: --model out/classifier.onnx"),
        (&["--model", "out/classifier.onnx", "--data", "nowhere"], "--data nowhere does not exist"),
    ] {
        usage_error("predict", &[args, &["--out", "pred"]].concat(), d, says);
        assert!(!d.join("pred").exists(), "{args:?} left output behind");
    }
    // A model that is not a classifier.
    std::fs::copy(d.join("model/conv_base.onnx"), d.join("renamed.onnx")).unwrap();
    fails(&["--model", "renamed.onnx", "--data", "validation"], &["renamed.onnx", "[N, 1]"]);
    fails(&["--model", "out/classifier.onnx", "--data", "validation", "--size", "64"], &["--size 64x64", "32x32"]);
    std::fs::create_dir_all(d.join("birds/birds")).unwrap();
    std::fs::create_dir_all(d.join("birds/cats")).unwrap();
    std::fs::copy(d.join("validation/cats/cats.0.png"), d.join("birds/birds/b.png")).unwrap();
    std::fs::copy(d.join("validation/cats/cats.0.png"), d.join("birds/cats/c.png")).unwrap();
    fails(&["--model", "out/classifier.onnx", "--data", "birds"], &["birds", "classifier"]);
}

/// The images of `test/` copied flat (no class folders) into `flat/`, as `<class>-<name>`.
fn flat_copies(d: &Path) -> Vec<String> {
    let mut names = Vec::new();
    std::fs::create_dir_all(d.join("flat/more")).unwrap();
    for class in ["cats", "dogs"] {
        for f in std::fs::read_dir(d.join("test").join(class)).unwrap() {
            let f = f.unwrap().path();
            let name = format!("{class}-{}", f.file_name().unwrap().to_string_lossy());
            let sub = if class == "dogs" { "more/" } else { "" };
            std::fs::copy(&f, d.join(format!("flat/{sub}{name}"))).unwrap();
            names.push(format!("{sub}{name}"));
        }
    }
    names.sort();
    names
}

#[test]
fn unlabelled_images_get_one_row_each_and_match_the_labelled_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    colour_dataset(&d.join("test"), 4, 9);
    ok(run("predict", &["--model", "out/classifier.onnx", "--data", "test", "--out", "pred", "-q"], d));
    let labelled: std::collections::HashMap<String, String> = std::fs::read_to_string(d.join("pred/predictions.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].replace('/', "-"), format!("{},{}", f[2], f[3]))
        })
        .collect();
    let names = flat_copies(d);
    // A folder (recursive, sorted), a file, and a list from standard input, in the order given.
    std::fs::write(d.join("list.txt"), "flat/cats-cats.1.png\n").unwrap();
    let mut child = cmd("predict", d)
        .args(["--model", "out/classifier.onnx", "flat", "flat/cats-cats.0.png", "--list", "-", "--out", "rows.csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"flat/more/dogs-dogs.2.png\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(ok(o).contains("predict: 10 images"));
    let csv = std::fs::read_to_string(d.join("rows.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "file,predicted,probability,top2,top2_probability,error");
    let files: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap()).collect();
    let mut want: Vec<String> = names.iter().map(|n| format!("flat/{n}")).collect();
    want.extend(["flat/cats-cats.0.png".to_string(), "flat/more/dogs-dogs.2.png".to_string()]);
    assert_eq!(files, want);
    for l in &lines[1..] {
        let f: Vec<&str> = l.split(',').collect();
        let key = f[0].trim_start_matches("flat/").trim_start_matches("more/");
        // Exactly what the labelled run predicted for the same image.
        assert_eq!(format!("{},{}", f[1], f[2]), labelled[key], "{l}");
        let (p, p2): (f64, f64) = (f[2].parse().unwrap(), f[4].parse().unwrap());
        assert!(p >= p2 && (p + p2 - 1.0).abs() < 2e-6 && f[5].is_empty(), "{l}");
    }

    // JSON lines to standard output.
    let out = ok(run("predict", &["--model", "out/classifier.onnx", "flat/more", "--format", "jsonl", "-q"], d));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let top = r["top"].as_array().unwrap();
        assert_eq!((top.len(), &top[0]["class"], &top[0]["probability"]), (2, &r["predicted"], &r["probability"]));
    }
}

#[test]
fn an_unreadable_image_fails_naming_it_or_is_listed_with_skip_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    std::fs::create_dir_all(d.join("mixed")).unwrap();
    std::fs::copy(d.join("validation/cats/cats.0.png"), d.join("mixed/a.png")).unwrap();
    std::fs::write(d.join("mixed/b.png"), b"not an image").unwrap();
    std::fs::copy(d.join("validation/dogs/dogs.0.png"), d.join("mixed/c.png")).unwrap();
    let o = run("predict", &["--model", "out/classifier.onnx", "mixed", "--out", "rows.csv"], d);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("mixed/b.png"), "{}", stderr(&o));
    assert!(!d.join("rows.csv").exists(), "no half-written predictions");
    let o = run("predict", &["--model", "out/classifier.onnx", "mixed", "--out", "rows.csv", "--skip-invalid"], d);
    let err = stderr(&o);
    assert!(ok(o).contains("2 images, 1 skipped"));
    assert!(err.contains("skipped") && err.contains("mixed/b.png"), "{err}");
    let csv = std::fs::read_to_string(d.join("rows.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[1].starts_with("mixed/a.png,") && lines[1].ends_with(','), "{}", lines[1]);
    assert!(lines[2].starts_with("mixed/b.png,,,,,") && lines[2].contains("cannot decode"), "{}", lines[2]);
    assert!(lines[3].starts_with("mixed/c.png,"));
}

#[test]
fn flip_tta_of_a_mirror_symmetric_image_equals_no_tta() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    // Left-right symmetric (at the classifier's 32x32 too), and one that is not.
    let sym = image::RgbImage::from_fn(32, 32, |x, y| {
        let m = x.min(31 - x);
        image::Rgb([(m * 15) as u8, (y * 7) as u8, 200 - (m * 9) as u8])
    });
    sym.save(d.join("sym.png")).unwrap();
    let skew = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 7) as u8, 40]));
    skew.save(d.join("skew.png")).unwrap();
    let rows = |tta: &str| {
        ok(run("predict", &["--model", "out/classifier.onnx", "sym.png", "skew.png", "--tta", tta, "-q"], d))
    };
    let (plain, flipped) = (rows("none"), rows("flip"));
    let line = |s: &str, i: usize| s.lines().nth(i).unwrap().to_string();
    assert_eq!(line(&plain, 1), line(&flipped, 1), "the mirror of a symmetric image is itself");
    assert_ne!(line(&plain, 2), line(&flipped, 2), "an asymmetric one's mirror counts");
}

#[test]
fn the_readme_python_example_agrees_with_predict() {
    let Some(py) = python_for("the README's Python example") else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    classifier(d);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("<!-- python-example -->").expect("the README marks its Python example");
    let code = &readme[start..];
    let code = &code[code.find("```python\n").unwrap() + 10..];
    let code = &code[..code.find("```").unwrap()];
    std::fs::write(d.join("classify.py"), code).unwrap();
    for image in ["validation/cats/cats.0.png", "validation/dogs/dogs.2.png"] {
        let o = std::process::Command::new(&py)
            .args(["classify.py", "out/classifier.onnx", image])
            .current_dir(d)
            .output()
            .unwrap();
        let theirs = ok(o);
        let (class, p) = theirs.trim().split_once(' ').unwrap();
        let ours = ok(run("predict", &["--model", "out/classifier.onnx", image, "-q"], d));
        let row: Vec<&str> = ours.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(class, row[1], "{image}: python says {theirs}, predict {ours}");
        // Pillow's bilinear resize and ours round differently: at most one grey level apart on
        // a sixth to a quarter of the pixels (measured), which this tiny random model amplifies.
        let (p, q): (f64, f64) = (p.parse().unwrap(), row[2].parse().unwrap());
        assert!((p - q).abs() < 1e-2, "{image}: python {p} vs predict {q}");
    }
}

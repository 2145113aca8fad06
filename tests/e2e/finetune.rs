//! End-to-end tests of `finetune` on a tiny VGG16-shaped model: outputs, reproducibility, the
//! cached-rounds mode against the exact mode, the classifier against Python's onnxruntime,
//! clear errors for bad inputs, and no scratch left by an interrupted run.

use std::path::Path;

use crate::common::*;

fn finetune_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--train", "train", "--validation", "validation", "--model-dir", "model", "--head", "head"];
    a.extend_from_slice(&["--out", out, "--size", "32", "--epochs", "3", "--batch-size", "4", "--lr", "0.01"]);
    a.extend_from_slice(&["--device", "cpu", "--threads", "1", "-q"]);
    a.extend_from_slice(extra);
    a
}

/// `args` with the value after `flag` replaced.
fn swap<'a>(mut args: Vec<&'a str>, flag: &str, value: &'a str) -> Vec<&'a str> {
    let i = args.iter().position(|&x| x == flag).unwrap();
    args[i + 1] = value;
    args
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn read_f32(path: &Path) -> ndarray::ArrayD<f32> {
    sd_data::npy::read::<f32>(path).unwrap()
}

const WEIGHTS: [&str; 6] = [
    "block5/block5_conv1_kernel.npy",
    "block5/block5_conv1_bias.npy",
    "block5/block5_conv2_kernel.npy",
    "block5/block5_conv2_bias.npy",
    "block5/block5_conv3_kernel.npy",
    "block5/block5_conv3_bias.npy",
];

#[test]
fn trains_writes_every_output_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    ok(run("finetune", &finetune_args("out", &["--seed", "7"]), d));
    let out = d.join("out");
    for f in ["classifier.onnx", "metrics.json", "history.csv", "curves.svg", "head/head.json", "head/head.onnx"]
        .iter()
        .chain(&WEIGHTS)
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // No work files left behind, next to the output or in it.
    assert_eq!(hidden(d), Vec::<String>::new());

    let m = json(&out.join("metrics.json"));
    assert_eq!(m["epochs"], 3);
    assert_eq!(m["train"]["samples"], 12);
    assert_eq!(m["validation"]["samples"], 6);
    assert_eq!(m["config"]["seed"], 7);
    assert_eq!(m["config"]["optimizer"]["name"], "sgd");
    assert_eq!(m["config"]["augment"]["horizontal_flip"], true, "the fine-tuning preset by default");
    assert_eq!(m["classes"], serde_json::json!({"cats": 0, "dogs": 1}));
    assert_eq!(m["device"], "cpu");
    assert_eq!(m["last"]["val_acc"], 1.0, "{m}");
    let history = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 4);

    // Block 5 and the head both moved; shapes are prepare-model's and train-head's.
    for (f, start) in
        [(WEIGHTS[4], "model/block5/block5_conv3_kernel.npy"), ("head/dense1_kernel.npy", "head/dense1_kernel.npy")]
    {
        let (a, b) = (read_f32(&out.join(f)), read_f32(&d.join(start)));
        assert_eq!(a.shape(), b.shape(), "{f}");
        assert_ne!(a, b, "{f} did not change");
    }
    let (head, spec) = sd_train::head::export::load(&out.join("head")).unwrap();
    assert_eq!((spec.input_shape.clone(), head.hidden()), (vec![1, 1, 6], vec![8]));

    // Same seed: byte-identical weights and classifier; another seed: other weights.
    ok(run("finetune", &finetune_args("again", &["--seed", "7"]), d));
    for f in WEIGHTS.iter().chain(&["head/dense1_kernel.npy", "classifier.onnx"]) {
        assert!(std::fs::read(out.join(f)).unwrap() == std::fs::read(d.join("again").join(f)).unwrap(), "{f} differs");
    }
    ok(run("finetune", &finetune_args("other", &["--seed", "8"]), d));
    assert_ne!(read_f32(&out.join(WEIGHTS[4])), read_f32(&d.join("other").join(WEIGHTS[4])));
}

#[test]
fn cached_rounds_see_the_exact_modes_images() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    ok(run("finetune", &finetune_args("exact", &[]), d));
    // One cached round per epoch: the same augmented images in the same order.
    ok(run("finetune", &finetune_args("cached", &["--cache-rounds", "3", "--work-dir", "work"]), d));
    for f in WEIGHTS {
        let (a, b) = (read_f32(&d.join("exact").join(f)), read_f32(&d.join("cached").join(f)));
        let diff = rel_max_diff(a.as_slice().unwrap(), b.as_slice().unwrap());
        assert!(diff < 1e-5, "{f}: exact and cached modes differ by {diff}");
    }
    // The cached features are float32 [rounds' images, 2, 2, 5] .npy files in --work-dir.
    let h = sd_data::npy::read_header(d.join("work/round-2.npy")).unwrap();
    assert_eq!((h.descr.as_str(), h.shape), ("<f4", vec![12, 2, 2, 5]));
    assert_eq!(sd_data::npy::read_header(d.join("work/validation.npy")).unwrap().shape, [6, 2, 2, 5]);
    // Fewer rounds than epochs: different images, still learns.
    ok(run("finetune", &finetune_args("one-round", &["--cache-rounds", "1"]), d));
    assert_ne!(read_f32(&d.join("exact").join(WEIGHTS[4])), read_f32(&d.join("one-round").join(WEIGHTS[4])));
    assert_eq!(json(&d.join("one-round/metrics.json"))["config"]["cache_rounds"], 1);
}

#[test]
fn classifier_runs_in_python_onnxruntime_like_predict_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    ok(run("finetune", &finetune_args("out", &["--classifier-input", "float"]), d));
    // predict's accuracy on the validation set is finetune's last val_acc.
    let stdout = ok(run("predict", &["--model", "out/classifier.onnx", "--data", "validation", "--out", "pred"], d));
    let val_acc = json(&d.join("out/metrics.json"))["last"]["val_acc"].as_f64().unwrap();
    assert_eq!(json(&d.join("pred/metrics.json"))["accuracy"].as_f64().unwrap(), val_acc);
    assert!(stdout.contains("accuracy 1.0000 (6/6)"), "{stdout}");
    let Some(py) = python_for("the Python onnxruntime check of classifier.onnx") else { return };
    // Images already at 32x32, so that Python needs no resizing, only Caffe preprocessing.
    for entry in sd_data::Dataset::scan(d.join("validation")).unwrap().samples {
        let img = image::open(&entry.path).unwrap().resize_exact(32, 32, image::imageops::FilterType::Triangle);
        let to = d.join("val32").join(entry.path.strip_prefix(d.join("validation")).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        img.to_rgb8().save(to).unwrap();
    }
    ok(run("predict", &["--model", "out/classifier.onnx", "--data", "val32", "--out", "pred32"], d));
    let script = "import csv, numpy as np, onnxruntime as ort\n\
        from PIL import Image\n\
        s = ort.InferenceSession('out/classifier.onnx', providers=['CPUExecutionProvider'])\n\
        meta = s.get_modelmeta().custom_metadata_map\n\
        assert meta['smalldata.preprocess'] == 'caffe' and meta['smalldata.size'] == '32x32', meta\n\
        rows = list(csv.DictReader(open('pred32/predictions.csv')))\n\
        x = np.stack([np.asarray(Image.open('val32/' + r['file']).convert('RGB'), np.float32) for r in rows])\n\
        x = x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)\n\
        p = s.run(['probability'], {'input': np.ascontiguousarray(x)})[0][:, 0]\n\
        want = np.array([float(r['p_dogs']) for r in rows])\n\
        d = float(np.abs(p - want).max())\n\
        assert d < 2e-6, (d, p, want)\n\
        print('python ok')";
    let o = std::process::Command::new(py).arg("-c").arg(script).current_dir(d).output().unwrap();
    assert_eq!(ok(o).trim(), "python ok");
}

#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let fails = |args: Vec<&str>, needles: &[&str]| {
        let o = run("finetune", &args, d);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: expected '{n}' in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!d.join("out").exists(), "{args:?} left output behind");
        let names = hidden(d);
        assert!(!names.iter().any(|n| n.starts_with(".out")), "{args:?} left {names:?}");
    };
    let base = finetune_args("out", &[]);

    usage_error(
        "finetune",
        &swap(base.clone(), "--head", "nope"),
        d,
        "--head nope does not exist; --head takes the folder train-head writes",
    );
    fails(swap(base.clone(), "--head", "features/train"), &["features/train/head.json"]);
    fails(swap(base.clone(), "--model-dir", "features"), &["features/frozen_base.onnx is missing", "prepare-model"]);
    std::fs::create_dir_all(d.join("half-model")).unwrap();
    std::fs::copy(d.join("model/frozen_base.onnx"), d.join("half-model/frozen_base.onnx")).unwrap();
    fails(swap(base.clone(), "--model-dir", "half-model"), &["half-model/block5", "block5_conv1_kernel.npy"]);
    // A head trained at 32x32 does not fit block 5's output at 64x64.
    fails(swap(base.clone(), "--size", "64"), &["head/head.json", "[1, 1, 6]", "[2, 2, 6]", "--size 64x64"]);
    colour_dataset(&d.join("three"), 1, 3);
    std::fs::create_dir_all(d.join("three/birds")).unwrap();
    std::fs::copy(d.join("three/cats/cats.0.png"), d.join("three/birds/bird.png")).unwrap();
    fails(swap(base.clone(), "--validation", "three"), &["three", "birds", "the training set train"]);
    usage_error("finetune", &swap(base.clone(), "--train", "missing"), d, "--train missing does not exist");
    assert!(!d.join("out").exists());
    for flag in ["--epochs", "--batch-size"] {
        usage_error("finetune", &swap(base.clone(), flag, "0"), d, flag);
        assert!(!d.join("out").exists());
    }
    // A corrupt validation image is named.
    std::fs::write(d.join("validation/dogs/dogs.1.png"), b"not a png").unwrap();
    fails(base.clone(), &["dogs.1.png"]);
}

/// Hidden entries (scratch) in `dir`.
fn hidden(dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
    names.filter(|n| n.starts_with('.')).collect()
}

#[cfg(unix)]
#[test]
fn interrupted_run_leaves_no_scratch_and_the_next_run_sweeps_a_killed_ones() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    // Ctrl-C while the feature cache is being used: practically endless epochs.
    let mut child = cmd("finetune", d)
        .args(swap(finetune_args("out", &["--cache-rounds", "2"]), "--epochs", "1000000"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cache_written = wait_for(Duration::from_secs(120), || {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("finetune ended ({status:?}) before it was interrupted: {err}");
        }
        let cache = |n: &String| n.starts_with(".out.work-") && d.join(n).join("validation.npy").is_file();
        hidden(d).iter().any(cache).then_some(())
    });
    assert!(cache_written.is_some(), "no feature cache after 2 minutes: {:?}", hidden(d));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGINT), "dies of the signal, as without a handler: {status:?}");
    let scratch: Vec<String> = hidden(d).into_iter().filter(|n| n != ".out.checkpoint").collect();
    assert_eq!(scratch, Vec::<String>::new(), "scratch left behind (a checkpoint may stay, to resume)");
    assert!(!d.join("out").exists());

    // A SIGKILL cannot be caught: what it leaves (owner pid no longer running) goes on the next run.
    let stale = [d.join(".out.work-999999999-aBc"), d.join(".out.partial-999999999-dEf")];
    for s in &stale {
        std::fs::create_dir_all(s).unwrap();
        std::fs::write(s.join("round-0.npy"), b"half").unwrap();
    }
    let unrelated = d.join(".other.work-999999999-aBc");
    std::fs::create_dir(&unrelated).unwrap();
    ok(run("finetune", &swap(finetune_args("out", &["--cache-rounds", "1"]), "--epochs", "1"), d));
    assert_eq!(hidden(d), vec![".other.work-999999999-aBc".to_string()], "only another output's scratch stays");
    assert!(d.join("out/metrics.json").is_file());
}

/// Killed after a few epochs and resumed, a run ends with the bytes of one never interrupted.
#[cfg(unix)]
#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    let args = |out| swap(finetune_args(out, &["--seed", "3", "--keep-best", "--resume"]), "--epochs", "40");
    ok(run("finetune", &args("whole"), d));
    let mut child = cmd("finetune", d).args(args("out")).spawn().unwrap();
    let state = d.join(".out.checkpoint/state.json");
    let saved = wait_for(Duration::from_secs(120), || {
        let text = std::fs::read_to_string(&state).ok()?;
        let done = serde_json::from_str::<serde_json::Value>(&text).ok()?["state"]["epochs_done"].as_u64()?;
        (done >= 2).then_some(done)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = saved.expect("a checkpoint after two epochs");
    assert!(saved < 40 && !d.join("out").exists(), "killed before it finished (after epoch {saved})");

    let verbose: Vec<&str> = args("out").into_iter().map(|a| if a == "-q" { "-v" } else { a }).collect();
    let resumed = run("finetune", &verbose, d);
    let log = stderr(&resumed);
    ok(resumed);
    assert!(log.contains("resuming after epoch"), "{log}");
    for f in WEIGHTS.iter().chain(&["head/head.onnx", "classifier.onnx", "history.csv"]) {
        let (a, b) = (std::fs::read(d.join("whole").join(f)).unwrap(), std::fs::read(d.join("out").join(f)).unwrap());
        if f.ends_with(".csv") {
            // Timings differ; every other column is the same.
            let no_time = |t: &[u8]| {
                String::from_utf8_lossy(t)
                    .lines()
                    .map(|l| l.rsplit_once(',').unwrap().0.to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(no_time(&a), no_time(&b), "{f}");
        } else {
            assert!(a == b, "{f} differs after resuming from epoch {saved}");
        }
    }
    assert!(!d.join(".out.checkpoint").exists(), "a finished run removes its checkpoint");
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_exports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    // A head whose output layer overflows: the first loss is not a number (what a far too high
    // learning rate leads to, made certain).
    let kernel = d.join("head/dense2_kernel.npy");
    let huge = read_f32(&kernel).mapv(|_| f32::MAX);
    sd_data::npy::write(&kernel, &huge).unwrap();
    let o = run("finetune", &finetune_args("out", &[]), d);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged") && err.contains("epoch 1, step 1"), "{err}");
    assert!(err.contains("lower the learning rate"), "{err}");
    assert!(!d.join("out").exists());
}

/// The head `finetune` starts from is epoch 0 and, by default, a candidate for export: when
/// every epoch is worse on validation (here: trained on swapped labels), the exported
/// classifier is the start, weights and all, never worse than the head it began with.
/// `--no-restore-best` exports the last epoch instead.
#[test]
fn a_finetune_that_only_gets_worse_exports_the_head_it_started_from() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tiny_recipe(d);
    colour_dataset(&d.join("swapped"), 6, 1);
    let s = d.join("swapped");
    std::fs::rename(s.join("cats"), s.join("x")).unwrap();
    std::fs::rename(s.join("dogs"), s.join("cats")).unwrap();
    std::fs::rename(s.join("x"), s.join("dogs")).unwrap();
    ok(run("finetune", &swap(finetune_args("out", &[]), "--train", "swapped"), d));
    let m = json(&d.join("out/metrics.json"));
    assert_eq!((m["epochs"].as_u64(), m["exported"]["epoch"].as_u64()), (Some(3), Some(0)), "{m:#}");
    assert_eq!(m["exported"]["val_acc"], m["initial"]["val_acc"]);
    assert_eq!(m["evaluation"]["accuracy"], m["initial"]["val_acc"]);
    assert!(m["last"]["val_loss"].as_f64() > m["initial"]["val_loss"].as_f64(), "training made it worse: {m:#}");
    for (exported, start) in WEIGHTS.iter().map(|w| (format!("out/{w}"), format!("model/{w}"))).chain(
        ["dense1_kernel.npy", "dense1_bias.npy", "dense2_kernel.npy", "dense2_bias.npy"]
            .map(|w| (format!("out/head/{w}"), format!("head/{w}"))),
    ) {
        assert_eq!(read_f32(&d.join(&exported)), read_f32(&d.join(&start)), "{exported} is {start}");
    }
    ok(run("finetune", &swap(finetune_args("last", &["--no-restore-best"]), "--train", "swapped"), d));
    let m = json(&d.join("last/metrics.json"));
    assert_eq!(m["exported"]["epoch"], 3);
    assert_eq!(m["exported"], m["last"]);
}

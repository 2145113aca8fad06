//! End-to-end tests of the `augment` binary on small generated class folders.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};

fn augment(args: &[&str], threads: usize) -> Output {
    Command::new(env!("CARGO_BIN_EXE_augment"))
        .args(args)
        .args(["--threads", &threads.to_string()])
        .output()
        .expect("run augment")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "augment failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn failed(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "expected a clean failure, got {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An asymmetric test picture (gradients plus a bright block off-centre).
fn picture(w: u32, h: u32, seed: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let block = x < w / 3 && y < h / 2;
        Rgb([(x * 255 / w) as u8 ^ seed, (y * 255 / h) as u8, if block { 255 } else { seed.wrapping_mul(7) }])
    })
}

/// data/{cats,dogs}/*.png with `n` images per class of different sizes.
fn dataset(root: &Path, n: usize) -> PathBuf {
    let data = root.join("data");
    for (c, class) in ["cats", "dogs"].iter().enumerate() {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..n {
            let img = picture(40 + 7 * i as u32, 34 + 5 * c as u32, (c * 50 + i) as u8);
            img.save(data.join(class).join(format!("{}.{i}.png", &class[..3]))).unwrap();
        }
    }
    data
}

/// Every file under `dir`, relative path -> bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn preview_writes_count_images_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cat.0.png");
    picture(60, 40, 3).save(&src).unwrap();
    let out = dir.path().join("preview");
    let run = |seed: &str, out: &Path| {
        let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
        ok(augment(
            &[
                "preview",
                s,
                "--count",
                "12",
                "--out",
                o,
                "--prefix",
                "cat",
                "--format",
                "jpeg",
                "--seed",
                seed,
                "--augment",
                "tutorial",
            ],
            2,
        ))
    };
    run("7", &out);
    let files = tree(&out);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names.len(), 12);
    assert_eq!((names[0], names[11]), ("cat_00.jpeg", "cat_11.jpeg"));
    for bytes in files.values() {
        let img = image::load_from_memory(bytes).unwrap();
        assert_eq!((img.width(), img.height()), (60, 40), "preview keeps the image size");
    }
    assert!(files.values().collect::<std::collections::HashSet<_>>().len() > 1, "copies differ");

    let again = dir.path().join("again");
    run("7", &again);
    assert_eq!(tree(&again), files, "same seed, same bytes");
    let other = dir.path().join("other");
    run("8", &other);
    assert_ne!(tree(&other), files);
}

#[test]
fn rounds_write_class_folders_and_are_thread_count_independent() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 3);
    let run = |out: &Path, threads| {
        let args = [
            "rounds",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--rounds",
            "2",
            "--size",
            "32x40",
            "--seed",
            "5",
            "--augment",
            "tutorial",
            "--fill-mode",
            "reflect",
        ];
        ok(augment(&args, threads))
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let summary = String::from_utf8(run(&one, 1).stdout).unwrap();
    assert!(summary.contains("12 images"), "{summary}");
    run(&two, 2);
    let files = tree(&one);
    assert_eq!(files, tree(&two), "1 and 2 threads give the same bytes");

    let images: Vec<&str> = files.keys().map(String::as_str).filter(|n| n.ends_with(".png")).collect();
    assert_eq!(
        images,
        [
            "cats/cat.0_r0.png",
            "cats/cat.0_r1.png",
            "cats/cat.1_r0.png",
            "cats/cat.1_r1.png",
            "cats/cat.2_r0.png",
            "cats/cat.2_r1.png",
            "dogs/dog.0_r0.png",
            "dogs/dog.0_r1.png",
            "dogs/dog.1_r0.png",
            "dogs/dog.1_r1.png",
            "dogs/dog.2_r0.png",
            "dogs/dog.2_r1.png",
        ]
    );
    for name in &images {
        let img = image::load_from_memory(&files[*name]).unwrap();
        assert_eq!((img.width(), img.height()), (32, 40));
    }
    assert_ne!(files["cats/cat.0_r0.png"], files["cats/cat.0_r1.png"], "rounds differ");
    let manifest: serde_json::Value = serde_json::from_slice(&files["augment.json"]).unwrap();
    assert_eq!(manifest["rounds"], 2);
    assert_eq!(manifest["augmentation"]["rotation_range"], 40.0);
    assert_eq!(manifest["augmentation"]["fill_mode"], "reflect", "flags override the preset");
    assert_eq!(manifest["classes"]["dogs"], 1);
    // What `bottleneck --data` reads: a plain class-folder set (the manifest is not a class).
    let scanned = sd_data::Dataset::scan(&one).unwrap();
    assert_eq!((scanned.classes.names(), scanned.len()), (["cats".to_string(), "dogs".to_string()].as_slice(), 12));

    // A second run with fewer rounds replaces the folder as a whole: no stale round 1.
    let args =
        ["rounds", "--data", data.to_str().unwrap(), "--out", one.to_str().unwrap(), "--rounds", "1", "--size", "32"];
    ok(augment(&args, 2));
    let files = tree(&one);
    assert!(files.contains_key("cats/cat.0_r0.png") && !files.contains_key("cats/cat.0_r1.png"));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(leftovers.iter().all(|n| !n.to_string_lossy().starts_with('.')), "{leftovers:?}");
}

#[test]
fn rounds_as_npy_shards_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2);
    let (out, scaled) = (dir.path().join("npy"), dir.path().join("scaled"));
    let base = ["rounds", "--data", data.to_str().unwrap(), "--rounds", "3", "--size", "32", "--format", "npy"];
    let run = |out: &Path, extra: &[&str], threads| {
        let mut args = base.to_vec();
        args.extend(["--out", out.to_str().unwrap(), "--augment", "tutorial"]);
        args.extend(extra);
        ok(augment(&args, threads))
    };
    run(&out, &[], 1);
    let r0 = out.join("round-000");
    let images: ndarray::ArrayD<u8> = ndarray_npy::read_npy(r0.join("images.npy")).unwrap();
    assert_eq!(images.shape(), [4, 32, 32, 3]);
    let labels: ndarray::ArrayD<i64> = ndarray_npy::read_npy(r0.join("labels.npy")).unwrap();
    assert_eq!(labels.as_slice().unwrap(), [0, 0, 1, 1]);
    assert_eq!(
        std::fs::read_to_string(r0.join("files.txt")).unwrap(),
        "cats/cat.0.png\ncats/cat.1.png\ndogs/dog.0.png\ndogs/dog.1.png\n"
    );
    let classes: serde_json::Value = serde_json::from_slice(&std::fs::read(r0.join("classes.json")).unwrap()).unwrap();
    assert_eq!(classes, serde_json::json!({"cats": 0, "dogs": 1}));
    let r2: ndarray::ArrayD<u8> = ndarray_npy::read_npy(out.join("round-002/images.npy")).unwrap();
    assert_ne!(images, r2);

    // The same shards on two threads; and rescaled float32 equals the uint8 shard times 1/255.
    let two = dir.path().join("two");
    run(&two, &[], 2);
    assert_eq!(tree(&out), tree(&two));
    run(&scaled, &["--rescale", "1/255"], 2);
    let f: ndarray::ArrayD<f32> = ndarray_npy::read_npy(scaled.join("round-000/images.npy")).unwrap();
    let want = images.mapv(|v| v as f32 / 255.0);
    assert!(f.iter().zip(want.iter()).all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn bad_inputs_fail_with_messages_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path(), 2);
    let out = dir.path().join("out");
    let rounds = |data: &Path, out: &Path, extra: &[&str]| {
        let mut args =
            vec!["rounds", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--rounds", "1"];
        args.extend(extra);
        augment(&args, 2)
    };

    std::fs::write(data.join("dogs/dog.1.png"), b"not a png").unwrap();
    let err = failed(rounds(&data, &out, &["--size", "32"]));
    assert!(err.contains("dog.1.png") && err.contains("corrupt"), "{err}");
    assert!(!out.exists(), "no partial output");
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.')));
    std::fs::remove_file(data.join("dogs/dog.1.png")).unwrap();

    std::fs::create_dir(data.join("birds")).unwrap();
    let err = failed(rounds(&data, &out, &[]));
    assert!(err.contains("birds") && err.contains("holds no images"), "{err}");
    std::fs::remove_dir(data.join("birds")).unwrap();

    let err = failed(rounds(&data, &out, &["--rescale", "1/255"]));
    assert!(err.contains("--format npy"), "{err}");
    let err = failed(rounds(&data, &out, &["--zoom-range", "1.5"]));
    assert!(err.contains("zoom range"), "{err}");

    // An existing folder that augment did not write is never replaced.
    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("thesis.txt"), b"keep me").unwrap();
    let err = failed(rounds(&data, &precious, &[]));
    assert!(err.contains("not written by `augment rounds`"), "{err}");
    assert!(precious.join("thesis.txt").exists());
    let err = failed(rounds(&data, &data.join("cats/out"), &[]));
    assert!(err.contains("overlap"), "{err}");

    // A path that names nothing is a usage error (exit 2) naming it.
    let o = augment(&["preview", dir.path().join("absent.jpg").to_str().unwrap(), "--out", out.to_str().unwrap()], 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("absent.jpg does not exist; the image takes an image file to augment"), "{err}");
}

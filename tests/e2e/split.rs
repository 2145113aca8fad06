//! End-to-end tests of the `split` binary.

use std::path::Path;
use std::process::Command;

const SPLIT: &str = env!("CARGO_BIN_EXE_split");

fn raw(dir: &Path, cats: u32, dogs: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for (class, n) in [("cat", cats), ("dog", dogs)] {
        for i in 1..=n {
            std::fs::write(dir.join(format!("{class}.{i}.jpg")), format!("{class}{i}")).unwrap();
        }
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort_by_key(|n| n.split('.').nth(1).unwrap().parse::<u32>().unwrap());
    names
}

#[test]
fn makes_the_tutorial_layout_from_a_kaggle_folder() {
    let t = tempfile::tempdir().unwrap();
    raw(&t.path().join("kaggle/train"), 14, 15);
    let out = Command::new(SPLIT)
        .args(["--source", "kaggle/train", "--out", "data", "--train", "10", "--validation", "4"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "split: cats 10+4, dogs 10+4 (train+validation) -> data\n");
    let data = t.path().join("data");
    assert_eq!(listing(&data.join("train/cats")), (1..=10).map(|i| format!("cat.{i}.jpg")).collect::<Vec<_>>());
    assert_eq!(listing(&data.join("validation/dogs")), (11..=14).map(|i| format!("dog.{i}.jpg")).collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(data.join("validation/cats/cat.14.jpg")).unwrap(), "cat14");

    // Copies are independent of the source; a second split replaces the first completely.
    let out = Command::new(SPLIT)
        .args(["--source", "kaggle/train", "--out", "data", "--train", "2", "--validation", "1", "--link", "copy"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(listing(&data.join("train/dogs")), ["dog.1.jpg", "dog.2.jpg"]);
    std::fs::write(t.path().join("kaggle/train/dog.1.jpg"), "changed").unwrap();
    assert_eq!(std::fs::read_to_string(data.join("train/dogs/dog.1.jpg")).unwrap(), "dog1");
}

#[test]
fn names_what_is_missing_and_leaves_no_output() {
    let t = tempfile::tempdir().unwrap();
    raw(&t.path().join("raw"), 5, 3);
    let out = Command::new(SPLIT)
        .args(["--source", "raw", "--out", "data", "--train", "3", "--validation", "2"])
        .current_dir(t.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enough images in raw: 3 dog.N.* files, 5 needed (3 train + 2 validation), 2 missing"),
        "{err}"
    );
    assert!(!t.path().join("data").exists());
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["raw"], "no temporary folder left behind");
}

/// `n` distinct small files per class under `dir/<class>/`, from number `start`.
fn class_folders(dir: &Path, classes: &[(&str, u32)], start: u32) {
    for (class, n) in classes {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in start..start + n {
            std::fs::write(dir.join(class).join(format!("photo {i}.jpg")), format!("{class} {i}")).unwrap();
        }
    }
}

fn split(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(SPLIT).args(args).current_dir(cwd).output().unwrap()
}

#[test]
fn splits_class_folders_with_spaces_stably_into_train_validation_and_test() {
    let t = tempfile::tempdir().unwrap();
    let classes = [("red roses", 40), ("sun flowers", 30)];
    class_folders(&t.path().join("my photos"), &classes, 0);
    let args = ["--from", "my photos", "--out", "split data", "--validation", "0.2", "--test", "0.2", "--seed", "3"];
    let out = split(t.path(), &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("split: 2 classes, train ") && stdout.contains("(by content hash, seed 3) -> split data")
    );
    let data = t.path().join("split data");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(data.join("split.json")).unwrap()).unwrap();
    let mut placed = std::collections::BTreeMap::new();
    for part in ["train", "validation", "test"] {
        for (class, _) in classes {
            let names: Vec<String> = std::fs::read_dir(data.join(part).join(class))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(summary["counts"][part][class], names.len(), "{part}/{class}");
            assert!(!names.is_empty(), "{part}/{class} is empty");
            placed.extend(names.into_iter().map(|n| ((class, n), part)));
        }
    }
    assert_eq!(placed.len(), 70);

    // Photos added later move none of those already placed.
    class_folders(&t.path().join("my photos"), &classes, 100);
    assert!(split(t.path(), &args).status.success());
    for ((class, name), part) in &placed {
        assert!(data.join(part).join(class).join(name).is_file(), "{class}/{name} left {part}");
    }
}

#[test]
fn wrong_inputs_get_advice_and_leave_no_output() {
    let t = tempfile::tempdir().unwrap();
    class_folders(&t.path().join("photos"), &[("big", 30), ("small", 3)], 0);
    let out = split(t.path(), &["--from", "photos", "--out", "data"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("class `small` has 3 photos") && err.contains("at least 7"), "{err}");
    // Kaggle's mode on class folders points at --from.
    let out = split(t.path(), &["--source", "photos", "--out", "data"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds class folders (big, small)") && err.contains("split --from photos"), "{err}");
    // Fractions out of range, and flags of the other mode, are usage errors.
    for args in [
        &["--from", "photos", "--out", "data", "--validation", "0.6", "--test", "0.5"][..],
        &["--from", "photos", "--out", "data", "--train", "10"],
        &["--source", "photos", "--out", "data", "--validation", "0.2"],
    ] {
        let out = split(t.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(!t.path().join("data").exists());
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["photos"], "no temporary folder left behind");
}

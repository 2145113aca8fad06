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

//! audit end to end, on real photos through the real VGG16 conv base: a planted near duplicate
//! across splits (a training photo resized and re-encoded into validation) and planted label
//! flips are found, an exact copy and photos added after the features are reported, no photo
//! is moved or deleted, and --fail-on-leak fails naming the pair.

use std::path::Path;

use crate::common::*;

/// Copies data/sample into `dir` and plants: a near copy of train/cats/cat.7.jpg in
/// validation/cats, an exact copy of train/dogs/dog.3.jpg within train, and `FLIPS` photos moved
/// to the other class. Returns the flipped photos' paths relative to `dir`.
const FLIPS: [(&str, &str, &str); 4] = [
    ("cats", "dogs", "cat.12.jpg"),
    ("cats", "dogs", "cat.40.jpg"),
    ("dogs", "cats", "dog.25.jpg"),
    ("dogs", "cats", "dog.61.jpg"),
];

fn planted(dir: &Path) {
    for split in ["train", "validation"] {
        for (path, _) in sd_data::tree::files(&root().join("data/sample").join(split)).unwrap() {
            let to = dir.join(split).join(path.strip_prefix(root().join("data/sample").join(split)).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&path, to).unwrap();
        }
    }
    sd_audit::testing::near_copy(
        &dir.join("train/cats/cat.7.jpg"),
        &dir.join("validation/cats/planted-copy.jpg"),
        1.0,
        0.9,
        70,
    )
    .unwrap();
    std::fs::copy(dir.join("train/dogs/dog.3.jpg"), dir.join("train/dogs/dog.3-again.jpg")).unwrap();
    for (from, to, name) in FLIPS {
        std::fs::rename(dir.join("train").join(from).join(name), dir.join("train").join(to).join(name)).unwrap();
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = sd_data::tree::files(dir)
        .unwrap()
        .into_iter()
        .map(|(p, _)| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn planted_duplicates_and_flipped_labels_are_found_and_no_photo_moves() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    planted(dir);
    let model = prepared_model().join("conv_base.onnx");
    for split in ["train", "validation"] {
        let args = ["--data", split, "--model", model.to_str().unwrap(), "--out", &format!("features/{split}"), "-q"];
        ok(run("bottleneck", &args, dir));
    }
    // Photos added after the features: one that decodes, one that does not.
    std::fs::copy(dir.join("train/cats/cat.1.jpg"), dir.join("train/cats/added-later.jpg")).unwrap();
    std::fs::write(dir.join("train/cats/broken.jpg"), b"not a jpeg").unwrap();
    let before = listing(dir);

    let args = ["--features", "features/train", "features/validation", "--out", "audit"];
    let out = ok(run("audit", &args, dir));
    assert!(out.contains("audit: 302 photos") && out.contains("(1 across splits)"), "{out}");
    assert_eq!(listing(dir).into_iter().filter(|f| !f.starts_with("audit/")).collect::<Vec<_>>(), before);

    let audit = sd_audit::Audit::read(&dir.join("audit")).unwrap();
    let s = &audit.summary;
    // The leak first: the near copy across splits, then the exact copy within train.
    let d = &audit.duplicates;
    assert!(d.len() >= 2, "{d:?}");
    assert_eq!(
        (d[0].file_a.as_str(), d[0].file_b.as_str()),
        ("train/cats/cat.7.jpg", "validation/cats/planted-copy.jpg")
    );
    assert_eq!(d[0].kind(), "near cross-split");
    assert!(d[0].similarity > 0.97, "{d:?}");
    let exact: Vec<_> = d.iter().filter(|p| p.exact).collect();
    assert_eq!(exact.len(), 1, "{d:?}");
    assert_eq!(
        (exact[0].file_a.as_str(), exact[0].file_b.as_str(), exact[0].kind().as_str()),
        ("train/dogs/dog.3-again.jpg", "train/dogs/dog.3.jpg", "exact")
    );
    assert_eq!((s.leaks, s.duplicates.cross_split, s.duplicates.exact), (1, 1, 1));

    // The flipped photos lead the suspects, with their true class suggested. (One flip in four
    // may look like its given class to a 300-photo model: dog.25 does here.)
    let top: Vec<&sd_audit::Suspect> = audit.suspects.iter().take(2 * FLIPS.len()).collect();
    let mut found = 0;
    for (truth, given, name) in FLIPS {
        let file = format!("train/{given}/{name}");
        if let Some(x) = top.iter().find(|x| x.file == file) {
            assert_eq!((x.label.as_str(), x.suggested.as_str()), (given, truth));
            found += 1;
        }
    }
    assert!(found >= FLIPS.len() - 1, "{found} flips among the first suspects: {:?}", audit.suspects);
    assert!(FLIPS.iter().any(|(_, given, name)| audit.suspects[0].file == format!("train/{given}/{name}")));
    assert!(s.label_check.accuracy.unwrap() > 0.85, "{:?}", s.label_check);
    assert_eq!(s.suspects, audit.suspects.len());

    assert_eq!(s.unreadable.len(), 1, "{:?}", s.unreadable);
    assert_eq!(s.unreadable[0].file, "train/cats/broken.jpg");
    assert_eq!(s.not_in_features, ["train/cats/added-later.jpg"]);
    assert_eq!((s.photos, s.splits[0].photos, s.splits[1].photos), (302, 201, 101));

    // The same inputs and seed give the same files.
    let again = ["--features", "features/train", "features/validation", "--out", "audit-again", "-q"];
    ok(run("audit", &again, dir));
    for f in ["duplicates.csv", "suspects.csv", "summary.json"] {
        assert_eq!(
            std::fs::read(dir.join("audit").join(f)).unwrap(),
            std::fs::read(dir.join("audit-again").join(f)).unwrap(),
            "{f}"
        );
    }

    // For CI: a leak is an error naming the pair; the findings are still written.
    std::fs::remove_dir_all(dir.join("audit")).unwrap();
    let o = run("audit", &[&args[..], &["--fail-on-leak"]].concat(), dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("1 duplicate pair across splits (--fail-on-leak)"), "{err}");
    assert!(err.contains("train/cats/cat.7.jpg = validation/cats/planted-copy.jpg"), "{err}");
    assert!(dir.join("audit/duplicates.csv").is_file());
}

#[test]
fn bad_input_is_named() {
    let t = tempfile::tempdir().unwrap();
    usage_error("audit", &["--features", "x", "--folds", "1"], t.path(), "--folds");
    usage_error("audit", &["--out", "a"], t.path(), "--features");
    let o = run("audit", &["--features", "nowhere/train"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("nowhere/train"), "{}", stderr(&o));
}

//! What a path flag names, checked before any work: a file or a folder, and the right artifact.
//! Each failed check is a [`UsageError`](crate::UsageError) (exit 2) whose message names the
//! flag, says what the path is, and names the right file or the stage that writes it.
//!
//! The stages describe what they take (`what`: e.g. "the conv base that prepare-model writes
//! (artifacts/model/conv_base.onnx)"); the checks here only look at the file system.

use std::path::Path;

use anyhow::Result;
use sd_data::layout::{features, model};

use crate::usage;

/// `path` must be a file. A folder holding one of `inside` gets "pass the file in it"; any
/// other folder or a missing path gets "`flag` takes `what`".
pub fn file(flag: &str, path: &Path, inside: &[&str], what: &str) -> Result<()> {
    if path.is_file() {
        return Ok(());
    }
    let shown = path.display();
    if path.is_dir() {
        if let Some(found) = inside.iter().map(|n| path.join(n)).find(|p| p.is_file()) {
            return Err(usage(format!("{flag} {shown} is a folder; pass the file in it: {flag} {}", found.display())));
        }
        return Err(usage(format!("{flag} {shown} is a folder; {flag} takes {what}")));
    }
    Err(usage(format!("{flag} {shown} does not exist; {flag} takes {what}")))
}

/// `path` must be a folder. A file beside one of `beside` (a file of the folder meant) gets
/// "pass the folder holding it"; any other file or a missing path gets "`flag` takes `what`".
pub fn folder(flag: &str, path: &Path, beside: &[&str], what: &str) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let shown = path.display();
    if path.is_file() {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if beside.iter().any(|n| parent.join(n).is_file()) {
            return Err(usage(format!(
                "{flag} {shown} is a file; pass the folder holding it: {flag} {}",
                parent.display()
            )));
        }
        return Err(usage(format!("{flag} {shown} is a file; {flag} takes {what}")));
    }
    Err(usage(format!("{flag} {shown} does not exist; {flag} takes {what}")))
}

/// `path` must be a class-folder set of images, `DIR/<class>/<image>`: not a file, not
/// `bottleneck`'s features, not a root holding `train/` and `validation/` (pass one of them).
/// What is inside the class folders is left to [`sd_data::Dataset::scan`].
pub fn class_folders(flag: &str, path: &Path) -> Result<()> {
    let what = "a class-folder set of images, DIR/<class>/<image> (e.g. data/sample/train)";
    folder(flag, path, &[], what)?;
    let shown = path.display();
    if is_features(path) {
        return Err(usage(format!(
            "{flag} {shown} holds bottleneck features ({}), not images; {flag} takes {what}",
            features::FEATURES
        )));
    }
    if is_split_root(path) {
        return Err(usage(format!(
            "{flag} {shown} holds train/ and validation/; pass one of them, e.g. {flag} {}",
            path.join("train").display()
        )));
    }
    if is_model(path) {
        return Err(usage(format!("{flag} {shown} is prepare-model's folder, not images; {flag} takes {what}")));
    }
    Ok(())
}

/// A folder `bottleneck` wrote (it holds `features.npy`).
pub fn is_features(dir: &Path) -> bool {
    dir.join(features::FEATURES).is_file()
}

/// A folder `prepare-model` wrote (it holds the conv base or the frozen part).
pub fn is_model(dir: &Path) -> bool {
    [model::CONV_BASE, model::FROZEN_BASE, model::MODEL_JSON].iter().any(|n| dir.join(n).is_file())
}

/// A data root holding `train/` and `validation/` class-folder sets.
pub fn is_split_root(dir: &Path) -> bool {
    dir.join("train").is_dir() && dir.join("validation").is_dir()
}

/// Whether `dir` holds sub-folders with image files: a class-folder set of images.
pub fn holds_class_folders(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().filter(|e| e.path().is_dir()).any(|class| {
        std::fs::read_dir(class.path())
            .is_ok_and(|files| files.flatten().any(|f| sd_data::dataset::is_image_path(&f.path())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<()>) -> String {
        let e = r.unwrap_err();
        assert!(e.is::<crate::UsageError>(), "{e}");
        e.to_string()
    }

    #[test]
    fn files_and_folders_get_advice_naming_the_right_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("model")).unwrap();
        std::fs::write(d.join("model/conv_base.onnx"), b"x").unwrap();
        let m = d.join("model");
        assert!(file("--model", &m.join("conv_base.onnx"), &[], "x").is_ok());
        let e = message(file("--model", &m, &["classifier.onnx", "conv_base.onnx"], "the conv base"));
        assert!(
            e.ends_with(&format!("is a folder; pass the file in it: --model {}", m.join("conv_base.onnx").display())),
            "{e}"
        );
        let e = message(file("--model", d, &["conv_base.onnx"], "the conv base"));
        assert!(e.ends_with("is a folder; --model takes the conv base"), "{e}");
        let e = message(file("--model", &d.join("nope"), &[], "the conv base"));
        assert!(e.contains("nope does not exist; --model takes the conv base"), "{e}");

        assert!(folder("--head", &m, &[], "x").is_ok());
        let e = message(folder("--head", &m.join("conv_base.onnx"), &["conv_base.onnx"], "a folder"));
        assert!(e.ends_with(&format!("is a file; pass the folder holding it: --head {}", m.display())), "{e}");
        let e = message(folder("--head", &m.join("conv_base.onnx"), &["head.json"], "train-head's folder"));
        assert!(e.ends_with("is a file; --head takes train-head's folder"), "{e}");
    }

    #[test]
    fn class_folder_sets_are_told_from_features_models_and_split_roots() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["data/train/cats/1.jpg", "data/validation/cats/1.jpg", "feat/features.npy", "model/model.json"] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), b"x").unwrap();
        }
        assert!(class_folders("--data", &d.join("data/train")).is_ok());
        assert!(holds_class_folders(&d.join("data/train")) && !holds_class_folders(&d.join("data")));
        let e = message(class_folders("--data", &d.join("data")));
        assert!(e.contains("holds train/ and validation/; pass one of them, e.g. --data"), "{e}");
        assert!(message(class_folders("--data", &d.join("feat"))).contains("holds bottleneck features"));
        assert!(message(class_folders("--data", &d.join("model"))).contains("is prepare-model's folder"));
        assert!(
            message(class_folders("--data", &d.join("nope"))).contains("does not exist; --data takes a class-folder")
        );
    }
}

//! Kaggle's mode, `split --source`: the tutorial's data split. From a raw Kaggle Dogs vs Cats
//! `train/` folder (`cat.N.jpg`, `dog.N.jpg`) make `OUT/train/{cats,dogs}` and
//! `OUT/validation/{cats,dogs}`: per class, the first `train` images by N go to train and the
//! next `validation` ones to validation (the tutorial's 1000 and 400). The output is built in a
//! temporary folder next to OUT and renamed into place, so OUT is either the old or the complete
//! new split.

use std::collections::BTreeMap;
use std::path::Path;

use sd_data::artifact::{StagingDir, WriteError};

use crate::{Link, SplitError, place};

/// Kaggle file-name prefix and the class folder it goes to (sorted: cats=0, dogs=1).
pub const CLASSES: [(&str, &str); 2] = [("cat", "cats"), ("dog", "dogs")];

/// How many files went where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Class folder -> (train files, validation files), file names in order of N.
    pub classes: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Whether hard links had to fall back to copies.
    pub copied: bool,
}

/// The `prefix.N.ext` files of `source` per class prefix, sorted by N.
/// Files of one class: (N, file name), sorted by N.
type Numbered = Vec<(u64, String)>;

fn scan(source: &Path) -> Result<BTreeMap<&'static str, Numbered>, SplitError> {
    if !source.is_dir() {
        return Err(SplitError::NoSource(source.to_path_buf()));
    }
    let read = |e| SplitError::Read { path: source.to_path_buf(), source: e };
    let mut found: BTreeMap<&str, Numbered> = CLASSES.iter().map(|(p, _)| (*p, Vec::new())).collect();
    for entry in std::fs::read_dir(source).map_err(read)? {
        let name = entry.map_err(read)?.file_name().to_string_lossy().into_owned();
        let mut parts = name.splitn(3, '.');
        let (Some(prefix), Some(n), Some(_ext)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if let (Some(list), Ok(n)) = (found.get_mut(prefix), n.parse::<u64>()) {
            list.push((n, name));
        }
    }
    if found.values().all(Vec::is_empty) {
        let folders = crate::folders::subfolders(source).map_err(read)?;
        if !folders.is_empty() {
            return Err(SplitError::ClassFolders { dir: source.to_path_buf(), folders: folders.join(", ") });
        }
    }
    for list in found.values_mut() {
        list.sort();
    }
    Ok(found)
}

/// Makes the split; see the module docs.
pub fn split(source: &Path, out: &Path, train: usize, validation: usize, link: Link) -> Result<Split, SplitError> {
    let found = scan(source)?;
    let need = train + validation;
    let missing: Vec<String> = CLASSES
        .iter()
        .filter(|(p, _)| found[p].len() < need)
        .map(|(p, _)| {
            format!(
                "{} {p}.N.* files, {need} needed ({train} train + {validation} validation), {} missing",
                found[p].len(),
                need - found[p].len()
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(SplitError::NotEnough { dir: source.to_path_buf(), missing });
    }

    let write = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SplitError::Write { path, source }
    };
    let staged = |e: WriteError| SplitError::Write { path: e.path, source: e.source };
    let staging = StagingDir::create(out).map_err(staged)?;
    // Symlinks must point at absolute paths to stay valid wherever OUT is read from.
    let source_abs = std::path::absolute(source).map_err(write(source))?;
    let mut result = Split { classes: BTreeMap::new(), copied: false };
    for (prefix, class) in CLASSES {
        let files = &found[prefix];
        let (tr, va) = (&files[..train], &files[train..need]);
        for (part, list) in [("train", tr), ("validation", va)] {
            let dir = staging.path().join(part).join(class);
            std::fs::create_dir_all(&dir).map_err(write(&dir))?;
            for (_, name) in list {
                let (from, to) = (source_abs.join(name), dir.join(name));
                result.copied |= place(&from, &to, link).map_err(write(&to))?;
            }
        }
        let names = |l: &[(u64, String)]| l.iter().map(|(_, n)| n.clone()).collect();
        result.classes.insert(class.to_string(), (names(tr), names(va)));
    }
    staging.commit().map_err(staged)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Link;

    fn raw(dir: &Path, n: u64) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            for p in ["cat", "dog"] {
                std::fs::write(dir.join(format!("{p}.{i}.jpg")), format!("{p}{i}")).unwrap();
            }
        }
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn takes_the_first_n_by_number_and_replaces_the_output() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("raw"), t.path().join("data/split"));
        raw(&src, 12);
        let s = split(&src, &out, 3, 8, Link::Hard).unwrap();
        // numeric order: 0, 1, 2 train; 3..=10 validation (a string sort would put 10 and 11 after 1)
        assert_eq!(s.classes["cats"].0, ["cat.0.jpg", "cat.1.jpg", "cat.2.jpg"]);
        assert_eq!(s.classes["dogs"].1.last().unwrap(), "dog.10.jpg");
        assert_eq!(names(&out), ["train", "validation"]);
        assert_eq!(names(&out.join("train/dogs")), ["dog.0.jpg", "dog.1.jpg", "dog.2.jpg"]);
        assert_eq!(std::fs::read_to_string(out.join("validation/cats/cat.3.jpg")).unwrap(), "cat3");

        split(&src, &out, 2, 1, Link::Symlink).unwrap();
        assert_eq!(names(&out.join("validation/cats")), ["cat.2.jpg"]);
        assert!(std::fs::symlink_metadata(out.join("train/cats/cat.0.jpg")).unwrap().is_symlink());
        assert_eq!(names(out.parent().unwrap()), ["split"], "no temporary folder left");
    }

    #[test]
    fn says_what_is_missing() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("raw");
        raw(&src, 5);
        for i in 0..3 {
            std::fs::remove_file(src.join(format!("dog.{i}.jpg"))).unwrap();
        }
        let out = t.path().join("out");
        let err = split(&src, &out, 3, 1, Link::Copy).unwrap_err().to_string();
        assert!(err.contains("2 dog.N.* files, 4 needed (3 train + 1 validation), 2 missing"), "{err}");
        assert!(!err.contains("cat."), "{err}");
        assert!(!out.exists());
        let err = split(&t.path().join("nope"), &out, 1, 1, Link::Copy).unwrap_err().to_string();
        assert!(err.contains("nope") && err.contains("Kaggle's flat train/ folder"), "{err}");
        // A folder of class folders is for --from.
        let photos = t.path().join("photos");
        raw(&photos.join("roses"), 1);
        let err = split(&photos, &out, 1, 1, Link::Copy).unwrap_err().to_string();
        assert!(err.contains("class folders (roses)") && err.contains("split --from"), "{err}");
    }
}

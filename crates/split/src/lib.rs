//! `split`: the tutorial's data split. From a raw Kaggle Dogs vs Cats `train/` folder
//! (`cat.N.jpg`, `dog.N.jpg`) make `OUT/train/{cats,dogs}` and `OUT/validation/{cats,dogs}`:
//! per class, the first `train` images by N go to train and the next `validation` ones to
//! validation (the tutorial's 1000 and 400). The output is built in a temporary folder next to
//! OUT and renamed into place, so OUT is either the old or the complete new split.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use sd_data::artifact::{StagingDir, WriteError};

/// Kaggle file-name prefix and the class folder it goes to (sorted: cats=0, dogs=1).
pub const CLASSES: [(&str, &str); 2] = [("cat", "cats"), ("dog", "dogs")];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Link {
    /// Hard links (no extra space; falls back to copies across file systems).
    #[default]
    Hard,
    /// Symbolic links to the absolute source paths.
    Symlink,
    Copy,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "source folder {0} does not exist or is not a folder; pass Kaggle's flat train/ folder (cat.0.jpg ... dog.12499.jpg)"
    )]
    NoSource(PathBuf),
    #[error("not enough images in {}: {}", dir.display(), missing.join("; "))]
    NotEnough { dir: PathBuf, missing: Vec<String> },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

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

/// Links or copies `from` to `to`; true when a hard link had to become a copy.
fn place(from: &Path, to: &Path, link: Link) -> io::Result<bool> {
    match link {
        Link::Symlink => std::os::unix::fs::symlink(from, to).map(|_| false),
        Link::Copy => std::fs::copy(from, to).map(|_| false),
        Link::Hard => match std::fs::hard_link(from, to) {
            Ok(()) => Ok(false),
            // Another file system, or links not allowed: a copy holds the same bytes.
            Err(e) if e.kind() != io::ErrorKind::NotFound => std::fs::copy(from, to).map(|_| true),
            Err(e) => Err(e),
        },
    }
}

/// Split a raw Kaggle Dogs vs Cats train folder into train/ and validation/ class folders.
#[derive(Debug, Parser)]
#[command(name = "split", version)]
pub struct Args {
    /// The raw Kaggle train folder (cat.N.jpg, dog.N.jpg).
    #[arg(long)]
    pub source: PathBuf,
    /// Output folder: gets train/{cats,dogs} and validation/{cats,dogs}.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class: the first ones by N.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub train: u64,
    /// Validation images per class: the ones after the training ones.
    #[arg(long, default_value_t = 400)]
    pub validation: u64,
    /// How files get into the output.
    #[arg(long, value_enum, default_value_t = Link::Hard)]
    pub link: Link,
    #[command(flatten)]
    pub log: sd_cli::LogArgs,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let s = split(&args.source, &args.out, args.train as usize, args.validation as usize, args.link)
        .with_context(|| format!("split {} into {}", args.source.display(), args.out.display()))?;
    if s.copied {
        tracing::warn!("hard links were not possible: copied the files instead");
    }
    let counts: Vec<String> = s.classes.iter().map(|(c, (t, v))| format!("{c} {}+{}", t.len(), v.len())).collect();
    sd_cli::summary(&args.log, format!("split: {} (train+validation) -> {}", counts.join(", "), args.out.display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

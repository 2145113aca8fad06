//! Class-folder data sets, laid out the way Keras' `flow_from_directory` reads them:
//! `ROOT/<class>/**/<image>`. Classes are the sub-folder names in sorted (byte) order, so the
//! label of `cats` is 0 and of `dogs` is 1; files are listed recursively in sorted path order.
//! The same folder always gives the same samples in the same order.

use std::path::{Path, PathBuf};

use crate::Classes;
use crate::tree::{WalkError, Walker};

/// File extensions taken as images (case-insensitive); Keras' list plus WebP and GIF.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "ppm", "pgm", "tif", "tiff", "webp", "gif"];

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("data folder {0} does not exist; pass the folder that holds one sub-folder per class")]
    Missing(PathBuf),
    #[error("data folder {0} is a file; pass the folder that holds one sub-folder per class (e.g. data/sample/train)")]
    NotAFolder(PathBuf),
    #[error("image file name {0:?} holds a line break; file lists (files.txt) hold one name per line: rename the file")]
    LineBreakInName(PathBuf),
    #[error("image file name {0:?} is not valid UTF-8, which file lists (files.txt) hold: rename the file")]
    NonUtf8Name(PathBuf),
    #[error("cannot list {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{0} has no class sub-folders; expected {0}/<class>/<image>, e.g. {0}/cats/cat.1.jpg")]
    NoClasses(PathBuf),
    #[error("class folder {path} holds no images (looked for {exts}); add images or remove the folder", exts = IMAGE_EXTENSIONS.join(", "))]
    EmptyClass { path: PathBuf },
    #[error(
        "{root} has classes {found}, but {expected} were expected (from {source_of_expected}); use the same class folders for every split"
    )]
    ClassMismatch { root: PathBuf, found: Classes, expected: Classes, source_of_expected: String },
}

/// One image and its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub label: u32,
}

/// A scanned class-folder data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    /// Class names; the index is the label.
    pub classes: Classes,
    /// All images, class by class, each class in sorted path order.
    pub samples: Vec<Sample>,
}

impl Dataset {
    /// Scans `root`. An empty class folder or a folder without classes is an error, never a
    /// silently smaller data set; files that are not images by extension (and hidden files)
    /// are skipped with a debug log.
    pub fn scan(root: impl AsRef<Path>) -> Result<Dataset, DatasetError> {
        let root = root.as_ref().to_path_buf();
        if root.is_file() {
            return Err(DatasetError::NotAFolder(root));
        }
        if !root.is_dir() {
            return Err(DatasetError::Missing(root));
        }
        let mut classes: Vec<String> = list_dir(&root)?
            .into_iter()
            .filter(|p| p.is_dir() && !is_hidden(p))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DatasetError::NoClasses(root));
        }
        let mut samples = Vec::new();
        let mut walker = Walker::inside(&root)?;
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut files = Vec::new();
            collect_with(&mut walker, &dir, &mut files)?;
            if files.is_empty() {
                return Err(DatasetError::EmptyClass { path: dir });
            }
            files.sort();
            samples.extend(files.into_iter().map(|path| Sample { path, label: label as u32 }));
        }
        Ok(Dataset { root, classes: Classes::new(classes), samples })
    }

    /// Checks that this data set has exactly `expected` classes (e.g. validation vs train).
    pub fn expect_classes(&self, expected: &Classes, source_of_expected: &str) -> Result<(), DatasetError> {
        if self.classes != *expected {
            return Err(DatasetError::ClassMismatch {
                root: self.root.clone(),
                found: self.classes.clone(),
                expected: expected.clone(),
                source_of_expected: source_of_expected.into(),
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Number of samples of each class, in class order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for s in &self.samples {
            counts[s.label as usize] += 1;
        }
        counts
    }

    /// `n` samples (all when there are fewer) spread evenly over the sorted list, so that every
    /// class is seen: what calibration runs on.
    pub fn spread(&self, n: usize) -> Vec<Sample> {
        let n = n.min(self.len());
        (0..n).map(|i| self.samples[i * self.len() / n].clone()).collect()
    }

    /// Sample paths relative to the root (for file lists written next to features).
    pub fn relative_paths(&self) -> Vec<String> {
        self.samples
            .iter()
            .map(|s| s.path.strip_prefix(&self.root).unwrap_or(&s.path).to_string_lossy().into_owned())
            .collect()
    }
}

/// Whether `path` has an image extension.
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |source| DatasetError::Io { path: dir.to_path_buf(), source };
    std::fs::read_dir(dir).map_err(io)?.map(|e| e.map(|e| e.path()).map_err(io)).collect()
}

/// `path` if file lists can hold its name. File names are data: one with a line break would
/// be two rows of `files.txt` (and of a CSV), one that is not UTF-8 would not read back, so
/// both are refused where every stage finds its images, naming the file.
fn listable(path: PathBuf) -> Result<PathBuf, DatasetError> {
    match path.to_str() {
        None => Err(DatasetError::NonUtf8Name(path)),
        Some(p) if p.contains(['\n', '\r']) => Err(DatasetError::LineBreakInName(path)),
        Some(_) => Ok(path),
    }
}

/// Appends every image file below `dir` (by extension, recursively, hidden files and folders
/// skipped; symlinks followed, a loop an error: see [`crate::tree`]).
pub fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DatasetError> {
    collect_with(&mut Walker::new(), dir, out)
}

fn collect_with(walker: &mut Walker, dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DatasetError> {
    walker.walk_where(dir, &is_hidden, &mut |path, _| {
        if is_image_path(&path) {
            out.push(listable(path)?);
        } else {
            tracing::debug!(file = %path.display(), "skipping: not an image by extension");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn classes_sorted_files_sorted_labels_by_class() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "dogs/dog.2.jpg",
            "cats/cat.10.JPG",
            "cats/cat.2.png",
            "dogs/dog.1.jpeg",
            "cats/notes.txt",
            "cats/.DS_Store",
        ] {
            touch(dir.path(), f);
        }
        let ds = Dataset::scan(dir.path()).unwrap();
        assert_eq!(ds.classes.names(), ["cats", "dogs"]);
        assert_eq!(ds.relative_paths(), ["cats/cat.10.JPG", "cats/cat.2.png", "dogs/dog.1.jpeg", "dogs/dog.2.jpg"]);
        assert_eq!(ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(), [0, 0, 1, 1]);
        assert_eq!(ds.class_counts(), [2, 2]);
        assert_eq!(ds.classes.label("dogs"), Some(1));
    }

    #[test]
    fn nested_folders_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "a/x/1.jpg");
        touch(dir.path(), "a/0.jpg");
        touch(dir.path(), "b/1.jpg");
        let ds = Dataset::scan(dir.path()).unwrap();
        assert_eq!(ds.relative_paths(), ["a/0.jpg", "a/x/1.jpg", "b/1.jpg"]);
    }

    #[test]
    fn empty_class_folder_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "cats/cat.1.jpg");
        touch(dir.path(), "dogs/readme.txt");
        let err = Dataset::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dogs") && err.contains("holds no images"), "{err}");
    }

    #[test]
    fn missing_root_and_flat_folder_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Dataset::scan(dir.path().join("nope")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        touch(dir.path(), "cat.1.jpg");
        let err = Dataset::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no class sub-folders"), "{err}");
    }

    #[test]
    fn a_name_with_a_line_break_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "cats/1.jpg");
        touch(dir.path(), "dogs/two\nlines.jpg");
        let err = Dataset::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains(r"two\nlines.jpg") && err.contains("line break") && err.contains("rename"), "{err}");
        std::fs::remove_file(dir.path().join("dogs/two\nlines.jpg")).unwrap();
        touch(dir.path(), "dogs/cr\r.png");
        assert!(Dataset::scan(dir.path()).unwrap_err().to_string().contains("line break"));
    }

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "cats/1.jpg");
        std::fs::create_dir(dir.path().join("dogs")).unwrap();
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.jpg");
        std::fs::write(dir.path().join("dogs").join(name), b"x").unwrap();
        let err = Dataset::scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8") && err.contains("caf"), "{err}");
    }

    #[test]
    fn a_file_given_as_the_data_folder_says_so() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "cats/1.jpg");
        let err = Dataset::scan(dir.path().join("cats/1.jpg")).unwrap_err().to_string();
        assert!(err.contains("is a file") && err.contains("one sub-folder per class"), "{err}");
    }

    #[test]
    fn class_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "cats/1.jpg");
        let ds = Dataset::scan(dir.path()).unwrap();
        let err =
            ds.expect_classes(&Classes::new(vec!["cats".into(), "dogs".into()]), "train").unwrap_err().to_string();
        assert!(err.contains("[\"cats\"]") && err.contains("train"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_loop_is_an_error_naming_it_not_repeated_photos() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let train = dir.path().join("train");
        for f in ["a/1.jpg", "a/2.jpg", "a/3.jpg", "b/1.jpg", "b/2.jpg", "b/3.jpg"] {
            touch(&train, f);
        }
        symlink("../..", train.join("a/up")).unwrap();
        // `up` is the folder that holds `train`: `a/up/train/b/` would be dogs labelled `a`.
        let err = Dataset::scan(&train).unwrap_err().to_string();
        assert!(err.contains("symlink loop through") && err.contains("train/a/up -> ../.."), "{err}");
        let mut found = Vec::new();
        let err = collect_images(&train, &mut found).unwrap_err().to_string();
        assert!(err.contains("train/a/up/train leads back to"), "{err}");
        // `..` from `a` is the data folder itself.
        std::fs::remove_file(train.join("a/up")).unwrap();
        symlink("..", train.join("a/up")).unwrap();
        let err = Dataset::scan(&train).unwrap_err().to_string();
        assert!(err.contains("train/a/up leads back to") && err.contains("train/a/up -> .."), "{err}");
        // A class folder that is a link to the data folder itself.
        std::fs::remove_file(train.join("a/up")).unwrap();
        symlink(".", train.join("c")).unwrap();
        let err = Dataset::scan(&train).unwrap_err().to_string();
        assert!(err.contains("train/c leads back to") && err.contains("symlink loop through"), "{err}");
        // A link to photos elsewhere is followed, once.
        std::fs::remove_file(train.join("c")).unwrap();
        touch(dir.path(), "more/4.jpg");
        symlink(dir.path().join("more"), train.join("b/more")).unwrap();
        let ds = Dataset::scan(&train).unwrap();
        assert_eq!(
            ds.relative_paths(),
            ["a/1.jpg", "a/2.jpg", "a/3.jpg", "b/1.jpg", "b/2.jpg", "b/3.jpg", "b/more/4.jpg"]
        );
    }
}

//! `split --from PHOTOS`: your own photos, one folder per class, into
//! `OUT/{train,validation,test}/<class>/` (a fraction of 0 leaves that split out), like Keras'
//! `image_dataset_from_directory(validation_split=...)` or fastai's `RandomSplitter`, with two
//! differences:
//!
//! * **Stable.** A photo's split follows from a hash of its bytes and the seed alone
//!   ([`position`]): adding photos (or removing others) never moves a photo already placed to
//!   another split, so a test photo never becomes a training photo. The same bytes twice land
//!   in the same split, so an exact duplicate cannot leak from train into test.
//! * **Per class.** Each class is split on its own, so each split holds every class in about
//!   the class's share. About: a split's count of a class is that of independent draws
//!   (binomial), which is what stability costs; `split.json` says what each split got.
//!
//! A class with fewer photos than one expected in each split is an error naming the class and
//! the count it needs, and so is a class that, by its hashes, got none in a split.
//!
//! A PHOTOS that is already split (`train/ validation/ [test/]`, each with the same class
//! folders) is linked as it is, so that a pipeline may always read the split folder.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sd_data::Dataset;
use sd_data::artifact::{StagingDir, write_json};
use sd_data::dataset::DatasetError;

use crate::{Link, SplitError, place};

pub use sd_data::layout::split::{PARTS, SUMMARY};

/// The share of each class for validation and for test; train gets the rest.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Fractions {
    pub validation: f64,
    pub test: f64,
}

impl fmt::Display for Fractions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--validation {} --test {}", self.validation, self.test)
    }
}

impl Fractions {
    /// Each in [0, 1), and something left for train.
    pub fn check(self) -> Result<Fractions, String> {
        for (flag, f) in [("--validation", self.validation), ("--test", self.test)] {
            if !(0.0..1.0).contains(&f) {
                return Err(format!("{flag} {f}: a fraction of each class, from 0 (none) to below 1"));
            }
        }
        if self.validation + self.test >= 1.0 {
            return Err(format!("{self} leaves nothing for train: keep their sum below 1"));
        }
        Ok(self)
    }

    /// The share of split `part` (an index into [`PARTS`]).
    pub fn share(self, part: usize) -> f64 {
        [1.0 - self.validation - self.test, self.validation, self.test][part]
    }

    /// The split of a photo at hash position `u` in [0, 1): test below `test`, validation
    /// below `test + validation`, train above. Raising a fraction moves photos only into the
    /// split that grew.
    pub fn part(self, u: f64) -> usize {
        if u < self.test {
            2
        } else if u < self.test + self.validation {
            1
        } else {
            0
        }
    }

    /// The photos a class needs so that every split made expects at least one of them.
    pub fn needed(self) -> usize {
        (0..PARTS.len())
            .map(|p| self.share(p))
            .filter(|&s| s > 0.0)
            .map(|s| (1.0 / s - 1e-9).ceil() as usize)
            .max()
            .unwrap_or(1)
    }
}

/// Where a photo lands in [0, 1): a BLAKE3 hash of the seed and the file's bytes.
pub fn position(path: &Path, seed: u64) -> io::Result<f64> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"sd-split\0");
    hasher.update(&seed.to_le_bytes());
    hasher.update_reader(std::fs::File::open(path)?)?;
    let bytes: [u8; 8] = hasher.finalize().as_bytes()[..8].try_into().expect("8 of 32 bytes");
    // The top 53 bits: every value exactly representable.
    Ok((u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64)
}

/// How the output was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Class folders split by each photo's hash.
    Hash,
    /// An already split tree, linked as it is.
    AsIs,
}

/// What the output holds: `split.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub method: Method,
    /// The fractions and seed asked for (`null` for an already split tree).
    pub fractions: Option<Fractions>,
    pub seed: Option<u64>,
    /// Split -> class -> photos.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    /// Hard links were not possible: the photos were copied.
    #[serde(skip)]
    pub copied: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes = self.counts.get("train").map_or(0, BTreeMap::len);
        let parts: Vec<String> = PARTS
            .iter()
            .filter_map(|p| self.counts.get(*p).map(|c| format!("{p} {}", c.values().sum::<usize>())))
            .collect();
        write!(f, "{classes} classes, {}", parts.join(", "))?;
        match (self.method, self.seed) {
            (Method::Hash, Some(seed)) => write!(f, " (by content hash, seed {seed})"),
            _ => write!(f, " (already split: linked as it is)"),
        }
    }
}

/// Splits `from` into `out`; see the module docs. `fractions` must have passed
/// [`Fractions::check`].
pub fn split_folders(
    from: &Path,
    out: &Path,
    fractions: Fractions,
    seed: u64,
    link: Link,
) -> Result<Summary, SplitError> {
    if !from.is_dir() {
        return Err(DatasetError::Missing(from.to_path_buf()).into());
    }
    let staging = StagingDir::create(out)?;
    let summary = match presplit(from)? {
        Some(parts) => link_as_is(from, &parts, staging.path(), link)?,
        None => split_by_hash(from, fractions, seed, staging.path(), link)?,
    };
    write_json(staging.path().join(SUMMARY), &summary)?;
    staging.commit()?;
    Ok(summary)
}

/// The splits of an already split tree: its top-level folders when they are all among
/// [`PARTS`] and include train (validation too, or it is an error). `None`: class folders.
fn presplit(from: &Path) -> Result<Option<Vec<&'static str>>, SplitError> {
    let folders = subfolders(from).map_err(|source| SplitError::Read { path: from.to_path_buf(), source })?;
    let parts: Vec<&'static str> = PARTS.iter().copied().filter(|p| folders.iter().any(|f| f == p)).collect();
    if parts.first() != Some(&"train") || parts.len() != folders.len() {
        return Ok(None);
    }
    if !parts.contains(&"validation") {
        let found = parts.iter().map(|p| format!("{p}/")).collect::<Vec<_>>().join(" and ");
        return Err(SplitError::PartlySplit { dir: from.to_path_buf(), found, missing: "validation" });
    }
    Ok(Some(parts))
}

/// The names of the sub-folders of `dir` that are not hidden, sorted.
pub fn subfolders(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && std::fs::metadata(entry.path())?.is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn link_as_is(from: &Path, parts: &[&'static str], out: &Path, link: Link) -> Result<Summary, SplitError> {
    let mut summary =
        Summary { method: Method::AsIs, fractions: None, seed: None, counts: BTreeMap::new(), copied: false };
    let train = Dataset::scan(from.join("train"))?;
    for part in parts {
        let data = Dataset::scan(from.join(part))?;
        data.expect_classes(&train.classes, &format!("{}", from.join("train").display()))?;
        let photos = data.samples.iter().map(|s| (s.label, s.path.clone()));
        summary.copied |= place_all(&data, photos, &out.join(part), link)?;
        summary.counts.insert(part.to_string(), counts(&data, &data.class_counts()));
    }
    Ok(summary)
}

fn split_by_hash(from: &Path, fractions: Fractions, seed: u64, out: &Path, link: Link) -> Result<Summary, SplitError> {
    let data = Dataset::scan(from)?;
    let totals = data.class_counts();
    let needed = fractions.needed();
    for (class, &count) in data.classes.names().iter().zip(&totals) {
        if count < needed {
            return Err(SplitError::TooSmall { class: class.clone(), count, needed, fractions });
        }
    }
    let mut parts: [Vec<(u32, PathBuf)>; 3] = Default::default();
    let mut per_class = vec![[0usize; 3]; data.classes.len()];
    for sample in &data.samples {
        let u =
            position(&sample.path, seed).map_err(|source| SplitError::Read { path: sample.path.clone(), source })?;
        let part = fractions.part(u);
        parts[part].push((sample.label, sample.path.clone()));
        per_class[sample.label as usize][part] += 1;
    }
    for (label, got) in per_class.iter().enumerate() {
        for (part, &n) in got.iter().enumerate() {
            if n == 0 && fractions.share(part) > 0.0 {
                let count = totals[label];
                return Err(SplitError::EmptySplit {
                    class: data.classes.name(label as u32).to_string(),
                    count,
                    part: PARTS[part],
                    expected: count as f64 * fractions.share(part),
                    fractions,
                });
            }
        }
    }
    let mut summary = Summary {
        method: Method::Hash,
        fractions: Some(fractions),
        seed: Some(seed),
        counts: BTreeMap::new(),
        copied: false,
    };
    for (part, photos) in parts.into_iter().enumerate() {
        if fractions.share(part) == 0.0 {
            continue;
        }
        summary.copied |= place_all(&data, photos.into_iter(), &out.join(PARTS[part]), link)?;
        let of_part: Vec<usize> = per_class.iter().map(|c| c[part]).collect();
        summary.counts.insert(PARTS[part].to_string(), counts(&data, &of_part));
    }
    Ok(summary)
}

/// Links (or copies) each photo to `dir/<class>/<its path inside its class folder>`; true when
/// a hard link had to become a copy.
fn place_all(
    data: &Dataset,
    photos: impl Iterator<Item = (u32, PathBuf)>,
    dir: &Path,
    link: Link,
) -> Result<bool, SplitError> {
    let write = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SplitError::Write { path, source }
    };
    // Every class gets its folder, so that every split lists the same classes.
    for class in data.classes.names() {
        std::fs::create_dir_all(dir.join(class)).map_err(write(&dir.join(class)))?;
    }
    // Symlinks must point at absolute paths to stay valid wherever the output is read from.
    let root = std::path::absolute(&data.root).map_err(write(&data.root))?;
    let mut copied = false;
    for (_, path) in photos {
        let rel = path.strip_prefix(&data.root).expect("a sample lies under its data set's root");
        let to = dir.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(write(parent))?;
        }
        copied |= place(&root.join(rel), &to, link).map_err(write(&to))?;
    }
    Ok(copied)
}

/// Class name -> count, from counts in class order.
fn counts(data: &Dataset, counts: &[usize]) -> BTreeMap<String, usize> {
    data.classes.names().iter().cloned().zip(counts.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Fractions = Fractions { validation: 0.15, test: 0.15 };

    /// `n` photos of each class (distinct bytes), numbered from `start`.
    fn photos(dir: &Path, classes: &[(&str, usize)], start: usize) {
        for (class, n) in classes {
            std::fs::create_dir_all(dir.join(class)).unwrap();
            for i in start..start + n {
                std::fs::write(dir.join(class).join(format!("{class} {i}.jpg")), format!("{class}-{i}")).unwrap();
            }
        }
    }

    /// Each photo of `out` by its name, with the split it is in.
    fn placed(out: &Path) -> BTreeMap<String, String> {
        let mut placed = BTreeMap::new();
        for part in PARTS {
            let Ok(data) = Dataset::scan(out.join(part)) else { continue };
            for rel in data.relative_paths() {
                assert!(placed.insert(rel.clone(), part.to_string()).is_none(), "{rel} in two splits");
            }
        }
        placed
    }

    #[test]
    fn fractions_cut_the_hash_positions_and_say_what_a_class_needs() {
        assert_eq!([0.0, 0.1, 0.2, 0.5].map(|u| BOTH.part(u)), [2, 2, 1, 0]);
        assert_eq!(BOTH.needed(), 7);
        assert_eq!(Fractions { validation: 0.2, test: 0.0 }.needed(), 5);
        assert_eq!(Fractions { validation: 0.5, test: 0.0 }.needed(), 2);
        assert!(Fractions { validation: 0.5, test: 0.5 }.check().unwrap_err().contains("nothing for train"));
        assert!(Fractions { validation: -0.1, test: 0.0 }.check().unwrap_err().contains("--validation -0.1"));
        assert!(Fractions { validation: 0.1, test: 1.0 }.check().is_err());
    }

    #[test]
    fn adding_photos_moves_none_of_the_old_ones() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("my photos"), t.path().join("out"));
        photos(&src, &[("daisy", 40), ("rose", 30)], 0);
        split_folders(&src, &out, BOTH, 7, Link::Hard).unwrap();
        let before = placed(&out);
        assert_eq!(before.len(), 70);

        photos(&src, &[("daisy", 60), ("rose", 50), ("tulip", 30)], 100);
        split_folders(&src, &out, BOTH, 7, Link::Hard).unwrap();
        let after = placed(&out);
        assert_eq!(after.len(), 210);
        for (photo, part) in &before {
            assert_eq!(&after[photo], part, "{photo} moved");
        }
        // Another seed places them anew; the same bytes under another name go where they went.
        std::fs::copy(src.join("rose/rose 3.jpg"), src.join("rose/copy of rose 3.jpg")).unwrap();
        split_folders(&src, &out, BOTH, 7, Link::Hard).unwrap();
        let again = placed(&out);
        assert_eq!(again["rose/copy of rose 3.jpg"], again["rose/rose 3.jpg"]);
        split_folders(&src, &out, BOTH, 8, Link::Hard).unwrap();
        let reseeded = placed(&out);
        assert!(after.iter().filter(|(p, s)| &reseeded[*p] != *s).count() > 40, "a new seed, a new split");
    }

    #[test]
    fn each_class_is_split_on_its_own_in_about_its_share() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("photos"), t.path().join("out"));
        // Unbalanced classes: each split must hold each class in about the same share.
        photos(&src, &[("a", 600), ("b", 200), ("c", 100)], 0);
        let s = split_folders(&src, &out, Fractions { validation: 0.2, test: 0.1 }, 0, Link::Copy).unwrap();
        for (class, total) in [("a", 600.0_f64), ("b", 200.0), ("c", 100.0)] {
            for (part, share) in [("train", 0.7), ("validation", 0.2), ("test", 0.1)] {
                let n = s.counts[part][class] as f64;
                // Four binomial standard deviations.
                let sd = (total * share * (1.0 - share)).sqrt();
                assert!((n - total * share).abs() < 4.0 * sd, "{class} {part}: {n} of {total}");
                assert_eq!(std::fs::read_dir(out.join(part).join(class)).unwrap().count(), n as usize);
            }
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(SUMMARY)).unwrap()).unwrap();
        assert_eq!(json["method"], "hash");
        assert_eq!(json["counts"]["test"]["c"], s.counts["test"]["c"]);
        assert_eq!(json["fractions"]["validation"], 0.2);
        assert_eq!(
            s.to_string().split(" (").next().unwrap(),
            format!(
                "3 classes, train {}, validation {}, test {}",
                s.counts["train"].values().sum::<usize>(),
                s.counts["validation"].values().sum::<usize>(),
                s.counts["test"].values().sum::<usize>()
            )
        );
    }

    #[test]
    fn a_fraction_of_zero_leaves_its_split_out() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("photos"), t.path().join("out"));
        photos(&src, &[("a", 30), ("b", 30)], 0);
        let s = split_folders(&src, &out, Fractions { validation: 0.3, test: 0.0 }, 0, Link::Symlink).unwrap();
        assert_eq!(subfolders(&out).unwrap(), ["train", "validation"]);
        assert_eq!(s.counts.keys().collect::<Vec<_>>(), ["train", "validation"]);
        let linked = std::fs::read_dir(out.join("train/a")).unwrap().next().unwrap().unwrap().path();
        assert!(std::fs::symlink_metadata(&linked).unwrap().is_symlink());
        assert!(std::fs::read_link(&linked).unwrap().is_absolute());
    }

    #[test]
    fn a_class_too_small_is_named_with_the_count_it_needs_and_nothing_is_written() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("photos"), t.path().join("out"));
        photos(&src, &[("big", 50), ("tiny one", 4)], 0);
        let err = split_folders(&src, &out, BOTH, 0, Link::Hard).unwrap_err().to_string();
        assert!(err.contains("class `tiny one` has 4 photos") && err.contains("at least 7"), "{err}");
        assert!(!out.exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1, "no temporary folder left");

        // Enough photos for one expected in each split, but by their hashes none fell in one
        // (with some seeds; with others each split gets one).
        photos(&src, &[("tiny one", 3)], 4);
        let results: Vec<_> = (0..20).map(|seed| split_folders(&src, &out, BOTH, seed, Link::Hard)).collect();
        let err = results.iter().find_map(|r| r.as_ref().err()).expect("some seed leaves a split empty").to_string();
        assert!(err.contains("class `tiny one`: none of its 7 photos fell into"), "{err}");
        assert!(err.contains("--seed"), "{err}");
        assert!(results.iter().any(|r| r.is_ok()), "some seed fills every split");
    }

    #[test]
    fn an_already_split_tree_is_linked_as_it_is() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("data"), t.path().join("out"));
        photos(&src.join("train"), &[("cats", 5), ("dogs", 4)], 0);
        photos(&src.join("validation"), &[("cats", 2), ("dogs", 2)], 10);
        let s = split_folders(&src, &out, BOTH, 0, Link::Hard).unwrap();
        assert_eq!(s.method, Method::AsIs);
        assert_eq!(subfolders(&out).unwrap(), ["train", "validation"]);
        assert_eq!(placed(&out)["dogs/dogs 11.jpg"], "validation");
        assert_eq!(s.counts["train"]["cats"], 5);
        assert!(s.to_string().ends_with("(already split: linked as it is)"), "{s}");

        photos(&src.join("test"), &[("cats", 1), ("dogs", 1)], 20);
        split_folders(&src, &out, BOTH, 0, Link::Hard).unwrap();
        assert_eq!(placed(&out)["cats/cats 20.jpg"], "test");

        // Every split has the classes of train.
        photos(&src.join("test"), &[("birds", 1)], 0);
        let err = split_folders(&src, &out, BOTH, 0, Link::Hard).unwrap_err().to_string();
        assert!(err.contains("birds") && err.contains("same class folders"), "{err}");

        std::fs::remove_dir_all(src.join("validation")).unwrap();
        let err = split_folders(&src, &out, BOTH, 0, Link::Hard).unwrap_err().to_string();
        assert!(err.contains("no validation/"), "{err}");
    }
}

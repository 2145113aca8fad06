//! `audit`: the data set checked before anything is trained on it, from the plain bottleneck
//! features of every split (`train`, `validation`, `test`):
//!
//! * duplicates ([`duplicates`]): exact copies (content hash) and near copies (feature cosine),
//!   marked `cross-split` when the two are in different splits: a leak that inflates the score;
//! * suspects ([`suspects`]): photos whose label is likely wrong, from out-of-fold predictions
//!   of a cross-validated logistic regression (confident learning);
//! * unreadable image files, and the class balance.
//!
//! It writes `duplicates.csv`, `suspects.csv` and `summary.json` ([`sd_data::layout::audit`]) into its folder
//! (replaced as a whole when complete) and never moves or deletes a photo: what to do is the
//! user's call (the report shows the pairs and suspects side by side).

pub mod cli;
pub mod duplicates;
pub mod photos;
pub mod suspects;
pub mod testing;

use std::path::PathBuf;

use anyhow::Result;
use ndarray::Array2;
use rayon::prelude::*;
use sd_data::artifact::StagingDir;
use sd_data::layout::audit as output;

pub use photos::Photos;
pub use sd_data::layout::audit::{Audit, CrossValidation, Duplicate, Summary, Suspect};

/// Cosine similarity of the embeddings ([`duplicates::embed`]) at or above which two photos are
/// called near duplicates. Calibrated on VGG16 features at 150x150 of the shared flowers and Dogs
/// vs Cats photos (README): copies resized to 90% and re-encoded at JPEG quality 70 score at least
/// 0.985 with their originals; of the 17 flowers pairs it flags, one looked at is two distinct
/// photos (0.9505); a copy cut to its centre 90% first reaches it 18 times in 30.
pub const DEFAULT_THRESHOLD: f64 = 0.95;

/// What `audit` does, all of it.
#[derive(Debug, Clone)]
pub struct Config {
    /// bottleneck's output folders, one per split, named by split.
    pub features: Vec<PathBuf>,
    pub out: PathBuf,
    /// Near-duplicate threshold on the cosine of the embeddings.
    pub threshold: f64,
    /// Duplicate pairs listed at most (the most similar; leaks are always counted).
    pub max_pairs: usize,
    pub cross_validation: CrossValidation,
}

/// What a run found, for the summary line and `--fail-on-leak`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: Summary,
    /// The cross-split pairs listed (all of them unless there are more than `max_pairs`).
    pub leaks: Vec<Duplicate>,
}

/// Audits the splits and writes `config.out`.
pub fn audit(config: &Config) -> Result<Outcome> {
    let photos = Photos::load(&config.features)?;
    tracing::info!(photos = photos.len(), splits = photos.splits.len(), classes = %photos.classes, "features read");
    let (hashes, mut unreadable) = hash_photos(&photos);
    let (extra_unreadable, not_in_features) = unlisted_files(&photos);
    unreadable.extend(extra_unreadable);

    let unit = duplicates::embed(photos.pooled.view());
    let splits: Vec<usize> = photos.photos.iter().map(|p| p.split).collect();
    let found = duplicates::find(unit.view(), &hashes, &splits, config.threshold as f32, config.max_pairs);
    let file = |i: usize| photos.photos[i].path.display().to_string();
    let pairs: Vec<Duplicate> = found
        .pairs
        .iter()
        .map(|p| Duplicate {
            file_a: file(p.a),
            file_b: file(p.b),
            similarity: p.similarity,
            exact: p.exact,
            cross_split: p.cross,
        })
        .collect();
    let leaks: Vec<Duplicate> = pairs.iter().filter(|d| d.cross_split).cloned().collect();
    let duplicates = output::DuplicateSummary {
        pairs: found.total,
        exact: found.exact,
        near: found.total - found.exact,
        cross_split: found.cross,
        listed: pairs.len(),
        threshold: config.threshold as f32,
    };
    if found.total > pairs.len() {
        tracing::warn!(
            found = found.total,
            listed = pairs.len(),
            "more duplicate pairs than --max-pairs: the most similar are listed"
        );
    }

    let (suspects, label_check) = check_labels(&photos, &config.cross_validation);
    let counts = photos.class_counts();
    let total = photos.len().max(1) as f64;
    let summary = Summary {
        photos: photos.len(),
        leaks: found.cross,
        suspects: suspects.len(),
        unreadable,
        splits: photos
            .splits
            .iter()
            .map(|s| output::SplitSummary {
                name: s.name.clone(),
                data: s.data.display().to_string(),
                photos: s.counts.iter().sum(),
                per_class: s.counts.clone(),
            })
            .collect(),
        class_balance: photos
            .classes
            .names()
            .iter()
            .zip(&counts)
            .map(|(c, &n)| output::ClassCount { class: c.clone(), photos: n, share: n as f64 / total })
            .collect(),
        imbalance: counts.iter().max().copied().unwrap_or(0) as f64
            / counts.iter().min().copied().unwrap_or(0).max(1) as f64,
        duplicates,
        label_check,
        not_in_features,
    };
    let rows: Vec<Suspect> = suspects
        .iter()
        .map(|s| Suspect {
            file: file(s.index),
            label: photos.classes.name(s.label).to_string(),
            suggested: photos.classes.name(s.suggested).to_string(),
            score: s.score,
        })
        .collect();

    let staging = StagingDir::create(&config.out)?;
    output::write_duplicates(staging.path(), &pairs)?;
    output::write_suspects(staging.path(), &rows)?;
    output::write_summary(staging.path(), &summary)?;
    staging.commit()?;
    Ok(Outcome { summary, leaks })
}

/// The out-of-fold label check, or why it was skipped.
fn check_labels(photos: &Photos, cv: &CrossValidation) -> (Vec<suspects::Suspect>, output::LabelCheck) {
    let labels = photos.labels();
    let k = photos.classes.len();
    let counts = photos.class_counts();
    let skipped = if k < 2 {
        Some(format!("one class ({}): nothing to confuse it with", photos.classes))
    } else if let Some((c, _)) = counts.iter().enumerate().find(|&(_, &n)| n < cv.folds) {
        Some(format!(
            "class {} has {} photos, fewer than the {} folds of the cross-validation (--folds)",
            photos.classes.name(c as u32),
            counts[c],
            cv.folds
        ))
    } else {
        None
    };
    let mut check = output::LabelCheck { accuracy: None, suspect_share: 0.0, cross_validation: cv.clone(), skipped };
    if check.skipped.is_some() {
        tracing::warn!(reason = check.skipped.as_deref(), "label check skipped");
        return (vec![], check);
    }
    let x = suspects::standardize(photos.pooled.view());
    let probs: Array2<f32> = suspects::out_of_fold(x.view(), &labels, k, cv);
    let correct = probs
        .outer_iter()
        .zip(&labels)
        .filter(|(p, y)| sd_train::loss::argmax(p.as_slice().expect("standard layout")) == **y)
        .count();
    let found = suspects::rank(probs.view(), &labels);
    check.accuracy = Some(correct as f64 / labels.len() as f64);
    check.suspect_share = found.len() as f64 / labels.len() as f64;
    (found, check)
}

/// Each photo's content hash (blake3); a photo that cannot be read gets a hash of its own and
/// is listed as unreadable.
fn hash_photos(photos: &Photos) -> (Vec<[u8; 32]>, Vec<output::Unreadable>) {
    let results: Vec<Result<[u8; 32], String>> = photos
        .photos
        .par_iter()
        .map(|p| std::fs::read(&p.path).map(|b| *blake3::hash(&b).as_bytes()).map_err(|e| e.to_string()))
        .collect();
    let mut unreadable = Vec::new();
    let hashes = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|reason| {
                unreadable.push(output::Unreadable { file: photos.photos[i].path.display().to_string(), reason });
                // Unique: an unreadable photo duplicates nothing by content.
                *blake3::hash(format!("unreadable {i}").as_bytes()).as_bytes()
            })
        })
        .collect();
    (hashes, unreadable)
}

/// Image files in the splits' data folders that are not in their features: those that do not
/// decode (unreadable, with why) and those that do (the features are older than the photo).
fn unlisted_files(photos: &Photos) -> (Vec<output::Unreadable>, Vec<String>) {
    let listed: std::collections::HashSet<&std::path::Path> = photos.photos.iter().map(|p| p.path.as_path()).collect();
    let mut files = Vec::new();
    for split in &photos.splits {
        match sd_data::Dataset::scan(&split.data) {
            Ok(ds) => files.extend(ds.samples.into_iter().map(|s| s.path).filter(|p| !listed.contains(p.as_path()))),
            Err(e) => tracing::warn!(split = %split.name, error = %e, "cannot list the split's data folder"),
        }
    }
    let checked: Vec<(String, Option<String>)> = files
        .par_iter()
        .map(|p| (p.display().to_string(), sd_data::image::load_rgb(p).err().map(|e| e.to_string())))
        .collect();
    let mut unreadable = Vec::new();
    let mut stale = Vec::new();
    for (file, error) in checked {
        match error {
            Some(reason) => unreadable.push(output::Unreadable { file, reason }),
            None => stale.push(file),
        }
    }
    (unreadable, stale)
}

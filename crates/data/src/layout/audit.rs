//! `audit`'s output folder (`audit` writes it, `report` reads it):
//!
//! | file | contents |
//! |---|---|
//! | `duplicates.csv` | `file_a,file_b,similarity,kind`: pairs of the same photo; `kind` is `exact` (the same bytes) or `near` (resized, re-encoded, lightly cropped), followed by ` cross-split` when the two are in different splits (a leak); leaks first, then the most similar |
//! | `suspects.csv` | `file,label,suggested,score`: photos whose label is likely wrong, the most suspicious first; `score` is `1 - p(label)` out of fold |
//! | `summary.json` | [`Summary`]: counts, class balance, duplicates, leaks, suspects, unreadable files |
//!
//! Files are paths as the stages see them (the split's data folder joined with the photo's
//! path in it), so they open from where the pipeline runs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LayoutError;
use crate::artifact::WriteError;
use crate::csv::{field, records};

pub const DUPLICATES: &str = "duplicates.csv";
pub const SUSPECTS: &str = "suspects.csv";
pub const SUMMARY: &str = "summary.json";

const DUPLICATES_HEADER: &str = "file_a,file_b,similarity,kind";
const SUSPECTS_HEADER: &str = "file,label,suggested,score";

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Photos audited, all splits together.
    pub photos: usize,
    /// Duplicate pairs across splits: photos in validation or test that training also holds.
    pub leaks: usize,
    /// Photos whose label is likely wrong.
    pub suspects: usize,
    /// Image files in the data folders that could not be read.
    pub unreadable: Vec<Unreadable>,
    pub splits: Vec<SplitSummary>,
    /// Photos per class over all splits, in label order.
    pub class_balance: Vec<ClassCount>,
    /// The largest class over the smallest.
    pub imbalance: f64,
    pub duplicates: DuplicateSummary,
    pub label_check: LabelCheck,
    /// Image files in the data folders that decode but are not in the features (made before
    /// they were added): run bottleneck again.
    pub not_in_features: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    pub name: String,
    /// The class-folder data set.
    pub data: String,
    pub photos: usize,
    /// Photos per class, in label order.
    pub per_class: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCount {
    pub class: String,
    pub photos: usize,
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateSummary {
    /// Pairs found: exact ones and near ones (cosine at or above `threshold`).
    pub pairs: usize,
    pub exact: usize,
    pub near: usize,
    /// Of `pairs`, those across splits (= `leaks`).
    pub cross_split: usize,
    /// Pairs written to duplicates.csv (at most `--max-pairs`, the most similar).
    pub listed: usize,
    pub threshold: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelCheck {
    /// Out-of-fold accuracy of the classifier the suspects come from.
    pub accuracy: Option<f64>,
    /// Suspects over photos.
    pub suspect_share: f64,
    pub cross_validation: CrossValidation,
    /// Why no label check ran (too few photos or classes), if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// How the out-of-fold probabilities of the label check are made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    pub folds: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
    pub seed: u64,
}

impl Default for CrossValidation {
    fn default() -> Self {
        CrossValidation { folds: 5, epochs: 30, batch_size: 32, learning_rate: 1e-3, l2: 0.1, seed: 0 }
    }
}

/// A row of `duplicates.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    pub file_a: String,
    pub file_b: String,
    pub similarity: f32,
    /// The same bytes.
    pub exact: bool,
    /// The two are in different splits.
    pub cross_split: bool,
}

impl Duplicate {
    /// `exact` or `near`, then ` cross-split` for a leak.
    pub fn kind(&self) -> String {
        let base = if self.exact { "exact" } else { "near" };
        if self.cross_split { format!("{base} cross-split") } else { base.into() }
    }
}

/// A row of `suspects.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspect {
    pub file: String,
    pub label: String,
    pub suggested: String,
    pub score: f32,
}

pub fn write_duplicates(dir: &Path, rows: &[Duplicate]) -> Result<(), WriteError> {
    let lines: Vec<String> = std::iter::once(DUPLICATES_HEADER.to_string())
        .chain(
            rows.iter().map(|d| format!("{},{},{:.4},{}", field(&d.file_a), field(&d.file_b), d.similarity, d.kind())),
        )
        .collect();
    crate::artifact::write_lines(dir.join(DUPLICATES), &lines)
}

pub fn write_suspects(dir: &Path, rows: &[Suspect]) -> Result<(), WriteError> {
    let lines: Vec<String> = std::iter::once(SUSPECTS_HEADER.to_string())
        .chain(
            rows.iter()
                .map(|s| format!("{},{},{},{:.4}", field(&s.file), field(&s.label), field(&s.suggested), s.score)),
        )
        .collect();
    crate::artifact::write_lines(dir.join(SUSPECTS), &lines)
}

pub fn write_summary(dir: &Path, summary: &Summary) -> Result<(), WriteError> {
    crate::artifact::write_json(dir.join(SUMMARY), summary)
}

/// An audit folder read back.
#[derive(Debug, Clone)]
pub struct Audit {
    pub dir: PathBuf,
    pub summary: Summary,
    pub duplicates: Vec<Duplicate>,
    pub suspects: Vec<Suspect>,
}

impl Audit {
    /// Reads `dir`; errors name the file and say which stage writes it.
    pub fn read(dir: &Path) -> Result<Audit, LayoutError> {
        let summary: Summary = super::read_json(&dir.join(SUMMARY), "audit writes it (is this an audit folder?)")?;
        let duplicates = read_csv(&dir.join(DUPLICATES), DUPLICATES_HEADER, |r| {
            let kind = r[3].as_str();
            let (base, cross_split) = kind.strip_suffix(" cross-split").map_or((kind, false), |b| (b, true));
            let exact = match base {
                "exact" => true,
                "near" => false,
                _ => {
                    return Err(format!(
                        "kind {kind:?}, expected exact or near, optionally followed by \" cross-split\""
                    ));
                }
            };
            Ok(Duplicate { file_a: r[0].clone(), file_b: r[1].clone(), similarity: number(&r[2])?, exact, cross_split })
        })?;
        let suspects = read_csv(&dir.join(SUSPECTS), SUSPECTS_HEADER, |r| {
            Ok(Suspect { file: r[0].clone(), label: r[1].clone(), suggested: r[2].clone(), score: number(&r[3])? })
        })?;
        Ok(Audit { dir: dir.to_path_buf(), summary, duplicates, suspects })
    }
}

fn number(s: &str) -> Result<f32, String> {
    s.parse().map_err(|e| format!("{s:?} is not a number: {e}"))
}

/// Reads a CSV file with `header`, each record through `row` (whose error is the reason).
fn read_csv<T>(path: &Path, header: &str, row: impl Fn(&[String]) -> Result<T, String>) -> Result<Vec<T>, LayoutError> {
    let invalid = |reason: String| LayoutError::Invalid { path: path.into(), reason };
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => invalid("missing; audit writes it (run audit again)".into()),
        _ => LayoutError::Read { path: path.into(), source },
    })?;
    let records = records(&text).ok_or_else(|| invalid("an unterminated quote".into()))?;
    let columns = header.split(',').count();
    let mut records = records.into_iter();
    if records.next().map(|h| h.join(",")) != Some(header.to_string()) {
        return Err(invalid(format!("the first line is not {header:?}; run audit again")));
    }
    records
        .enumerate()
        .map(|(i, r)| {
            if r.len() != columns {
                return Err(invalid(format!("line {}: {} fields, expected {columns}", i + 2, r.len())));
            }
            row(&r).map_err(|reason| invalid(format!("line {}: {reason}", i + 2)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            photos: 2,
            leaks: 1,
            suspects: 1,
            unreadable: vec![],
            splits: vec![],
            class_balance: vec![],
            imbalance: 1.0,
            duplicates: DuplicateSummary { pairs: 2, exact: 1, near: 1, cross_split: 1, listed: 2, threshold: 0.9 },
            label_check: LabelCheck {
                accuracy: Some(0.5),
                suspect_share: 0.5,
                cross_validation: CrossValidation::default(),
                skipped: None,
            },
            not_in_features: vec![],
        }
    }

    #[test]
    fn rows_read_back_as_written_whatever_the_file_names() {
        let t = tempfile::tempdir().unwrap();
        let dups = vec![
            Duplicate {
                file_a: "d/train/a,b.jpg".into(),
                file_b: "d/validation/\"q\".jpg".into(),
                similarity: 0.9712,
                exact: false,
                cross_split: true,
            },
            Duplicate { file_a: "x".into(), file_b: "y".into(), similarity: 1.0, exact: true, cross_split: false },
        ];
        let sus = vec![Suspect {
            file: "d/train/cats/1.jpg".into(),
            label: "cats".into(),
            suggested: "dogs".into(),
            score: 0.9931,
        }];
        write_duplicates(t.path(), &dups).unwrap();
        write_suspects(t.path(), &sus).unwrap();
        let text = std::fs::read_to_string(t.path().join(DUPLICATES)).unwrap();
        assert!(text.starts_with("file_a,file_b,similarity,kind\n\"d/train/a,b.jpg\","), "{text}");
        assert!(text.contains(",0.9712,near cross-split\n") && text.ends_with("x,y,1.0000,exact\n"), "{text}");
        let summary = summary();
        write_summary(t.path(), &summary).unwrap();
        let back = Audit::read(t.path()).unwrap();
        assert_eq!((back.duplicates, back.suspects, back.summary), (dups, sus, summary));
    }

    #[test]
    fn a_damaged_file_is_named() {
        let t = tempfile::tempdir().unwrap();
        write_suspects(t.path(), &[]).unwrap();
        write_duplicates(t.path(), &[]).unwrap();
        std::fs::write(t.path().join(SUMMARY), "{}").unwrap();
        let e = format!("{:#}", Audit::read(t.path()).unwrap_err());
        assert!(e.contains("summary.json"), "{e}");
        write_summary(t.path(), &summary()).unwrap();
        assert!(Audit::read(t.path()).is_ok());
        std::fs::write(t.path().join(DUPLICATES), "file_a,file_b,similarity,kind\na,b,0.5,odd\n").unwrap();
        let e = format!("{:#}", Audit::read(t.path()).unwrap_err());
        assert!(e.contains("duplicates.csv: line 2") && e.contains("\"odd\""), "{e}");
        write_duplicates(t.path(), &[]).unwrap();
        std::fs::write(t.path().join(SUSPECTS), "file,label\n").unwrap();
        let e = format!("{:#}", Audit::read(t.path()).unwrap_err());
        assert!(e.contains("suspects.csv") && e.contains("first line"), "{e}");
    }
}

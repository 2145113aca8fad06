//! `split`'s folder: a data set as class-folder sets, `DIR/train/<class>/`,
//! `DIR/validation/<class>/` and, when it has one, `DIR/test/<class>/`, with [`SUMMARY`] (how
//! it was made and what each split holds). Validation chooses the model (epochs, settings);
//! test is held out and used once, for the final number.

use std::path::Path;

pub const TRAIN: &str = "train";
pub const VALIDATION: &str = "validation";
pub const TEST: &str = "test";

/// The splits, in this order.
pub const PARTS: [&str; 3] = [TRAIN, VALIDATION, TEST];

/// `split.json`: the method (`hash`: class folders split by each photo's content hash;
/// `as-is`: an already split tree linked as it was), the fractions and seed, and the count of
/// each class in each split.
pub const SUMMARY: &str = "split.json";

/// The split the final classifier is scored on: `test` when `root` has one (the honest
/// number), else `validation` (the score that also chose the model).
pub fn held_out(root: &Path) -> &'static str {
    if root.join(TEST).is_dir() { TEST } else { VALIDATION }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_split_is_held_out_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("validation/a")).unwrap();
        assert_eq!(held_out(dir.path()), VALIDATION);
        std::fs::create_dir_all(dir.path().join("test/a")).unwrap();
        assert_eq!(held_out(dir.path()), TEST);
    }
}

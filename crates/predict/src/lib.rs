//! `predict`: a classifier ONNX (as `finetune` exports it: uint8 RGB images in, or float32
//! preprocessed ones; the probability `[N, 1]` of the class labelled 1 for two classes, or every
//! class's `[N, classes]`, out) over images:
//!
//! * [`evaluate`]: a labelled class-folder data set: accuracy, top-k, per-class
//!   precision/recall/F1, the confusion matrix, the loss, and every image's prediction;
//! * [`classify`]: images without labels (files, folders, a list): one row per image, CSV or
//!   JSON lines.
//!
//! Images stream through the prefetching loader and predictions stream to disk, so memory does
//! not grow with the data set. Size, resize filter, preprocessing and class names default to
//! what the classifier's metadata (`sd_data::layout::classifier`) records from training
//! ([`classifier`]); `--tta flip` averages each image with its mirror.

pub mod classifier;
pub mod classify;
pub mod cli;
pub mod evaluate;
pub mod inputs;

pub use classifier::{Classifier, Tta};
pub use evaluate::{Metrics, evaluate, summary};

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The records of a CSV text written with [`csv_field`] (RFC 4180: quoted fields may hold
/// commas, doubled quotes and line breaks); `None` for an unterminated quote.
pub fn csv_records(text: &str) -> Option<Vec<Vec<String>>> {
    let (mut records, mut record, mut field) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Some(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("cats/cat.1.jpg"), "cats/cat.1.jpg");
        assert_eq!(csv_field("a,b \"c\".jpg"), "\"a,b \"\"c\"\".jpg\"");
    }

    #[test]
    fn csv_records_read_back_what_csv_field_wrote() {
        let names = ["cats/cat.1.jpg", "a,b \"c\".jpg", "two\nlines.png", ""];
        let text: String = names.iter().map(|n| format!("{},x\n", csv_field(n))).collect();
        let records = csv_records(&text).unwrap();
        assert_eq!(records.len(), 4);
        for (r, n) in records.iter().zip(names) {
            assert_eq!(r, &[n.to_string(), "x".to_string()]);
        }
        assert_eq!(csv_records("a,b\r\nc").unwrap(), [vec!["a", "b"], vec!["c"]]);
        assert_eq!(csv_records("\"open,x\n"), None);
    }
}

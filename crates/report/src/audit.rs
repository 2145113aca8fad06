//! The data audit's section: what `audit` found (leaks across splits, duplicates, photos whose
//! label looks wrong, unreadable files, class balance), the photos side by side, and what to do
//! about each. The audit never changes a photo; this section only shows.

use std::fmt::Write as _;
use std::path::Path;

use sd_data::layout::audit::{Audit, Duplicate};

use crate::html::{escape, table};
use crate::thumbs;

/// The section (`id="audit"`); `shown` pairs and suspects at most, their thumbnails written into
/// `dir` and counted in `thumbnails`.
pub fn section(audit: &Audit, dir: &Path, shown: usize, thumbnails: &mut usize) -> String {
    let s = &audit.summary;
    let d = &s.duplicates;
    let mut html = String::from(r#"<section id="audit"><h2>Data audit</h2>"#);
    let _ = write!(
        html,
        r#"<p id="audit-summary" data-leaks="{}" data-suspects="{}" data-duplicates="{}" data-unreadable="{}">{} photos: <strong>{}</strong> in two splits (leaks), {} duplicate pairs in all, <strong>{}</strong> with a label that looks wrong, {} unreadable files.</p>"#,
        s.leaks,
        s.suspects,
        d.pairs,
        s.unreadable.len(),
        s.photos,
        count(s.leaks, "photo pair"),
        d.pairs,
        count(s.suspects, "photo"),
        s.unreadable.len()
    );
    let mut rows: Vec<Vec<String>> = s
        .class_balance
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut row = vec![escape(&c.class)];
            row.extend(s.splits.iter().map(|sp| sp.per_class.get(i).map_or("–".into(), |n| n.to_string())));
            row.push(format!("{} ({:.1}%)", c.photos, 100.0 * c.share));
            row
        })
        .collect();
    let mut total = vec!["<b>all</b>".to_string()];
    total.extend(s.splits.iter().map(|sp| sp.photos.to_string()));
    total.push(s.photos.to_string());
    rows.push(total);
    let names: Vec<String> = s.splits.iter().map(|sp| escape(&sp.name)).collect();
    let mut header: Vec<&str> = vec!["class"];
    header.extend(names.iter().map(String::as_str));
    header.push("all");
    let _ = write!(
        html,
        r#"<h3>Class balance</h3><p class="muted">The largest class has {:.2}x the photos of the smallest.{}</p>{}"#,
        s.imbalance,
        if s.imbalance > 1.5 {
            " Imbalanced: consider <code>train-head --class-weight balanced</code>, or more photos of the small classes."
        } else {
            ""
        },
        table("audit-balance", &header, &rows)
    );

    let leaks: Vec<&Duplicate> = audit.duplicates.iter().filter(|p| p.cross_split).collect();
    let others: Vec<&Duplicate> = audit.duplicates.iter().filter(|p| !p.cross_split).collect();
    let _ = write!(
        html,
        r#"<h3>Leaks: the same photo in two splits</h3><p>{}</p>"#,
        if s.leaks == 0 {
            "None found.".to_string()
        } else {
            format!(
                "A photo in validation or test that training also holds is scored on what the model has seen: the score is inflated. <b>What to do:</b> delete the copy from validation/test (or move the pair into one split), then run the pipeline again; <code>audit --fail-on-leak</code> makes this an error in CI.{}",
                listed(s.leaks, leaks.len(), shown)
            )
        }
    );
    html.push_str(&pairs(&leaks, shown, dir, "leak", thumbnails));
    let within = d.pairs - s.leaks;
    let _ = write!(
        html,
        r#"<h3>Duplicates within a split</h3><p>{}</p>"#,
        if within == 0 {
            "None found.".to_string()
        } else {
            format!(
                "A photo twice in training counts twice. <b>What to do:</b> keep one of each pair (it is harmless but wasteful when both carry the same label; when the labels differ, one is wrong).{}",
                listed(within, others.len(), shown)
            )
        }
    );
    html.push_str(&pairs(&others, shown, dir, "dup", thumbnails));

    let check = &s.label_check;
    let how = match (&check.skipped, check.accuracy) {
        (Some(why), _) => format!("The labels were not checked: {}.", escape(why)),
        (None, Some(acc)) => format!(
            "Each photo is judged by a logistic regression on the features, trained in {} folds without it (out-of-fold accuracy {:.4}); a photo is listed when the model is confident of another class (confident learning), the most doubtful first (score = 1 − p(label)).",
            check.cross_validation.folds, acc
        ),
        (None, None) => String::new(),
    };
    let _ = write!(
        html,
        r#"<h3>Labels that look wrong</h3><p>{how}</p><p>{}</p><div class="grid">"#,
        if s.suspects == 0 {
            "None found.".to_string()
        } else {
            format!(
                "<b>What to do:</b> look at each; move a mislabelled photo to its class folder, delete one that belongs to no class, and leave the rest (a hard photo is not a wrong label).{}",
                listed(s.suspects, audit.suspects.len(), shown)
            )
        }
    );
    for (i, x) in audit.suspects.iter().take(shown).enumerate() {
        let file = escape(&x.file);
        let _ = write!(
            html,
            r#"<figure class="suspect">{}<figcaption>labelled <b>{}</b>, looks like <b>{}</b> (score {:.3})<br><span class="muted">{file}</span></figcaption></figure>"#,
            thumbnail(dir, &format!("suspect-{i}"), &x.file, thumbnails),
            escape(&x.label),
            escape(&x.suggested),
            x.score
        );
    }
    html.push_str("</div>");

    let _ = write!(html, r#"<h3>Unreadable files</h3>"#);
    if s.unreadable.is_empty() {
        html.push_str("<p>None found.</p>");
    } else {
        html.push_str("<p><b>What to do:</b> export these again from their source, or delete them.</p><ul>");
        for u in &s.unreadable {
            let _ = write!(html, "<li><code>{}</code>: {}</li>", escape(&u.file), escape(&u.reason));
        }
        html.push_str("</ul>");
    }
    if !s.not_in_features.is_empty() {
        let _ = write!(
            html,
            "<p>{} photos in the data folders are newer than their features (run the pipeline again).</p>",
            s.not_in_features.len()
        );
    }
    let _ = write!(
        html,
        r#"<p class="muted">From <code>{}</code> (duplicates.csv, suspects.csv, summary.json). Near duplicates: cosine similarity of the pooled features at least {:.2}. The audit never moves or deletes a photo.</p></section>"#,
        escape(&audit.dir.display().to_string()),
        d.threshold
    );
    html
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// " Showing the first N." when not all are shown.
fn listed(total: usize, listed: usize, shown: usize) -> String {
    let n = listed.min(shown);
    if n < total { format!(" Showing the first {n} of {total}.") } else { String::new() }
}

fn pairs(pairs: &[&Duplicate], shown: usize, dir: &Path, prefix: &str, thumbnails: &mut usize) -> String {
    let mut html = String::from(r#"<div class="grid">"#);
    for (i, p) in pairs.iter().take(shown).enumerate() {
        let _ = write!(
            html,
            r#"<figure class="pair"><div class="strip">{}{}</div><figcaption style="max-width: 320px">{}, similarity {:.3}<br><span class="muted">{}<br>{}</span></figcaption></figure>"#,
            thumbnail(dir, &format!("{prefix}-{i}-a"), &p.file_a, thumbnails),
            thumbnail(dir, &format!("{prefix}-{i}-b"), &p.file_b, thumbnails),
            escape(&p.kind()),
            p.similarity,
            escape(&p.file_a),
            escape(&p.file_b)
        );
    }
    html.push_str("</div>");
    html
}

/// An `<img>` of the photo, or why it cannot be shown (a photo moved since the audit is no
/// reason to lose the page).
fn thumbnail(dir: &Path, name: &str, file: &str, thumbnails: &mut usize) -> String {
    let alt = escape(file);
    match thumbs::of_file(dir, name, Path::new(file)) {
        Ok(src) => {
            *thumbnails += 1;
            format!(r#"<img src="{src}" alt="{alt}" title="{alt}">"#)
        }
        Err(e) => format!(r#"<span class="muted">cannot show {alt}: {}</span>"#, escape(&format!("{e:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sd_data::layout::audit::{self as output, DuplicateSummary, LabelCheck, SplitSummary, Summary};

    #[test]
    fn the_section_shows_leaks_suspects_and_unreadable_files_and_survives_a_missing_photo() {
        let t = tempfile::tempdir().unwrap();
        let photo = |name: &str| {
            let p = t.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10])).save(&p).unwrap();
            p.display().to_string()
        };
        let (a, b, c) = (photo("train/cats/a.png"), photo("validation/cats/<b>.png"), photo("train/dogs/c.png"));
        let summary = Summary {
            photos: 3,
            leaks: 1,
            suspects: 2,
            unreadable: vec![output::Unreadable { file: "train/cats/x.jpg".into(), reason: "not a JPEG".into() }],
            splits: vec![
                SplitSummary { name: "train".into(), data: "train".into(), photos: 2, per_class: vec![1, 1] },
                SplitSummary { name: "validation".into(), data: "validation".into(), photos: 1, per_class: vec![1, 0] },
            ],
            class_balance: vec![
                output::ClassCount { class: "cats".into(), photos: 2, share: 2.0 / 3.0 },
                output::ClassCount { class: "dogs".into(), photos: 1, share: 1.0 / 3.0 },
            ],
            imbalance: 2.0,
            duplicates: DuplicateSummary { pairs: 1, exact: 0, near: 1, cross_split: 1, listed: 1, threshold: 0.95 },
            label_check: LabelCheck {
                accuracy: Some(0.5),
                suspect_share: 2.0 / 3.0,
                cross_validation: output::CrossValidation::default(),
                skipped: None,
            },
            not_in_features: vec![],
        };
        let dir = t.path().join("audit");
        output::write_summary(&dir, &summary).unwrap();
        output::write_duplicates(
            &dir,
            &[Duplicate { file_a: a, file_b: b, similarity: 0.987, exact: false, cross_split: true }],
        )
        .unwrap();
        let suspect =
            |file: String| output::Suspect { file, label: "dogs".into(), suggested: "cats".into(), score: 0.9 };
        output::write_suspects(&dir, &[suspect(c), suspect("gone/missing.jpg".into())]).unwrap();
        let audit = Audit::read(&dir).unwrap();
        let out = t.path().join("report");
        let mut thumbnails = 0;
        let html = section(&audit, &out, 24, &mut thumbnails);
        assert_eq!(thumbnails, 3, "{html}");
        assert!(html.contains(r#"data-leaks="1" data-suspects="2""#), "{html}");
        assert!(html.contains("near cross-split, similarity 0.987"), "{html}");
        assert!(html.contains("&lt;b&gt;.png") && !html.contains("<b>.png"), "file names are escaped: {html}");
        assert!(html.contains("labelled <b>dogs</b>, looks like <b>cats</b>"), "{html}");
        assert!(html.contains("cannot show gone/missing.jpg"), "{html}");
        assert!(html.contains("<code>train/cats/x.jpg</code>: not a JPEG"), "{html}");
        assert!(html.contains("2.00x") && html.contains("class-weight balanced"), "{html}");
        assert!(out.join("thumbs/leak-0-a.jpg").is_file() && out.join("thumbs/suspect-0.jpg").is_file());
    }
}

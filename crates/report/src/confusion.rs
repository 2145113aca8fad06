//! The confusion matrix as an SVG heat map: rows true, columns predicted, each cell shaded by
//! the share of its row (so a rare class's mistakes show as clearly as a common one's), class
//! names on both axes, the count in the cell while it fits (none in empty cells), and a tooltip
//! with the numbers.
//! Sized from the number of classes: large cells for 2, small ones for 20 or more.

use std::fmt::Write as _;

use sd_train::metrics::Evaluation;

use crate::html::escape;

/// Names longer than this are shortened on the axes (the full name is in the tooltips).
const NAME_CHARS: usize = 22;

pub fn heat_map(e: &Evaluation) -> String {
    let n = e.classes.len().max(1);
    let rows = e.confusion_matrix.rows();
    // Cells from 80 px (2 classes) down to 16 px (30 and more), the matrix at most ~480 px.
    let cell = (480 / n).clamp(16, 80) as f64;
    let names: Vec<String> = e.classes.iter().map(|c| shorten(c, NAME_CHARS)).collect();
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as f64;
    let font = (cell * 0.4).clamp(10.0, 16.0);
    // Row names to the left, column names above, rotated when the cells are narrow.
    let rotate = n > 4;
    let label_w = longest * font * 0.6 + 12.0;
    let head_h = if rotate { label_w * 0.75 + 10.0 } else { font * 2.0 + 10.0 };
    let (x0, y0) = (label_w + font * 1.6, head_h + font * 1.6);
    // Rotated column names reach right of the last column by about their length · cos 45°.
    let overhang = if rotate { label_w * 0.75 } else { 0.0 };
    let (w, h) = (x0 + cell * n as f64 + 10.0 + overhang, y0 + cell * n as f64 + 10.0);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="confusion" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="{font:.0}" role="img" aria-label="confusion matrix">"#
    );
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">predicted</text>"#,
        x0 + cell * n as f64 / 2.0,
        font * 1.2
    );
    let _ = write!(
        s,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-weight="bold">true</text>"#,
        font * 1.2,
        y0 + cell * n as f64 / 2.0
    );
    for (i, name) in names.iter().enumerate() {
        let full = escape(&e.classes[i]);
        let cy = y0 + cell * (i as f64 + 0.5);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{cy:.1}" text-anchor="end" dominant-baseline="middle"><title>{full}</title>{}</text>"#,
            x0 - 6.0,
            escape(name)
        );
        let cx = x0 + cell * (i as f64 + 0.5);
        if rotate {
            let _ = write!(
                s,
                r#"<text transform="translate({cx:.1},{:.1}) rotate(-45)" text-anchor="start"><title>{full}</title>{}</text>"#,
                y0 - 6.0,
                escape(name)
            );
        } else {
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle"><title>{full}</title>{}</text>"#,
                y0 - 8.0,
                escape(name)
            );
        }
    }
    for (t, row) in rows.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &count) in row.iter().enumerate() {
            let share = if total == 0 { 0.0 } else { count as f64 / total as f64 };
            let (x, y) = (x0 + cell * p as f64, y0 + cell * t as f64);
            let title = format!(
                "true {}, predicted {}: {count} of {total} ({:.1}%)",
                e.classes[t],
                e.classes[p],
                share * 100.0
            );
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}" stroke="#ffffff"><title>{}</title></rect>"##,
                shade(share, t == p),
                escape(&title)
            );
            // Counts while they fit; an empty cell says 0 without the noise of a digit.
            if cell >= 18.0 && count > 0 {
                let ink = if share > 0.55 { "#ffffff" } else { "#222222" };
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" dominant-baseline="middle" fill="{ink}" font-size="{:.0}" pointer-events="none">{count}</text>"#,
                    x + cell / 2.0,
                    y + cell / 2.0,
                    (cell * 0.35).clamp(9.0, 18.0)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// White to blue for the diagonal (right), white to red elsewhere (mistakes), by row share.
fn shade(share: f64, diagonal: bool) -> String {
    let to = if diagonal { [33.0, 102.0, 172.0] } else { [203.0, 24.0, 29.0] };
    let c = to.map(|v| (255.0 + (v - 255.0) * share.clamp(0.0, 1.0)).round() as u8);
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// At most `max` characters, an ellipsis marking a cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_string() } else { s.chars().take(max - 1).chain(['…']).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(names: &[String]) -> Evaluation {
        let n = names.len();
        let mut t = sd_train::metrics::Tally::new(sd_train::Loss::for_classes(n));
        let samples = 5 * n;
        let logits: Vec<f32> =
            (0..samples * sd_train::Loss::for_classes(n).outputs()).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let labels: Vec<u32> = (0..samples).map(|i| (i % n) as u32).collect();
        t.add_logits(&logits, &labels);
        t.report(names)
    }

    #[test]
    fn two_classes_have_big_cells_with_counts_and_escaped_names() {
        let e = evaluation(&["<cats>".into(), "dogs & co".into()]);
        let svg = heat_map(&e);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("&lt;cats&gt;") && svg.contains("dogs &amp; co") && !svg.contains("<cats>"));
        assert!(svg.contains(r#"width="80.0""#), "80 px cells for two classes");
        let counts: usize = e.confusion_matrix.rows().iter().flatten().sum();
        let shown: usize = svg
            .split("pointer-events=\"none\">")
            .skip(1)
            .map(|t| t.split('<').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(shown, counts, "every count is printed");
        assert!(!svg.contains(r#"pointer-events="none">0<"#), "no zeros");
    }

    #[test]
    fn twenty_classes_fit_with_rotated_shortened_names() {
        let names: Vec<String> = (0..20).map(|i| format!("a-very-long-flower-name-number-{i}")).collect();
        let svg = heat_map(&evaluation(&names));
        assert_eq!(svg.matches("<rect").count(), 400);
        assert!(svg.contains("rotate(-45)"));
        assert!(
            svg.contains("a-very-long-flower-na…") && svg.contains("<title>a-very-long-flower-name-number-19</title>")
        );
        let width: f64 = svg.split("width=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
        assert!(width < 800.0, "{width}");
        assert_eq!(shade(0.0, true), "#ffffff");
        assert_eq!(shade(1.0, false), "#cb181d");
    }
}

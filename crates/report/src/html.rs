//! Small HTML helpers: escaping (class names and file names are user data) and tables.

use std::fmt::Write as _;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A table: `header` and `rows` are HTML already (escape cells made of user data first).
pub fn table(class: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = format!(r#"<table class="{class}"><thead><tr>"#);
    for h in header {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for row in rows {
        s.push_str("<tr>");
        for cell in row {
            let _ = write!(s, "<td>{cell}</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// A number for a table: 4 decimals, or `–` when missing.
pub fn number(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(escape("chats/été.jpg"), "chats/été.jpg");
        let t = table("x", &["a"], &[vec!["1".into()]]);
        assert_eq!(
            t,
            r#"<table class="x"><thead><tr><th>a</th></tr></thead><tbody><tr><td>1</td></tr></tbody></table>"#
        );
        assert_eq!((number(Some(0.5)), number(None)), ("0.5000".to_string(), "–".to_string()));
    }
}

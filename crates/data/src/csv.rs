//! CSV as the stages write it (predictions, audit findings): RFC 4180 quoting, so that file and
//! class names, which are user data, may hold commas, quotes and line breaks.

/// Quotes a CSV field when it needs it (RFC 4180).
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// The records of a CSV text written with [`field`] (RFC 4180: quoted fields may hold
/// commas, doubled quotes and line breaks); `None` for an unterminated quote.
pub fn records(text: &str) -> Option<Vec<Vec<String>>> {
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
    fn fields_are_quoted_when_needed() {
        assert_eq!(field("cats/cat.1.jpg"), "cats/cat.1.jpg");
        assert_eq!(field("a,b \"c\".jpg"), "\"a,b \"\"c\"\".jpg\"");
    }

    #[test]
    fn records_read_back_what_field_wrote() {
        let names = ["cats/cat.1.jpg", "a,b \"c\".jpg", "two\nlines.png", ""];
        let text: String = names.iter().map(|n| format!("{},x\n", field(n))).collect();
        let records = records(&text).unwrap();
        assert_eq!(records.len(), 4);
        for (r, n) in records.iter().zip(names) {
            assert_eq!(r, &[n.to_string(), "x".to_string()]);
        }
        assert_eq!(super::records("a,b\r\nc").unwrap(), [vec!["a", "b"], vec!["c"]]);
        assert_eq!(super::records("\"open,x\n"), None);
    }
}

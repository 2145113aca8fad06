//! Just enough POSIX shell syntax for the exports: quoting a word, and taking a stage command
//! apart when (and only when) it is one simple command, so that an export may rewrite its
//! arguments (the bottleneck fan-out) without changing what the shell would run.

use std::ops::Range;

/// `s` as one shell word (single quotes unless it needs none).
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b));
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// A word of a simple command: its text with quotes and backslashes undone, and where it is
/// in the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub span: Range<usize>,
}

/// The words of `cmd` if it is a single simple command: no operators (`;`, `&`, `|`,
/// redirections, parentheses), no second line, no command substitution, no globs, no comment.
/// `None` for anything else, so that callers leave such commands alone. `${...}` is kept as
/// text (pipeline's params, shell variables).
pub fn simple_words(cmd: &str) -> Option<Vec<Word>> {
    let cmd = cmd.trim_end();
    let mut words = Vec::new();
    let mut chars = cmd.char_indices().peekable();
    let mut word: Option<(usize, String)> = None;
    while let Some((i, c)) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some((start, text)) = word.take() {
                    words.push(Word { text, span: start..i });
                }
            }
            '\'' => {
                let t = text(&mut word, i);
                loop {
                    match chars.next()? {
                        (_, '\'') => break,
                        (_, c) => t.push(c),
                    }
                }
            }
            '"' => {
                let t = text(&mut word, i);
                loop {
                    match chars.next()? {
                        (_, '"') => break,
                        (_, '`') => return None,
                        (_, '$') if chars.peek().is_some_and(|&(_, c)| c == '(') => return None,
                        (_, '\\') => match chars.next()? {
                            (_, c @ ('$' | '`' | '"' | '\\')) => t.push(c),
                            (_, '\n') => return None,
                            (_, c) => {
                                t.push('\\');
                                t.push(c);
                            }
                        },
                        (_, c) => t.push(c),
                    }
                }
            }
            '\\' => match chars.next()? {
                (_, '\n') => return None,
                (_, c) => text(&mut word, i).push(c),
            },
            '$' if chars.peek().is_some_and(|&(_, c)| c == '(') => return None,
            '#' if word.is_none() => return None,
            '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' | '`' | '*' | '?' | '[' => return None,
            c => text(&mut word, i).push(c),
        }
    }
    if let Some((start, text)) = word.take() {
        words.push(Word { text, span: start..cmd.len() });
    }
    Some(words)
}

/// The text of the word being read, started at `i` if none is.
fn text(word: &mut Option<(usize, String)>, i: usize) -> &mut String {
    &mut word.get_or_insert_with(|| (i, String::new())).1
}

/// Whether a word of a simple command is a `NAME=value` assignment (before the program).
pub fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The program a command starts, as written: its first word after `NAME=value` assignments,
/// without quotes. `None` for an empty command.
pub fn program_word(cmd: &str) -> Option<&str> {
    let word = cmd.split_whitespace().find(|w| !is_assignment(w))?;
    Some(word.trim_matches(|c| c == '\'' || c == '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(cmd: &str) -> Option<Vec<String>> {
        simple_words(cmd).map(|w| w.into_iter().map(|w| w.text).collect())
    }

    #[test]
    fn simple_commands_are_split_into_words_with_their_spans() {
        let cmd = r#"A=1 bottleneck --data '${data}/my train' --out="out dir" x\ y "a\"b\c" $HOME"#;
        let words = simple_words(cmd).unwrap();
        let t: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["A=1", "bottleneck", "--data", "${data}/my train", "--out=out dir", "x y", r#"a"b\c"#, "$HOME"]);
        assert_eq!(&cmd[words[3].span.clone()], "'${data}/my train'");
        assert_eq!(&cmd[words[4].span.clone()], r#"--out="out dir""#);
        assert_eq!(texts("  a   b \n"), Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn anything_but_a_simple_command_is_left_alone() {
        for cmd in [
            "a && b",
            "a; b",
            "a | b",
            "a > f",
            "a\nb",
            "a $(b)",
            "a `b`",
            "\"a $(b)\"",
            "a *.png",
            "(a)",
            "a # comment",
            "'unterminated",
            "a \\\nb",
        ] {
            assert_eq!(texts(cmd), None, "{cmd}");
        }
        assert_eq!(texts("a#b '*' \"?\""), Some(vec!["a#b".into(), "*".into(), "?".into()]));
    }

    #[test]
    fn quoting_and_programs() {
        assert_eq!(quote("data/train-1.x"), "data/train-1.x");
        assert_eq!(quote("it's here"), r"'it'\''s here'");
        assert_eq!(quote(""), "''");
        assert_eq!(program_word("FOO=1 'bottleneck' --x"), Some("bottleneck"));
        assert_eq!(program_word("./bin/tool --a=b"), Some("./bin/tool"));
        assert!(!is_assignment("--out=x") && is_assignment("_A1=x"));
    }
}

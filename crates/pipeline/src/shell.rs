//! Just enough POSIX shell syntax for the commands and the exports: params as data (each
//! `${param}` quoted for where it stands, so that its program gets exactly the param's text),
//! quoting a word, and taking a stage command apart when (and only when) it is one simple
//! command, so that an export may rewrite its arguments (the bottleneck fan-out) without
//! changing what the shell would run.

use std::ops::Range;

use crate::spec::{Piece, pieces};

/// `s` as one shell word (single quotes unless it needs none).
pub fn quote(s: &str) -> String {
    // No `=`: a first word `A=b` would be an assignment, not a program.
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:,+@%".contains(&b));
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// Where a `${param}` stands in a command: how its value must be written there for the shell
/// to read back exactly that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Outside quotes, or inside `$( )`: as one quoted word ([`quote`]).
    Bare,
    /// Inside `'...'`: each `'` as `'\''`.
    Single,
    /// Inside `"..."`: `\`, `"`, `$` and `` ` `` behind a backslash.
    Double,
    /// Where quoting cannot be done right: inside backticks, a shell `${...}` or a here-document;
    /// says where.
    Unsupported(&'static str),
}

/// Why a value cannot be written into a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unquotable {
    #[error("its value holds {0}, which no quoting passes through every engine (make, Snakemake) safely")]
    Char(&'static str),
    #[error("it stands {0}, where its value cannot be quoted (write it outside; for backticks use `$( )`)")]
    Place(&'static str),
}

/// `value` written for `context`, so that the shell reads back exactly `value`.
pub fn quote_in(value: &str, context: Context) -> Result<String, Unquotable> {
    if value.contains('\n') {
        return Err(Unquotable::Char("a newline"));
    }
    if value.contains('\0') {
        return Err(Unquotable::Char("a NUL byte"));
    }
    Ok(match context {
        Context::Bare => quote(value),
        Context::Single => value.replace('\'', r"'\''"),
        Context::Double => value.chars().fold(String::new(), |mut s, c| {
            if matches!(c, '\\' | '"' | '$' | '`') {
                s.push('\\');
            }
            s.push(c);
            s
        }),
        Context::Unsupported(place) => return Err(Unquotable::Place(place)),
    })
}

/// A command template's pieces, each `${param}` with its [`Context`]; the error is the `nth`
/// of a `${` without `}` (as [`pieces`]).
pub fn command_parts(template: &str) -> Result<Vec<(Piece<'_>, Context)>, usize> {
    let mut lexer = Lexer::default();
    let parts = pieces(template)?;
    Ok(parts
        .into_iter()
        .map(|piece| {
            if let Piece::Text(t) = &piece {
                lexer.feed(t);
            }
            let context = lexer.context();
            (piece, context)
        })
        .collect())
}

/// The command of a template: each `${name}` replaced by `value(name, nth)` quoted for where it
/// stands. `unquotable(name, nth, why)` is the error for a value that cannot be passed safely.
pub fn render_command<E>(
    template: &str,
    unterminated: impl FnOnce(usize) -> E,
    mut value: impl FnMut(&str, usize) -> Result<String, E>,
    mut unquotable: impl FnMut(&str, usize, Unquotable) -> E,
) -> Result<String, E> {
    let mut out = String::with_capacity(template.len());
    for (piece, context) in command_parts(template).map_err(unterminated)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Param { name, nth } => {
                let v = value(name, nth)?;
                out.push_str(&quote_in(&v, context).map_err(|why| unquotable(name, nth, why))?);
            }
        }
    }
    Ok(out)
}

/// What the shell is inside of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Single,
    Double,
    /// `$( )`, with the parentheses opened inside it.
    Subst(u32),
    Backtick,
    /// A shell `${...}` (written `$${...}` in pipeline.yaml).
    Brace,
}

/// Follows a command's text far enough to know the [`Context`] at its end: quotes, `$( )`,
/// backticks, `${ }`, backslashes, comments and here-documents.
#[derive(Debug, Default)]
struct Lexer {
    stack: Vec<Frame>,
    /// The previous character was an unquoted backslash.
    escaped: bool,
    /// Inside a `#` comment.
    comment: bool,
    /// A `<<` was seen on this line: the next lines are a here-document's.
    heredoc_next: bool,
    heredoc: bool,
    /// The last character read, for `$(`, `${`, `<<` and where a word starts.
    prev: Option<char>,
}

impl Lexer {
    fn context(&self) -> Context {
        if self.heredoc {
            return Context::Unsupported("in a here-document");
        }
        match self.stack.last() {
            None | Some(Frame::Subst(_)) => Context::Bare,
            Some(Frame::Single) => Context::Single,
            Some(Frame::Double) => Context::Double,
            Some(Frame::Backtick) => Context::Unsupported("inside backticks"),
            Some(Frame::Brace) => Context::Unsupported("inside a shell `${...}`"),
        }
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            let escaped = self.escaped;
            self.char(c);
            // An escaped character starts nothing (`\$(` is no substitution).
            self.prev = Some(if escaped { '_' } else { c });
        }
    }

    fn char(&mut self, c: char) {
        if std::mem::take(&mut self.escaped) || self.heredoc {
            return;
        }
        if self.comment {
            if c != '\n' {
                return;
            }
            self.comment = false;
        }
        let top = self.stack.last().copied();
        let dollar = self.prev == Some('$');
        match (top, c) {
            (Some(Frame::Single), '\'') => {
                self.stack.pop();
            }
            (Some(Frame::Single), _) => {}
            (_, '\\') => self.escaped = true,
            (Some(Frame::Backtick), '`') | (Some(Frame::Double), '"') | (Some(Frame::Brace), '}') => {
                self.stack.pop();
            }
            (_, '(') if dollar => self.stack.push(Frame::Subst(0)),
            (_, '{') if dollar => self.stack.push(Frame::Brace),
            (_, '`') => self.stack.push(Frame::Backtick),
            (Some(Frame::Double), _) => {}
            (_, '"') => self.stack.push(Frame::Double),
            (_, '\'') => self.stack.push(Frame::Single),
            (Some(Frame::Subst(n)), '(') => *self.stack.last_mut().expect("a frame") = Frame::Subst(n + 1),
            (Some(Frame::Subst(0)), ')') => {
                self.stack.pop();
            }
            (Some(Frame::Subst(n)), ')') => *self.stack.last_mut().expect("a frame") = Frame::Subst(n - 1),
            (None, '<') if self.prev == Some('<') => self.heredoc_next = true,
            (None, '\n') if self.heredoc_next => self.heredoc = true,
            (None | Some(Frame::Subst(_)), '#') if self.prev.is_none_or(|p| " \t\n;&|()".contains(p)) => {
                self.comment = true
            }
            _ => {}
        }
    }
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

    /// Values no shell syntax in them should reach the program as anything but their text.
    const NASTY: [&str; 9] = [
        "my photos",
        "it's",
        "x$(touch PWNED)",
        "y`touch PWNED`",
        "a;b && c | d > e",
        "*",
        r#"q"u\o\"te\\"#,
        "${HOME} $HOME ~",
        "#not a comment",
    ];

    fn command(template: &str, value: &str) -> Result<String, Unquotable> {
        render_command(template, |_| unreachable!("terminated"), |_, _| Ok(value.to_string()), |_, _, why| why)
    }

    #[test]
    fn params_reach_the_program_as_their_text_wherever_they_stand() {
        let dir = tempfile::tempdir().unwrap();
        let template = r#"printf '%s\n' ${v} ${v}/train --x=${v} "${v}" "a ${v} b" '${v}' 'a${v}b' \
            "$(printf '%s' ${v})" "$(printf '%s' "${v}")" "$(printf '%s' '${v}')" # ${v}"#;
        for value in NASTY {
            let cmd = command(template, value).unwrap();
            let out = std::process::Command::new("sh").arg("-c").arg(&cmd).current_dir(dir.path()).output().unwrap();
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
            let (train, flag, spaced, joined) =
                (format!("{value}/train"), format!("--x={value}"), format!("a {value} b"), format!("a{value}b"));
            let want = [value, &train, &flag, value, &spaced, value, &joined, value, value, value];
            let got = String::from_utf8(out.stdout).unwrap();
            assert_eq!(got.lines().collect::<Vec<_>>(), want, "{cmd}");
            assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "{cmd} ran something");
        }
    }

    #[test]
    fn plain_values_are_written_as_they_are() {
        assert_eq!(
            command("a ${v}/b \"${v}\" '${v}'", "data/sample").unwrap(),
            "a data/sample/b \"data/sample\" 'data/sample'"
        );
        assert_eq!(command("x=${v}", "1e-3").unwrap(), "x=1e-3");
        assert_eq!(command("x ${v}", "a=b").unwrap(), "x 'a=b'");
    }

    #[test]
    fn values_that_cannot_pass_and_places_that_cannot_quote_are_refused() {
        assert_eq!(command("x ${v}", "a\nb"), Err(Unquotable::Char("a newline")));
        assert_eq!(command("x '${v}'", "a\0b"), Err(Unquotable::Char("a NUL byte")));
        assert_eq!(command("x `echo ${v}`", "a"), Err(Unquotable::Place("inside backticks")));
        assert_eq!(command("x \"`echo ${v}`\"", "a"), Err(Unquotable::Place("inside backticks")));
        assert_eq!(command("x $${HOME:-${v}}", "a"), Err(Unquotable::Place("inside a shell `${...}`")));
        assert_eq!(command("cat <<EOF > ${v}\n${v}\nEOF", "a"), Err(Unquotable::Place("in a here-document")));
        assert_eq!(command("cat <<EOF > ${v}\nEOF", "a b").unwrap(), "cat <<EOF > 'a b'\nEOF");
        // Escaped or quoted, these start nothing.
        assert_eq!(command(r"x \` ${v} \$(y ${v}", "a b").unwrap(), r"x \` 'a b' \$(y 'a b'");
        assert_eq!(command("x '`' \"<<\" ${v} # `\n${v}", "a b").unwrap(), "x '`' \"<<\" 'a b' # `\n'a b'");
        assert_eq!(command("x $$(y) $((1 + ${v})) ${v}", "2").unwrap(), "x $$(y) $((1 + 2)) 2");
    }

    #[test]
    fn quoting_and_programs() {
        assert_eq!(quote("data/train-1.x"), "data/train-1.x");
        assert_eq!(quote("it's here"), r"'it'\''s here'");
        assert_eq!(quote("a=b"), "'a=b'");
        assert_eq!(quote(""), "''");
        assert_eq!(program_word("FOO=1 'bottleneck' --x"), Some("bottleneck"));
        assert_eq!(program_word("./bin/tool --a=b"), Some("./bin/tool"));
        assert!(!is_assignment("--out=x") && is_assignment("_A1=x"));
    }
}

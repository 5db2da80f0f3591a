//! What is checked of a configuration's text before the YAML parser sees it, in one linear pass: nesting that
//! no vztmpld configuration needs (the parser's time grows faster than the file with it: `[[[[…` 200 KB deep
//! took 44 s), and what error output must not print as it is (control characters, bidirectional marks).

/// Deepest flow nesting (`[`, `{`) accepted; a vztmpld configuration needs at most 4.
pub(super) const MAX_FLOW_DEPTH: usize = 32;
/// Most block-sequence markers (`- - - x`) accepted at the start of one line.
pub(super) const MAX_DASHES: usize = 16;
/// Widest indentation accepted; a vztmpld configuration indents at most about 12 columns.
pub(super) const MAX_INDENT: usize = 256;

/// Where the text nests too deeply, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TooDeep {
    pub(super) line: usize,
    pub(super) column: usize,
    pub(super) what: Nesting,
    pub(super) message: String,
}

/// Which limit the text went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nesting {
    /// More than [`MAX_FLOW_DEPTH`] brackets open.
    Brackets,
    /// This many `- ` markers on one line.
    Dashes(usize),
    /// Indented this many columns.
    Indent(usize),
}

/// Refuses nesting deeper than any configuration needs, in time linear in the text. Brackets inside quoted
/// strings and comments do not count.
pub(super) fn check_nesting(text: &str) -> Result<(), TooDeep> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // The last character outside quotes that was not a space: a quote opens a string only where a token starts.
    let mut before = '\n';
    for (index, line) in text.split('\n').enumerate() {
        let at = |column: usize, what: Nesting, message: String| TooDeep { line: index + 1, column, what, message };
        if quote.is_none() {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if indent > MAX_INDENT {
                return Err(at(
                    indent + 1,
                    Nesting::Indent(indent),
                    format!("indented {indent} columns deep; a vztmpld configuration never nests that deep"),
                ));
            }
            let dashes = line.trim_start().split_inclusive(' ').take_while(|t| t.trim_end() == "-").count();
            if dashes > MAX_DASHES {
                return Err(at(
                    indent + 1,
                    Nesting::Dashes(dashes),
                    format!("{dashes} nested lists on one line; at most {MAX_DASHES}"),
                ));
            }
        }
        let mut chars = line.char_indices().peekable();
        while let Some((byte, c)) = chars.next() {
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    // `''` inside a single-quoted string is a quote, not its end.
                    if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                        before = c;
                    }
                }
                Some(_) => {}
                None => match c {
                    '#' if before == '\n' || line[..byte].ends_with([' ', '\t']) => break,
                    '"' | '\'' if matches!(before, '\n' | ':' | ',' | '[' | '{' | '-' | '?') => quote = Some(c),
                    '[' | '{' => {
                        depth += 1;
                        if depth > MAX_FLOW_DEPTH {
                            let column = line[..byte].chars().count() + 1;
                            return Err(at(
                                column,
                                Nesting::Brackets,
                                format!(
                                    "nested more than {MAX_FLOW_DEPTH} brackets deep; a vztmpld configuration never nests that deep"
                                ),
                            ));
                        }
                        before = c;
                    }
                    ']' | '}' => {
                        depth = depth.saturating_sub(1);
                        before = c;
                    }
                    ' ' | '\t' | '\r' => {}
                    _ => before = c,
                },
            }
        }
        if quote.is_none() {
            before = '\n';
        }
    }
    Ok(())
}

/// `text` with control characters and bidirectional formatting marks written as `\u{…}` escapes, so an error
/// message shows what the file holds instead of acting on the terminal (ESC sequences, NUL, right-to-left
/// overrides). Tabs are kept.
pub(super) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\t' && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    text.chars()
        .map(|c| if unsafe_char(c) { c.escape_unicode().to_string() } else { c.to_string() })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_configurations_pass() {
        let text = "clusters:\n  - name: lab # [not counted\n    endpoints: [https://a:8006, \"x[\"]\n    nodes: {only: [a, b]}\n    note: 'it''s [fine'\ntemplates:\n  - template: debian-12\n";
        assert_eq!(check_nesting(text), Ok(()));
        let brackets_in_a_plain_scalar = format!("url: http://x/{}\n", "[".repeat(100));
        assert!(check_nesting(&brackets_in_a_plain_scalar).is_err(), "conservative: counted, and refused");
    }

    #[test]
    fn deep_nesting_is_refused_where_it_goes_too_deep() {
        let deep = format!("templates: {}\n", "[".repeat(1_000_000));
        let err = check_nesting(&deep).unwrap_err();
        assert_eq!((err.line, err.column), (1, 11 + MAX_FLOW_DEPTH + 1), "{err:?}");
        assert_eq!(err.what, Nesting::Brackets, "{err:?}");

        let dashes = format!("templates:\n{}x\n", "- ".repeat(40));
        assert_eq!(check_nesting(&dashes).unwrap_err().what, Nesting::Dashes(40));
        let indented = format!("a:\n{}b: 1\n", " ".repeat(300));
        let err = check_nesting(&indented).unwrap_err();
        assert_eq!((err.line, err.what), (2, Nesting::Indent(300)));
        let hidden = format!("a: [x, 'y', {}]\n", "[".repeat(40));
        assert!(check_nesting(&hidden).is_err(), "a closed string hides nothing after it");
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\u{1b}[31mred\u{0}"), "a\\u{1b}[31mred\\u{0}");
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
    }
}

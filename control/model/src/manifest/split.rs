//! Splitting a YAML stream into documents, before any YAML parsing.
//!
//! libyaml stops for good at the first syntax error of a stream (every later call returns the
//! same error), so parsing a whole multi-document file at once would lose every document after
//! a broken one. Instead the text is cut at document markers, the way YAML defines them: a line
//! that starts, at column 0, with `---` or `...` followed by a blank or the end of the line
//! (YAML 1.2 §9.1; such a line can never be content of a scalar, `c-forbidden`). Each piece is
//! then parsed on its own, so a malformed document costs only itself.
//!
//! Each document keeps the line it starts at, so the line numbers in parser messages can be
//! made the file's own ([`shift_lines`]). (Padding each document with the lines before it
//! would do the same but costs time quadratic in the file: a file of 20,000 small Services
//! would take minutes.)

/// One document of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawDoc {
    /// 1-based index in the file (the first document is 1).
    pub index: usize,
    /// 0-based line of the file where the document starts.
    pub first_line: usize,
    /// The document's text (its own lines only).
    pub text: String,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Whether a line carries no content (blank or a comment).
fn is_blank(line: &str) -> bool {
    let t = line.trim_start_matches([' ', '\t']);
    t.is_empty() || t.starts_with('#')
}

/// Adds `offset` to every `line <n>` of a parser message (libyaml writes `at line <n> column
/// <m>`, possibly twice: the problem and its context), so a document's line numbers become
/// the file's. Numbers that do not fit are left as they are.
pub(crate) fn shift_lines(msg: &str, offset: usize) -> String {
    let mut out = String::with_capacity(msg.len() + 8);
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        let (head, tail) = rest.split_at(i + "line ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let (num, after) = tail.split_at(digits);
        match num
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_add(offset))
        {
            Some(n) if digits > 0 => out.push_str(&n.to_string()),
            _ => out.push_str(num),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Cuts `text` into documents. A document is a piece that starts with `---` (explicit; even
/// with no content it is an empty document), or a piece before the first `---` or after a
/// `...` that has content (a bare document). Directive lines (`%YAML`, `%TAG`) before a `---`
/// go with the document they introduce.
pub(crate) fn split_yaml(text: &str) -> Vec<RawDoc> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut piece = Piece::new(0, false);
    // Directive lines waiting for their `---`: (first line, lines).
    let mut carry: Option<(usize, Vec<&str>)> = None;

    for (n, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if is_marker(line, "---") {
            piece.finish(&mut out, &mut carry);
            piece = Piece::new(n, true);
            if let Some((start, lines)) = carry.take() {
                piece.first_line = start;
                piece.lines = lines;
            }
            piece.lines.push(line);
        } else if is_marker(line, "...") {
            piece.lines.push(line);
            piece.finish(&mut out, &mut carry);
            piece = Piece::new(n + 1, false);
        } else {
            piece.lines.push(line);
        }
    }
    piece.finish(&mut out, &mut carry);
    out
}

struct Piece<'a> {
    first_line: usize,
    explicit: bool,
    lines: Vec<&'a str>,
}

impl<'a> Piece<'a> {
    fn new(first_line: usize, explicit: bool) -> Self {
        Piece {
            first_line,
            explicit,
            lines: Vec::new(),
        }
    }

    fn finish(&mut self, out: &mut Vec<RawDoc>, carry: &mut Option<(usize, Vec<&'a str>)>) {
        let lines = std::mem::take(&mut self.lines);
        if !self.explicit {
            let content: Vec<&str> = lines.iter().copied().filter(|l| !is_blank(l)).collect();
            if content.is_empty() {
                return;
            }
            if content.iter().all(|l| l.starts_with('%')) {
                // Directives only: they belong to the next explicit document.
                *carry = Some((self.first_line, lines));
                return;
            }
        }
        let text = lines.join("\n");
        out.push(RawDoc {
            index: out.len() + 1,
            first_line: self.first_line,
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(text: &str) -> Vec<(usize, usize, String)> {
        split_yaml(text)
            .into_iter()
            .map(|d| {
                (
                    d.index,
                    d.first_line,
                    d.text.trim_start_matches('\n').to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn bare_single_document() {
        assert_eq!(bodies("a: 1\nb: 2\n"), vec![(1, 0, "a: 1\nb: 2\n".into())]);
    }

    #[test]
    fn leading_marker_and_comments_are_not_a_document() {
        let d = bodies("# header\n\n---\na: 1\n---\nb: 2\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], (1, 2, "---\na: 1".into()));
        assert_eq!(d[1], (2, 4, "---\nb: 2\n".into()));
    }

    #[test]
    fn empty_explicit_documents_are_counted() {
        let d = bodies("---\n---\n# only a comment\n---\na: 1\n");
        assert_eq!(d.len(), 3);
        assert_eq!(d[2].0, 3);
    }

    #[test]
    fn markers_need_column_zero_and_a_blank() {
        let d = bodies("a: |\n  ---\n  x\nb: ---x\n----\n");
        assert_eq!(d.len(), 1);
        let d = bodies("--- # c\na: 1\n---\t\nb: 1\n--- {c: 1}\n");
        assert_eq!(d.len(), 3);
        assert_eq!(d[2].2, "--- {c: 1}\n");
    }

    #[test]
    fn document_end_marker_and_directives() {
        let d = bodies("a: 1\n...\n%YAML 1.1\n---\nb: 2\n...\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], (1, 0, "a: 1\n...".into()));
        assert_eq!(d[1], (2, 2, "%YAML 1.1\n---\nb: 2\n...".into()));
    }

    #[test]
    fn crlf_and_bom() {
        let d = bodies("\u{feff}a: 1\r\n---\r\nb: 2\r\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].2, "---\nb: 2\n");
    }

    #[test]
    fn documents_know_their_first_line() {
        let d = split_yaml("a: 1\n---\nb: 2\n");
        assert_eq!((d[1].first_line, d[1].text.as_str()), (1, "---\nb: 2\n"));
    }

    #[test]
    fn line_numbers_are_shifted() {
        assert_eq!(
            shift_lines(
                "bad at line 3 column 10, while parsing at line 1 column 1",
                34
            ),
            "bad at line 37 column 10, while parsing at line 35 column 1"
        );
        assert_eq!(shift_lines("no position here", 5), "no position here");
        assert_eq!(
            shift_lines("at line x and line 99999999999999999999", 5),
            "at line x and line 99999999999999999999"
        );
    }
}

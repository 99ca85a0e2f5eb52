//! Field paths: `context.page.url`, `context.campaign.*`, `properties.products[].sku`,
//! `context."a.b"`.
//!
//! Grammar: segments separated by `.`; a segment is a bare key, a quoted key
//! (`"..."` with `\"` and `\\` escapes) or `*` (any one key); any segment may
//! be followed by one or more `[]` (every element of an array). Keys are
//! compared with the event's keys after JSON unescaping, byte for byte.

use std::fmt;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// An object member with exactly this key.
    Key(String),
    /// Any one object member (`*`).
    Any,
    /// Every element of an array (`[]`).
    Each,
}

/// A parsed field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(pub Vec<Segment>);

/// Why a path does not parse, and where (0-based character index in the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (at character {} of the path)",
            self.message,
            self.at + 1
        )
    }
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<FieldPath, PathError> {
        let chars: Vec<char> = text.chars().collect();
        let err = |at: usize, message: &str| PathError {
            at,
            message: message.to_owned(),
        };
        if chars.is_empty() {
            return Err(err(0, "empty path"));
        }
        let mut segments = Vec::new();
        let mut i = 0;
        loop {
            // One segment: quoted key, `*`, or bare key.
            match chars.get(i) {
                None | Some('.') => {
                    return Err(err(
                        i,
                        "empty segment; two dots in a row, or a dot at the start or end",
                    ));
                }
                Some('"') => {
                    let start = i;
                    i += 1;
                    let mut key = String::new();
                    loop {
                        match chars.get(i) {
                            None => return Err(err(start, "unterminated quoted key")),
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some('\\') => match chars.get(i + 1) {
                                Some(c @ ('"' | '\\')) => {
                                    key.push(*c);
                                    i += 2;
                                }
                                _ => {
                                    return Err(err(
                                        i,
                                        "in a quoted key only \\\" and \\\\ are escapes",
                                    ));
                                }
                            },
                            Some(c) => {
                                key.push(*c);
                                i += 1;
                            }
                        }
                    }
                    segments.push(Segment::Key(key));
                }
                Some('[') => return Err(err(i, "`[]` must follow a key, as in `items[]`")),
                Some(_) => {
                    let start = i;
                    while let Some(&c) = chars.get(i) {
                        if matches!(c, '.' | '[') {
                            break;
                        }
                        if c == '"' || c == ']' || c.is_whitespace() {
                            return Err(err(
                                i,
                                "unexpected character in a key; quote the key, as in `a.\"odd key\"`",
                            ));
                        }
                        i += 1;
                    }
                    let key: String = chars[start..i].iter().collect();
                    if key == "*" {
                        segments.push(Segment::Any);
                    } else if key.contains('*') {
                        return Err(err(
                            start,
                            "`*` stands alone as a segment (any one key); quote the key for a literal `*`",
                        ));
                    } else {
                        segments.push(Segment::Key(key));
                    }
                }
            }
            while chars.get(i) == Some(&'[') {
                if chars.get(i + 1) != Some(&']') {
                    return Err(err(
                        i,
                        "`[` must be followed by `]`; `[]` means every element",
                    ));
                }
                segments.push(Segment::Each);
                i += 2;
            }
            match chars.get(i) {
                None => break,
                Some('.') => i += 1,
                Some(_) => return Err(err(i, "expected `.`, `[]` or the end of the path")),
            }
        }
        Ok(FieldPath(segments))
    }

    /// True when the path names one place (no `*` or `[]`).
    pub fn is_exact(&self) -> bool {
        self.0.iter().all(|s| matches!(s, Segment::Key(_)))
    }

    /// True when `self` is a proper prefix of `other`.
    pub fn is_ancestor_of(&self, other: &FieldPath) -> bool {
        self.0.len() < other.0.len() && other.0.starts_with(&self.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Segment::Each => f.write_str("[]")?,
                Segment::Any | Segment::Key(_) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    match seg {
                        Segment::Any => f.write_str("*")?,
                        Segment::Key(k) if needs_quotes(k) => {
                            write!(f, "\"{}\"", k.replace('\\', "\\\\").replace('"', "\\\""))?
                        }
                        Segment::Key(k) => f.write_str(k)?,
                        Segment::Each => unreachable!(),
                    }
                }
            }
            first = false;
        }
        Ok(())
    }
}

fn needs_quotes(key: &str) -> bool {
    key.is_empty()
        || key.contains(['.', '"', '[', ']', '*'])
        || key.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(FieldPath::parse("userId").unwrap().0, vec![key("userId")]);
        assert_eq!(
            FieldPath::parse("context.campaign.*").unwrap().0,
            vec![key("context"), key("campaign"), Segment::Any]
        );
        assert_eq!(
            FieldPath::parse("properties.products[].sku").unwrap().0,
            vec![
                key("properties"),
                key("products"),
                Segment::Each,
                key("sku")
            ]
        );
        assert_eq!(
            FieldPath::parse("context.\"a.b\"").unwrap().0,
            vec![key("context"), key("a.b")]
        );
        assert_eq!(
            FieldPath::parse("m[][].x").unwrap().0,
            vec![key("m"), Segment::Each, Segment::Each, key("x")]
        );
        assert_eq!(
            FieldPath::parse(r#""q\"\\".x"#).unwrap().0,
            vec![key("q\"\\"), key("x")]
        );
    }

    #[test]
    fn rejects_malformed_paths_with_a_position() {
        for (text, at) in [
            ("", 0),
            ("a..b", 2),
            (".a", 0),
            ("a.", 2),
            ("a[", 1),
            ("a[x]", 1),
            ("[]", 0),
            ("a.\"b", 2),
            ("a b", 1),
            ("utm_*", 0),
            ("a\"b\"", 1),
        ] {
            let e = FieldPath::parse(text).unwrap_err();
            assert_eq!(e.at, at, "{text:?}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["a.b", "a.*.c", "x[].y", "a.\"b.c\"", "\"\"", "a[][]"] {
            let p = FieldPath::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
            assert_eq!(FieldPath::parse(&p.to_string()).unwrap(), p);
        }
    }
}

//! Globs for `includes` / `excludes`, with the semantics Cortex inherited from
//! gobwas/glob with `/` as the separator, tested against the whole path:
//!
//! - `*` any run of characters except `/`; `**` any run including `/`;
//! - `?` one character except `/`; `[abc]`, `[a-z]`, `[!a-z]` a class;
//! - `{jpg,png}` alternatives (nested too); `\` escapes the next character.
//!
//! So `*.jpg` matches `a.jpg` but not `data/a.jpg`, and `**.jpg` matches both.
//!
//! A glob is translated into a regular expression and matched by the `regex` crate,
//! whose automata run in time linear in the path whatever the pattern: no
//! backtracking, no blow-up with many wildcards or alternatives.

use std::iter::Peekable;
use std::str::Chars;

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    regex: regex::Regex,
}

impl Glob {
    /// Compiles `pattern`, or says why it is not a glob.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let mut out = String::from("^(?s:");
        let mut chars = pattern.chars().peekable();
        translate(&mut chars, &mut out, 0)?;
        out.push_str(")$");
        let regex = regex::Regex::new(&out).map_err(|e| format!("too complex: {e}"))?;
        Ok(Glob { regex })
    }

    /// Whether `text` matches the whole glob.
    pub fn matches(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// Translates up to the end of the pattern (depth 0) or of the current `{…}` group
/// (leaving its `,` or `}` unconsumed).
fn translate(chars: &mut Peekable<Chars<'_>>, out: &mut String, depth: usize) -> Result<(), String> {
    while let Some(&c) = chars.peek() {
        if depth > 0 && (c == ',' || c == '}') {
            return Ok(());
        }
        chars.next();
        match c {
            '\\' => push_literal(out, chars.next().ok_or("a trailing '\\' escapes nothing")?),
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => class(chars, out)?,
            '{' => {
                out.push_str("(?:");
                loop {
                    translate(chars, out, depth + 1)?;
                    match chars.next() {
                        Some(',') => out.push('|'),
                        Some('}') => break,
                        _ => return Err("unclosed '{'".into()),
                    }
                }
                out.push(')');
            }
            c => push_literal(out, c),
        }
    }
    if depth > 0 {
        return Err("unclosed '{'".into());
    }
    Ok(())
}

fn push_literal(out: &mut String, c: char) {
    let mut buf = [0; 4];
    out.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// A `[…]` class (the `[` consumed); never matches `/`.
fn class(chars: &mut Peekable<Chars<'_>>, out: &mut String) -> Result<(), String> {
    let negated = matches!(chars.peek(), Some('!' | '^'));
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    loop {
        let c = chars.next().ok_or("unclosed '['")?;
        if c == ']' && !ranges.is_empty() {
            break;
        }
        let c = if c == '\\' { chars.next().ok_or("unclosed '['")? } else { c };
        if chars.peek() == Some(&'-') {
            chars.next();
            match chars.next() {
                Some(']') => {
                    ranges.push((c, c));
                    ranges.push(('-', '-'));
                    break;
                }
                Some(end) if end >= c => ranges.push((c, end)),
                Some(end) => return Err(format!("range {c}-{end} is reversed")),
                None => return Err("unclosed '['".into()),
            }
        } else {
            ranges.push((c, c));
        }
    }
    let escape = |c: char| -> String {
        let mut buf = [0; 4];
        regex::escape(c.encode_utf8(&mut buf))
    };
    let mut set = String::new();
    for (lo, hi) in ranges {
        set.push_str(&escape(lo));
        if hi != lo {
            set.push('-');
            set.push_str(&escape(hi));
        }
    }
    if negated {
        out.push_str(&format!("[^/{set}]"));
    } else {
        out.push_str(&format!("[[{set}]--/]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::new(pattern).unwrap().matches(text)
    }

    #[test]
    fn star_stays_within_a_segment_and_double_star_crosses() {
        assert!(m("*.jpg", "a.jpg"));
        assert!(!m("*.jpg", "data/a.jpg"));
        assert!(m("**.jpg", "data/a.jpg"));
        assert!(m("**.jpg", "/srv/data/x/y.jpg"));
        assert!(m("/srv/*/y.jpg", "/srv/x/y.jpg"));
        assert!(!m("/srv/*/y.jpg", "/srv/x/z/y.jpg"));
        assert!(m("**", "anything/at/all"));
        assert!(!m("**.jpg", "a.jpeg"));
    }

    #[test]
    fn classes_alternatives_and_escapes() {
        assert!(m("**/img-[0-9].png", "d/img-7.png"));
        assert!(!m("**/img-[!0-9].png", "d/img-7.png"));
        assert!(m("**.{jpg,png}", "a/b.png"));
        assert!(!m("**.{jpg,png}", "a/b.gif"));
        assert!(m("**/{a,b{1,2}}.txt", "x/b2.txt"));
        assert!(m("file\\*.txt", "file*.txt"));
        assert!(!m("file\\*.txt", "fileX.txt"));
        assert!(m("?.txt", "a.txt"));
        assert!(!m("?.txt", "/.txt"));
    }

    #[test]
    fn bad_globs_say_why() {
        assert_eq!(Glob::new("[a").unwrap_err(), "unclosed '['");
        assert_eq!(Glob::new("{a,b").unwrap_err(), "unclosed '{'");
        assert_eq!(Glob::new("[z-a]").unwrap_err(), "range z-a is reversed");
        assert_eq!(Glob::new("a,b}").map(|g| g.matches("a,b}")), Ok(true), "outside braces , and }} are literal");
    }

    #[test]
    fn many_wildcards_on_a_long_path_do_not_backtrack() {
        // Exponential for a backtracking matcher (8 wildcards, 52 characters, no match);
        // the regex automaton answers in one pass.
        let glob = Glob::new("*a*a*a*a*a*a*a*ab").unwrap();
        assert!(!glob.matches(&"a".repeat(52)));
        let glob = Glob::new("**a**a**a**a**a**a**a**a**b").unwrap();
        assert!(!glob.matches(&"a/".repeat(26)));
        assert!(glob.matches(&format!("{}b", "a/".repeat(26))));
    }

    #[test]
    fn regex_metacharacters_are_literal() {
        assert!(m("a.b+c(d)|e$", "a.b+c(d)|e$"));
        assert!(!m("a.b", "axb"));
        assert!(m("[.+]x", "+x"));
        assert!(m("[!.]x", "ax"));
        assert!(!m("[!.]x", ".x"));
        assert!(!m("[!a]", "/"));
    }
}

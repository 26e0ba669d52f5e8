//! Globs for `includes` / `excludes`, with the semantics Cortex inherited from
//! gobwas/glob with `/` as the separator, tested against the whole path:
//!
//! - `*` any run of characters except `/`; `**` any run including `/`;
//! - `?` one character except `/`; `[abc]`, `[a-z]`, `[!a-z]` a class;
//! - `{jpg,png}` alternatives; `\` escapes the next character.
//!
//! So `*.jpg` matches `a.jpg` but not `data/a.jpg`, and `**.jpg` matches both.

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    Any,
    AnyDeep,
    One,
    Class { negated: bool, ranges: Vec<(char, char)> },
}

const MAX_EXPANSIONS: usize = 1024;

impl Glob {
    /// Compiles `pattern`, or says why it is not a glob.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        let expanded = expand_braces(pattern)?;
        let alternatives = expanded.iter().map(|p| tokenize(p)).collect::<Result<_, _>>()?;
        Ok(Glob { alternatives })
    }

    /// Whether `text` matches the whole glob.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.alternatives.iter().any(|tokens| match_here(tokens, &chars))
    }
}

fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut depth = 0;
    let mut open = None;
    let mut escaped = false;
    for (i, &c) in chars.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.expect("an open brace");
                    let prefix: String = chars[..start].iter().collect();
                    let suffix: String = chars[i + 1..].iter().collect();
                    let mut out = Vec::new();
                    for alt in split_alternatives(&chars[start + 1..i]) {
                        for tail in expand_braces(&format!("{alt}{suffix}"))? {
                            out.push(format!("{prefix}{tail}"));
                            if out.len() > MAX_EXPANSIONS {
                                return Err(format!("more than {MAX_EXPANSIONS} alternatives"));
                            }
                        }
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("unclosed '{'".into());
    }
    Ok(vec![pattern.to_string()])
}

/// Splits the inside of a brace group at its top-level commas.
fn split_alternatives(inner: &[char]) -> Vec<String> {
    let (mut parts, mut current, mut depth, mut escaped) = (Vec::new(), String::new(), 0, false);
    for &c in inner {
        if escaped {
            escaped = false;
            current.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                current.push(c);
            }
            '{' => {
                depth += 1;
                current.push(c);
            }
            '}' => {
                depth -= 1;
                current.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => tokens.push(Token::Char(chars.next().ok_or("a trailing '\\' escapes nothing")?)),
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                tokens.push(Token::AnyDeep);
            }
            '*' => tokens.push(Token::Any),
            '?' => tokens.push(Token::One),
            '[' => {
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
                tokens.push(Token::Class { negated, ranges });
            }
            c => tokens.push(Token::Char(c)),
        }
    }
    Ok(tokens)
}

fn match_here(tokens: &[Token], text: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else { return text.is_empty() };
    match token {
        Token::AnyDeep => (0..=text.len()).any(|n| match_here(rest, &text[n..])),
        Token::Any => {
            let limit = text.iter().position(|&c| c == '/').unwrap_or(text.len());
            (0..=limit).any(|n| match_here(rest, &text[n..]))
        }
        Token::One => text.first().is_some_and(|&c| c != '/') && match_here(rest, &text[1..]),
        Token::Char(c) => text.first() == Some(c) && match_here(rest, &text[1..]),
        Token::Class { negated, ranges } => {
            text.first().is_some_and(|&c| {
                let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
                c != '/' && inside != *negated
            }) && match_here(rest, &text[1..])
        }
    }
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
    }
}

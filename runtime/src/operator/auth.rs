//! Who may use the job API: bearer tokens from a file (`--token-file`).
//!
//! The file holds one token a line; blank lines and lines starting with `#` are
//! ignored, as is the whitespace around a token. A request carries one as
//! `Authorization: Bearer <token>`. Each presented token is hashed (SHA-256) and the
//! digest compared with every known token's digest in constant time (`subtle`), all of
//! them every time: neither the position of a first wrong byte, nor a token's length,
//! nor which token matched shows in the time of an answer. Tokens are never logged.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The shortest token accepted in a token file: 16 characters (a guessable token is a
/// configuration mistake, not a policy choice).
pub(crate) const MIN_TOKEN_LEN: usize = 16;

/// The longest `Authorization` header read, in bytes; longer ones are refused unread.
pub(crate) const MAX_HEADER: usize = 4096;

/// The tokens that open the API.
pub(crate) struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    /// The count only: not even a token's digest is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.digests.len())
    }
}

/// Why a request is not let in (the answer's message; never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// No `Authorization` header.
    #[error(
        "this operator requires a token: send `Authorization: Bearer <token>` (wasmbatch: --token or WASMBATCH_TOKEN)"
    )]
    Missing,
    /// A header that is not `Bearer <token>`.
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    /// A well-formed token that is not one of the file's.
    #[error("the token is not valid for this operator")]
    Invalid,
    /// A change sent with the dashboard's cookie but not by the dashboard (a page of
    /// another site cannot set the header that the dashboard's requests carry).
    #[error("a change made with the dashboard's cookie must carry the header X-Wasmbatch-UI (sent by the dashboard)")]
    NotFromDashboard,
}

impl Tokens {
    /// Reads a token file; a file without a token, or with a token too short, is an
    /// error naming its line.
    pub(crate) fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("--token-file {}: {e}", path.display()))
    }

    /// Parses a token file's text.
    pub(crate) fn parse(text: &str) -> Result<Tokens, String> {
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let token = line.trim();
            if token.is_empty() || token.starts_with('#') {
                continue;
            }
            if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token is at least {MIN_TOKEN_LEN} visible ASCII characters, without spaces",
                    n + 1
                ));
            }
            digests.push(Sha256::digest(token.as_bytes()).into());
        }
        if digests.is_empty() {
            return Err("holds no token".into());
        }
        Ok(Tokens { digests })
    }

    /// Whether an `Authorization` header's value (raw bytes, or none) lets a request in.
    pub(crate) fn check(&self, header: Option<&[u8]>) -> Result<(), Denied> {
        let header = header.ok_or(Denied::Missing)?;
        if header.len() > MAX_HEADER {
            return Err(Denied::Malformed);
        }
        let text = std::str::from_utf8(header).map_err(|_| Denied::Malformed)?;
        let (scheme, token) = text.trim().split_once(' ').ok_or(Denied::Malformed)?;
        let token = token.trim_start();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(char::is_whitespace) {
            return Err(Denied::Malformed);
        }
        self.check_token(token.as_bytes())
    }

    /// Whether `token` itself (from a header, or the dashboard's cookie) is one of the
    /// file's, compared in constant time with every one of them.
    pub(crate) fn check_token(&self, token: &[u8]) -> Result<(), Denied> {
        if token.is_empty() || token.len() > MAX_HEADER {
            return Err(Denied::Malformed);
        }
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = subtle::Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        if bool::from(found) { Ok(()) } else { Err(Denied::Invalid) }
    }
}

/// The dashboard's cookie: a token, hex-encoded (a token may hold characters a cookie
/// cannot), set `HttpOnly` (no script reads it) and `SameSite=Strict` (no other site's
/// page sends it).
pub(crate) const COOKIE: &str = "wasmbatch_session";

/// The token in a `Cookie` header's [`COOKIE`], decoded; `None` when there is none or it
/// is not hex.
pub(crate) fn cookie_token(header: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(header).ok()?;
    let value = text.split(';').find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    if value.len() % 2 != 0 || value.len() > 2 * MAX_HEADER {
        return None;
    }
    (0..value.len()).step_by(2).map(|i| u8::from_str_radix(value.get(i..i + 2)?, 16).ok()).collect()
}

/// The `Set-Cookie` value carrying `token` (`secure`: only over TLS).
pub(crate) fn session_cookie(token: &str, secure: bool) -> String {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={hex}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# operators\n  first-token-0123456789  \n\nsecond-token-abcdefghij\n";

    #[test]
    fn a_token_file_is_read_line_by_line() {
        let tokens = Tokens::parse(FILE).unwrap();
        assert_eq!(tokens.digests.len(), 2);
        assert!(Tokens::parse("# nothing\n\n").unwrap_err().contains("no token"));
        assert!(Tokens::parse("ok-token-0123456789\nshort\n").unwrap_err().contains("line 2"));
        assert!(Tokens::parse("with space in the token\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn only_a_bearer_header_with_a_known_token_passes() {
        let tokens = Tokens::parse(FILE).unwrap();
        let check = |h: &str| tokens.check(Some(h.as_bytes()));
        assert_eq!(check("Bearer first-token-0123456789"), Ok(()));
        assert_eq!(check("bearer   second-token-abcdefghij"), Ok(()));
        assert_eq!(tokens.check(None), Err(Denied::Missing));
        assert_eq!(check("Bearer first-token-012345678"), Err(Denied::Invalid), "a prefix of a token");
        assert_eq!(check("Bearer first-token-0123456789x"), Err(Denied::Invalid), "a token and more");
        assert_eq!(check("Bearer FIRST-TOKEN-0123456789"), Err(Denied::Invalid), "tokens are case-sensitive");
        assert_eq!(check("Basic Zmlyc3QtdG9rZW4="), Err(Denied::Malformed));
        assert_eq!(check("Bearer"), Err(Denied::Malformed));
        assert_eq!(check("Bearer "), Err(Denied::Malformed));
        assert_eq!(check("first-token-0123456789"), Err(Denied::Malformed));
        assert_eq!(check("Bearer first-token-0123456789 second-token-abcdefghij"), Err(Denied::Malformed));
        assert_eq!(tokens.check(Some(b"Bearer \xff\xfe")), Err(Denied::Malformed));
        let huge = format!("Bearer {}", "a".repeat(MAX_HEADER));
        assert_eq!(check(&huge), Err(Denied::Malformed));
        assert!(!Denied::Invalid.to_string().contains("first-token"));
    }

    #[test]
    fn the_cookie_carries_a_token_whatever_its_characters() {
        let tokens = Tokens::parse("tok;en,with\"odd=chars\n").unwrap();
        let set = session_cookie("tok;en,with\"odd=chars", false);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"));
        let value = set.split(';').next().unwrap();
        let header = format!("theme=dark; {value}; other=1");
        let token = cookie_token(header.as_bytes()).unwrap();
        assert_eq!(tokens.check_token(&token), Ok(()));
        assert!(session_cookie("x", true).ends_with("; Secure"));
        assert_eq!(cookie_token(b"wasmbatch_session=zz"), None, "not hex");
        assert_eq!(cookie_token(b"wasmbatch_session=abc"), None, "odd length");
        assert_eq!(cookie_token(b"xwasmbatch_session=6162"), None, "another cookie's name");
        assert_eq!(cookie_token(b"other=1"), None);
        assert_eq!(tokens.check_token(b""), Err(Denied::Malformed));
        assert_eq!(tokens.check_token(b"tok;en,with\"odd=charsX"), Err(Denied::Invalid));
    }
}

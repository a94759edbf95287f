//! Which remote file names and user names are acceptable.
//!
//! A remote name is never used as a path on a server (files live under a digest
//! of owner and name, see `store`), so these rules are about being unambiguous
//! and printable, and about refusing names that look like an escape attempt
//! even though they could not succeed. Client and server run the same check;
//! the server's is the one that counts.

use crate::error::{Error, Result};

/// Longest remote name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 32;

/// Checks a remote file name: 1..=255 bytes, no path separators, no `.`/`..`,
/// no NUL or other control characters, no leading or trailing white space.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name is at most 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not file names");
    }
    if name.contains(['/', '\\']) {
        return bad("a name cannot contain `/` or `\\`");
    }
    if name.contains('\0') {
        return bad("a name cannot contain NUL");
    }
    if name.chars().any(char::is_control) {
        return bad("a name cannot contain control characters");
    }
    if name.trim() != name {
        return bad("a name cannot start or end with white space");
    }
    Ok(())
}

/// Checks a user name: 1..=32 of `a-z`, `0-9`, `_`, `-`, starting with a letter.
/// User names do become directory names on the servers, hence the tight rule.
pub fn validate_user(user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_LEN
        && user.starts_with(|c: char| c.is_ascii_lowercase())
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: user.to_string(),
            reason: "a user name is 1-32 of a-z, 0-9, `_` and `-`, starting with a letter",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_people_type_are_accepted() {
        for name in [
            "report.pdf",
            "a",
            "my holiday photo.jpg",
            "Ünïcödé файл 文件.txt",
            ".hidden",
            "...",
            "a..b",
            &"x".repeat(255),
        ] {
            assert!(validate_name(name).is_ok(), "{name:?} should be accepted");
        }
    }

    #[test]
    fn escapes_and_oddities_are_refused() {
        for name in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            "a\\b",
            "..\\x",
            "nul\0byte",
            "tab\there",
            "line\nbreak",
            " leading",
            "trailing ",
            &"x".repeat(256),
            &"é".repeat(128), // 256 bytes
        ] {
            assert!(validate_name(name).is_err(), "{name:?} should be refused");
        }
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "bob", "a1", "x_y-z"] {
            assert!(validate_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "1a", "a/b", "..", "a b", &"a".repeat(33)] {
            assert!(validate_user(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn an_accepted_name_is_one_safe_path_component(name in "\\PC{0,80}") {
            if validate_name(&name).is_ok() {
                let path = std::path::Path::new(&name);
                let parts: Vec<_> = path.components().collect();
                prop_assert_eq!(parts.len(), 1);
                prop_assert!(matches!(parts[0], std::path::Component::Normal(_)));
            }
        }
    }
}

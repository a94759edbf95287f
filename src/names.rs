//! Which remote file names and user names are acceptable.
//!
//! A remote name is a path: segments separated by `/` (`docs/2026/plan.txt`),
//! the last one the file's, the others its folders'. A name is never used as
//! a path on a server (files live under a digest of owner and name, see
//! `store`), so these rules are about being unambiguous and printable, and
//! about refusing names that look like an escape attempt even though they
//! could not succeed: no empty, `.` or `..` segment (so no leading, trailing
//! or doubled `/`), no `\`, no control characters. Client and server run
//! the same check; the server's is the one that counts.

use crate::error::{Error, Result};

/// Longest segment of a remote name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 255;
/// Longest remote name (a whole path), in bytes of UTF-8.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest user name, in bytes.
pub const MAX_USER_LEN: usize = 32;

/// Unicode's bidirectional controls (the `Bidi_Control` property): invisible,
/// they reorder what follows, so `report\u{202E}fdp.exe` shows as
/// `reportexe.pdf`. Refused in names like the other control characters.
pub const BIDI_CONTROLS: [char; 12] = [
    '\u{061C}', // ARABIC LETTER MARK
    '\u{200E}', // LEFT-TO-RIGHT MARK
    '\u{200F}', // RIGHT-TO-LEFT MARK
    '\u{202A}', // LEFT-TO-RIGHT EMBEDDING
    '\u{202B}', // RIGHT-TO-LEFT EMBEDDING
    '\u{202C}', // POP DIRECTIONAL FORMATTING
    '\u{202D}', // LEFT-TO-RIGHT OVERRIDE
    '\u{202E}', // RIGHT-TO-LEFT OVERRIDE
    '\u{2066}', // LEFT-TO-RIGHT ISOLATE
    '\u{2067}', // RIGHT-TO-LEFT ISOLATE
    '\u{2068}', // FIRST STRONG ISOLATE
    '\u{2069}', // POP DIRECTIONAL ISOLATE
];

/// Checks a remote file name: a path of 1..=1024 bytes whose segments
/// (split at `/`) each pass [`validate_segment`].
pub fn validate_name(name: &str) -> Result<()> {
    if name.len() > MAX_PATH_LEN {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "a name is at most 1024 bytes",
        });
    }
    if name.starts_with('/') {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "a name cannot start with `/`",
        });
    }
    if name.ends_with('/') {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "a file name cannot end with `/`",
        });
    }
    name.split('/').try_for_each(|segment| {
        validate_segment(segment).map_err(|e| match e {
            Error::InvalidName { reason, .. } => Error::InvalidName {
                name: name.to_string(),
                reason,
            },
            e => e,
        })
    })
}

/// Checks a folder's path: like a file's name, or `""` for the top.
pub fn validate_folder(folder: &str) -> Result<()> {
    if folder.is_empty() {
        Ok(())
    } else {
        validate_name(folder)
    }
}

/// Checks one segment of a name: 1..=255 bytes, no `/` or `\`, not `.` or
/// `..`, no NUL or other control characters (bidirectional controls
/// included), no leading or trailing white space.
pub fn validate_segment(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("a name cannot be empty, nor have an empty segment (`//`)");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("a name's segment is at most 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not names");
    }
    if name.contains(['/', '\\']) {
        return bad("a name cannot contain `\\`");
    }
    if name.contains('\0') {
        return bad("a name cannot contain NUL");
    }
    if name
        .chars()
        .any(|c| c.is_control() || BIDI_CONTROLS.contains(&c))
    {
        return bad("a name cannot contain control characters");
    }
    if name.trim() != name {
        return bad("a name's segments cannot start or end with white space");
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
            "a/b",
            "docs/2026/plan .txt",
            ".config/app/settings",
            &["y".repeat(255).as_str(); 4].join("/"),
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
            "a\\b",
            "a//b",
            "a/",
            "a/./b",
            "a/../b",
            "a/ b",
            "a /b",
            &["y".repeat(255).as_str(); 5].join("/"),
            "..\\x",
            "nul\0byte",
            "tab\there",
            "line\nbreak",
            " leading",
            "trailing ",
            &"x".repeat(256),
            &"é".repeat(128), // 256 bytes
            "report\u{202E}fdp.exe",
            "\u{2066}isolated\u{2069}",
            "mark\u{200F}",
            "\u{061C}arabic",
        ] {
            assert!(validate_name(name).is_err(), "{name:?} should be refused");
        }
    }

    #[test]
    fn every_bidirectional_control_is_refused_anywhere_in_a_name() {
        let mut refused = 0;
        for c in BIDI_CONTROLS {
            for name in [format!("{c}a"), format!("a{c}b"), format!("a{c}")] {
                assert!(validate_name(&name).is_err(), "{name:?} should be refused");
                refused += 1;
            }
        }
        assert_eq!(refused, 36);
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

    /// A runner with a printed seed (PROPTEST_RNG_SEED when set).
    fn seeded_runner(test: &str, cases: u32) -> proptest::test_runner::TestRunner {
        use proptest::test_runner::{Config, RngSeed, TestRunner};
        let seed = std::env::var("PROPTEST_RNG_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        eprintln!("{test}: seed {seed} (PROPTEST_RNG_SEED={seed} repeats it)");
        TestRunner::new(Config {
            cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..Config::default()
        })
    }

    /// `name`'s segments are ordinary path components, one each (never a
    /// root, `.` or `..`), and the folder the store files it under lies
    /// inside its owner's.
    fn one_safe_component(name: &str) -> proptest::test_runner::TestCaseResult {
        use std::path::{Component, Path};
        let parts: Vec<_> = Path::new(name).components().collect();
        prop_assert_eq!(parts.len(), name.split('/').count(), "{:?}", name);
        prop_assert!(parts.iter().all(|p| matches!(p, Component::Normal(_))));
        let root = Path::new("/srv/data/dfs1");
        let dir = crate::store::file_dir(root, "alice", name);
        prop_assert!(dir.starts_with(root.join("users").join("alice")));
        prop_assert_eq!(dir.components().count(), root.components().count() + 3);
        Ok(())
    }

    /// Names valid by construction: between two non-space characters, any
    /// printable ones and the tricky-but-valid (dots, `..` inside a name,
    /// separator look-alikes, `%2f`, `~`, Windows device names, emoji).
    fn valid_name() -> impl Strategy<Value = String> {
        let edge = "[\\PC&&[^/\\\\\\s]]";
        let middle =
            "([\\PC&&[^/\\\\]]|\\.\\.|\u{2215}|\u{ff0f}|\u{29f5}|%2[fF]|~|:|NUL|CON| ){0,60}";
        let one = edge.prop_map(|c: String| c);
        let longer = (edge, middle, edge).prop_map(|(a, m, b)| {
            let mut name = format!("{a}{m}{b}");
            while name.len() > MAX_NAME_LEN {
                name.pop();
            }
            name.trim_end().to_string()
        });
        // Dots alone are the one shape of valid characters that is refused.
        prop_oneof![one, longer].prop_map(|name| {
            if name.chars().all(|c| c == '.') && name.len() <= 2 {
                format!("{name}x")
            } else {
                name
            }
        })
    }

    /// Every valid-by-construction name is accepted, and is ordinary path
    /// components only (never `..` or a root) that stay inside its owner's
    /// folder.
    #[test]
    fn valid_names_are_accepted_and_are_one_safe_path_component() {
        let result = seeded_runner("valid names", 2000).run(&valid_name(), |name| {
            prop_assert!(validate_name(&name).is_ok(), "{:?} was refused", name);
            one_safe_component(&name)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// Names of printable characters mixed with separators, dots and NUL:
    /// whatever is accepted is ordinary path components only. Both outcomes
    /// must be common, or the property checked nothing.
    #[test]
    fn an_accepted_name_is_one_safe_path_component() {
        use std::cell::Cell;
        let cases = 2000;
        let (accepted, refused) = (Cell::new(0u32), Cell::new(0u32));
        let hostile = "([\\PC&&[^/\\\\.]]{1,4}|/|\\\\|\\.|\\x00){0,12}";
        let result = seeded_runner("hostile names", cases).run(&hostile, |name: String| {
            if validate_name(&name).is_err() {
                refused.set(refused.get() + 1);
                return Ok(());
            }
            accepted.set(accepted.get() + 1);
            one_safe_component(&name)
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let (accepted, refused) = (accepted.get(), refused.get());
        eprintln!("{cases} names: {accepted} accepted, {refused} refused");
        assert!(
            accepted >= cases / 100 && refused >= cases / 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    proptest! {
        /// A valid name with an empty segment (`//`), a `\\`, NUL or control
        /// character put anywhere in it, made absolute, prefixed with `../`,
        /// or with white space at an end, is refused; so are `.` and `..`.
        #[test]
        fn names_made_into_escapes_are_refused(
            name in valid_name(),
            at in any::<proptest::sample::Index>(),
            how in 0..8u8,
        ) {
            let mut i = at.index(name.len() + 1);
            while !name.is_char_boundary(i) {
                i -= 1;
            }
            let (head, tail) = name.split_at(i);
            let bad = match how {
                0 => format!("{head}//{tail}"),
                1 => format!("{head}\\{tail}"),
                2 => format!("{head}\0{tail}"),
                3 => format!("{head}\n{tail}"),
                4 => format!("/{name}"),
                5 => format!("../{name}"),
                6 => format!(" {name}"),
                _ => if i % 2 == 0 { "..".to_string() } else { ".".to_string() },
            };
            prop_assert!(validate_name(&bad).is_err(), "{:?} was accepted", bad);
        }
    }
}

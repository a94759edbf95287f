//! Wildcards as sftp has them: the words of a command line with what was
//! quoted remembered ([`split`]), and patterns matched one path segment at
//! a time as OpenBSD's glob(3), which sftp uses for both sides, matches
//! them ([`Segment`]):
//!
//! - `*` is any run of characters and `?` any one, never a `/`;
//! - `[abc]`, `[a-z]`, `[!a-z]` (`!` negates; `^` is an ordinary
//!   character), `[[:digit:]]` and the other POSIX classes; a `]` first in
//!   the set is a member; a `[` with no `]` after it is an ordinary
//!   character;
//! - a name starting with `.` is matched only by a pattern whose segment
//!   starts with a literal `.` (`*` and `?` and `[.]` do not match it);
//! - `\` makes the next character ordinary; a quoted wildcard is ordinary
//!   (the splitter escapes it).
//!
//! One difference: `?` and a set match one character, where sftp's glob(3)
//! matches one byte; they differ only on names that are not ASCII.

use std::path::{Path, PathBuf};

/// One word of a command line: its text, and if it has wildcards that
/// were neither quoted nor escaped, the pattern they make (with every
/// quoted or escaped wildcard character escaped by `\`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub pattern: Option<String>,
}

impl Word {
    /// A word nobody quoted (an argument of a one-shot command, which the
    /// shell has unquoted already): its wildcards are wildcards, and a `\`
    /// escapes as in a pattern.
    pub fn bare(text: &str) -> Word {
        Word {
            text: text.to_string(),
            pattern: text.contains(['*', '?', '[']).then(|| text.to_string()),
        }
    }

    /// A word taken as it is, wildcards and all.
    pub fn literal(text: &str) -> Word {
        Word {
            text: text.to_string(),
            pattern: None,
        }
    }
}

/// The characters glob(3) treats specially: escaped when quoted.
const SPECIAL: [char; 4] = ['*', '?', '[', '\\'];

/// Splits `line` into words exactly as `shell_words::split` does (quotes,
/// backslashes, `#` comments), remembering which characters were quoted or
/// escaped. `Err` (one line) for an unbalanced quote.
pub fn split(line: &str) -> Result<Vec<Word>, String> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Delimiter,
        Backslash,
        Unquoted,
        UnquotedBackslash,
        Single,
        Double,
        DoubleBackslash,
        Comment,
    }
    use State::*;

    #[derive(Default)]
    struct Building {
        text: String,
        pattern: String,
        wild: bool,
    }
    impl Building {
        fn push(&mut self, c: char, quoted: bool) {
            self.text.push(c);
            if quoted && SPECIAL.contains(&c) {
                self.pattern.push('\\');
            }
            if !quoted && matches!(c, '*' | '?' | '[') {
                self.wild = true;
            }
            self.pattern.push(c);
        }
        fn take(&mut self) -> Word {
            let b = std::mem::take(self);
            Word {
                pattern: b.wild.then_some(b.pattern),
                text: b.text,
            }
        }
    }

    let mut words = Vec::new();
    let mut word = Building::default();
    let mut state = Delimiter;
    let mut chars = line.chars();
    loop {
        let c = chars.next();
        state = match (state, c) {
            (Delimiter, None) => break,
            (Delimiter, Some('\'')) => Single,
            (Delimiter, Some('"')) => Double,
            (Delimiter, Some('\\')) => Backslash,
            (Delimiter, Some('\t' | ' ' | '\n')) => Delimiter,
            (Delimiter, Some('#')) => Comment,
            (Delimiter | Unquoted, Some(c))
                if !matches!(c, '\'' | '"' | '\\' | '\t' | ' ' | '\n') =>
            {
                word.push(c, false);
                Unquoted
            }
            (Backslash | UnquotedBackslash, None) => {
                word.push('\\', true);
                words.push(word.take());
                break;
            }
            (Backslash, Some('\n')) => Delimiter,
            (UnquotedBackslash, Some('\n')) => Unquoted,
            (Backslash | UnquotedBackslash, Some(c)) => {
                word.push(c, true);
                Unquoted
            }
            (Unquoted, None) => {
                words.push(word.take());
                break;
            }
            (Unquoted, Some('\'')) => Single,
            (Unquoted, Some('"')) => Double,
            (Unquoted, Some('\\')) => UnquotedBackslash,
            (Unquoted, Some(_)) => {
                // White space ends the word.
                words.push(word.take());
                Delimiter
            }
            (Single | Double | DoubleBackslash, None) => {
                return Err("unbalanced quotes".to_string())
            }
            (Single, Some('\'')) => Unquoted,
            (Single, Some(c)) => {
                word.push(c, true);
                Single
            }
            (Double, Some('"')) => Unquoted,
            (Double, Some('\\')) => DoubleBackslash,
            (Double, Some(c)) => {
                word.push(c, true);
                Double
            }
            (DoubleBackslash, Some('\n')) => Double,
            (DoubleBackslash, Some(c @ ('$' | '`' | '"' | '\\'))) => {
                word.push(c, true);
                Double
            }
            (DoubleBackslash, Some(c)) => {
                word.push('\\', true);
                word.push(c, true);
                Double
            }
            (Comment, None) => break,
            (Comment, Some('\n')) => Delimiter,
            (Comment, Some(_)) => Comment,
            (Delimiter, Some(_)) => unreachable!("every character is handled"),
        };
    }
    Ok(words)
}

/// Whether `pattern` has a wildcard that is not escaped (in some segment).
pub fn is_pattern(pattern: &str) -> bool {
    pattern.split('/').any(|s| Segment::new(s).is_some())
}

/// `pattern` with its escapes taken away: the name it stands for when it
/// has no wildcards.
pub fn unescape(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

/// One character of a pattern: escaped (ordinary whatever it is) or not.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ch {
    c: char,
    escaped: bool,
}

impl Ch {
    fn is(self, c: char) -> bool {
        !self.escaped && self.c == c
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    One,
    Any,
    Set { negated: bool, members: Vec<Member> },
}

#[derive(Debug, Clone, PartialEq)]
enum Member {
    Char(char),
    Range(char, char),
    Class(Class),
    /// A class name glob(3) does not know: the pattern matches nothing.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Alnum,
    Alpha,
    Blank,
    Cntrl,
    Digit,
    Graph,
    Lower,
    Print,
    Punct,
    Space,
    Upper,
    Xdigit,
}

impl Class {
    fn named(name: &str) -> Option<Class> {
        Some(match name {
            "alnum" => Class::Alnum,
            "alpha" => Class::Alpha,
            "blank" => Class::Blank,
            "cntrl" => Class::Cntrl,
            "digit" => Class::Digit,
            "graph" => Class::Graph,
            "lower" => Class::Lower,
            "print" => Class::Print,
            "punct" => Class::Punct,
            "space" => Class::Space,
            "upper" => Class::Upper,
            "xdigit" => Class::Xdigit,
            _ => return None,
        })
    }

    /// As the C locale has them (ASCII only).
    fn has(self, c: char) -> bool {
        match self {
            Class::Alnum => c.is_ascii_alphanumeric(),
            Class::Alpha => c.is_ascii_alphabetic(),
            Class::Blank => c == ' ' || c == '\t',
            Class::Cntrl => c.is_ascii_control(),
            Class::Digit => c.is_ascii_digit(),
            Class::Graph => c.is_ascii_graphic(),
            Class::Lower => c.is_ascii_lowercase(),
            Class::Print => c.is_ascii_graphic() || c == ' ',
            Class::Punct => c.is_ascii_punctuation(),
            Class::Space => c.is_ascii_whitespace() || c == '\x0b',
            Class::Upper => c.is_ascii_uppercase(),
            Class::Xdigit => c.is_ascii_hexdigit(),
        }
    }
}

/// One segment of a pattern (no `/`), compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    tokens: Vec<Token>,
}

impl Segment {
    /// Compiles `segment`; `None` if it has no wildcard (it is then the
    /// name [`unescape`] gives).
    pub fn new(segment: &str) -> Option<Segment> {
        let mut chars = Vec::new();
        let mut it = segment.chars();
        while let Some(c) = it.next() {
            chars.push(match c {
                '\\' => match it.next() {
                    Some(next) => Ch {
                        c: next,
                        escaped: true,
                    },
                    None => Ch {
                        c: '\\',
                        escaped: true,
                    },
                },
                c => Ch { c, escaped: false },
            });
        }
        let mut tokens = Vec::new();
        let mut wild = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            if c.is('*') {
                wild = true;
                if tokens.last() != Some(&Token::Any) {
                    tokens.push(Token::Any);
                }
            } else if c.is('?') {
                wild = true;
                tokens.push(Token::One);
            } else if c.is('[') {
                match set(&chars, i) {
                    Some((token, next)) => {
                        wild = true;
                        tokens.push(token);
                        i = next;
                    }
                    None => tokens.push(Token::Char('[')),
                }
            } else {
                tokens.push(Token::Char(c.c));
            }
        }
        wild.then_some(Segment { tokens })
    }

    /// Whether `name` (one segment) matches.
    pub fn matches(&self, name: &str) -> bool {
        if name.starts_with('.') && self.tokens.first() != Some(&Token::Char('.')) {
            return false;
        }
        let name: Vec<char> = name.chars().collect();
        matches_from(&self.tokens, &name)
    }

    /// The ordinary characters the pattern starts with: every name it
    /// matches starts with them.
    pub fn prefix(&self) -> String {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Char(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

/// A set starting after the `[` at `chars[start - 1]`, as glob(3) reads it:
/// the token and where the pattern goes on, or `None` when the `[` is an
/// ordinary character (no `]` closes it).
fn set(chars: &[Ch], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i).is_some_and(|c| c.is('!'));
    if negated {
        i += 1;
    }
    // The first character is a member even if it is `]`.
    if i >= chars.len() || !chars[i + 1..].iter().any(|c| c.is(']')) {
        return None;
    }
    let mut members = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c.is(']') && !first {
            i += 1;
            break;
        }
        first = false;
        if c.is('[') && chars.get(i + 1).is_some_and(|c| c.is(':')) {
            // `[:name:]`, if it is closed so.
            let rest = &chars[i + 2..];
            if let Some(end) = rest.windows(2).position(|w| w[0].is(':') && w[1].is(']')) {
                let name: String = rest[..end].iter().map(|c| c.c).collect();
                members.push(match Class::named(&name) {
                    Some(class) => Member::Class(class),
                    None => Member::Unknown,
                });
                i += 2 + end + 2;
                continue;
            }
        }
        i += 1;
        match (chars.get(i), chars.get(i + 1)) {
            (Some(dash), Some(end)) if dash.is('-') && !end.is(']') => {
                members.push(Member::Range(c.c, end.c));
                i += 2;
            }
            _ => members.push(Member::Char(c.c)),
        }
    }
    Some((Token::Set { negated, members }, i))
}

fn matches_from(tokens: &[Token], name: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return name.is_empty();
    };
    match token {
        Token::Any => (0..=name.len()).any(|skip| matches_from(rest, &name[skip..])),
        Token::One => !name.is_empty() && matches_from(rest, &name[1..]),
        Token::Char(c) => name.first() == Some(c) && matches_from(rest, &name[1..]),
        Token::Set { negated, members } => {
            let Some(&k) = name.first() else {
                return false;
            };
            if members.contains(&Member::Unknown) {
                return false;
            }
            let hit = members.iter().any(|m| match *m {
                Member::Char(c) => c == k,
                Member::Range(lo, hi) => lo <= k && k <= hi,
                Member::Class(class) => class.has(k),
                Member::Unknown => false,
            });
            hit != *negated && matches_from(rest, &name[1..])
        }
    }
}

/// The local paths `pattern` matches, sorted (as glob(3) sorts them, by
/// bytes), each as the pattern spells its start (relative stays relative).
/// Symbolic links are listed as they are (not followed below the last
/// segment); a literal segment after a wildcard one must exist.
pub fn expand_local(pattern: &str) -> std::io::Result<Vec<PathBuf>> {
    let (mut found, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (vec![(PathBuf::from("/"), true)], rest),
        None => (vec![(PathBuf::new(), true)], pattern),
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    for (n, segment) in segments.iter().enumerate() {
        let last = n + 1 == segments.len();
        let mut next = Vec::new();
        match Segment::new(segment) {
            None => {
                let name = unescape(segment);
                for (path, _) in found {
                    next.push((path.join(&name), false));
                }
            }
            Some(matcher) => {
                for (path, _) in found {
                    let dir = if path.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        &path
                    };
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue; // not a folder, or unreadable: no match
                    };
                    for entry in entries {
                        let entry = entry?;
                        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                            continue;
                        };
                        if !matcher.matches(&name) {
                            continue;
                        }
                        let full = path.join(&name);
                        if last || full.is_dir() {
                            next.push((full, true));
                        }
                    }
                }
            }
        }
        found = next;
    }
    let mut out: Vec<PathBuf> = found
        .into_iter()
        .filter(|(path, listed)| *listed || std::fs::symlink_metadata(path).is_ok())
        .map(|(path, _)| path)
        .collect();
    out.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        match Segment::new(pattern) {
            Some(s) => s.matches(name),
            None => unescape(pattern) == name,
        }
    }

    /// Pattern, name, and whether sftp (OpenBSD glob(3), as in OpenSSH's
    /// openbsd-compat/glob.c) matches it.
    const SFTP: &[(&str, &str, bool)] = &[
        ("*.pdf", "a.pdf", true),
        ("*.pdf", ".pdf", false),
        ("*.pdf", ".hidden.pdf", false),
        ("*.pdf", "a.pdf.txt", false),
        ("*.pdf", "a.PDF", false),
        ("*", "anything at all", true),
        ("*", ".profile", false),
        ("*", "", true),
        (".*", ".profile", true),
        (".*", "profile", false),
        ("\\.*", ".profile", true),
        ("?profile", ".profile", false),
        ("[.]profile", ".profile", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        ("a**b", "ab", true),
        ("?", "a", true),
        ("?", "", false),
        ("?", "ab", false),
        ("??.txt", "ab.txt", true),
        ("??.txt", "a.txt", false),
        ("2024-*", "2024-01.jpg", true),
        ("2024-*", "2023-12.jpg", false),
        ("[abc]", "b", true),
        ("[abc]", "d", false),
        ("[a-c]x", "bx", true),
        ("[a-c]x", "dx", false),
        ("[!a-c]x", "dx", true),
        ("[!a-c]x", "ax", false),
        ("[^a]", "^", true),
        ("[^a]", "b", false),
        ("[]a]", "]", true),
        ("[]a]", "a", true),
        ("[!]a]", "b", true),
        ("[!]a]", "]", false),
        ("[a-]", "-", true),
        ("[a-]", "a", true),
        ("[z-a]", "m", false),
        ("[", "[", true),
        ("a[b", "a[b", true),
        ("[]", "[]", true),
        ("[!]", "[!]", true),
        ("[[:digit:]]*", "7up", true),
        ("[[:digit:]]*", "up7", false),
        ("[[:upper:][:digit:]]", "Q", true),
        ("[[:upper:][:digit:]]", "q", false),
        ("[[:nosuch:]]", "n", false),
        ("\\*", "*", true),
        ("\\*", "a", false),
        ("a\\?", "a?", true),
        ("a\\?", "ab", false),
        ("\\[a]", "[a]", true),
        ("\\[a]", "a", false),
        ("[\\]]", "]", true),
        ("[\\!a]", "!", true),
        ("[a\\-z]", "-", true),
        ("[a\\-z]", "m", false),
        ("*\\", "a\\", true),
        ("my file*", "my file (2).txt", true),
        ("caf?", "café", true),
    ];

    #[test]
    fn segments_match_as_sftp_matches() {
        let mut checked = 0;
        for &(pattern, name, want) in SFTP {
            assert_eq!(m(pattern, name), want, "{pattern:?} on {name:?}");
            checked += 1;
        }
        assert_eq!(checked, SFTP.len());
        assert!(checked > 50);
    }

    #[test]
    fn literal_prefixes_bound_listings() {
        assert_eq!(Segment::new("2024-*").unwrap().prefix(), "2024-");
        assert_eq!(Segment::new("a\\*b*").unwrap().prefix(), "a*b");
        assert_eq!(Segment::new("*x").unwrap().prefix(), "");
        assert_eq!(Segment::new("plain"), None);
        assert!(!is_pattern("a\\*b/c"));
        assert!(is_pattern("photos/2024-*"));
        assert!(is_pattern("*/x"));
        assert_eq!(unescape("a\\*b\\\\c"), "a*b\\c");
    }

    #[test]
    fn quoting_turns_wildcards_off() {
        let words = split(r#"put "a*b" 'c?' d\[e f*g "h"*"#).unwrap();
        let got: Vec<(&str, Option<&str>)> = words
            .iter()
            .map(|w| (w.text.as_str(), w.pattern.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("put", None),
                ("a*b", None),
                ("c?", None),
                ("d[e", None),
                ("f*g", Some("f*g")),
                ("h*", Some("h*")),
            ]
        );
        // A quoted wildcard next to a bare one stays ordinary.
        let w = &split(r#""a*"*"#).unwrap()[0];
        assert_eq!(w.pattern.as_deref(), Some("a\\**"));
        assert!(Segment::new(w.pattern.as_deref().unwrap())
            .unwrap()
            .matches("a*b"));
        assert!(!Segment::new(w.pattern.as_deref().unwrap())
            .unwrap()
            .matches("ab"));
        // A backslash in quotes is ordinary too.
        let w = &split(r#"'a\b'*"#).unwrap()[0];
        assert_eq!(
            (w.text.as_str(), w.pattern.as_deref()),
            ("a\\b*", Some("a\\\\b*"))
        );
        assert!(split("put 'open").is_err());
        assert_eq!(split("  # a comment").unwrap(), []);
    }

    #[test]
    fn bare_words_are_patterns_when_they_have_wildcards() {
        assert_eq!(Word::bare("a.txt").pattern, None);
        assert_eq!(Word::bare("*.txt").pattern.as_deref(), Some("*.txt"));
        assert_eq!(Word::literal("*.txt").pattern, None);
    }

    #[test]
    fn local_patterns_expand_segment_by_segment() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "a.pdf",
            "b.pdf",
            ".c.pdf",
            "d.txt",
            "x/2024-1/p.jpg",
            "x/2024-2/q.jpg",
        ] {
            let path = d.join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        std::fs::create_dir(d.join("x/2023")).unwrap();
        let base = d.to_str().unwrap();
        let names = |pattern: &str| -> Vec<String> {
            expand_local(&format!("{base}/{pattern}"))
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("*.pdf"), ["a.pdf", "b.pdf"]);
        assert_eq!(names(".*"), [".c.pdf"]);
        assert_eq!(names("x/2024-*"), ["x/2024-1", "x/2024-2"]);
        assert_eq!(names("x/*/*.jpg"), ["x/2024-1/p.jpg", "x/2024-2/q.jpg"]);
        assert_eq!(names("x/*/p.jpg"), ["x/2024-1/p.jpg"]);
        assert_eq!(names("*.zip"), Vec::<String>::new());
    }
}

#[cfg(test)]
mod splitting {
    use proptest::prelude::*;

    proptest! {
        /// The words are exactly shell_words's, whatever the line.
        #[test]
        fn words_are_shell_words(line in "[a*?\\[\\]'\"\\\\# \t\nb$`]{0,24}") {
            let ours = super::split(&line).map(|w| w.into_iter().map(|w| w.text).collect::<Vec<_>>());
            let theirs = shell_words::split(&line).map_err(|_| "unbalanced quotes".to_string());
            prop_assert_eq!(ours, theirs);
        }
    }
}

//! Users and passwords: `users.toml` with argon2id PHC strings.
//!
//! ```toml
//! [users]
//! alice = "$argon2id$v=19$m=19456,t=2,p=1$...salt...$...hash..."
//! ```
//!
//! Hashes are parsed when the file is loaded, so a malformed entry is a start-up
//! error rather than a failed login later. Verification is slow on purpose
//! (argon2id); callers run it off the async threads. An unknown user is checked
//! against a dummy hash, so it costs the same time as a wrong password and gets
//! the same answer.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::validate_user;

/// Passwords longer than this are refused before hashing (hashing cost grows with length).
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, String>,
}

/// The parsed user table.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, PasswordHash>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Users::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Users> {
        let file: UsersFile = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let mut users = BTreeMap::new();
        for (name, phc) in file.users {
            validate_user(&name)?;
            let hash = PasswordHash::new(&phc)
                .map_err(|e| Error::Config(format!("user {name}: not a PHC password hash: {e}")))?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(Error::Config(format!(
                    "user {name}: hash must be argon2id, not {}",
                    hash.algorithm
                )));
            }
            users.insert(name, hash);
        }
        Ok(Users { users })
    }

    /// Writes the table to `path` atomically (temp file, sync, rename), readable
    /// by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let io = |e| Error::io(format!("writing {}", path.display()), e);
        let mut tmp = tempfile::Builder::new()
            .prefix(".users-")
            .tempfile_in(dir)
            .map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
        }
        use std::io::Write;
        tmp.write_all(self.to_toml().as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// The file's text, for writing back after `set` or `remove`.
    pub fn to_toml(&self) -> String {
        let file = UsersFile {
            users: self
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        format!(
            "# ringdfs users: argon2id password hashes only. Manage with\n\
             # `dfs-server user add|passwd|del NAME`; never edit a hash by hand.\n\n{body}"
        )
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Adds or replaces `user` with an argon2id hash of `password`.
    pub fn set(&mut self, user: &str, password: &str) -> Result<()> {
        validate_user(user)?;
        let hash = hash_password(password, &Params::default())?;
        self.users.insert(user.to_string(), hash);
        Ok(())
    }

    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// True when `password` is `user`'s. Blocking and slow (argon2id): call it
    /// from `spawn_blocking`. Unknown users and wrong passwords take alike.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        let argon = Argon2::default();
        match self.users.get(user) {
            Some(hash) => argon.verify_password(password.as_bytes(), hash).is_ok(),
            None => {
                // Same work as a real check, and the same answer as a wrong password.
                let _ = argon.verify_password(password.as_bytes(), dummy_hash());
                false
            }
        }
    }
}

/// An argon2id PHC hash of `password` with the given cost parameters.
pub fn hash_password(password: &str, params: &Params) -> Result<PasswordHash> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Error::BadRequest(format!(
            "a password is 1 to {MAX_PASSWORD_LEN} bytes"
        )));
    }
    let argon = Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
    argon
        .hash_password(password.as_bytes())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// A hash of a random password with the default parameters, computed once.
fn dummy_hash() -> &'static PasswordHash {
    static DUMMY: OnceLock<PasswordHash> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        hash_password(&crate::hex(&random), &Params::default())
            .expect("hashing a fixed-length password cannot fail")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn verify_accepts_the_password_and_nothing_else() {
        let mut users = Users::default();
        users.users.insert(
            "alice".into(),
            hash_password("wonderland", &cheap()).unwrap(),
        );
        assert!(users.verify("alice", "wonderland"));
        assert!(!users.verify("alice", "Wonderland"));
        assert!(!users.verify("mallory", "wonderland"));
        assert!(!users.verify("alice", &"x".repeat(MAX_PASSWORD_LEN + 1)));
    }

    #[test]
    fn round_trips_through_toml_and_refuses_other_algorithms() {
        let mut users = Users::default();
        users
            .users
            .insert("bob".into(), hash_password("builder", &cheap()).unwrap());
        let again = Users::parse(&users.to_toml()).unwrap();
        assert!(again.verify("bob", "builder"));

        assert!(Users::parse("[users]\nbob = \"plain\"\n").is_err());
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(Users::parse(&format!("[users]\nbob = \"{argon2i}\"\n")).is_err());
        assert!(Users::parse("[users]\n\"../x\" = \"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A\"\n").is_err());
    }
}

//! Argon2id password hashes in PHC string form (`$argon2id$v=19$m=…`), so the parameters travel
//! with each hash and can be raised later without breaking old ones.

use crate::ServerError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::OnceLock;

/// Shortest accepted password, in characters.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in bytes (Argon2 takes any length; this bounds the work).
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Result<Argon2<'static>, ServerError> {
    let params = Params::new(19 * 1024, 2, 1, None)
        .map_err(|error| ServerError::Decode(format!("Argon2 parameters: {error}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes `password` with a fresh random salt. CPU-heavy (tens of ms): call from a blocking
/// thread.
pub(crate) fn hash(password: &str) -> Result<String, ServerError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|error| ServerError::Io {
        action: "drawing a random salt",
        source: std::io::Error::other(error.to_string()),
    })?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|error| ServerError::Decode(format!("salt: {error}")))?;
    Ok(hasher()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|error| ServerError::Decode(format!("hashing a password: {error}")))?
        .to_string())
}

/// Whether `password` matches `stored`. An account without a password (`None`, API-token
/// only) or an unknown account is checked against a dummy hash, so the answer takes as long
/// as for a real account and does not reveal which usernames exist.
pub(crate) fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not a password anyone can know").ok());
    let (Some(stored), real) = (stored.or(dummy.as_deref()), stored.is_some()) else {
        return false;
    };
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::error!("a stored password hash does not parse");
        return false;
    };
    let Ok(argon2) = hasher() else { return false };
    argon2.verify_password(password.as_bytes(), &parsed).is_ok() && real
}

/// Why `password` is not acceptable for a new account, if it is not.
pub(crate) fn weakness(password: &str, username: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if password.to_lowercase().contains(&username.to_lowercase()) {
        return Some("the password must not contain the username".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap_or_default();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(verify("correct horse battery", Some(&stored)));
        assert!(!verify("correct horse batterY", Some(&stored)));
        assert!(!verify("", Some(&stored)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("x", Some("not a phc string")));
        // Same password, new salt.
        assert_ne!(hash("correct horse battery").unwrap_or_default(), stored);
    }

    #[test]
    fn weak_passwords_are_named() {
        assert!(weakness("short", "alice").is_some());
        assert!(weakness("alice-is-great-1", "Alice").is_some());
        assert!(weakness(&"x".repeat(2000), "bob").is_some());
        assert_eq!(weakness("a long passphrase", "bob"), None);
    }
}

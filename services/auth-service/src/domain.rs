//! Validated account fields: a value of these types has passed the rules, so handlers and the
//! store never see an unchecked email, name or password.

use crate::error::AuthFailure;

/// The most bytes bcrypt reads of a password; longer ones would be cut silently, so they are
/// refused instead.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// A normalised email: trimmed and lowercased, so `" Alice@Example.COM "` and
/// `"alice@example.com"` are one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Normalises and checks the shape `local@domain` (one `@`, a dot in the domain, no spaces
    /// or control characters, at most 254 bytes). 400 `VALIDATION_FAILED` otherwise.
    ///
    /// Provider-specific aliases (dots, `+tags`) are kept: they are distinct mailboxes elsewhere.
    pub fn parse(raw: &str) -> Result<Self, AuthFailure> {
        let email = raw.trim().to_lowercase();
        let invalid = || AuthFailure::Invalid("email must look like name@example.com".into());
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    /// 400 `VALIDATION_FAILED` for an empty, too long or control-character name.
    pub fn parse(raw: &str) -> Result<Self, AuthFailure> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AuthFailure::Invalid("name must be 1 to 100 characters, without control characters".into()));
        }
        Ok(Self(name.to_owned()))
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A password that meets the rules for a new one: at least `min_chars` characters and at most
/// [`MAX_PASSWORD_BYTES`] bytes (UTF-8). Not trimmed: spaces are part of a password.
pub struct NewPassword(String);

impl NewPassword {
    /// 400 `VALIDATION_FAILED` naming the rule that failed.
    pub fn parse(raw: &str, min_chars: usize) -> Result<Self, AuthFailure> {
        if raw.chars().count() < min_chars {
            return Err(AuthFailure::Invalid(format!("password must be at least {min_chars} characters")));
        }
        check_length(raw)?;
        Ok(Self(raw.to_owned()))
    }
}

impl AsRef<str> for NewPassword {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewPassword(..)")
    }
}

/// 400 when `password` is longer than bcrypt reads (also at login: such a password cannot have
/// been registered, and the check does not depend on the account).
pub fn check_length(password: &str) -> Result<(), AuthFailure> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthFailure::Invalid(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        assert_eq!(Email::parse("  Alice.B+news@Example.COM \n").unwrap().as_ref(), "alice.b+news@example.com");
        assert_eq!(Email::parse("ÉLODIE@exemple.fr").unwrap().as_ref(), "élodie@exemple.fr");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a b@example.com",
            "a@b@example.com",
            "alice@.example.com",
            "alice@example..com",
            "alice@example.com.",
            "a\u{0}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_need_8_characters_and_at_most_72_bytes() {
        assert!(NewPassword::parse("1234567", 8).is_err());
        assert!(NewPassword::parse("12345678", 8).is_ok());
        // Characters, not bytes, count towards the minimum.
        assert!(NewPassword::parse("éééééééé", 8).is_ok());
        assert!(NewPassword::parse(&"x".repeat(72), 8).is_ok());
        assert!(NewPassword::parse(&"x".repeat(73), 8).is_err());
        // 36 two-byte characters are 72 bytes; one more is too many.
        assert!(NewPassword::parse(&"é".repeat(36), 8).is_ok());
        assert!(NewPassword::parse(&"é".repeat(37), 8).is_err());
        assert_eq!(format!("{:?}", NewPassword::parse("secret-password", 8).unwrap()), "NewPassword(..)");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Zoë  ").unwrap().as_ref(), "Zoë");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"n".repeat(101)).is_err());
        assert!(Name::parse("a\u{7}b").is_err());
    }
}

//! bcrypt on tokio's blocking pool, at most one hash per core at a time.
//!
//! Unknown emails cost the same as wrong passwords: [`Passwords::verify`] without a stored hash
//! checks the password against a dummy hash made at start-up with the configured cost, so the
//! work (and time) is the same whether or not the account exists. bcrypt's own comparison of the
//! result is constant-time.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::AuthFailure;

/// Hashes and verifies passwords. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    cost: u32,
    /// A hash of a random password at `cost`, compared against when there is no account.
    dummy_hash: Arc<str>,
    /// bcrypt is pure CPU: more at once than cores only queues on the CPU, and would starve the
    /// blocking pool that SQLite also uses.
    slots: Arc<Semaphore>,
}

impl Passwords {
    /// Prepares hashing at `cost` (4..=31) and makes the dummy hash (one hash's time).
    ///
    /// Errors: the cost is out of range, or the OS has no randomness.
    pub async fn new(cost: u32) -> Result<Self, AuthFailure> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| AuthFailure::Internal(format!("randomness: {e}")))?;
        let dummy_hash = run(move || bcrypt::hash(seed, cost)).await?;
        Ok(Self { cost, dummy_hash: dummy_hash.into(), slots: Arc::new(Semaphore::new(cores)) })
    }

    /// The configured cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A new bcrypt hash (`$2b$<cost>$...`) of `password`, which must be at most 72 bytes.
    pub async fn hash(&self, password: &str) -> Result<String, AuthFailure> {
        let _slot = self.slots.acquire().await.map_err(|_| AuthFailure::Internal("hasher closed".into()))?;
        let (password, cost) = (password.to_owned(), self.cost);
        run(move || bcrypt::hash(password, cost)).await
    }

    /// Whether `password` matches `stored` (a bcrypt hash). Without a stored hash the dummy
    /// hash is checked and the answer is `false`, in the same time. A stored value that is not a
    /// bcrypt hash is logged and counts as no match.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, AuthFailure> {
        let _slot = self.slots.acquire().await.map_err(|_| AuthFailure::Internal("hasher closed".into()))?;
        let known = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.to_owned();
        let result = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| AuthFailure::Internal(format!("bcrypt task: {e}")))?;
        match result {
            Ok(matched) => Ok(matched && known),
            Err(e) => {
                tracing::error!(error = %e, "stored password hash is unreadable");
                Ok(false)
            }
        }
    }
}

async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
) -> Result<T, AuthFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthFailure::Internal(format!("bcrypt task: {e}")))?
        .map_err(|e| AuthFailure::Internal(format!("bcrypt: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let passwords = Passwords::new(4).await.unwrap();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(passwords.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
        assert!(!passwords.verify("x", Some("not-a-bcrypt-hash")).await.unwrap());
    }

    #[tokio::test]
    async fn all_72_bytes_count() {
        let passwords = Passwords::new(4).await.unwrap();
        let long = "p".repeat(71);
        let hash = passwords.hash(&format!("{long}a")).await.unwrap();
        assert!(!passwords.verify(&format!("{long}b"), Some(&hash)).await.unwrap(), "the 72nd byte matters");
    }

    #[tokio::test]
    async fn a_bad_cost_is_refused() {
        assert!(Passwords::new(3).await.is_err());
    }
}

//! One module per command.

pub mod get;
pub mod list;
pub mod login;
pub mod remove;
pub mod upload;
pub mod watch;

/// Writes `text` and a newline to standard output. Errors: standard output is closed or full
/// (e.g. `mediabus watch | head -1` once `head` is done) as [`CliError::local`], instead of the
/// panic `println!` would raise.
pub fn out(text: &str) -> Result<(), crate::client::CliError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(|e| crate::client::CliError::local(format!("standard output: {e}")))
}

/// Bytes in binary units for people: `812 B`, `4.0 KiB`, `1.3 GiB`.
pub fn human_size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

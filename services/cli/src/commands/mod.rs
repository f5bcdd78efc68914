//! One module per command.

pub mod get;
pub mod list;
pub mod login;
pub mod remove;
pub mod upload;
pub mod watch;

/// Bytes in binary units for people: `812 B`, `4.0 KiB`, `1.3 GiB`.
pub fn human_size(bytes: u64) -> String {
    indicatif::BinaryBytes(bytes).to_string()
}

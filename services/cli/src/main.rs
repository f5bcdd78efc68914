//! `mediabus`: the command-line client of a mediabus HTTP bridge (DESIGN §7, §10, §11).
//!
//! Command → module (one hop): `login`/`logout` → [`commands::login`], `upload` →
//! [`commands::upload`] (tus 1.0, resumable), `ls` → [`commands::list`], `get` → [`commands::get`]
//! (resumes with `Range`), `rm` → [`commands::remove`], `watch` → [`commands::watch`] (SSE).
//! Where the server and token come from: [`config`]; HTTP and errors: [`client`].

mod client;
mod commands;
mod config;
mod tus;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::{Api, CliError};
use crate::config::Profile;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the server refused or failed the request (or some files failed to upload)
  2  bad usage
  3  not signed in, or the token was refused (run `mediabus login`)
  4  not found (or not visible to you)
  5  the server could not be reached or is unavailable (retry later)
  6  a local file could not be read or written

Configuration, first found wins: flags, then MEDIABUS_URL / MEDIABUS_TOKEN, then the file written
by `mediabus login` ($MEDIABUS_CONFIG, else $XDG_CONFIG_HOME/mediabus/config.json, else
~/.config/mediabus/config.json), then http://127.0.0.1:8080. The saved session's tokens are sent
only to the server it was saved for.";

/// The mediabus command-line client.
#[derive(Parser)]
#[command(name = "mediabus", version, about = "Upload, list, fetch and follow media on a mediabus server", after_help = EXIT_CODES)]
struct Cli {
    /// Base URL of the mediabus HTTP bridge.
    #[arg(long, global = true, env = "MEDIABUS_URL")]
    url: Option<String>,
    /// Access token (JWT) to use instead of the one saved by `login`.
    #[arg(long, global = true, env = "MEDIABUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in and save the session (access and refresh token) in the config file.
    Login {
        /// Account email (asked for when missing).
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Sign out: revoke the saved refresh token and forget the session.
    Logout,
    /// Upload files, or every file under directories, resumably (tus): rerun the same command
    /// after an interruption and each file continues where it stopped (finished ones are skipped).
    Upload(UploadArgs),
    /// List media: everything you may see, a user's, or an entity's.
    Ls(ListArgs),
    /// Download a media's bytes; a partial download (`<file>.part`) is resumed.
    Get {
        /// Media id.
        id: String,
        /// Output file (default: the media's original name in the current directory; `-` for
        /// standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Delete a media (soft delete: it becomes DELETED and disappears from listings).
    Rm {
        /// Media ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Follow live media events (created, updated, removed, processed) until interrupted.
    Watch {
        /// Also show the public media of this entity (with --entity-id).
        #[arg(long, requires = "entity_id")]
        entity_type: Option<String>,
        #[arg(long, requires = "entity_type")]
        entity_id: Option<String>,
        /// One JSON object per event instead of text lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct UploadArgs {
    /// Files or directories (directories are walked recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Link every upload to this entity type (e.g. `course`).
    #[arg(long)]
    entity_type: Option<String>,
    /// Link every upload to this entity id.
    #[arg(long)]
    entity_id: Option<String>,
    /// Make the uploads public (readable by anyone).
    #[arg(long)]
    public: bool,
    /// JSON object stored as each media's metadata.
    #[arg(long)]
    metadata: Option<String>,
    /// Files uploaded at once.
    #[arg(short = 'j', long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=32))]
    concurrency: u16,
    /// Print the created media as a JSON array instead of text lines.
    #[arg(long)]
    json: bool,
    /// Upload again files an earlier run already uploaded (same path, size and modification
    /// time); by default they are skipped and their media printed.
    #[arg(long)]
    again: bool,
}

#[derive(Args)]
struct ListArgs {
    /// Only this user's media.
    #[arg(long, conflicts_with = "entity")]
    user: Option<String>,
    /// Only the media of this entity, as TYPE/ID (e.g. `course/c1`).
    #[arg(long)]
    entity: Option<String>,
    /// Filter by type: IMAGE, VIDEO, AUDIO, DOCUMENT, OTHER.
    #[arg(long = "type")]
    media_type: Option<String>,
    /// Items per page (1..=100).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Follow `nextCursor` through every page.
    #[arg(long)]
    all: bool,
    /// Print the items as a JSON array.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mediabus: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let profile = Profile::load()?;
    let api = Api::new(&profile, cli.url, cli.token);
    match cli.command {
        Command::Login { email, password_stdin } => commands::login::login(&api, profile, email, password_stdin),
        Command::Logout => commands::login::logout(&api, profile),
        Command::Upload(args) => commands::upload::run(&api, args.into()),
        Command::Ls(args) => commands::list::run(&api, args.into()),
        Command::Get { id, output } => commands::get::run(&api, &id, output),
        Command::Rm { ids } => commands::remove::run(&api, &ids),
        Command::Watch { entity_type, entity_id, json } => commands::watch::run(&api, entity_type.zip(entity_id), json),
    }
}

impl From<UploadArgs> for commands::upload::Options {
    fn from(a: UploadArgs) -> Self {
        Self {
            paths: a.paths,
            entity_type: a.entity_type,
            entity_id: a.entity_id,
            public: a.public,
            metadata: a.metadata,
            concurrency: a.concurrency.into(),
            json: a.json,
            again: a.again,
        }
    }
}

impl From<ListArgs> for commands::list::Options {
    fn from(a: ListArgs) -> Self {
        Self { user: a.user, entity: a.entity, media_type: a.media_type, limit: a.limit, all: a.all, json: a.json }
    }
}

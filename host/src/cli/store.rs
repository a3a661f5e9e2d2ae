//! `hookwall store check`: checks a stopped instance's store (see `store::check`) and says
//! what it found; exits non-zero when a record does not read or an index row points at nothing.

use std::path::Path;

use anyhow::bail;
use clap::Subcommand;

use crate::config::Config;
use crate::store::{self, Integrity};

/// A `hookwall store` subcommand.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Check every record of the store: redb's integrity check (page checksums; it repairs
    /// what it can), then each event, delivery and dead letter decoded and each pending row
    /// followed. The instance must be stopped.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `command` on the store of the config at `path`.
pub fn run(path: &Path, command: StoreCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let StoreCommand::Check { json } = command;
    let report = store::check(&config.storage.path)?;
    let integrity = match report.integrity {
        Integrity::Clean => "clean",
        Integrity::Repaired => "repaired",
    };
    if json {
        let out = serde_json::json!({
            "file": report.file.display().to_string(),
            "ok": report.ok(),
            "integrity": integrity,
            "events": report.events,
            "deliveries": report.deliveries,
            "pending": report.pending,
            "dead_letters": report.dead_letters,
            "dedupe_marks": report.dedupe_marks,
            "unreadable": report.unreadable,
            "dangling": report.dangling,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: integrity {integrity}; {} events, {} deliveries ({} pending), {} dead letters, {} dedupe marks",
            report.file.display(),
            report.events,
            report.deliveries,
            report.pending,
            report.dead_letters,
            report.dedupe_marks
        );
        for line in report.unreadable.iter().chain(&report.dangling) {
            println!("  {line}");
        }
    }
    if !report.ok() {
        bail!(
            "{} unreadable records and {} dangling index rows in {}",
            report.unreadable.len(),
            report.dangling.len(),
            report.file.display()
        );
    }
    Ok(())
}

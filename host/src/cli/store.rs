//! `hookwall store check`: checks a stopped instance's store (see `store::check`) and says
//! what it found; exits non-zero when a record does not read or an index row points at nothing.
//! `hookwall store repair`: keeps every intact record of a damaged store and says what was
//! lost.

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
    /// Repair a damaged log: every span that does not read (a checksum mismatch, a cut
    /// record) is overwritten with padding so the store starts again, and the events and
    /// deliveries whose record was there are deleted and listed. Every intact record is kept.
    /// The instance must be stopped; take a copy of the directory first.
    Repair {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `command` on the store of the config at `path`.
pub fn run(path: &Path, command: StoreCommand) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    if config.storage.backend == crate::config::StorageBackend::Postgres {
        anyhow::bail!(
            "{}: the store is PostgreSQL ([storage] backend = \"postgres\"): `hookwall store` \
             checks and repairs the embedded store only; `hookwall check` reports the \
             database's schema, and the database's own tools (pg_amcheck, backups) check it",
            path.display()
        );
    }
    match command {
        StoreCommand::Check { json } => check(&config.storage.path, json),
        StoreCommand::Repair { json } => repair(&config.storage.path, json),
    }
}

fn repair(dir: &Path, json: bool) -> anyhow::Result<()> {
    let report = store::repair(dir)?;
    if json {
        let out = serde_json::json!({ "padded": report.padded, "lost": report.lost });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} damaged spans padded, {} records lost",
            dir.display(),
            report.padded.len(),
            report.lost.len()
        );
        for line in report.padded.iter().chain(&report.lost) {
            println!("  {line}");
        }
    }
    Ok(())
}

fn check(dir: &Path, json: bool) -> anyhow::Result<()> {
    let report = store::check(dir)?;
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
            "segments": report.segments,
            "log_records": report.log_records,
            "log_damage": report.log_damage,
            "unreadable": report.unreadable,
            "dangling": report.dangling,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: integrity {integrity}; {} events, {} deliveries ({} pending), {} dead letters, {} dedupe marks; log: {} segments, {} records",
            report.file.display(),
            report.events,
            report.deliveries,
            report.pending,
            report.dead_letters,
            report.dedupe_marks,
            report.segments,
            report.log_records
        );
        for line in report
            .log_damage
            .iter()
            .chain(&report.unreadable)
            .chain(&report.dangling)
        {
            println!("  {line}");
        }
    }
    if !report.ok() {
        bail!(
            "{} damaged log spans, {} unreadable records and {} dangling index rows in {}; \
             `hookwall store repair` keeps every intact record",
            report.log_damage.len(),
            report.unreadable.len(),
            report.dangling.len(),
            report.file.display()
        );
    }
    Ok(())
}

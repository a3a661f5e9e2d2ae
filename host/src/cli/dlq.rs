//! `hookwall dlq list|show|replay|purge`: the dead-letter queue of a running instance,
//! through its admin API ([`crate::admin::dlq`]).

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::AdminClient;

/// A `hookwall dlq` subcommand.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List {
        /// Only dead letters of this source.
        #[arg(long)]
        source: Option<String>,
        /// Only dead letters of this sink.
        #[arg(long)]
        sink: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: every attempt (time, status, error) and the stored request.
    Show {
        /// The dead letter's number (the `SEQ` column of `list`).
        seq: u64,
    },
    /// Re-run the current plugins on dead-lettered events and deliver them again.
    Replay(Selector),
    /// Drop dead letters without delivering them.
    Purge(Selector),
}

/// Which dead letters: exactly one of these.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selector {
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Those of one source.
    #[arg(long)]
    source: Option<String>,
    /// Those of one sink.
    #[arg(long)]
    sink: Option<String>,
    /// One dead letter, by its number.
    seq: Option<u64>,
}

impl Selector {
    fn body(&self) -> Value {
        match (self.all, &self.source, &self.sink, self.seq) {
            (true, ..) => json!({"all": true}),
            (_, Some(s), ..) => json!({"source": s}),
            (_, _, Some(k), _) => json!({"sink": k}),
            (_, _, _, Some(seq)) => json!({"seq": seq}),
            _ => json!({}),
        }
    }
}

/// Runs `command` against the instance `client` points at.
pub async fn run(client: &AdminClient, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List {
            source,
            sink,
            limit,
            json,
        } => {
            let mut path = format!("/api/v1/dead-letters?limit={limit}");
            for (k, v) in [("source", source), ("sink", sink)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={v}"));
                }
            }
            let answer = client.request(http::Method::GET, &path, None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let letters = answer["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            println!(
                "{:<8} {:<38} {:<14} {:<14} REASON",
                "SEQ", "EVENT", "SOURCE", "SINK"
            );
            let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
            for l in &letters {
                println!(
                    "{:<8} {:<38} {:<14} {:<14} {}",
                    l["seq"],
                    text(&l["event_id"]),
                    text(&l["source"]),
                    text(&l["sink"]),
                    text(&l["reason"])
                );
            }
            if letters.is_empty() {
                eprintln!("no dead letters");
            }
        }
        DlqCommand::Show { seq } => {
            let answer = client
                .request(
                    http::Method::GET,
                    &format!("/api/v1/dead-letters/{seq}"),
                    None,
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        DlqCommand::Replay(selector) => {
            let answer = client
                .request(http::Method::POST, "/api/v1/replay", Some(selector.body()))
                .await?;
            println!(
                "replayed {} dead letter(s){}",
                answer["replayed"],
                match answer["skipped"].as_u64() {
                    Some(n) if n > 0 => format!(", {n} skipped (source or event gone)"),
                    _ => String::new(),
                }
            );
        }
        DlqCommand::Purge(selector) => {
            let answer = client
                .request(
                    http::Method::POST,
                    "/api/v1/dead-letters/purge",
                    Some(selector.body()),
                )
                .await?;
            let Some(n) = answer["purged"].as_u64() else {
                bail!("unexpected answer: {answer}");
            };
            println!("purged {n} dead letter(s)");
        }
    }
    Ok(())
}

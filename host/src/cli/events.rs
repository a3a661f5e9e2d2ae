//! `hookwall events`: a running instance's events, newest first, through the admin API.

use std::fmt::Write as _;

use super::client::AdminClient;

/// What to list; every field maps to a query parameter of `GET /api/v1/events`.
#[derive(Debug, Default, clap::Args)]
pub struct EventsArgs {
    /// Only events of this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Only events in this state: delivered, pending, failed, dropped.
    #[arg(long)]
    pub status: Option<String>,
    /// Received at or after (ms since the epoch, or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Received before (ms since the epoch, or RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many (all pages are followed until then).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print the events as JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the events `args` selects.
pub async fn run(client: &AdminClient, args: &EventsArgs) -> anyhow::Result<()> {
    let mut base = form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("source", &args.source),
        ("status", &args.status),
        ("since", &args.since),
        ("until", &args.until),
    ] {
        if let Some(v) = value {
            base.append_pair(key, v);
        }
    }
    let base = base.finish();
    let mut cursor: Option<String> = None;
    let mut printed = 0;
    if !args.json {
        println!(
            "{:<38} {:<14} {:<24} {:<10} DELIVERIES",
            "ID", "SOURCE", "RECEIVED", "STATUS"
        );
    }
    while printed < args.limit {
        let page = (args.limit - printed).min(500);
        let mut path = format!("/api/v1/events?limit={page}");
        if !base.is_empty() {
            let _ = write!(path, "&{base}");
        }
        if let Some(c) = &cursor {
            let _ = write!(path, "&cursor={c}");
        }
        let answer = client.request(http::Method::GET, &path, None).await?;
        let events = answer["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            printed += 1;
            if args.json {
                println!("{e}");
                continue;
            }
            let received = e["received_at_ms"]
                .as_u64()
                .map(|ms| {
                    humantime::format_rfc3339_millis(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                })
                .unwrap_or_default();
            let deliveries: Vec<String> = e["deliveries"]
                .as_array()
                .map(|ds| {
                    ds.iter()
                        .map(|d| {
                            format!(
                                "{}:{}",
                                d["sink"].as_str().unwrap_or("?"),
                                d["state"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{:<38} {:<14} {:<24} {:<10} {}",
                e["id"].as_str().unwrap_or("?"),
                e["source"].as_str().unwrap_or("?"),
                received,
                e["status"].as_str().unwrap_or("?"),
                if deliveries.is_empty() {
                    e["reason"].as_str().unwrap_or("-").to_string()
                } else {
                    deliveries.join(" ")
                }
            );
        }
        match answer["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    Ok(())
}

use std::path::Path;

use bytes::Bytes;
use hookwall_testkit::RedisServer;

use super::*;
use crate::config::{Config, Secret};
use crate::event::InboundRequest;
use crate::store::{AcceptOutcome, EventRecord, EventStatus, NewEvent};
use crate::verify::Verifier;

const SECRET: &str = "dedupe-test-secret";

/// A one-source config with `verify` and `dedupe` written as TOML inline tables.
fn config(verify: &str, dedupe: Option<&str>) -> Config {
    let dedupe = dedupe.map(|d| format!("dedupe = {d}")).unwrap_or_default();
    Config::parse(
        &format!(
            "[sources.s]\npath = \"/h\"\nverify = {verify}\nsinks = [\"out\"]\n{dedupe}\n\
             [sinks.out]\ntype = \"stdout\"\n"
        ),
        Path::new("."),
    )
    .unwrap()
}

const HMAC: &str = r#"{ scheme = "hmac", header = "X-Sig", secrets = ["dedupe-test-secret"], id_header = "X-Id" }"#;
const OPEN: &str = r#"{ scheme = "none" }"#;

fn request(headers: &[(&str, &str)], body: &[u8]) -> InboundRequest {
    InboundRequest {
        source: "s".into(),
        method: "POST".into(),
        path: "/h".into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        body: Bytes::copy_from_slice(body),
        remote: "127.0.0.1:1".parse().unwrap(),
        received_at_ms: 10_000,
    }
}

fn verified(verifier: &Verifier, headers: &[(&str, &str)], body: &[u8]) -> VerifiedRequest {
    match verifier.verify(request(headers, body), 10_000).unwrap() {
        crate::verify::Verified::Event(v) => v,
        crate::verify::Verified::Challenge(_) => panic!("not a challenge"),
    }
}

struct Replica {
    _dir: tempfile::TempDir,
    store: Store,
    dedupe: Dedupe,
    verifier: Verifier,
    stats: Arc<Stats>,
}

fn replica(config: &Config, redis: Option<SharedRedis>) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stats = Arc::new(Stats::default());
    let effective = config.sources["s"].effective_dedupe().unwrap();
    Replica {
        dedupe: Dedupe::new("s", &effective, store.clone(), redis, stats.clone()),
        verifier: crate::verify::Verifier::for_source(config, "s").unwrap(),
        store,
        stats,
        _dir: dir,
    }
}

fn new_event(id: &str) -> NewEvent {
    NewEvent {
        record: EventRecord {
            id: id.into(),
            source: "s".into(),
            received_at_ms: 10_000,
            method: "POST".into(),
            path: "/h".into(),
            query: String::new(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
            status: EventStatus::Forwarded,
            deliveries: Vec::new(),
        },
        deliveries: Vec::new(),
    }
}

fn proceed(b: Begin) -> Claim {
    match b {
        Begin::Proceed(c) => c,
        other => panic!("expected Proceed, got {other:?}"),
    }
}

#[test]
fn keys_come_from_the_configured_place() {
    let key = |dedupe: &str, headers: &[(&str, &str)], body: &[u8]| {
        let r = replica(&config(OPEN, Some(dedupe)), None);
        r.dedupe.key_for(&verified(&r.verifier, headers, body))
    };
    let json = br#"{"id": "evt_1", "n": 7, "nested": {"k": [1, 2]}, "nothing": null}"#;
    assert_eq!(
        key(
            r#"{ key = "header:X-Delivery" }"#,
            &[("X-Delivery", " d-1 ")],
            b""
        ),
        Some("d-1".into())
    );
    assert_eq!(key(r#"{ key = "header:X-Delivery" }"#, &[], b""), None);
    assert_eq!(
        key(r#"{ key = "json:/id" }"#, &[], json),
        Some("evt_1".into())
    );
    assert_eq!(key(r#"{ key = "json:/n" }"#, &[], json), Some("7".into()));
    assert_eq!(
        key(r#"{ key = "json:/nested" }"#, &[], json),
        Some(r#"{"k":[1,2]}"#.into())
    );
    assert_eq!(key(r#"{ key = "json:/nothing" }"#, &[], json), None);
    assert_eq!(key(r#"{ key = "json:/missing" }"#, &[], json), None);
    assert_eq!(key(r#"{ key = "json:/id" }"#, &[], b"not json"), None);
    assert_eq!(
        key(r#"{ key = "body-sha256" }"#, &[], b"abc"),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
    );
    // A long key is stored as its hash, so a mark's size stays bounded.
    let long = "x".repeat(1000);
    let hashed = key(
        r#"{ key = "header:X-Delivery" }"#,
        &[("X-Delivery", &long)],
        b"",
    )
    .unwrap();
    assert!(
        hashed.starts_with("sha256:") && hashed.len() == 7 + 64,
        "{hashed}"
    );

    // The scheme's event id, when the verify scheme carries one.
    let r = replica(&config(HMAC, None), None);
    let sig = hex::encode(crate::verify::mac(
        crate::config::HmacAlgorithm::Sha256,
        SECRET.as_bytes(),
        b"{}",
    ));
    let v = verified(&r.verifier, &[("X-Sig", &sig), ("X-Id", "evt-9")], b"{}");
    assert_eq!(r.dedupe.key_for(&v), Some("evt-9".into()));
    let v = verified(&r.verifier, &[("X-Sig", &sig)], b"{}");
    assert_eq!(r.dedupe.key_for(&v), None, "no id header, no key");
}

#[test]
fn dedupe_defaults_to_the_scheme_id_only_when_there_is_one() {
    let with_id = config(HMAC, None);
    let d = with_id.sources["s"].effective_dedupe().unwrap();
    assert_eq!(d.key, Some(DedupeKey::Scheme));
    assert_eq!(d.ttl, crate::config::DEFAULT_DEDUPE_TTL);
    assert!(config(OPEN, None).sources["s"].effective_dedupe().is_none());
    assert!(
        config(HMAC, Some(r#"{ key = "none" }"#)).sources["s"]
            .effective_dedupe()
            .is_none()
    );
    let ttl = config(HMAC, Some(r#"{ ttl = "5m" }"#)).sources["s"]
        .effective_dedupe()
        .unwrap();
    assert_eq!(
        (ttl.key, ttl.ttl),
        (Some(DedupeKey::Scheme), Duration::from_secs(300))
    );
}

#[tokio::test]
async fn a_committed_mark_makes_later_copies_duplicates_before_any_plugin() {
    let r = replica(
        &config(OPEN, Some(r#"{ key = "body-sha256", ttl = "1s" }"#)),
        None,
    );
    let v = verified(&r.verifier, &[], b"same body");
    let claim = proceed(r.dedupe.begin(&v, "first", 10_000).await.unwrap());
    let mark = claim.mark();
    assert_eq!(mark.expires_ms, 11_000);
    let out = r
        .store
        .accept_marked(new_event("first"), Some(mark))
        .await
        .unwrap();
    assert_eq!(out, AcceptOutcome::Stored);
    claim.stored("first").await;
    match r.dedupe.begin(&v, "second", 10_999).await.unwrap() {
        Begin::Duplicate { id } => assert_eq!(id, "first"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert_eq!(r.stats.duplicates.load(Ordering::Relaxed), 1);
    // At the TTL the mark is stale: the same body is a new event.
    proceed(r.dedupe.begin(&v, "third", 11_000).await.unwrap());
    let other = verified(&r.verifier, &[], b"other body");
    proceed(r.dedupe.begin(&other, "x", 10_000).await.unwrap());
}

async fn connect(server: &RedisServer) -> SharedRedis {
    SharedRedis::connect(&Secret::new(server.url()), "t")
        .await
        .unwrap()
}

#[tokio::test]
async fn replicas_agree_through_a_two_phase_claim() {
    let server = RedisServer::start();
    let cfg = config(OPEN, Some(r#"{ key = "header:X-Delivery" }"#));
    let a = replica(&cfg, Some(connect(&server).await));
    let b = replica(&cfg, Some(connect(&server).await));
    let req = |r: &Replica| verified(&r.verifier, &[("X-Delivery", "d-1")], b"{}");

    let claim = proceed(a.dedupe.begin(&req(&a), "from-a", 10_000).await.unwrap());
    // While A is committing, B's copy waits for the outcome, then sees A's id.
    let b_request = req(&b);
    let (b_begin, ()) = tokio::join!(b.dedupe.begin(&b_request, "from-b", 10_000), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = a
            .store
            .accept_marked(new_event("from-a"), Some(claim.mark()))
            .await;
        assert_eq!(out.unwrap(), AcceptOutcome::Stored);
        claim.stored("from-a").await;
    });
    match b_begin.unwrap() {
        Begin::Duplicate { id } => assert_eq!(id, "from-a"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let stored = server.command(&["GET", "t:dedupe:s:d-1"]).unwrap();
    assert!(stored.contains("done:from-a"), "{stored}");
}

#[tokio::test]
async fn an_unfinished_claim_never_turns_a_retry_into_a_duplicate() {
    let server = RedisServer::start();
    let cfg = config(OPEN, Some(r#"{ key = "header:X-Delivery" }"#));
    let a = replica(&cfg, Some(connect(&server).await));
    let b = replica(&cfg, Some(connect(&server).await));
    let req = |r: &Replica, d: &str| verified(&r.verifier, &[("X-Delivery", d)], b"{}");

    // A fails before committing (plugin rejection, store error, cancelled request): dropping
    // the claim releases it, and B processes the sender's retry.
    let claim = proceed(a.dedupe.begin(&req(&a, "d-2"), "a", 10_000).await.unwrap());
    drop(claim);
    proceed(b.dedupe.begin(&req(&b, "d-2"), "b", 10_000).await.unwrap());

    // A "crashes" holding a claim: B answers 503 (retry later), never `duplicate`.
    let claim = proceed(a.dedupe.begin(&req(&a, "d-3"), "a", 10_000).await.unwrap());
    std::mem::forget(claim);
    let started = std::time::Instant::now();
    assert!(matches!(
        b.dedupe.begin(&req(&b, "d-3"), "b", 10_000).await,
        Err(DedupeError::InFlight)
    ));
    assert!(started.elapsed() >= CLAIM_WAIT - CLAIM_POLL);
    assert_eq!(b.stats.in_flight.load(Ordering::Relaxed), 1);
    let pttl = server.command(&["PTTL", "t:dedupe:s:d-3"]).unwrap();
    let pttl: i64 = pttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(
        pttl > 0 && pttl <= CLAIM_TTL.as_millis() as i64,
        "the claim expires: {pttl}"
    );
}

#[tokio::test]
async fn redis_down_follows_the_policy() {
    let mut server = RedisServer::start();
    let open = replica(
        &config(OPEN, Some(r#"{ key = "body-sha256" }"#)),
        Some(connect(&server).await),
    );
    let closed = replica(
        &config(
            OPEN,
            Some(r#"{ key = "body-sha256", on_redis_error = "fail_closed" }"#),
        ),
        Some(connect(&server).await),
    );
    server.kill();
    let v = verified(&open.verifier, &[], b"x");
    let claim = proceed(open.dedupe.begin(&v, "id", 10_000).await.unwrap());
    // Local marks still work without Redis.
    open.store
        .accept_marked(new_event("id"), Some(claim.mark()))
        .await
        .unwrap();
    claim.stored("id").await;
    assert!(matches!(
        open.dedupe.begin(&v, "id2", 10_000).await.unwrap(),
        Begin::Duplicate { .. }
    ));
    let v = verified(&closed.verifier, &[], b"x");
    assert!(matches!(
        closed.dedupe.begin(&v, "id", 10_000).await,
        Err(DedupeError::Unavailable(_))
    ));
    assert!(open.stats.redis_degraded.load(Ordering::Relaxed) >= 1);
    assert_eq!(closed.stats.redis_degraded.load(Ordering::Relaxed), 1);
}

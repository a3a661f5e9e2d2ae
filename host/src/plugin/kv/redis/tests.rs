//! The Redis key-value backend against a private `redis-server`.

use std::time::{Duration, Instant};

use hookwall_testkit::{RedisServer, wait_for};

use super::*;
use crate::config::Secret;

/// A private Redis, a runtime that owns the connection, and the backend on it. The tests drive
/// each operation to completion with `Runtime::block_on` from their own threads.
fn start() -> (RedisServer, tokio::runtime::Runtime, RedisKv) {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let redis = runtime
        .block_on(SharedRedis::connect(&Secret::new(server.url()), "t"))
        .unwrap();
    let kv = RedisKv::new(redis);
    (server, runtime, kv)
}

fn scope(plugin: &str) -> KvScope<'_> {
    KvScope {
        plugin,
        now_ms: 0,
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

#[test]
fn follows_the_kv_contract_with_namespaced_keys() {
    let (server, rt, kv) = start();
    rt.block_on(super::super::check_kv_contract(&kv, scope));
    // The key layout: PREFIX:kv:PLUGIN:KEY, with `:` in a plugin name escaped.
    rt.block_on(kv.set(scope("p"), "k", b"2".to_vec(), None))
        .unwrap();
    assert_eq!(server.command(&["GET", "t:kv:p:k"]).unwrap(), "$1\r\n2\r\n");
    assert!(
        server
            .command(&["GET", "t:kv:a%3Ab:c"])
            .unwrap()
            .starts_with("$4\r\nab-c")
    );
}

#[test]
fn values_expire_by_their_ttl() {
    let (server, rt, kv) = start();
    let p = scope("p");
    let pttl = |key: &str| {
        let reply = server.command(&["PTTL", &format!("t:kv:p:{key}")]).unwrap();
        reply.trim_start_matches(':').trim().parse::<i64>().unwrap()
    };

    rt.block_on(kv.set(p, "short", b"v".to_vec(), Some(300)))
        .unwrap();
    assert!((1..=300).contains(&pttl("short")), "{}", pttl("short"));
    assert!(wait_for(Duration::from_secs(10), || rt
        .block_on(kv.get(p, "short"))
        .unwrap()
        .is_none()));
    // Expired counts as absent for compare-and-swap.
    assert!(
        rt.block_on(kv.compare_and_swap(p, "short", None, b"w".to_vec(), None))
            .unwrap()
    );

    // A set without TTL clears the previous expiry; compare-and-swap sets its own.
    rt.block_on(kv.set(p, "k", b"1".to_vec(), Some(60_000)))
        .unwrap();
    assert!(pttl("k") > 1000);
    rt.block_on(kv.set(p, "k", b"2".to_vec(), None)).unwrap();
    assert_eq!(pttl("k"), -1);
    assert!(
        rt.block_on(kv.compare_and_swap(p, "k", Some(b"2".to_vec()), b"3".to_vec(), Some(60_000)))
            .unwrap()
    );
    assert!(pttl("k") > 1000);
    // Absurd TTLs are capped, not refused by Redis.
    rt.block_on(kv.set(p, "forever", b"x".to_vec(), Some(u64::MAX)))
        .unwrap();
    assert_eq!(
        rt.block_on(kv.get(p, "forever")).unwrap(),
        Some(b"x".to_vec())
    );
    // A zero TTL expires at once, also through compare-and-swap.
    rt.block_on(kv.set(p, "k", b"4".to_vec(), Some(0))).unwrap();
    assert!(
        rt.block_on(kv.compare_and_swap(p, "k", None, b"5".to_vec(), Some(0)))
            .unwrap()
    );
    assert_eq!(rt.block_on(kv.get(p, "k")).unwrap(), None);
}

/// Increments from several threads through compare-and-swap loses none: the script is atomic.
#[test]
fn concurrent_compare_and_swap_loses_no_update() {
    let (_server, rt, kv) = start();
    const THREADS: usize = 6;
    const EACH: usize = 40;
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..EACH {
                    loop {
                        let current = rt.block_on(kv.get(scope("p"), "n")).unwrap();
                        let n: usize = current
                            .as_deref()
                            .map_or(0, |b| std::str::from_utf8(b).unwrap().parse().unwrap());
                        let next = (n + 1).to_string().into_bytes();
                        if rt
                            .block_on(kv.compare_and_swap(scope("p"), "n", current, next, None))
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    assert_eq!(
        rt.block_on(kv.get(scope("p"), "n")).unwrap(),
        Some((THREADS * EACH).to_string().into_bytes())
    );
}

#[test]
fn redis_down_is_an_error_within_the_bound_and_recovers() {
    let (mut server, rt, kv) = start();
    rt.block_on(kv.set(scope("p"), "k", b"v".to_vec(), None))
        .unwrap();
    server.kill();
    for _ in 0..3 {
        let asked = Instant::now();
        let err = rt.block_on(kv.get(scope("p"), "k")).unwrap_err();
        assert!(
            err.to_string().contains("key-value store unavailable"),
            "{err}"
        );
        // Bounded by OPERATION_TIMEOUT (1 s); generous for a loaded machine.
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "{:?}",
            asked.elapsed()
        );
    }
    // A call whose deadline has passed does not ask at all.
    let late = KvScope {
        plugin: "p",
        now_ms: 0,
        deadline: Instant::now(),
    };
    let err = rt
        .block_on(kv.set(late, "k", b"w".to_vec(), None))
        .unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");

    server.restart();
    assert!(
        wait_for(Duration::from_secs(10), || rt
            .block_on(kv.set(scope("p"), "k", b"back".to_vec(), None))
            .is_ok()),
        "no reconnect after Redis returned"
    );
    assert_eq!(
        rt.block_on(kv.get(scope("p"), "k")).unwrap(),
        Some(b"back".to_vec())
    );
}

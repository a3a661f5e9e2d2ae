use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use governor::clock::FakeRelativeClock;
use hookwall_testkit::RedisServer;

use super::*;
use crate::config::{Rate, Secret};

fn config(rate: &str, burst: u32, by: LimitBy, on_redis_error: OnRedisError) -> RateLimitConfig {
    RateLimitConfig {
        rate: Rate::try_from(rate.to_string()).unwrap(),
        burst: Some(burst),
        by,
        on_redis_error,
    }
}

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

fn limited(r: Result<(), RateLimitError>) -> Duration {
    match r {
        Err(RateLimitError::Limited { retry_after }) => retry_after,
        other => panic!("expected Limited, got {other:?}"),
    }
}

#[tokio::test]
async fn burst_then_the_sustained_rate_on_an_injected_clock() {
    let clock = FakeRelativeClock::default();
    let stats = Arc::new(Stats::default());
    let c = config("10/s", 3, LimitBy::Source, OnRedisError::FailOpen);
    let limiter = RateLimiter::local_with_clock("s", &c, clock.clone(), stats.clone());
    for _ in 0..3 {
        limiter.check(A).await.unwrap();
    }
    // The burst is spent: the next cell is free one emission interval (100 ms) later.
    assert_eq!(limited(limiter.check(B).await), Duration::from_millis(100));
    clock.advance(Duration::from_millis(60));
    assert_eq!(limited(limiter.check(A).await), Duration::from_millis(40));
    clock.advance(Duration::from_millis(40));
    limiter.check(A).await.unwrap();
    assert!(limiter.check(A).await.is_err());
    assert_eq!(stats.limited.load(Ordering::Relaxed), 3);
    // Ten seconds idle: the whole burst is back, and no more.
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        limiter.check(A).await.unwrap();
    }
    assert!(limiter.check(A).await.is_err());
}

#[tokio::test]
async fn per_client_budgets_are_separate_and_idle_clients_are_forgotten() {
    let clock = FakeRelativeClock::default();
    let c = config("1/m", 1, LimitBy::ClientIp, OnRedisError::FailOpen);
    let limiter = RateLimiter::local_with_clock("s", &c, clock.clone(), Arc::default());
    limiter.check(A).await.unwrap();
    assert_eq!(limited(limiter.check(A).await), Duration::from_secs(60));
    limiter.check(B).await.unwrap();
    // One IPv6 /64 is one sender.
    let v6a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().unwrap().into();
    let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().unwrap().into();
    limiter.check(v6a).await.unwrap();
    assert!(limiter.check(v6b).await.is_err());
    assert_eq!(limiter.forget_idle(), 3, "all three cells are still busy");
    // governor keeps a cell one emission interval past "fresh" before it may go.
    clock.advance(Duration::from_secs(121));
    assert_eq!(limiter.forget_idle(), 0, "idle cells are dropped");
    limiter.check(A).await.unwrap();
}

#[test]
fn rates_parse_per_second_minute_and_hour() {
    let r = |t: &str| Rate::try_from(t.to_string());
    assert_eq!(r("100/s").unwrap().interval(), Duration::from_millis(10));
    assert_eq!(r("6/m").unwrap().interval(), Duration::from_secs(10));
    assert_eq!(r("2/h").unwrap().interval(), Duration::from_secs(1800));
    for bad in ["0/s", "100", "10/d", "x/s", "-1/s"] {
        assert!(r(bad).is_err(), "{bad} should not parse");
    }
}

async fn connect(redis: &RedisServer) -> SharedRedis {
    SharedRedis::connect(&Secret::new(redis.url()), "test")
        .await
        .unwrap()
}

#[tokio::test]
async fn replicas_share_one_redis_budget() {
    let server = RedisServer::start();
    let c = config("2/m", 4, LimitBy::Source, OnRedisError::FailOpen);
    // Two limiters on two connections: two replicas.
    let one = RateLimiter::new("s", &c, Some(connect(&server).await), Arc::default());
    let two = RateLimiter::new("s", &c, Some(connect(&server).await), Arc::default());
    let mut passed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &one } else { &two };
        match limiter.check(A).await {
            Ok(()) => passed += 1,
            Err(e) => {
                let wait = limited(Err(e));
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(30),
                    "{wait:?}"
                );
            }
        }
    }
    assert_eq!(passed, 4, "the burst, shared");
    // The key expires once its state is fresh again, so idle keys cost Redis nothing.
    let ttl = server.command(&["PTTL", "test:ratelimit:s"]).unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!(ttl > 0 && ttl <= 120_001, "PTTL {ttl}");
}

#[tokio::test]
async fn redis_outage_follows_the_policy_and_recovers() {
    let mut server = RedisServer::start();
    let open_cfg = config("1/h", 1, LimitBy::ClientIp, OnRedisError::FailOpen);
    let closed_cfg = config("1/h", 1, LimitBy::ClientIp, OnRedisError::FailClosed);
    let redis = connect(&server).await;
    let stats = Arc::new(Stats::default());
    let open = RateLimiter::new("open", &open_cfg, Some(redis.clone()), stats.clone());
    let closed = RateLimiter::new("closed", &closed_cfg, Some(redis.clone()), stats.clone());
    open.check(A).await.unwrap();
    assert!(open.check(A).await.is_err());

    server.kill();
    open.check(A)
        .await
        .expect("fail_open lets requests through");
    assert!(matches!(
        closed.check(A).await,
        Err(RateLimitError::Unavailable(_))
    ));
    assert_eq!(stats.redis_degraded.load(Ordering::Relaxed), 2);
    assert!(redis.is_down());

    server.restart();
    // The restarted Redis is empty; a call after it reconnects.
    let mut recovered = false;
    for _ in 0..50 {
        if closed.check(B).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the limiter works again once Redis is back");
    assert!(!redis.is_down());
    assert!(closed.check(B).await.is_err(), "and limits again");
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_error_without_the_password() {
    let port = hookwall_testkit::free_port();
    let url = Secret::new(format!("redis://:hunter2@127.0.0.1:{port}"));
    let err = SharedRedis::connect(&url, "p")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("storage.redis"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let bad = SharedRedis::connect(&Secret::new("http://x"), "p")
        .await
        .unwrap_err();
    assert!(matches!(bad, RedisError::Url), "{bad}");
}

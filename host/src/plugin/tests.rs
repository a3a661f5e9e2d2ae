//! In-process tests of the plugin host with the test kit's fixture plugins: admission against
//! a plugin's `max_concurrent_calls`, a pooled instance's stderr kept per call, and deadlines
//! on the async call path (a looping guest yields its thread; a guest waiting in a host call
//! is cut off).

use std::time::Duration;

use super::*;
use crate::config::Config;

/// A host whose source `demo` runs the `statics` fixture with `manifest`.
fn host_with(manifest: &str) -> (tempfile::TempDir, PluginHost) {
    host_of("statics", hookwall_testkit::wasm::STATICS, manifest)
}

/// A host whose source `demo` runs fixture `wasm` as plugin `name`, with `manifest`.
fn host_of(name: &str, wasm: &str, manifest: &str) -> (tempfile::TempDir, PluginHost) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::copy(wasm, plugins.join(format!("{name}.wasm"))).unwrap();
    std::fs::write(plugins.join(format!("{name}.toml")), manifest).unwrap();
    let text = format!(
        "[storage]\npath = \"data\"\n[plugins]\ndir = \"plugins\"\n\
        [sources.demo]\npath = \"/demo\"\nverify = {{ scheme = \"none\" }}\n\
        plugins = [\"{name}\"]\nsinks = [\"out\"]\n[sinks.out]\ntype = \"stdout\"\n"
    );
    let config = Config::parse(&text, dir.path()).unwrap();
    let host = PluginHost::load(&config, None).unwrap();
    (dir, host)
}

fn event(body: serde_json::Value) -> Event {
    Event {
        id: "e".into(),
        source: "demo".into(),
        received_at_ms: 0,
        method: "POST".into(),
        path: "/demo".into(),
        query: String::new(),
        headers: Vec::new(),
        body: serde_json::to_vec(&body).unwrap(),
    }
}

#[tokio::test]
async fn admission_waits_up_to_the_deadline_then_reports_busy() {
    let (_dir, host) = host_with("[limits]\nmax_concurrent_calls = 1\ndeadline = \"200ms\"\n");
    let held = host.admit("demo").await.unwrap();
    let busy = host.admit("demo").await.err().expect("no second permit");
    assert_eq!(busy.plugin, "statics");
    assert_eq!(busy.reason, BusyReason::Concurrency { limit: 1 });

    // A permit freed within the wait is taken.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
    });
    let admitted = host.admit("demo").await.unwrap();
    release.await.unwrap();
    let outcome = host
        .run_chain(
            &admitted,
            event(serde_json::json!({})),
            &["out".into()],
            |_| true,
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, ChainOutcome::Forward(ref r) if r.len() == 1),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_pooled_instance_keeps_stderr_per_call() {
    let (_dir, host) = host_with("instances = \"pooled\"\npool_size = 1\n");
    let set = host.plugins();
    let plugin = set.get("statics").unwrap();
    for i in 0..50 {
        let result = host
            .call(plugin, &event(serde_json::json!({"stderr": 100})))
            .await;
        assert!(result.is_ok(), "call {i}: {:?}", result.err());
    }
    match host
        .call(plugin, &event(serde_json::json!({"panic": true})))
        .await
    {
        Err(CallError::Failed(CallFailure::Trap { stderr, .. })) => {
            assert!(stderr.contains("asked to panic"), "{stderr}");
            assert!(!stderr.contains("eeee"), "{stderr}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

/// A guest that never returns yields its thread at each epoch tick: on a one-thread runtime,
/// another task keeps running beside it, and the call still ends at its deadline.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_plugin_shares_its_thread_and_stops_at_its_deadline() {
    let (_dir, host) = host_of(
        "spin",
        hookwall_testkit::wasm::SPIN,
        "[limits]\ndeadline = \"300ms\"\n",
    );
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let set = host.plugins();
    let started = std::time::Instant::now();
    let result = host
        .call(set.get("spin").unwrap(), &event(serde_json::json!({})))
        .await;
    let elapsed = started.elapsed();
    ticker.abort();
    assert!(
        matches!(result, Err(CallError::Failed(CallFailure::Deadline { .. }))),
        "{result:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    // ~30 ticks of 10 ms fit in the call; with the thread held there would be none.
    let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        ticked >= 5,
        "the other task ran {ticked} times during the call"
    );
}

/// A guest sleeping through WASI waits in a host call, which no epoch tick interrupts: the call
/// is still cut off at its deadline.
#[tokio::test]
async fn a_plugin_waiting_in_a_host_call_is_cut_off_at_its_deadline() {
    let (_dir, host) = host_of(
        "sleepy",
        hookwall_testkit::wasm::SLEEPY,
        "[limits]\ndeadline = \"200ms\"\n",
    );
    let set = host.plugins();
    let plugin = set.get("sleepy").unwrap();
    let mut asleep = event(serde_json::json!(10_000));
    let started = std::time::Instant::now();
    let result = host.call(plugin, &asleep).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(CallError::Failed(CallFailure::Deadline { .. }))),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // A short sleep within the deadline completes.
    asleep.body = b"5".to_vec();
    assert!(host.call(plugin, &asleep).await.is_ok());
}

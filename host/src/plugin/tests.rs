//! In-process tests of the plugin host with the test kit's fixture plugins: admission against
//! a plugin's `max_concurrent_calls`, and a pooled instance's stderr kept per call.

use std::time::Duration;

use super::*;
use crate::config::Config;

/// A host whose source `demo` runs the `statics` fixture with `manifest`.
fn host_with(manifest: &str) -> (tempfile::TempDir, PluginHost) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::copy(
        hookwall_testkit::wasm::STATICS,
        plugins.join("statics.wasm"),
    )
    .unwrap();
    std::fs::write(plugins.join("statics.toml"), manifest).unwrap();
    let text = "[storage]\npath = \"data\"\n[plugins]\ndir = \"plugins\"\n\
        [sources.demo]\npath = \"/demo\"\nverify = { scheme = \"none\" }\n\
        plugins = [\"statics\"]\nsinks = [\"out\"]\n[sinks.out]\ntype = \"stdout\"\n";
    let config = Config::parse(text, dir.path()).unwrap();
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
        .unwrap();
    assert!(
        matches!(outcome, ChainOutcome::Forward(ref r) if r.len() == 1),
        "{outcome:?}"
    );
}

#[test]
fn a_pooled_instance_keeps_stderr_per_call() {
    let (_dir, host) = host_with("instances = \"pooled\"\npool_size = 1\n");
    let set = host.plugins();
    let plugin = set.get("statics").unwrap();
    for i in 0..50 {
        let result = host.call(plugin, &event(serde_json::json!({"stderr": 100})));
        assert!(result.is_ok(), "call {i}: {:?}", result.err());
    }
    match host.call(plugin, &event(serde_json::json!({"panic": true}))) {
        Err(CallError::Failed(CallFailure::Trap { stderr, .. })) => {
            assert!(stderr.contains("asked to panic"), "{stderr}");
            assert!(!stderr.contains("eeee"), "{stderr}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
}

//! The JavaScript and Python example plugins (`examples/js-router`, `examples/python-router`),
//! built from source with their real toolchains and run by the real binary. A machine without
//! the toolchain fails these tests, saying what to install.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookwall_testkit::{guests, read_jsonl, wait_for};
use serde_json::json;

use crate::{plugin_status, post_signed, run_config_ok, serve, workdir};

/// Runs the example router `name` (built at `wasm`, with its manifest from the example) and
/// checks its routing, its rejection, and that it runs pooled.
fn example_router_routes_and_rejects(name: &str, wasm: &Path, tag: &str) {
    let built = wasm.to_str().unwrap();
    let dir = workdir(&[(name, built)]);
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../examples/{name}/{name}.toml")),
        dir.path().join(format!("plugins/{name}.toml")),
    )
    .unwrap();
    warm_compile_cache(
        name,
        wasm,
        &dir.path().join(format!("plugins/{name}.toml")),
        dir.path(),
    );
    let extra = format!("[plugins.config.{name}]\nsink = \"other\"\n");
    let hw = serve(&dir, &[("demo", &format!("\"{name}\""))], &extra);

    for i in 0..5 {
        let r = post_signed(
            &hw,
            "demo",
            &format!("o-{i}"),
            &json!({"type": "order.created", "n": i}),
        );
        assert_eq!(r.status, 200, "{r:?}\n{}", hw.log());
    }
    let r = post_signed(&hw, "demo", "u-1", &json!({"type": "user.created"}));
    assert_eq!(r.status, 200);
    let r = post_signed(&hw, "demo", "bad", &json!({"kind": "nothing"}));
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["error"], "missing_field");
    assert_eq!(r.json()["field"], "/type");

    let (other, orders) = (
        dir.path().join("other.jsonl"),
        dir.path().join("orders.jsonl"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || read_jsonl(&other).len() == 5
            && read_jsonl(&orders).len() == 1),
        "{:?} {:?}\n{}",
        read_jsonl(&other),
        read_jsonl(&orders),
        hw.log()
    );
    let routed = &read_jsonl(&other)[0];
    assert_eq!(routed["body"]["tagged_by"], tag);
    assert_eq!(
        routed["headers"]["x-hookwall-plugin"],
        format!("{tag}-example")
    );
    // Unrouted output went to the source's sink.
    assert_eq!(read_jsonl(&orders)[0]["body"]["type"], "user.created");

    let me = plugin_status(&hw, name);
    assert_eq!(me["instances"], "pooled", "{me}");
    // The plugin's log lines reach the host's log, tagged.
    assert!(
        hw.log()
            .contains(&format!("{tag}: o-0 (order.created) -> other")),
        "{}",
        hw.log()
    );
}

/// Compiling a 12–18 MB component takes minutes in a debug build on a busy 2-core machine
/// (longer than the harness waits for start-up), so compile it once with `hookwall check` into
/// a cache kept under `target/guest-cache/warm/`, and seed the instance's wasmtime compile
/// cache with it, as an operator's restart would find it.
fn warm_compile_cache(name: &str, wasm: &Path, manifest: &Path, workdir: &Path) {
    let warm = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guest-cache/warm")
        .join(name);
    std::fs::create_dir_all(warm.join("plugins")).unwrap();
    std::fs::copy(wasm, warm.join(format!("plugins/{name}.wasm"))).unwrap();
    std::fs::copy(manifest, warm.join(format!("plugins/{name}.toml"))).unwrap();
    std::fs::write(
        warm.join("hookwall.toml"),
        format!(
            "[storage]\npath = \"data\"\n[sources.s]\npath = \"/s\"\nverify = {{ scheme = \"none\" }}\n\
             plugins = [\"{name}\"]\nsinks = [\"o\"]\n[sinks.o]\ntype = \"stdout\"\n"
        ),
    )
    .unwrap();
    run_config_ok("check", &warm.join("hookwall.toml"));
    std::fs::create_dir_all(workdir.join("data")).unwrap();
    let copy = Command::new("cp")
        .arg("-a")
        .arg(warm.join("data/compile-cache"))
        .arg(workdir.join("data/"))
        .status()
        .unwrap();
    assert!(copy.success());
}

#[test]
fn javascript_example_plugin_runs_in_the_host() {
    let wasm = guests::JS_ROUTER.build();
    example_router_routes_and_rejects("js-router", &wasm, "js");
}

#[test]
fn python_example_plugin_runs_in_the_host() {
    let wasm = guests::PYTHON_ROUTER.build();
    example_router_routes_and_rejects("python-router", &wasm, "python");
}

//! `hookwall plugin new`: a scaffolded Rust plugin builds with its own build script and runs
//! under `hookwall plugin test`, unchanged.

use std::path::Path;
use std::process::Command;

use hookwall_testkit::{plugin_test, run_ok};
use serde_json::Value;

use crate::{BIN, has_header};

#[test]
fn a_scaffolded_rust_plugin_builds_and_runs() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("tagger");
    let out = run_ok(
        Command::new(BIN)
            .args(["plugin", "new", "tagger", "--lang", "rust", "--dir"])
            .arg(&project),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("build.sh"));

    // Refuses to overwrite.
    let again = Command::new(BIN)
        .args(["plugin", "new", "tagger", "--lang", "rust", "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Its own build script, with a target dir under the repository's so reruns are cheap.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    let build = Command::new("bash")
        .arg(project.join("build.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the scaffold does not build:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let run = |event: &str, config: &[&str]| -> Value {
        std::fs::write(work.path().join("e.json"), event).unwrap();
        plugin_test(
            BIN,
            &project.join("tagger.wasm"),
            &work.path().join("e.json"),
            config,
        )
    };
    // The sample event it ships with.
    let sample = std::fs::read_to_string(project.join("event.json")).unwrap();
    let action = run(&sample, &["sink=out"]);
    assert_eq!(action["action"], "forward", "{action}");
    let delivery = &action["deliveries"][0];
    assert_eq!(delivery["sink"], "out");
    assert!(has_header(delivery, "x-plugin", "tagger"), "{delivery}");
    let action = run(r#"{"no": "type"}"#, &[]);
    assert_eq!(action["action"], "reject");
    assert_eq!(action["field"], "/type");
}

#[test]
fn js_and_python_scaffolds_are_complete() {
    for lang in ["js", "python"] {
        let work = tempfile::tempdir().unwrap();
        let project = work.path().join("p");
        run_ok(
            Command::new(BIN)
                .args(["plugin", "new", "p", "--lang", lang, "--dir"])
                .arg(&project),
        );
        let manifest = std::fs::read_to_string(project.join("p.toml")).unwrap();
        assert!(manifest.contains("instances = \"pooled\""), "{manifest}");
        assert!(project.join("wit/plugin.wit").exists());
        let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
        assert!(
            build.contains("p.wasm") && build.contains("--wit"),
            "{build}"
        );
        if lang == "js" {
            assert!(build.contains("-d http fetch-event"), "{build}");
        }
    }
}

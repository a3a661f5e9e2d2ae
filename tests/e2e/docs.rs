//! Every TOML snippet in the documentation (`README.md`, `docs/*.md`, `deploy/README.md`)
//! passes `hookwall check`, so the docs cannot drift from the binary.
//!
//! A snippet of the host config is merged into a minimal config (one source, one sink) so that a
//! fragment (a `[sinks.…]` table alone) is checked in the context it needs; the store and the
//! plugins directory are pointed at a temp dir and the repository's plugins, every `env:NAME`
//! is set, and the files a snippet names (TLS certificates, a JSON schema) are made. A snippet
//! fenced as ```` ```toml manifest ```` is a plugin manifest: it is checked as
//! `PLUGINS/router.toml` beside the bundled `router` plugin.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::BIN;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// (file, line, info string, text) of every ```` ```toml ```` block of `path`; indented
/// fences (inside a list item) are unindented.
fn toml_blocks(path: &Path) -> Vec<(String, usize, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize, Vec<String>)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```toml") {
                    open = Some((n + 1, info.trim().to_string(), indent, Vec::new()));
                }
            }
            Some((start, info, indent, body)) => {
                if trimmed.starts_with("```") {
                    out.push((
                        path.display().to_string(),
                        *start,
                        info.clone(),
                        body.join("\n"),
                    ));
                    open = None;
                } else {
                    body.push(line.get(*indent..).unwrap_or("").to_string());
                }
            }
        }
    }
    out
}

fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("deploy/README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// `base` with `over` merged in (tables recursively; anything else replaced).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A value for `env:NAME`, by what the name says it is.
fn env_value(name: &str) -> String {
    if name.contains("REDIS") {
        "redis://127.0.0.1:1/0".into()
    } else if name.contains("NATS") {
        "nats://127.0.0.1:1".into()
    } else if name.contains("AMQP") {
        "amqp://guest:guest@127.0.0.1:1/%2f".into()
    } else if name.contains("URL") {
        "http://127.0.0.1:1/hook".into()
    } else if name.contains("WEBHOOK_SECRET") || name.contains("WHSEC") {
        "whsec_Y2hhbmdlLW1lLXRvby1wbGVhc2U=".into()
    } else {
        "doc-test-secret".into()
    }
}

/// Makes the files `config` names, relative to `dir`: TLS material and JSON schemas.
fn make_files(config: &toml::Table, dir: &Path) {
    if let Some(tls) = config
        .get("server")
        .and_then(|s| s.get("tls"))
        .and_then(|t| t.as_table())
    {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        for (key, pem) in [
            ("cert", cert.cert.pem()),
            ("key", cert.signing_key.serialize_pem()),
            ("client_ca", cert.cert.pem()),
        ] {
            if let Some(path) = tls.get(key).and_then(|p| p.as_str()) {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, pem).unwrap();
            }
        }
    }
    if let Some(plugins) = config
        .get("plugins")
        .and_then(|p| p.get("config"))
        .and_then(|c| c.as_table())
    {
        for values in plugins.values() {
            if let Some(path) = values.get("schema_file").and_then(|p| p.as_str()) {
                let path = dir.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, r#"{"type": "object"}"#).unwrap();
            }
        }
    }
}

/// The minimal config a snippet is merged into.
fn base(dir: &Path, plugins: &Path) -> toml::Table {
    toml::from_str(&format!(
        r#"
[storage]
path = "{data}"

[plugins]
dir = "{plugins}"

[sources.doc]
path = "/hooks/doc"
verify = {{ scheme = "hmac", header = "X-Signature", secrets = ["s"] }}
sinks = ["doc"]

[sinks.doc]
type = "stdout"
"#,
        data = dir.join("data").display(),
        plugins = plugins.display()
    ))
    .unwrap()
}

/// `hookwall check` on `snippet` merged into [`base`]; the error names the snippet.
fn check(place: &str, snippet: &str, manifest: bool, database: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let repo_plugins = root().join("plugins");
    let plugins = if manifest {
        // The bundled router beside the manifest under test.
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::copy(
            repo_plugins.join("router.wasm"),
            plugins.join("router.wasm"),
        )
        .unwrap();
        std::fs::write(plugins.join("router.toml"), snippet).unwrap();
        plugins
    } else {
        repo_plugins
    };
    let mut config = base(dir.path(), &plugins);
    if manifest {
        // The sources the manifest attaches to.
        let parsed: toml::Table =
            toml::from_str(snippet).unwrap_or_else(|e| panic!("{place}: not TOML: {e}\n{snippet}"));
        for source in parsed
            .get("sources")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            let name = source.as_str().unwrap();
            let extra: toml::Table = toml::from_str(&format!(
                "[sources.{name}]\npath = \"/hooks/{name}\"\nverify = {{ scheme = \"hmac\", header = \"X-Signature\", secrets = [\"s\"] }}\nsinks = [\"doc\"]\n"
            ))
            .unwrap();
            merge(&mut config, extra);
        }
    } else {
        let parsed: toml::Table =
            toml::from_str(snippet).unwrap_or_else(|e| panic!("{place}: not TOML: {e}\n{snippet}"));
        merge(&mut config, parsed);
        // Where this test keeps the store and finds the plugins, whatever the snippet says.
        let forced: toml::Table = base(dir.path(), &plugins);
        for key in ["storage", "plugins"] {
            let (path_key, value) = match key {
                "storage" => ("path", forced["storage"]["path"].clone()),
                _ => ("dir", forced["plugins"]["dir"].clone()),
            };
            config
                .get_mut(key)
                .and_then(|t| t.as_table_mut())
                .unwrap()
                .insert(path_key.into(), value);
        }
        // A sink a source names but the snippet leaves out: a stand-in.
        let sources = config["sources"].as_table().unwrap().clone();
        for source in sources.values() {
            for sink in source
                .get("sinks")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
            {
                let name = sink.as_str().unwrap();
                let sinks = config["sinks"].as_table_mut().unwrap();
                sinks.entry(name).or_insert_with(|| {
                    toml::Value::Table(toml::from_str("type = \"stdout\"").unwrap())
                });
            }
        }
        for (_, source) in config["sources"].as_table_mut().unwrap().iter_mut() {
            let source = source.as_table_mut().unwrap();
            // A fragment that shows only a source's plugins gets the rest of a source.
            let name_path = toml::Value::String("/hooks/fragment".into());
            source.entry("path").or_insert(name_path);
            source.entry("verify").or_insert_with(|| {
                toml::Value::Table(
                    toml::from_str(
                        "scheme = \"hmac\"\nheader = \"X-Signature\"\nsecrets = [\"s\"]",
                    )
                    .unwrap(),
                )
            });
            source
                .entry("sinks")
                .or_insert_with(|| toml::Value::Array(vec!["doc".into()]));
        }
    }
    make_files(&config, dir.path());
    let text = toml::to_string(&config).unwrap();
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, &text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"]).arg(&path);
    for name in text
        .split("\"env:")
        .skip(1)
        .filter_map(|r| r.split('"').next())
    {
        match (name, database) {
            ("DATABASE_URL", Some(url)) => cmd.env(name, url),
            _ => cmd.env(name, env_value(name)),
        };
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{place}: the snippet does not pass `hookwall check`:\n{}\n--- snippet ---\n{snippet}\n--- checked ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_toml_snippet_in_the_docs_passes_check() {
    let mut checked = 0;
    // A snippet of the shared store is checked against a real database (`hookwall check`
    // connects and reads its schema): one private server, started for the first such snippet.
    let mut database: Option<hookwall_testkit::PostgresServer> = None;
    for file in doc_files() {
        for (file, line, info, text) in toml_blocks(&file) {
            let place = format!("{file}:{line}");
            if text.contains("backend = \"postgres\"") && database.is_none() {
                database = Some(hookwall_testkit::PostgresServer::start());
            }
            let url = database.as_ref().map(|d| d.url());
            match info.as_str() {
                "" => check(&place, &text, false, url.as_deref()),
                "manifest" => check(&place, &text, true, url.as_deref()),
                other => panic!("{place}: unknown toml block kind {other:?}"),
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "only {checked} snippets found");
}

/// The shell commands of the README's quick start, in order (comments and output lines
/// dropped).
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("## Quick start").expect("a quick start");
    let end = readme[start..]
        .find("\n## ")
        .map_or(readme.len(), |e| start + e);
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme[start..end].lines() {
        if line.starts_with("```sh") {
            in_sh = true;
        } else if line.starts_with("```") {
            in_sh = false;
        } else if in_sh && !line.trim().is_empty() && !line.starts_with('#') {
            out.push(line.trim().to_string());
        }
    }
    out
}

/// Every command of the README's quick start, run as written from a copy of the repository's
/// `examples/` and `plugins/` (the binary this build made standing in for `cargo run --release
/// -p hookwall --`; the example's ports moved to free ones): the server starts, `send` is
/// answered `200 … accepted`, the event is in `data/orders.jsonl`, and the admin API shows it.
/// The set-up (`rustup target add`) and the test command (`./.ci/run`, which runs this test)
/// are the two commands not run here; they are named so that a new one fails this test.
#[test]
fn the_quick_start_commands_work_as_written() {
    let commands = quick_start_commands();
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &str| {
        let to = dir.path().join(from);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(root().join(from), &to).unwrap();
    };
    copy("examples/events/order.json");
    copy("plugins/router.wasm");
    let (web, admin) = (hookwall_testkit::free_port(), hookwall_testkit::free_port());
    let config = std::fs::read_to_string(root().join("examples/hookwall.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{web}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    std::fs::write(dir.path().join("examples/hookwall.toml"), config).unwrap();

    const CARGO_RUN: &str = "cargo run --release -p hookwall -- ";
    let mut server: Option<crate::deploy::Running> = None;
    let mut ran = 0;
    for command in &commands {
        if command == "rustup target add wasm32-wasip2" || command == "./.ci/run" {
            continue;
        }
        if let Some(args) = command.strip_prefix(CARGO_RUN) {
            let args: Vec<&str> = args.split_whitespace().collect();
            if args[0] == "serve" {
                let child = Command::new(BIN)
                    .args(&args)
                    .current_dir(dir.path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                server = Some(crate::deploy::Running(child));
                let addr: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
                assert!(hookwall_testkit::wait_for(
                    std::time::Duration::from_secs(60),
                    || hookwall_testkit::http(addr, "GET", "/healthz", &[], b"")
                        .is_ok_and(|r| r.status == 200)
                ));
            } else {
                let out = Command::new(BIN)
                    .args(&args)
                    .current_dir(dir.path())
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "{command}: {stdout}");
                assert!(
                    stdout.starts_with("200 ") && stdout.contains("\"accepted\""),
                    "{command}: {stdout}"
                );
            }
        } else if let Some(file) = command.strip_prefix("cat ") {
            let path = dir.path().join(file);
            assert!(
                hookwall_testkit::wait_for(std::time::Duration::from_secs(10), || {
                    std::fs::read_to_string(&path).is_ok_and(|t| t.contains("order.created"))
                }),
                "{command}: no order.created event in {}",
                path.display()
            );
        } else {
            panic!("the quick start shows a command this test does not run: {command}");
        }
        ran += 1;
    }
    assert!(server.is_some(), "the quick start starts the server");
    assert_eq!(ran, 3, "{commands:?}");
}

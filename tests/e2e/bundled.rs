//! The bundled plugins (`plugins/`), each configured from the host config and run by the real
//! binary on signed events. The plugins are built from source by the test kit, so a stale
//! committed `.wasm` cannot hide a bug (and `bundled_plugins_are_committed_up_to_date` checks
//! the committed copies).

use std::path::Path;
use std::time::Duration;

use hookwall_testkit::{Hookwall, Reply, read_jsonl, wait_for, wasm};
use serde_json::{Value, json};

use crate::{config, post_signed, run_config, send_signed, serve, workdir, write_config};

/// Waits until `n` deliveries are in the work dir's `file`, and returns them.
fn delivered(hw: &Hookwall, dir: &Path, file: &str, n: usize) -> Vec<Value> {
    let path = dir.join(file);
    assert!(
        wait_for(Duration::from_secs(10), || read_jsonl(&path).len() >= n),
        "expected {n} deliveries in {file}, got {:?}\n{}",
        read_jsonl(&path),
        hw.log()
    );
    read_jsonl(&path)
}

/// Writes the JSON schema `versions/VERSION.json` in the work dir `dir`.
fn write_version(dir: &Path, version: &str, schema: &Value) {
    let path = dir.join(format!("versions/{version}.json"));
    std::fs::write(path, schema.to_string()).unwrap();
}

/// Sends `send()` until its answer passes `check` (at most 10 s); asserts that it did,
/// saying `what` was not picked up.
fn until_answer(
    hw: &Hookwall,
    what: &str,
    mut send: impl FnMut() -> Reply,
    check: impl Fn(&Reply) -> bool,
) {
    assert!(
        wait_for(Duration::from_secs(10), || check(&send())),
        "{what} was not picked up\n{}",
        hw.log()
    );
}

#[test]
fn json_schema_rejects_with_422_naming_the_failing_field() {
    let dir = workdir(&[("json-schema", wasm::JSON_SCHEMA)]);
    // `schemas/order.json` is a symlink to a versioned file, as deployments (and Kubernetes
    // volumes) do it; the reload steps below edit the target and then swap the link.
    std::fs::create_dir(dir.path().join("schemas")).unwrap();
    std::fs::create_dir(dir.path().join("versions")).unwrap();
    std::os::unix::fs::symlink("../versions/v1.json", dir.path().join("schemas/order.json"))
        .unwrap();
    let v1 = json!({
        "type": "object",
        "required": ["id", "qty"],
        "properties": {
            "id": {"type": "string"},
            "qty": {"type": "integer", "minimum": 1},
            "items": {"type": "array", "items": {
                "type": "object",
                "required": ["sku"],
                "properties": {"price": {"type": "number"}}
            }}
        }
    });
    write_version(dir.path(), "v1", &v1);
    let extra = "[plugins.config.json-schema]\nschema_file = \"schemas/order.json\"\n";
    let hw = serve(&dir, &[("demo", "\"json-schema\"")], extra);

    let r = post_signed(&hw, "demo", "ok", &json!({"id": "o-1", "qty": 2}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        delivered(&hw, dir.path(), "orders.jsonl", 1)[0]["body"]["qty"],
        2
    );

    let r = post_signed(&hw, "demo", "no-qty", &json!({"id": "o-2"}));
    assert_eq!(r.status, 422, "{r:?}");
    let err = r.json();
    assert_eq!(err["error"], "schema_violation");
    assert_eq!(err["field"], "/qty");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("\"qty\" is a required property"),
        "{err}"
    );

    let r = post_signed(
        &hw,
        "demo",
        "bad-price",
        &json!({"id": "o-3", "qty": 1, "items": [{"sku": "a", "price": 1}, {"sku": "b", "price": "cheap"}]}),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["field"], "/items/1/price", "{}", r.json());

    let r = post_signed(&hw, "demo", "zero", &json!({"id": "o-4", "qty": 0}));
    assert_eq!(r.json()["field"], "/qty");
    // Nothing rejected was stored.
    assert_eq!(hw.event("no-qty").status, 404);

    // Editing the schema file (here, the link's target in place) is a hot reload: `customer`
    // becomes required.
    let customer = json!({"type": "object", "required": ["id", "qty", "customer"]});
    write_version(dir.path(), "v1", &customer);
    let mut n = 0;
    let mut answer = || {
        n += 1;
        post_signed(
            &hw,
            "demo",
            &format!("after-edit-{n}"),
            &json!({"id": "o-5", "qty": 1}),
        )
    };
    let field_is = |want: &'static str| move |r: &Reply| r.json()["field"] == want;
    until_answer(&hw, "the edited schema", &mut answer, |r| r.status == 422);
    let r = answer();
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["field"], "/customer");
    // Swapping the link to a new version (atomically, by renaming a new link over it) too.
    let note = json!({"type": "object", "required": ["id", "qty", "note"]});
    write_version(dir.path(), "v2", &note);
    std::os::unix::fs::symlink("../versions/v2.json", dir.path().join("schemas/.next")).unwrap();
    std::fs::rename(
        dir.path().join("schemas/.next"),
        dir.path().join("schemas/order.json"),
    )
    .unwrap();
    until_answer(&hw, "the swapped schema", &mut answer, field_is("/note"));
    // An edit that makes the file unreadable keeps the loaded schema.
    std::fs::remove_file(dir.path().join("schemas/order.json")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || hw
            .log()
            .contains("config `schema_file`: cannot read")),
        "the failed reload was not logged\n{}",
        hw.log()
    );
    assert_eq!(answer().json()["field"], "/note");
    // Both directories deleted and made anew (their watches die with them): polling still
    // sees the new schema, and then an edit of it.
    let (schemas, versions) = (dir.path().join("schemas"), dir.path().join("versions"));
    std::fs::remove_dir_all(&schemas).unwrap();
    std::fs::remove_dir_all(&versions).unwrap();
    std::fs::create_dir(&schemas).unwrap();
    std::fs::create_dir(&versions).unwrap();
    let v3 = versions.join("v3.json");
    let requiring = |field: &str| json!({"type": "object", "required": [field]}).to_string();
    std::fs::write(&v3, requiring("ref")).unwrap();
    std::os::unix::fs::symlink("../versions/v3.json", schemas.join("order.json")).unwrap();
    until_answer(&hw, "the recreated schema", &mut answer, field_is("/ref"));
    std::fs::write(&v3, requiring("tag")).unwrap();
    let what = "the edit in the recreated directory";
    until_answer(&hw, what, &mut answer, field_is("/tag"));
}

#[test]
fn json_schema_without_a_readable_schema_file_refuses_to_start() {
    let dir = workdir(&[("json-schema", wasm::JSON_SCHEMA)]);
    let extra = "[plugins.config.json-schema]\nschema_file = \"schemas/missing.json\"\n";
    let text = config(&[("demo", "\"json-schema\"")], extra);
    let path = write_config(dir.path(), &text, "127.0.0.1:0", "127.0.0.1:0");
    let out = run_config("check", &path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config `schema_file`") && stderr.contains("missing.json"),
        "{stderr}"
    );
}

#[test]
fn filter_drops_matching_events_and_passes_the_rest() {
    let dir = workdir(&[("filter", wasm::FILTER)]);
    let extra = r#"
[plugins.config.filter]
rules = [
  { name = "ping", json = "/type", equals = "ping" },
  { name = "test-mode", json = "/livemode", equals = "false" },
]
"#;
    let hw = serve(&dir, &[("demo", "\"filter\"")], extra);

    let r = post_signed(&hw, "demo", "p", &json!({"type": "ping"}));
    assert_eq!(r.json(), json!({"status": "dropped", "id": "p"}));
    let r = post_signed(
        &hw,
        "demo",
        "t",
        &json!({"type": "order.paid", "livemode": false}),
    );
    assert_eq!(r.json()["status"], "dropped");
    let r = post_signed(
        &hw,
        "demo",
        "k",
        &json!({"type": "order.paid", "livemode": true}),
    );
    assert_eq!(r.json(), json!({"status": "accepted", "id": "k"}));

    let lines = delivered(&hw, dir.path(), "orders.jsonl", 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        read_jsonl(&dir.path().join("orders.jsonl")).len(),
        1,
        "only the kept event: {lines:?}"
    );
    assert_eq!(lines[0]["id"], "k");
}

#[test]
fn redact_masks_cards_emails_and_pointers_before_the_sink() {
    let dir = workdir(&[("redact", wasm::REDACT)]);
    let extra = r#"
[plugins.config.redact]
remove = ["/customer/ssn"]
mask = ["/customer/phone"]
detect = ["card", "email"]
headers = ["x-internal"]
"#;
    let hw = serve(&dir, &[("demo", "\"redact\"")], extra);
    let r = post_signed(
        &hw,
        "demo",
        "r1",
        &json!({
            "customer": {"ssn": "123-45-6789", "phone": "+1 555 0100", "email": "jane.doe@example.com"},
            "payment": {"card": "4242 4242 4242 4242", "note": "refund to 4111-1111-1111-1111 asap"},
            "order": "12345",
        }),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let body = &delivered(&hw, dir.path(), "orders.jsonl", 1)[0]["body"];
    assert_eq!(
        *body,
        json!({
            "customer": {"phone": "[REDACTED]", "email": "***@example.com"},
            "payment": {"card": "**** **** **** 4242", "note": "refund to ****-****-****-1111 asap"},
            "order": "12345",
        })
    );
    let raw = std::fs::read_to_string(dir.path().join("orders.jsonl")).unwrap();
    assert!(
        !raw.contains("4242 4242") && !raw.contains("jane.doe") && !raw.contains("6789"),
        "{raw}"
    );
}

#[test]
fn cloudevents_wraps_events_in_a_structured_envelope() {
    let dir = workdir(&[("cloudevents", wasm::CLOUDEVENTS)]);
    let extra = r#"
[plugins.config.cloudevents]
source = "https://shop.example.com"
type_from = { json = "/type" }
type_prefix = "com.example.shop."
subject_from = { json = "/order/id" }
"#;
    let hw = serve(&dir, &[("demo", "\"cloudevents\"")], extra);
    let before = std::time::SystemTime::now();
    let r = post_signed(
        &hw,
        "demo",
        "ce-1",
        &json!({"type": "order.paid", "order": {"id": "o-9"}}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let line = &delivered(&hw, dir.path(), "orders.jsonl", 1)[0];
    assert_eq!(
        line["headers"]["content-type"],
        "application/cloudevents+json"
    );
    let ce = &line["body"];
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], "ce-1");
    assert_eq!(ce["source"], "https://shop.example.com");
    assert_eq!(ce["type"], "com.example.shop.order.paid");
    assert_eq!(ce["subject"], "o-9");
    assert_eq!(ce["datacontenttype"], "application/json");
    assert_eq!(
        ce["data"],
        json!({"type": "order.paid", "order": {"id": "o-9"}})
    );
    let time = ce["time"].as_str().unwrap();
    let year = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 31_556_952
        + 1970;
    assert!(
        time.starts_with(&year.to_string()) && time.ends_with('Z'),
        "{time}"
    );

    // No type anywhere: a structured 422 naming the field.
    let r = post_signed(&hw, "demo", "ce-2", &json!({"order": {"id": "o-10"}}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "missing_type");
    assert_eq!(r.json()["field"], "/type");
}

/// The kit composes: filter → redact → cloudevents → router, with the router's rules (the
/// shared rule crate) reading the envelope the previous plugin produced.
#[test]
fn bundled_plugins_chain() {
    let dir = workdir(&[
        ("filter", wasm::FILTER),
        ("redact", wasm::REDACT),
        ("cloudevents", wasm::CLOUDEVENTS),
        ("router", wasm::ROUTER),
    ]);
    let extra = r#"
[plugins.config.filter]
rules = [{ name = "ping", header = "x-kind", equals = "ping" }]
[plugins.config.redact]
detect = ["email"]
[plugins.config.cloudevents]
type_from = { header = "x-kind" }
[plugins.config.router]
rules = [{ name = "orders", json = "/type", prefix = "order.", sink = "orders" }]
default = "other"
"#;
    let chain = "\"filter\", \"redact\", \"cloudevents\", \"router\"";
    let hw = serve(&dir, &[("demo", chain)], extra);
    let post = |id: &str, kind: &str| {
        let body = serde_json::to_vec(&json!({"who": "a@example.com"})).unwrap();
        send_signed(hw.addr, "demo", id, &body, &[("X-Kind", kind)]).expect("request to hookwall")
    };
    assert_eq!(post("1", "ping").json()["status"], "dropped");
    assert_eq!(post("2", "order.paid").json()["status"], "accepted");
    assert_eq!(post("3", "user.created").json()["status"], "accepted");
    let orders = delivered(&hw, dir.path(), "orders.jsonl", 1);
    let other = delivered(&hw, dir.path(), "other.jsonl", 1);
    assert_eq!(orders[0]["body"]["type"], "order.paid");
    assert_eq!(orders[0]["body"]["data"]["who"], "***@example.com");
    assert_eq!(orders[0]["headers"]["x-hookwall-route"], "orders");
    assert_eq!(other[0]["body"]["type"], "user.created");
    assert_eq!(other[0]["headers"]["x-hookwall-route"], "default");
}

/// `plugins/NAME.wasm` is what users drop in: it must be built from the current source.
/// (`plugins/build.sh` records the hash of the sources it built from; comparing bytes would
/// depend on the build machine's paths.)
#[test]
fn bundled_plugins_are_committed_up_to_date() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = hookwall_testkit::run_ok(
        std::process::Command::new("bash")
            .arg(root.join("plugins/build.sh"))
            .arg("--sources-hash"),
    );
    let recorded =
        std::fs::read_to_string(root.join("plugins/built-from.sha256")).unwrap_or_default();
    assert_eq!(
        recorded.trim(),
        String::from_utf8_lossy(&out.stdout).trim(),
        "plugins/*.wasm were not rebuilt after their sources changed: run plugins/build.sh and commit"
    );
    for name in ["router", "filter", "redact", "cloudevents", "json-schema"] {
        assert!(
            root.join(format!("plugins/{name}.wasm")).exists(),
            "plugins/{name}.wasm is missing"
        );
    }
}

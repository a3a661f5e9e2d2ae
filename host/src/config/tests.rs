use super::*;

/// Every option the config format has, so a change to the schema that breaks a documented key
/// fails here first.
const OMNIBUS: &str = r#"
[server]
listen = "127.0.0.1:18080"
max_body_bytes = 65536
shutdown_grace = "5s"
trusted_proxies = ["10.0.0.0/8"]
overload = { max_pending = 50000, max_commit_latency = "2s" }

[storage]
path = "state"
redis = "env:HOOKWALL_REDIS_URL"
redis_prefix = "hw-test"
fsync = true

[plugins]
dir = "wasm"
max_memory_bytes = 33554432
deadline = "20ms"
max_concurrent_calls = 8

[plugins.config.router]
default = "archive"
rules = [{ name = "orders", json = "/type", prefix = "order.", sink = "orders" }]

[admin]
listen = "127.0.0.1:19090"
token = "env:HOOKWALL_ADMIN_TOKEN"
allowed_hosts = ["hookwall.internal:9090", "ops.example"]

[telemetry.otlp]
endpoint = "https://otel.example:4318"
headers = { authorization = "env:OTLP_AUTHORIZATION" }
sampling = 0.25
service_name = "edge"
ca_file = "otel-ca.pem"
timeout = "3s"

[sources.demo]
path = "/hooks/demo"
verify = { scheme = "hmac", algorithm = "sha512", header = "X-Signature", prefix = "sha512=", encoding = "base64", secrets = ["old", "new"], id_header = "X-Event-Id" }
plugins = ["router"]
sinks = ["archive"]
on_plugin_error = "reject"
max_body_bytes = 1024
dedupe = { key = "scheme", ttl = "24h", on_redis_error = "fail_closed" }
rate_limit = { rate = "100/s", burst = 200, by = "client_ip", on_redis_error = "fail_closed" }

[sources.stripe]
path = "/hooks/stripe"
verify = { scheme = "stripe", secrets = ["whsec_x"], tolerance = "10m", explain = true, allow_ips = ["192.0.2.0/24", "2001:db8::/32"] }
sinks = ["orders"]
respond = { status = 202, body = "ok", content_type = "text/plain" }

[sources.open]
path = "/hooks/open"
verify = { scheme = "none" }
sinks = ["orders"]
dedupe = { key = "json:/data/id" }
rate_limit = { rate = "30/m" }

[sinks.archive]
type = "file"
path = "out/events.jsonl"
retry = { max_attempts = 3, initial = "100ms", max_delay = "1s" }

[sinks.orders]
type = "stdout"
paused = true

[sinks.bus]
type = "nats"
url = "env:HOOKWALL_NATS_URL"
subject = "hookwall.events"
batch = { max_events = 100, max_bytes = 1048576, max_wait = "200ms" }
"#;

#[test]
fn omnibus_parses_and_resolves_paths() {
    let c = Config::parse(OMNIBUS, Path::new("/etc/hookwall")).unwrap();
    assert_eq!(c.server.listen.port(), 18080);
    assert_eq!(c.storage.path, Path::new("/etc/hookwall/state"));
    assert_eq!(c.plugins.dir, Path::new("/etc/hookwall/wasm"));
    assert_eq!(c.plugins.deadline, Duration::from_millis(20));
    assert_eq!(c.plugins.max_concurrent_calls, Some(8));
    let SinkKind::File(f) = &c.sinks["archive"].kind else {
        panic!("archive is a file sink")
    };
    assert_eq!(f.path, Path::new("/etc/hookwall/out/events.jsonl"));
    assert_eq!(c.sinks["archive"].retry.max_attempts, 3);
    let bus = &c.sinks["bus"];
    assert!(matches!(&bus.kind, SinkKind::Nats(n) if n.subject == "hookwall.events"));
    let batch = bus.batch.as_ref().unwrap();
    assert_eq!(batch.max_wait, Duration::from_millis(200));
    let v = &c.sources["demo"].verify;
    assert_eq!(v.scheme, SchemeName::Hmac);
    assert_eq!(v.algorithm, Some(HmacAlgorithm::Sha512));
    assert_eq!(v.encoding, Some(SignatureEncoding::Base64));
    assert_eq!(c.server.trusted_proxies.len(), 1);
    let stripe = &c.sources["stripe"];
    assert_eq!(stripe.verify.scheme, SchemeName::Stripe);
    assert_eq!(stripe.verify.allow_ips.len(), 2);
    assert_eq!(stripe.respond.as_ref().map(|r| r.status), Some(202));
    assert_eq!(c.sources["demo"].on_plugin_error, OnPluginError::Reject);
    let values = c.plugins.values_for("router");
    assert_eq!(values["default"], "archive");
    assert!(values["rules"].starts_with("[{"), "{}", values["rules"]);

    assert_eq!(c.server.overload.max_pending, Some(50000));
    assert_eq!(
        c.server.overload.max_commit_latency,
        Some(Duration::from_secs(2))
    );
    assert!(c.storage.redis.is_some());
    assert_eq!(c.storage.redis_prefix, "hw-test");
    let demo = c.sources["demo"].effective_dedupe().unwrap();
    assert_eq!(demo.key, Some(DedupeKey::Scheme));
    assert_eq!(demo.ttl, Duration::from_secs(24 * 3600));
    assert_eq!(demo.on_redis_error, OnRedisError::FailClosed);
    let limit = c.sources["demo"].rate_limit.as_ref().unwrap();
    assert_eq!(
        (limit.rate.count, limit.burst(), limit.by),
        (100, 200, LimitBy::ClientIp)
    );
    let open = c.sources["open"].effective_dedupe().unwrap();
    assert_eq!(open.key, Some(DedupeKey::Json("/data/id".into())));
    assert_eq!(open.ttl, DEFAULT_DEDUPE_TTL);
    let limit = c.sources["open"].rate_limit.as_ref().unwrap();
    assert_eq!(limit.rate.interval(), Duration::from_secs(2));
    assert_eq!((limit.burst(), limit.by), (30, LimitBy::Source));
    assert_eq!(limit.on_redis_error, OnRedisError::FailOpen);

    let otlp = c.telemetry.otlp.as_ref().unwrap();
    assert_eq!(otlp.traces_url(), "https://otel.example:4318/v1/traces");
    assert_eq!((otlp.sampling, otlp.service_name.as_str()), (0.25, "edge"));
    assert_eq!(
        otlp.ca_file.as_deref(),
        Some(Path::new("/etc/hookwall/otel-ca.pem"))
    );
    assert_eq!(otlp.timeout, Duration::from_secs(3));
    assert!(otlp.headers.contains_key("authorization"));
}

#[test]
fn the_otlp_endpoint_gets_the_traces_path_only_when_it_has_none() {
    let url = |endpoint: &str| {
        let text = format!(
            "[telemetry.otlp]\nendpoint = \"{endpoint}\"\n[sources.a]\npath = \"/a\"\n\
             verify = {{ scheme = \"none\" }}\nsinks = [\"s\"]\n[sinks.s]\ntype = \"stdout\"\n"
        );
        let c = Config::parse(&text, Path::new("/")).unwrap();
        c.telemetry.otlp.unwrap().traces_url()
    };
    assert_eq!(
        url("http://127.0.0.1:4318"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        url("http://127.0.0.1:4318/"),
        "http://127.0.0.1:4318/v1/traces"
    );
    assert_eq!(
        url("https://api.example/otlp/v1/traces"),
        "https://api.example/otlp/v1/traces"
    );
}

#[test]
fn bad_intake_settings_are_named() {
    let err = parse_err(&OMNIBUS.replace("rate = \"30/m\"", "rate = \"30/d\""));
    assert!(err.contains("30/d") && err.contains("COUNT/s"), "{err}");
    assert!(err.contains("line "), "{err}");

    let err = parse_err(&OMNIBUS.replace("json:/data/id", "json:data"));
    assert!(err.contains("JSON pointer"), "{err}");

    let err = parse_err(&OMNIBUS.replace("json:/data/id", "cookie:x"));
    assert!(err.contains("unknown dedupe key"), "{err}");

    // `open` verifies nothing, so it has no scheme event id to dedupe on.
    let err = parse_err(&OMNIBUS.replace("json:/data/id", "scheme"));
    assert!(err.contains("sources.open.dedupe.key"), "{err}");

    let err = parse_err(&OMNIBUS.replace("burst = 200", "burst = 0"));
    assert!(err.contains("sources.demo.rate_limit.burst"), "{err}");

    let err = parse_err(&OMNIBUS.replace("by = \"client_ip\"", "by = \"ip\""));
    assert!(err.contains("ip"), "{err}");

    let err = parse_err(&OMNIBUS.replace("ttl = \"24h\"", "ttl = \"0s\""));
    assert!(err.contains("sources.demo.dedupe.ttl"), "{err}");

    let err = parse_err(&OMNIBUS.replace("max_pending = 50000", "max_pending = 0"));
    assert!(err.contains("server.overload.max_pending"), "{err}");

    let err = parse_err(&OMNIBUS.replace("max_concurrent_calls = 8", "max_concurrent_calls = 0"));
    assert!(err.contains("plugins.max_concurrent_calls"), "{err}");

    let err = parse_err(&OMNIBUS.replace("fail_closed\" }\nrate", "fail_shut\" }\nrate"));
    assert!(err.contains("fail_shut"), "{err}");
}

#[test]
fn admin_allowed_hosts_are_bare_names() {
    let c = Config::parse(OMNIBUS, Path::new(".")).unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(
        admin.allowed_hosts,
        ["hookwall.internal:9090", "ops.example"]
    );
    for bad in [
        "http://ops.example",
        "ops.example/x",
        "u@ops.example",
        "ops.example:x",
        "",
    ] {
        let err = parse_err(&OMNIBUS.replace("\"ops.example\"]", &format!("{bad:?}]")));
        assert!(err.contains("admin.allowed_hosts"), "{bad}: {err}");
    }
}

fn parse_err(text: &str) -> String {
    Config::parse(text, Path::new(".")).unwrap_err().to_string()
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let typo = OMNIBUS.replace("max_body_bytes = 65536", "max_body_byte = 65536");
    let err = parse_err(&typo);
    assert!(err.contains("max_body_byte"), "{err}");
    assert!(err.contains("line 4"), "{err}");

    let typo = OMNIBUS.replace("id_header", "id_heder");
    let err = parse_err(&typo);
    assert!(err.contains("id_heder"), "{err}");
    // The offending line holds literal secrets; the message must not quote it.
    assert!(!err.contains("\"old\""), "{err}");
}

#[test]
fn references_are_checked() {
    let err = parse_err(&OMNIBUS.replace("sinks = [\"orders\"]", "sinks = [\"nope\"]"));
    assert!(
        err.contains("sources.open.sinks") && err.contains("nope"),
        "{err}"
    );

    let err = parse_err(&OMNIBUS.replace("path = \"/hooks/open\"", "path = \"/hooks/demo\""));
    assert!(err.contains("is used by another source"), "{err}");

    let err = parse_err(&OMNIBUS.replace("secrets = [\"old\", \"new\"]", "secrets = []"));
    assert!(err.contains("sources.demo.verify.secrets"), "{err}");
}

#[test]
fn verification_must_be_explicit() {
    let err =
        parse_err("[sources.a]\npath = \"/a\"\nsinks = [\"s\"]\n[sinks.s]\ntype = \"stdout\"\n");
    assert!(err.contains("verify"), "{err}");
}

#[test]
fn respond_is_validated() {
    let err = parse_err(&OMNIBUS.replace("status = 202", "status = 201"));
    assert!(err.contains("sources.stripe.respond.status"), "{err}");
    let err = parse_err(&OMNIBUS.replace("status = 202", "status = 204"));
    assert!(err.contains("sources.stripe.respond.body"), "{err}");
    let err = parse_err(&OMNIBUS.replace("tolerance = \"10m\"", "encoding = \"hex\""));
    assert!(err.contains("sources.stripe.verify.encoding"), "{err}");
}

//! Chain semantics with fake plugins (closures over the input event), no wasm: what goes to
//! the next plugin, what is final, and how a chain ends.

use std::cell::RefCell;
use std::collections::HashMap;

use futures_util::FutureExt;

use super::*;
use crate::plugin::BusyReason;
use crate::plugin::action::{Delivery, Rejection, Reply};

/// A fake plugin: its action on an input.
type Fake<'a> = Box<dyn Fn(&Event) -> Result<Action, CallError> + 'a>;

/// Fake plugins by name, with a record of every call as `(plugin, input body)`.
struct Fakes<'a> {
    plugins: HashMap<&'static str, Fake<'a>>,
    calls: RefCell<Vec<(String, String)>>,
}

impl<'a> Fakes<'a> {
    fn new(plugins: Vec<(&'static str, Fake<'a>)>) -> Fakes<'a> {
        Fakes {
            plugins: plugins.into_iter().collect(),
            calls: RefCell::new(Vec::new()),
        }
    }

    /// Runs the chain `names` on an event with `body`; the sinks `a`, `b` and the `defaults`
    /// exist.
    fn run(
        &self,
        names: &[&str],
        body: &str,
        defaults: &[&str],
    ) -> Result<ChainOutcome, PluginBusy> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let defaults: Vec<String> = defaults.iter().map(|n| n.to_string()).collect();
        let exists = |sink: &str| ["a", "b"].contains(&sink) || defaults.iter().any(|d| d == sink);
        let chain = run(&names, event(body), &defaults, exists, self);
        // Fake plugins never wait: the chain is done at its first poll.
        chain.now_or_never().expect("fake plugins never wait")
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.borrow().clone()
    }
}

impl Calls for &Fakes<'_> {
    fn has(&self, name: &str) -> bool {
        self.plugins.contains_key(name)
    }

    async fn call(&mut self, name: &str, input: &Event) -> Result<Action, CallError> {
        let body = String::from_utf8_lossy(&input.body).into_owned();
        self.calls.borrow_mut().push((name.to_string(), body));
        self.plugins[name](input)
    }
}

fn event(body: &str) -> Event {
    Event {
        id: "evt-1".into(),
        source: "demo".into(),
        received_at_ms: 42,
        method: "POST".into(),
        path: "/demo".into(),
        query: "q=1".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// A delivery to `sink` (`None`: unrouted) at high priority, its body also in a header.
fn to(sink: Option<&str>, body: &str) -> Delivery {
    Delivery {
        sink: sink.map(str::to_string),
        headers: vec![("x-body".into(), body.into())],
        body: body.as_bytes().to_vec(),
        priority: Priority::High,
    }
}

/// A plugin forwarding `deliveries` (`(sink, body)`) whatever its input.
fn forwards<'a>(deliveries: &'a [(Option<&'a str>, &'a str)]) -> Fake<'a> {
    Box::new(move |_| {
        let ds = deliveries.iter().map(|(s, b)| to(*s, b)).collect();
        Ok(Action::Forward(ds))
    })
}

/// A plugin forwarding its input unrouted, with `suffix` appended to the body.
fn appends(suffix: &'static str) -> Fake<'static> {
    Box::new(move |input| {
        let body = format!("{}{suffix}", String::from_utf8_lossy(&input.body));
        Ok(Action::Forward(vec![to(None, &body)]))
    })
}

fn drops(reason: &'static str) -> Fake<'static> {
    Box::new(move |_| Ok(Action::Drop(reason.into())))
}

fn fails(failure: CallError) -> Fake<'static> {
    Box::new(move |_| Err(failure.clone()))
}

/// `(sink, body)` of each routed message, or a panic naming the outcome.
fn routed(outcome: Result<ChainOutcome, PluginBusy>) -> Vec<(String, String)> {
    match outcome {
        Ok(ChainOutcome::Forward(routed)) => routed
            .into_iter()
            .map(|r| (r.sink, String::from_utf8(r.body).unwrap()))
            .collect(),
        other => panic!("expected forward, got {other:?}"),
    }
}

/// The plugin and reason of a failed chain, or a panic naming the outcome.
fn failed(outcome: Result<ChainOutcome, PluginBusy>) -> (String, String) {
    match outcome {
        Ok(ChainOutcome::Failed { plugin, failure }) => (plugin, failure.to_string()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn unrouted_output_is_the_next_plugins_input_with_the_events_metadata() {
    let seen = RefCell::new(None);
    let second: Fake = Box::new(|input| {
        *seen.borrow_mut() = Some(input.clone());
        Ok(Action::Forward(vec![to(Some("a"), "done")]))
    });
    let fakes = Fakes::new(vec![
        ("first", forwards(&[(None, "shaped")])),
        ("second", second),
    ]);
    let outcome = fakes.run(&["first", "second"], "raw", &[]);
    assert_eq!(routed(outcome), pairs(&[("a", "done")]));
    drop(fakes);

    let input = seen.into_inner().expect("the second plugin ran");
    assert_eq!(input.body, b"shaped");
    assert_eq!(input.headers, pairs(&[("x-body", "shaped")]));
    let raw = event("raw");
    assert_eq!(
        (&input.id, &input.source, input.received_at_ms),
        (&raw.id, &raw.source, 42)
    );
    assert_eq!(
        (input.method, input.path, input.query),
        (raw.method, raw.path, raw.query)
    );
}

#[test]
fn a_delivery_routed_to_a_sink_is_final() {
    let fakes = Fakes::new(vec![
        ("first", forwards(&[(Some("a"), "kept"), (None, "onward")])),
        ("second", appends("+2")),
    ]);
    let outcome = fakes.run(&["first", "second"], "raw", &["default"]);
    assert_eq!(
        routed(outcome),
        pairs(&[("a", "kept"), ("default", "onward+2")])
    );
    // The second plugin saw only the unrouted delivery.
    assert_eq!(
        fakes.calls(),
        pairs(&[("first", "raw"), ("second", "onward")])
    );
}

#[test]
fn each_unrouted_delivery_is_a_branch_of_its_own() {
    let fakes = Fakes::new(vec![
        ("fan", forwards(&[(None, "x"), (None, "y")])),
        ("tag", appends("!")),
    ]);
    let outcome = fakes.run(&["fan", "tag"], "raw", &["default"]);
    assert_eq!(
        routed(outcome),
        pairs(&[("default", "x!"), ("default", "y!")])
    );
    assert_eq!(
        fakes.calls(),
        pairs(&[("fan", "raw"), ("tag", "x"), ("tag", "y")])
    );
}

#[test]
fn after_the_last_plugin_unrouted_output_goes_to_every_default_sink_at_normal_priority() {
    let fakes = Fakes::new(vec![(
        "only",
        forwards(&[(None, "out"), (Some("a"), "hi")]),
    )]);
    let outcome = fakes.run(&["only"], "raw", &["d1", "d2"]).unwrap();
    let ChainOutcome::Forward(routed) = outcome else {
        panic!("expected forward, got {outcome:?}");
    };
    let got: Vec<_> = routed
        .iter()
        .map(|r| (r.sink.as_str(), r.priority))
        .collect();
    assert_eq!(
        got,
        [
            ("a", Priority::High),
            ("d1", Priority::Normal),
            ("d2", Priority::Normal)
        ]
    );
    assert_eq!(routed[1].headers, pairs(&[("x-body", "out")]));
}

#[test]
fn an_empty_chain_sends_the_event_to_the_default_sinks() {
    let fakes = Fakes::new(Vec::new());
    assert_eq!(
        routed(fakes.run(&[], "raw", &["d"])),
        pairs(&[("d", "raw")])
    );
}

#[test]
fn unrouted_output_without_default_sinks_fails_the_last_plugin() {
    let fakes = Fakes::new(vec![("first", appends("1")), ("last", appends("2"))]);
    let (plugin, reason) = failed(fakes.run(&["first", "last"], "raw", &[]));
    assert_eq!(plugin, "last");
    assert!(reason.contains("the source has no sinks"), "{reason}");
}

#[test]
fn routing_to_an_unknown_sink_fails_that_plugin() {
    let fakes = Fakes::new(vec![
        ("bad", forwards(&[(Some("nowhere"), "x")])),
        ("next", appends("")),
    ]);
    let (plugin, reason) = failed(fakes.run(&["bad", "next"], "raw", &["d"]));
    assert_eq!(plugin, "bad");
    assert!(reason.contains("unknown sink `nowhere`"), "{reason}");
    assert_eq!(fakes.calls(), pairs(&[("bad", "raw")]));
}

#[test]
fn a_rejection_or_a_reply_ends_the_chain() {
    let rejection = Rejection {
        status: 409,
        code: "dup".into(),
        message: "seen".into(),
        field: None,
    };
    let reject: Fake = Box::new(|_| Ok(Action::Reject(rejection.clone())));
    let fakes = Fakes::new(vec![("gate", reject), ("next", appends(""))]);
    match fakes.run(&["gate", "next"], "raw", &["d"]) {
        Ok(ChainOutcome::Rejected(r)) => assert_eq!(r, rejection),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(fakes.calls(), pairs(&[("gate", "raw")]));

    let reply = Reply {
        status: 200,
        headers: Vec::new(),
        body: b"challenge".to_vec(),
    };
    let respond: Fake = Box::new(|_| Ok(Action::Respond(reply.clone())));
    let fakes = Fakes::new(vec![("shake", respond), ("next", appends(""))]);
    match fakes.run(&["shake", "next"], "raw", &["d"]) {
        Ok(ChainOutcome::Responded(r)) => assert_eq!(r, reply),
        other => panic!("expected a reply, got {other:?}"),
    }
    assert_eq!(fakes.calls(), pairs(&[("shake", "raw")]));
}

#[test]
fn a_drop_ends_its_branch_and_the_chain_drops_only_when_nothing_is_routed() {
    let picky: Fake = Box::new(|input| match input.body.as_slice() {
        b"keep" => Ok(Action::Forward(vec![to(None, "kept")])),
        _ => Ok(Action::Drop("not wanted".into())),
    });
    let fakes = Fakes::new(vec![
        ("fan", forwards(&[(None, "keep"), (None, "toss")])),
        ("picky", picky),
    ]);
    assert_eq!(
        routed(fakes.run(&["fan", "picky"], "raw", &["d"])),
        pairs(&[("d", "kept")])
    );

    // Every branch dropped: the reason is the last drop's.
    let by_body: Fake = Box::new(|input| {
        Ok(Action::Drop(
            String::from_utf8_lossy(&input.body).into_owned(),
        ))
    });
    let fakes = Fakes::new(vec![
        ("fan", forwards(&[(None, "x"), (None, "y")])),
        ("all", by_body),
    ]);
    match fakes.run(&["fan", "all"], "raw", &["d"]) {
        Ok(ChainOutcome::Dropped(reason)) => assert_eq!(reason, "y"),
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn a_plugin_that_is_not_loaded_fails_the_chain_at_its_turn() {
    let fakes = Fakes::new(vec![("gone-after", drops("nothing left"))]);
    // No input reaches `missing`, but its turn still comes.
    let (plugin, reason) = failed(fakes.run(&["gone-after", "missing"], "raw", &["d"]));
    assert_eq!(plugin, "missing");
    assert!(
        reason.contains("plugin `missing` is not loaded"),
        "{reason}"
    );
}

#[test]
fn a_failure_or_no_room_is_the_calling_plugins() {
    let trap = CallError::Failed(CallFailure::Error("boom".into()));
    let fakes = Fakes::new(vec![
        ("ok", appends("")),
        ("bad", fails(trap)),
        ("after", appends("")),
    ]);
    let (plugin, reason) = failed(fakes.run(&["ok", "bad", "after"], "raw", &["d"]));
    assert_eq!(
        (plugin.as_str(), reason.as_str()),
        ("bad", "returned error: boom")
    );
    assert_eq!(fakes.calls(), pairs(&[("ok", "raw"), ("bad", "raw")]));

    let fakes = Fakes::new(vec![(
        "full",
        fails(CallError::Busy(BusyReason::PoolExhausted)),
    )]);
    let busy = fakes.run(&["full"], "raw", &["d"]).unwrap_err();
    assert_eq!(busy.plugin, "full");
    assert_eq!(busy.reason, BusyReason::PoolExhausted);
}

"""Example Hookwall plugin in Python (componentize-py): validates a JSON body and routes it
by its `type`. Events whose type starts with `prefix` (config, default "order.") go to the sink
`sink` (config, default "orders"); others are forwarded unrouted. A body without a string
`type` is rejected with 422 naming the field. Returning is `ok(action)`; raising
`componentize_py_types.Err("...")` is `err` (the event is dead-lettered with it)."""

import json

import wit_world
from wit_world.imports import host, types


class WitWorld(wit_world.WitWorld):
    def handle(self, event: types.Event) -> types.Action:
        try:
            body = json.loads(event.body)
        except ValueError as e:
            return types.Action_Reject(types.Rejection(400, "invalid_json", f"body is not JSON: {e}", None))
        kind = body.get("type") if isinstance(body, dict) else None
        if not isinstance(kind, str):
            return types.Action_Reject(types.Rejection(422, "missing_field", "`type` is required", "/type"))
        prefix = host.config("prefix") or "order."
        sink = (host.config("sink") or "orders") if kind.startswith(prefix) else None
        host.log(host.Level.INFO, f"python: {event.id} ({kind}) -> {sink or 'unrouted'}")
        body["tagged_by"] = "python"
        headers = list(event.headers) + [("x-hookwall-plugin", "python-example")]
        return types.Action_Forward([
            types.Delivery(sink, headers, json.dumps(body).encode(), types.Priority.NORMAL)
        ])

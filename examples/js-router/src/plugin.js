// Example Hookwall plugin in JavaScript (componentize-js): validates a JSON body and routes
// it by its `type`. Events whose type starts with `prefix` (config, default "order.") go to
// the sink `sink` (config, default "orders"); others are forwarded unrouted. A body without a
// string `type` is rejected with 422 naming the field.
//
// The world's interfaces are imported by their WIT names; `handle` is the export. Returning a
// value is `ok(action)`; throwing is `err(message)` (the event is dead-lettered with it).
import { log, config } from 'hookwall:plugin/host@0.1.0';

const enc = new TextEncoder();
const dec = new TextDecoder();

export function handle(event) {
  let body;
  try {
    body = JSON.parse(dec.decode(event.body));
  } catch (e) {
    return { tag: 'reject', val: { status: 400, code: 'invalid_json', message: `body is not JSON: ${e.message}`, field: undefined } };
  }
  if (typeof body.type !== 'string') {
    return { tag: 'reject', val: { status: 422, code: 'missing_field', message: '`type` is required', field: '/type' } };
  }
  const prefix = config('prefix') ?? 'order.';
  const sink = body.type.startsWith(prefix) ? (config('sink') ?? 'orders') : undefined;
  log('info', `js: ${event.id} (${body.type}) -> ${sink ?? 'unrouted'}`);
  body.tagged_by = 'js';
  return {
    tag: 'forward',
    val: [{
      sink,
      headers: [...event.headers, ['x-hookwall-plugin', 'js-example']],
      body: enc.encode(JSON.stringify(body)),
      priority: 'normal',
    }],
  };
}

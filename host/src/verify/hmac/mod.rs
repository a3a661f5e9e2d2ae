//! The one declarative HMAC verifier that every provider preset and the generic `hmac` scheme
//! compile to: an [`HmacSpec`] (where the signature is, what is signed, how the key is made,
//! where the timestamp is) plus the prepared keys.
//!
//! The MAC is fed the template's parts in order, straight from the request (no concatenated
//! copy of the body), once per key (and per URL form, for `{url}`); every signature in the
//! header is compared in constant time, and no key's loop stops early, so timing does not
//! reveal which secret or signature matched.
//!
//! Files, in the order a request meets them:
//! - `spec`: what is built once at start-up — the [`HmacSpec`] resolved from a source's config
//!   (preset plus overrides) and the [`HmacVerifier`] that holds it with the keyed MACs;
//! - `check`: verification of one request (signature, signed inputs, timestamp tolerance) and
//!   the Slack/Zoom handshake answer;
//! - `diagnose`: after a mismatch, the diagnostic's hints (other secret form, re-encoded body);
//! - `sign`: the reverse, making a request pass (`hookwall send`, the http sink, tests).

mod check;
mod diagnose;
mod sign;
mod spec;

pub use self::spec::mac;
pub(crate) use self::spec::{HmacSpec, HmacVerifier};

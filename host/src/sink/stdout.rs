//! `type = "stdout"`: one JSON line per delivery on standard output (logs go to stderr).

use std::io::Write;

use super::{Sink, SinkError, json_line};
use crate::store::DeliveryRecord;

pub struct StdoutSink;

#[async_trait::async_trait]
impl Sink for StdoutSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let mut out = std::io::stdout().lock();
        for d in batch {
            out.write_all(&json_line(d))
                .map_err(|e| SinkError::transient(format!("stdout: {e}")))?;
        }
        out.flush()
            .map_err(|e| SinkError::transient(format!("stdout: {e}")))
    }
}

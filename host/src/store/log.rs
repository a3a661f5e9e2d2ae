//! The event log: where the store keeps what is large (request and delivery headers and
//! bodies), appended once and never rewritten, while redb keeps only small index rows that
//! point here ([`LogRef`]). Key-value separation, as in WiscKey and in Vector's disk buffer's
//! data files: a delivery outcome rewrites a ~100-byte row instead of a record with its body,
//! and an event's bytes are written once (one `write` per group commit) instead of twice
//! through redb's B-tree pages.
//!
//! Layout: `log/NNNNNNNNNN.log` segment files in the store's directory. A record is
//! `u32 length (LE) | u32 CRC32C of the payload (LE) | payload`, and a payload is a kind byte
//! followed by its body: [`KIND_PARTS`] (postcard-encoded [`Part`]s) or [`KIND_PADDING`] (what
//! `hookwall store repair` writes over a corrupt span, so the segment reads clean again).
//!
//! Durability: the writer appends a group's records into one buffer, writes it with one
//! `pwrite`, `fdatasync`s the segment, and only then commits the redb transaction that refers
//! to them and records the log's new end (`meta`: `log_segment`, `log_end`). So a committed
//! row never points past what is on disk, and whatever lies past the committed end at start
//! (a group whose commit never happened, a record torn by a crash) was never acknowledged and
//! is cut off. Anything wrong *before* the committed end is corruption: start-up refuses,
//! naming the file and the offset. A segment grows past [`SEGMENT_BYTES`] by at most one
//! group; the next group starts a new file (created, synced, and the directory synced, which
//! Vector's 2026 data loss showed is needed), and a segment no row points into any more is
//! deleted after the commit that released it is durable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The log's directory inside the store's.
pub(super) const LOG_DIR: &str = "log";
/// A segment takes no new group once it is this long.
pub(super) const SEGMENT_BYTES: u64 = 128 << 20;
/// `u32` length + `u32` CRC32C.
const HEADER: u64 = 8;
/// A record longer than this is not believed (a corrupt length field).
const MAX_RECORD: u64 = 1 << 31;
/// The payload kind of an event's or a replay's parts.
const KIND_PARTS: u8 = 1;
/// The payload kind of filler written by repair over a corrupt span.
const KIND_PADDING: u8 = 0;

/// Where a record sits: its segment, the offset of its header, the payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogRef {
    /// The segment's number (its file name).
    pub segment: u32,
    /// Offset of the record's header in the segment.
    pub offset: u64,
    /// Length of the payload (kind byte included).
    pub len: u32,
}

/// One message in a record: an event's request, or one of its routed deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

/// A part's body: its bytes, or "the same bytes as part N" (a delivery whose plugins did not
/// change the body costs nothing more).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Body {
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    SameAs(u32),
}

/// A part as the writer encodes it, borrowing what it writes: serializes exactly as [`Part`].
#[derive(Serialize)]
pub(super) struct PartRef<'a> {
    pub headers: &'a [(String, String)],
    pub body: BodyRef<'a>,
}

/// Serializes exactly as [`Body`].
#[derive(Serialize)]
pub(super) enum BodyRef<'a> {
    Bytes(#[serde(with = "serde_bytes")] &'a [u8]),
    SameAs(u32),
}

/// The file name of segment `n`.
pub(super) fn segment_name(n: u32) -> String {
    format!("{n:010}.log")
}

fn segment_number(name: &str) -> Option<u32> {
    name.strip_suffix(".log")
        .filter(|n| n.len() == 10)
        .and_then(|n| n.parse().ok())
}

/// The segment files in `dir`, by number.
pub(super) fn list(dir: &Path) -> std::io::Result<Vec<u32>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                if let Some(n) = entry?.file_name().to_str().and_then(segment_number) {
                    out.push(n);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The parts of one record, decoded, with each `SameAs` body resolved on request.
pub(super) struct Parts(Vec<Part>);

impl Parts {
    /// Part `n`'s headers and body (a body shared with another part is copied out).
    pub fn take(&mut self, n: u32, what: impl Fn() -> String) -> Result<Part, StoreError> {
        let missing = || StoreError::Corrupt {
            what: what(),
            reason: format!("its log record has no part {n}"),
        };
        let part = self.0.get(n as usize).ok_or_else(missing)?;
        let body = match &part.body {
            Body::Bytes(bytes) => bytes.clone(),
            Body::SameAs(m) => match self.0.get(*m as usize).map(|p| &p.body) {
                Some(Body::Bytes(bytes)) => bytes.clone(),
                _ => return Err(missing()),
            },
        };
        Ok(Part {
            headers: part.headers.clone(),
            body: Body::Bytes(body),
        })
    }
}

impl Part {
    /// The body's bytes (a part from [`Parts::take`] always has them).
    pub fn into_body(self) -> (Vec<(String, String)>, Vec<u8>) {
        match self.body {
            Body::Bytes(bytes) => (self.headers, bytes),
            Body::SameAs(_) => (self.headers, Vec::new()),
        }
    }
}

/// The reading side, shared by every reader and the writer: segment files opened on demand.
pub(super) struct Segments {
    dir: PathBuf,
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl Segments {
    pub fn new(store_dir: &Path) -> Segments {
        Segments {
            dir: store_dir.join(LOG_DIR),
            files: RwLock::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    fn file(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&segment)
        {
            return Ok(f.clone());
        }
        let path = self.path(segment);
        let file = Arc::new(File::open(&path).map_err(|e| StoreError::Corrupt {
            what: format!("log segment {}", path.display()),
            reason: e.to_string(),
        })?);
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(segment, file.clone());
        Ok(file)
    }

    /// Closes segment `n`'s reading handle (it is about to be deleted).
    pub fn forget(&self, segment: u32) {
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&segment);
    }

    /// The parts of the record at `at`, its checksum verified.
    pub fn parts(&self, at: LogRef) -> Result<Parts, StoreError> {
        let file = self.file(at.segment)?;
        let corrupt = |reason: String| StoreError::Corrupt {
            what: format!(
                "log record at {} offset {}",
                self.path(at.segment).display(),
                at.offset
            ),
            reason,
        };
        // A damaged row must not make us allocate what its length field claims.
        let file_len = file.metadata().map_err(StoreError::storage)?.len();
        let end = at.offset.saturating_add(HEADER + u64::from(at.len));
        if end > file_len {
            return Err(corrupt(format!(
                "the record would end at {end}, past the file's end {file_len}"
            )));
        }
        let mut buf = vec![0u8; HEADER as usize + at.len as usize];
        file.read_exact_at(&mut buf, at.offset)
            .map_err(|e| corrupt(e.to_string()))?;
        let payload = check_record(&buf, at.len as u64).map_err(corrupt)?;
        match payload.split_first() {
            Some((&KIND_PARTS, body)) => postcard::from_bytes(body)
                .map(Parts)
                .map_err(|e| corrupt(e.to_string())),
            _ => Err(corrupt("not an event record".into())),
        }
    }
}

/// `record`'s payload if its header says `len` bytes and its checksum holds.
fn check_record(record: &[u8], len: u64) -> Result<&[u8], String> {
    let stored_len = u32::from_le_bytes(record[0..4].try_into().unwrap_or_default());
    if u64::from(stored_len) != len {
        return Err(format!("length {stored_len}, expected {len}"));
    }
    let crc = u32::from_le_bytes(record[4..8].try_into().unwrap_or_default());
    let payload = &record[HEADER as usize..];
    if crc32c::crc32c(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// What is wrong with a segment, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub file: PathBuf,
    /// Offset of the first byte that does not read.
    pub offset: u64,
    /// What is wrong there.
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// Reads segment `path` up to `end` (the whole file if `None`), calling `each` with every
/// record's offset and payload length; stops at the first record that does not read.
pub(super) fn scan(
    path: &Path,
    end: Option<u64>,
    mut each: impl FnMut(u64, u32, u8),
) -> Result<Result<u64, Damage>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::Corrupt {
        what: format!("log segment {}", path.display()),
        reason: e.to_string(),
    })?;
    let file_len = file.metadata().map_err(StoreError::storage)?.len();
    let end = end.unwrap_or(file_len);
    let damage = |offset: u64, reason: String| Damage {
        file: path.to_path_buf(),
        offset,
        reason,
    };
    if file_len < end {
        return Ok(Err(damage(
            file_len,
            format!("the file ends at {file_len}, before the committed end {end}"),
        )));
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut payload = Vec::new();
    while offset < end {
        if end - offset < HEADER {
            return Ok(Err(damage(offset, "a record header cut short".into())));
        }
        let mut header = [0u8; HEADER as usize];
        reader
            .read_exact(&mut header)
            .map_err(StoreError::storage)?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        if len == 0 || len > MAX_RECORD || offset + HEADER + len > end {
            return Ok(Err(damage(
                offset,
                format!("a record of {len} bytes does not fit before {end}"),
            )));
        }
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(StoreError::storage)?;
        if crc32c::crc32c(&payload) != crc {
            return Ok(Err(damage(offset, "checksum mismatch".into())));
        }
        each(offset, len as u32, payload[0]);
        offset += HEADER + len;
    }
    Ok(Ok(offset))
}

/// Where the log ended at the last commit: the segment and the length of its committed part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub segment: u32,
    pub end: u64,
}

/// Brings the log in `segments.dir()` to the committed `head` at start: every segment up to
/// it must read whole (else the damage is returned, naming the file and offset); bytes past
/// the head, and segments after it, were never committed and are removed. Returns the numbers
/// of the segments that remain.
pub(super) fn recover(segments: &Segments, head: Head) -> Result<Vec<u32>, StoreError> {
    let dir = segments.dir();
    std::fs::create_dir_all(dir).map_err(StoreError::storage)?;
    let found = list(dir).map_err(StoreError::storage)?;
    if head.end > 0 && !found.contains(&head.segment) {
        let path = segments.path(head.segment);
        return Err(StoreError::Corrupt {
            what: format!("log segment {}", path.display()),
            reason: format!(
                "it is missing, and the last commit wrote {} bytes to it; restore it from a \
                 backup (`hookwall store repair` drops every event stored in it)",
                head.end
            ),
        });
    }
    let mut kept = Vec::new();
    for n in found {
        let path = segments.path(n);
        if n > head.segment {
            tracing::warn!(file = %path.display(), "removing a log segment no commit reached");
            std::fs::remove_file(&path).map_err(StoreError::storage)?;
            continue;
        }
        let end = (n == head.segment).then_some(head.end);
        if let Err(damage) = scan(&path, end, |_, _, _| {})? {
            return Err(StoreError::Corrupt {
                what: format!("log segment {}", path.display()),
                reason: format!(
                    "{damage}; run `hookwall store check` to see what is affected and \
                     `hookwall store repair` to keep every intact record"
                ),
            });
        }
        if n == head.segment {
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(StoreError::storage)?;
            let len = file.metadata().map_err(StoreError::storage)?.len();
            if len > head.end {
                tracing::warn!(file = %path.display(), offset = head.end, bytes = len - head.end,
                    "cutting off an unacknowledged tail of the log (a group whose commit did not \
                     finish)");
                file.set_len(head.end).map_err(StoreError::storage)?;
                file.sync_all().map_err(StoreError::storage)?;
            }
        }
        kept.push(n);
    }
    Ok(kept)
}

/// The writing side, owned by the writer thread: the head segment and the group being built.
pub(super) struct Appender {
    segments: Arc<Segments>,
    file: File,
    head: Head,
    buf: Vec<u8>,
    /// A segment takes no new group past this ([`SEGMENT_BYTES`]; tests make it small).
    limit: u64,
    /// Told of every write and sync (the crash model records them).
    #[cfg(test)]
    observer: Option<observe::Observer>,
}

/// The crash model's view of the log (`crash_tests.rs`): an observer registered for a log
/// directory hears the head after every write (`synced` false) and every sync (true).
#[cfg(test)]
pub(super) mod observe {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    use super::Head;

    pub type Observer = Arc<dyn Fn(Head, bool) + Send + Sync>;

    static OBSERVERS: Mutex<Vec<(PathBuf, Observer)>> = Mutex::new(Vec::new());

    /// From now on, the appenders opened on `dir` report to `observer`.
    pub fn register(dir: &Path, observer: Observer) {
        let mut all = OBSERVERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(d, _)| d != dir);
        all.push((dir.to_path_buf(), observer));
    }

    pub(super) fn find(dir: &Path) -> Option<Observer> {
        let all = OBSERVERS.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().find(|(d, _)| d == dir).map(|(_, o)| o.clone())
    }
}

impl Appender {
    /// Opens the head segment for appending at its committed end (creating it if it is new).
    pub fn open(segments: Arc<Segments>, head: Head) -> std::io::Result<Appender> {
        let file = open_segment(&segments, head.segment)?;
        Ok(Appender {
            #[cfg(test)]
            observer: observe::find(segments.dir()),
            segments,
            file,
            head,
            buf: Vec::with_capacity(256 << 10),
            limit: SEGMENT_BYTES,
        })
    }

    /// Rolls to a new segment past `limit` bytes instead of [`SEGMENT_BYTES`].
    pub fn limited(mut self, limit: u64) -> Appender {
        self.limit = limit;
        self
    }

    /// Where the log will end once the group being built is written.
    pub fn next_head(&self) -> Head {
        Head {
            segment: self.head.segment,
            end: self.head.end + self.buf.len() as u64,
        }
    }

    /// The committed head.
    pub fn head(&self) -> Head {
        self.head
    }

    /// Adds a record of `parts` to the group; where it will be.
    pub fn push_parts(&mut self, parts: &[PartRef<'_>]) -> Result<LogRef, StoreError> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; HEADER as usize]);
        self.buf.push(KIND_PARTS);
        let buf = std::mem::take(&mut self.buf);
        self.buf = postcard::to_extend(parts, buf).map_err(StoreError::storage)?;
        Ok(self.seal(at))
    }

    /// Fills in the header of the record that starts at `at` in the buffer.
    fn seal(&mut self, at: usize) -> LogRef {
        let payload = &self.buf[at + HEADER as usize..];
        let len = payload.len() as u32;
        let crc = crc32c::crc32c(payload);
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        LogRef {
            segment: self.head.segment,
            offset: self.head.end + at as u64,
            len,
        }
    }

    /// Starts a new segment if the head is full and no group is being built. Returns the
    /// number of the segment it left (already synced).
    pub fn roll_if_full(&mut self) -> std::io::Result<Option<u32>> {
        if self.head.end < self.limit || !self.buf.is_empty() {
            return Ok(None);
        }
        self.file.sync_data()?;
        let next = self.head.segment + 1;
        let file = open_segment(&self.segments, next)?;
        let old = self.head.segment;
        self.file = file;
        self.head = Head {
            segment: next,
            end: 0,
        };
        Ok(Some(old))
    }

    /// Writes the group (one `pwrite`) and, if `sync`, `fdatasync`s it. On failure the
    /// segment is cut back to its committed end and the group dropped: its commit fails.
    pub fn write(&mut self, sync: bool) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return if sync { self.sync() } else { Ok(()) };
        }
        let written = self
            .file
            .write_all_at(&self.buf, self.head.end)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.head.end += self.buf.len() as u64;
                self.buf.clear();
                self.observed(sync);
                Ok(())
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Goes back to `to` (the head before a commit that failed): drops the group being built,
    /// returns to `to`'s segment if the failed commit had rolled over, and cuts the file back.
    pub fn reset(&mut self, to: Head) {
        self.buf.clear();
        if to.segment != self.head.segment {
            match open_segment(&self.segments, to.segment) {
                Ok(file) => self.file = file,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reopen the log's head segment");
                    return;
                }
            }
        }
        self.head = to;
        self.discard();
    }

    /// Drops the group being built and cuts the segment back to its committed end.
    pub fn discard(&mut self) {
        self.buf.clear();
        if let Err(e) = self.file.set_len(self.head.end) {
            tracing::warn!(error = %e, "cannot cut the log back to its committed end; the \
                next start will");
        }
    }

    /// Makes every written group durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.observed(true);
        Ok(())
    }

    #[cfg(test)]
    fn observed(&self, synced: bool) {
        if let Some(observer) = &self.observer {
            observer(self.head, synced);
        }
    }

    #[cfg(not(test))]
    fn observed(&self, _synced: bool) {}

    /// Deletes segment `n` (no row points into it and the commit that said so is durable).
    pub fn delete(&self, n: u32) {
        self.segments.forget(n);
        let path = self.segments.path(n);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!(file = %path.display(), "log segment deleted"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete a log segment")
            }
        }
    }
}

/// Opens segment `n` for writing, creating it (and making its name durable) if it is new.
fn open_segment(segments: &Segments, n: u32) -> std::io::Result<File> {
    let path = segments.path(n);
    match OpenOptions::new().write(true).open(&path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(segments.dir())?;
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.sync_all()?;
            sync_dir(segments.dir())?;
            Ok(file)
        }
        Err(e) => Err(e),
    }
}

/// Overwrites `[offset, next)` of segment `path` with one padding record, so the segment
/// reads clean again (what `hookwall store repair` does to a corrupt span). The span must
/// hold at least a header and a kind byte.
pub(super) fn pad(path: &Path, offset: u64, next: u64) -> std::io::Result<()> {
    let len = next - offset - HEADER;
    let mut record = vec![0u8; (next - offset) as usize];
    record[HEADER as usize] = KIND_PADDING;
    let crc = crc32c::crc32c(&record[HEADER as usize..]);
    record[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    let file = OpenOptions::new().write(true).open(path)?;
    file.write_all_at(&record, offset)?;
    file.sync_all()
}

/// The smallest span [`pad`] can fill.
pub(super) const MIN_RECORD: u64 = HEADER + 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(body: &'a [u8], headers: &'a [(String, String)]) -> Vec<PartRef<'a>> {
        vec![
            PartRef {
                headers,
                body: BodyRef::Bytes(body),
            },
            PartRef {
                headers: &[],
                body: BodyRef::SameAs(0),
            },
        ]
    }

    #[test]
    fn records_read_back_and_a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Arc::new(Segments::new(dir.path()));
        let head = Head { segment: 1, end: 0 };
        let mut log = Appender::open(segments.clone(), head).unwrap();
        let headers = vec![("a".to_string(), "b".to_string())];
        let first = log.push_parts(&parts(b"one", &headers)).unwrap();
        let second = log.push_parts(&parts(b"two", &[])).unwrap();
        log.write(true).unwrap();
        let committed = log.head();
        assert_eq!(second.offset, first.offset + 8 + u64::from(first.len));

        let mut p = segments.parts(second).unwrap();
        let (h, body) = p.take(1, || "x".into()).unwrap().into_body();
        assert_eq!((h.len(), body.as_slice()), (0, &b"two"[..]));
        let (h, _) = segments
            .parts(first)
            .unwrap()
            .take(0, || "x".into())
            .unwrap()
            .into_body();
        assert_eq!(h, headers);

        // A group written but never committed, torn half-way: cut off at start.
        log.push_parts(&parts(b"three", &[])).unwrap();
        let torn = log.buf.len() / 2;
        log.buf.truncate(torn);
        log.write(true).unwrap();
        drop(log);
        let path = segments.path(1);
        assert!(std::fs::metadata(&path).unwrap().len() > committed.end);
        assert_eq!(recover(&segments, committed).unwrap(), vec![1]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), committed.end);

        // A flipped byte before the committed end: refused, naming file and offset.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[second.offset as usize + 10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = recover(&segments, committed).unwrap_err().to_string();
        assert!(
            err.contains(&format!("0000000001.log at offset {}", second.offset)),
            "{err}"
        );
        assert!(err.contains("hookwall store repair"), "{err}");
        segments.forget(1);
        assert!(segments.parts(second).is_err());
        let claims_too_much = LogRef {
            len: u32::MAX,
            ..second
        };
        let err = segments.parts(claims_too_much).err().unwrap().to_string();
        assert!(err.contains("past the file's end"), "{err}");

        // Padding over the bad record makes the segment read clean; the first still reads.
        pad(&path, second.offset, committed.end).unwrap();
        assert_eq!(recover(&segments, committed).unwrap(), vec![1]);
        assert!(segments.parts(first).is_ok());
    }

    #[test]
    fn segments_past_the_committed_head_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Arc::new(Segments::new(dir.path()));
        let mut log = Appender::open(segments.clone(), Head { segment: 1, end: 0 }).unwrap();
        log.push_parts(&parts(b"x", &[])).unwrap();
        log.write(true).unwrap();
        let committed = log.head();
        drop(Appender::open(segments.clone(), Head { segment: 2, end: 0 }).unwrap());
        assert_eq!(list(segments.dir()).unwrap(), vec![1, 2]);
        assert_eq!(recover(&segments, committed).unwrap(), vec![1]);
        assert_eq!(list(segments.dir()).unwrap(), vec![1]);

        // The head segment gone while the last commit wrote to it: refused.
        std::fs::remove_file(segments.path(1)).unwrap();
        let err = recover(&segments, committed).unwrap_err().to_string();
        assert!(
            err.contains("0000000001.log") && err.contains("missing"),
            "{err}"
        );
    }
}

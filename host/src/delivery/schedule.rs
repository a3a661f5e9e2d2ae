//! Schedule: one sink's pending deliveries as an in-memory index, without their bodies.
//!
//! The store keeps every delivery (body, headers, attempts); the schedule keeps what dispatch
//! decides on: each pending delivery's seq, due time, priority and order key, about 100 bytes
//! each whatever the body's size. Dispatch asks it for what is due and reads only those
//! records from the store, so a round costs O(log n) per delivery it starts, never a scan
//! past deliveries that cannot go.
//!
//! - **Ready**: the deliveries that may go as soon as they are due, by priority, then due
//!   time, then seq: every unordered delivery, and of each order key only its oldest pending
//!   delivery (the *head*), while nothing of that key is in flight. A key whose head waits
//!   for a retry costs one entry here, however many deliveries queue behind it.
//! - **Keys**: per order key, its pending seqs oldest first. Seqs are assigned at commit, so
//!   seq order is acceptance order; priority and due times never reorder a key (a wall clock
//!   stepping back moves due times, not the order), priority only orders heads across keys.
//! - **Taken**: seqs handed to dispatch and not yet settled or given back.
//!
//! Invariant (checked by [`Schedule::check`] in tests): a pending seq is in exactly one of
//! ready, taken, or "queued behind its key's head"; a key's head is ready unless taken.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::event::Priority;

/// What the schedule is told of a pending delivery: the store's [`Queued`](crate::store::Queued).
pub(super) use crate::store::Queued as Scheduled;

#[derive(Debug)]
struct Entry {
    due_ms: u64,
    priority: Priority,
    key: Option<Arc<str>>,
    /// Sent alone (not batched) from now on: a batch holding it was refused for good.
    solo: bool,
}

/// One order key's pending deliveries.
#[derive(Debug, Default)]
struct KeyQueue {
    seqs: BTreeSet<u64>,
    /// The one delivery of the key that is taken (in flight or being placed), if any. It is
    /// the key's head unless an older delivery arrived while it was out; either way nothing
    /// else of the key is ready until it comes back.
    taken: Option<u64>,
}

/// The pending deliveries of one sink.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    entries: HashMap<u64, Entry>,
    /// `[high, normal]`: (due ms, seq) of the ready deliveries.
    ready: [BTreeSet<(u64, u64)>; 2],
    keys: HashMap<Arc<str>, KeyQueue>,
    taken: HashSet<u64>,
}

fn lane(priority: Priority) -> usize {
    usize::from(priority.rank())
}

impl Schedule {
    /// Pending deliveries known.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Deliveries taken and not yet settled or given back.
    #[cfg(test)]
    pub fn taken(&self) -> usize {
        self.taken.len()
    }

    /// Whether `seq` is known as pending.
    pub fn contains(&self, seq: u64) -> bool {
        self.entries.contains_key(&seq)
    }

    /// Whether `seq` must go alone.
    pub fn is_solo(&self, seq: u64) -> bool {
        self.entries.get(&seq).is_some_and(|e| e.solo)
    }

    /// Adds a pending delivery with its order key. A seq already known keeps its place and
    /// key, and takes the new due time and priority unless it is taken.
    pub fn insert(&mut self, s: Scheduled, key: Option<String>) {
        if let Some(e) = self.entries.get(&s.seq) {
            if !self.taken.contains(&s.seq) && (e.due_ms, e.priority) != (s.due_ms, s.priority) {
                let ready = self.ready[lane(e.priority)].remove(&(e.due_ms, s.seq));
                let e = self.entries.get_mut(&s.seq).expect("present");
                e.due_ms = s.due_ms;
                e.priority = s.priority;
                if ready {
                    self.ready[lane(s.priority)].insert((s.due_ms, s.seq));
                }
            }
            return;
        }
        let key: Option<Arc<str>> = key.map(|k| match self.keys.get_key_value(k.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(k),
        });
        self.entries.insert(
            s.seq,
            Entry {
                due_ms: s.due_ms,
                priority: s.priority,
                key: key.clone(),
                solo: false,
            },
        );
        let Some(key) = key else {
            self.ready[lane(s.priority)].insert((s.due_ms, s.seq));
            return;
        };
        let queue = self.keys.entry(key).or_default();
        let old_head = queue.seqs.first().copied();
        queue.seqs.insert(s.seq);
        if queue.taken.is_some() || old_head.is_some_and(|h| h < s.seq) {
            return;
        }
        // The new delivery is older than the key's head (a replay of an old seq, or arrivals
        // read out of order): it becomes the head.
        if let Some(h) = old_head {
            let e = &self.entries[&h];
            self.ready[lane(e.priority)].remove(&(e.due_ms, h));
        }
        self.ready[lane(s.priority)].insert((s.due_ms, s.seq));
    }

    /// Takes the deliveries due at `now_ms` that fill at most `units` units of `per_unit`
    /// deliveries (high priority first, then by due time; a high-priority or solo delivery
    /// fills a unit alone), and at most `max` in all. They leave the ready set and their keys
    /// are busy until [`Schedule::settle`] or [`Schedule::give_back`]. Also says whether due
    /// deliveries were left for want of room.
    pub fn take_due(
        &mut self,
        now_ms: u64,
        units: usize,
        per_unit: usize,
        max: usize,
    ) -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let mut units_left = units;
        // Free places in the normal-priority unit being filled.
        let mut places = 0usize;
        for lane in 0..self.ready.len() {
            while let Some(&(due, seq)) = self.ready[lane].first()
                && due <= now_ms
            {
                let alone = lane == 0 || per_unit <= 1 || self.is_solo(seq);
                let fits = if alone {
                    units_left > 0
                } else {
                    places > 0 || units_left > 0
                };
                if !fits || out.len() >= max {
                    return (out, true);
                }
                if alone {
                    units_left -= 1;
                } else {
                    if places == 0 {
                        units_left -= 1;
                        places = per_unit;
                    }
                    places -= 1;
                }
                self.ready[lane].pop_first();
                self.take(seq);
                out.push(seq);
            }
        }
        (out, false)
    }

    fn take(&mut self, seq: u64) {
        self.taken.insert(seq);
        if let Some(k) = self.entries.get(&seq).and_then(|e| e.key.clone())
            && let Some(q) = self.keys.get_mut(&k)
        {
            q.taken = Some(seq);
        }
    }

    /// A taken delivery not sent after all: ready again (at `due_ms`, if given).
    pub fn give_back(&mut self, seq: u64, due_ms: Option<u64>) {
        if !self.taken.remove(&seq) {
            return;
        }
        let Some(e) = self.entries.get_mut(&seq) else {
            return;
        };
        if let Some(due) = due_ms {
            e.due_ms = due;
        }
        // Of a key, its head becomes ready: this delivery, unless an older one arrived while
        // it was taken.
        let ready = match e.key.clone().and_then(|k| self.keys.get_mut(&k)) {
            Some(q) => {
                q.taken = None;
                *q.seqs
                    .first()
                    .expect("a key's queue holds its taken delivery")
            }
            None => seq,
        };
        let r = &self.entries[&ready];
        self.ready[lane(r.priority)].insert((r.due_ms, ready));
    }

    /// A taken delivery's attempt is over: pending again at `retry_at` (it stays its key's
    /// head, so newer deliveries of the key keep waiting), or gone (`None`: delivered or
    /// dead-lettered), which frees its key for the next one.
    pub fn settle(&mut self, seq: u64, retry_at: Option<u64>) {
        match retry_at {
            Some(due) => self.give_back(seq, Some(due)),
            None => {
                self.taken.remove(&seq);
                self.remove(seq);
            }
        }
    }

    /// Marks `seq` to be sent alone from now on.
    pub fn set_solo(&mut self, seq: u64) {
        if let Some(e) = self.entries.get_mut(&seq) {
            e.solo = true;
        }
    }

    /// Forgets `seq` (no longer pending in the store), wherever it is.
    pub fn remove(&mut self, seq: u64) {
        self.taken.remove(&seq);
        let Some(e) = self.entries.remove(&seq) else {
            return;
        };
        let was_ready = self.ready[lane(e.priority)].remove(&(e.due_ms, seq));
        let Some(key) = e.key else {
            return;
        };
        let Some(q) = self.keys.get_mut(&key) else {
            return;
        };
        q.seqs.remove(&seq);
        let was_taken = q.taken == Some(seq);
        if was_taken {
            q.taken = None;
        }
        // The key's ready head (or its taken one) left: its oldest remaining delivery is next.
        if (was_ready || was_taken)
            && q.taken.is_none()
            && let Some(&next) = q.seqs.first()
        {
            let n = &self.entries[&next];
            self.ready[lane(n.priority)].insert((n.due_ms, next));
        }
        if q.seqs.is_empty() {
            self.keys.remove(&key);
        }
    }

    /// When the next ready delivery not in `except` falls due, if any (`except` is a batch
    /// left to fill: a few seqs at the front of the ready set).
    pub fn next_due_ms_except(&self, except: &HashSet<u64>) -> Option<u64> {
        self.ready
            .iter()
            .filter_map(|lane| {
                lane.iter()
                    .find(|(_, seq)| !except.contains(seq))
                    .map(|&(due, _)| due)
            })
            .min()
    }

    /// When the next ready delivery falls due, if any.
    #[cfg(test)]
    pub fn next_due_ms(&self) -> Option<u64> {
        self.next_due_ms_except(&HashSet::new())
    }

    /// Checks the invariant (tests): every entry is ready, taken or queued behind its key's
    /// head, exactly once; returns what is wrong.
    #[cfg(test)]
    pub fn check(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (lane, set) in self.ready.iter().enumerate() {
            for &(due, seq) in set {
                let e = self
                    .entries
                    .get(&seq)
                    .ok_or(format!("ready {seq} unknown"))?;
                if e.due_ms != due || usize::from(e.priority.rank()) != lane {
                    return Err(format!("ready {seq} out of date"));
                }
                if self.taken.contains(&seq) || !seen.insert(seq) {
                    return Err(format!("{seq} ready twice or ready and taken"));
                }
            }
        }
        for (key, q) in &self.keys {
            let head = *q.seqs.first().ok_or(format!("key {key} empty"))?;
            let taken: Vec<u64> = q
                .seqs
                .iter()
                .copied()
                .filter(|s| self.taken.contains(s))
                .collect();
            if taken.len() > 1 || q.taken != taken.first().copied() {
                return Err(format!("key {key} says {:?} taken, {taken:?} are", q.taken));
            }
            let ready: Vec<u64> = q
                .seqs
                .iter()
                .copied()
                .filter(|s| seen.contains(s))
                .collect();
            let expected = if q.taken.is_some() {
                Vec::new()
            } else {
                vec![head]
            };
            if ready != expected {
                return Err(format!("key {key}: ready {ready:?}, expected {expected:?}"));
            }
        }
        for (&seq, e) in &self.entries {
            let placed = seen.contains(&seq)
                || self.taken.contains(&seq)
                || e.key
                    .as_ref()
                    .is_some_and(|k| self.keys[k].seqs.contains(&seq));
            if !placed {
                return Err(format!("{seq} is nowhere"));
            }
        }
        Ok(())
    }
}

pub(super) use crate::event::order_key;

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seq: u64, due_ms: u64, priority: Priority) -> Scheduled {
        Scheduled {
            seq,
            due_ms,
            priority,
        }
    }

    #[test]
    fn a_busy_key_holds_only_its_own_deliveries() {
        let mut sch = Schedule::default();
        for seq in 1..=1000 {
            sch.insert(s(seq, 0, Priority::Normal), Some("hot".into()));
        }
        sch.insert(s(1001, 5, Priority::Normal), Some("cold".into()));
        sch.insert(s(1002, 5, Priority::Normal), None);
        assert_eq!(sch.take_due(10, 10, 1, 100).0, vec![1, 1001, 1002]);
        sch.check().unwrap();
        // The hot head waits ten minutes: nothing of the key is ready, and the wake-up is
        // the retry's due time, not a row that cannot go.
        sch.settle(1, Some(600_000));
        sch.settle(1001, None);
        sch.settle(1002, None);
        assert_eq!(sch.take_due(10, 10, 1, 100).0, Vec::<u64>::new());
        assert_eq!(sch.next_due_ms(), Some(600_000));
        sch.check().unwrap();
        assert_eq!(sch.take_due(600_000, 10, 1, 100).0, vec![1]);
        sch.settle(1, None);
        assert_eq!(sch.take_due(600_000, 10, 1, 100).0, vec![2]);
        sch.check().unwrap();
    }

    #[test]
    fn priority_orders_heads_across_keys_never_within_one() {
        let mut sch = Schedule::default();
        sch.insert(s(1, 0, Priority::Normal), Some("a".into()));
        sch.insert(s(2, 0, Priority::High), Some("a".into()));
        sch.insert(s(3, 0, Priority::High), Some("b".into()));
        sch.insert(s(4, 0, Priority::Normal), None);
        assert_eq!(sch.take_due(0, 10, 1, 100).0, vec![3, 1, 4]);
        sch.settle(1, None);
        assert_eq!(sch.take_due(0, 10, 1, 100).0, vec![2]);
        sch.check().unwrap();
    }

    #[test]
    fn due_times_do_not_reorder_a_key() {
        let mut sch = Schedule::default();
        // The wall clock stepped back between the two: the newer one has the earlier due time.
        sch.insert(s(1, 5_000, Priority::Normal), Some("a".into()));
        sch.insert(s(2, 1_000, Priority::Normal), Some("a".into()));
        assert_eq!(sch.take_due(2_000, 10, 1, 100).0, Vec::<u64>::new());
        assert_eq!(sch.take_due(5_000, 10, 1, 100).0, vec![1]);
        sch.check().unwrap();
    }

    #[test]
    fn an_older_arrival_becomes_the_head_and_removal_promotes_the_next() {
        let mut sch = Schedule::default();
        sch.insert(s(5, 0, Priority::Normal), Some("a".into()));
        sch.insert(s(3, 0, Priority::Normal), Some("a".into()));
        sch.check().unwrap();
        sch.remove(3);
        sch.check().unwrap();
        assert_eq!(sch.take_due(0, 10, 1, 100).0, vec![5]);
        sch.give_back(5, Some(7));
        assert_eq!(sch.next_due_ms(), Some(7));
        sch.insert(s(5, 9, Priority::Normal), Some("a".into()));
        assert_eq!(
            sch.next_due_ms(),
            Some(9),
            "a known seq takes the new due time"
        );
        sch.remove(5);
        assert_eq!(sch.len(), 0);
        assert!(sch.keys.is_empty());
        sch.check().unwrap();
    }

    #[test]
    fn an_older_arrival_while_the_head_is_out_goes_next_whatever_the_head_does() {
        for retried in [false, true] {
            let mut sch = Schedule::default();
            sch.insert(s(9, 0, Priority::Normal), Some("k".into()));
            assert_eq!(sch.take_due(0, 10, 1, 100).0, vec![9]);
            // Read late (a failed read of new arrivals, a scan in due order): older than the
            // delivery out.
            sch.insert(s(5, 0, Priority::Normal), Some("k".into()));
            sch.check().unwrap();
            assert_eq!(
                sch.take_due(0, 10, 1, 100).0,
                Vec::<u64>::new(),
                "the key is out"
            );
            sch.settle(9, retried.then_some(0));
            sch.check().unwrap();
            assert_eq!(sch.take_due(0, 10, 1, 100).0, vec![5], "retried={retried}");
        }
    }

    #[test]
    fn a_take_fills_units_not_more() {
        let mut sch = Schedule::default();
        sch.insert(s(1, 0, Priority::High), None);
        for seq in 2..=20 {
            sch.insert(s(seq, 0, Priority::Normal), None);
        }
        sch.set_solo(3);
        // Two units: the high one alone, then 4 normal ones (the solo one counts as a unit
        // of its own, so: [2,4,5,6] needs a second unit for 3... two units are all we have).
        let (taken, more) = sch.take_due(0, 2, 4, 100);
        assert_eq!(taken, vec![1, 2]);
        assert!(more);
        sch.check().unwrap();
        let (taken, more) = sch.take_due(0, 3, 4, 100);
        assert_eq!(taken, vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert!(more);
        let (taken, more) = sch.take_due(0, 100, 4, 5);
        assert_eq!(taken.len(), 5, "at most max");
        assert!(more);
        let (_, more) = sch.take_due(0, 100, 4, 100);
        assert!(!more, "all taken");
    }

    #[test]
    fn order_keys_are_strings_or_numbers() {
        assert_eq!(order_key("/k", br#"{"k":"a"}"#).as_deref(), Some("a"));
        assert_eq!(order_key("/k", br#"{"k":7}"#).as_deref(), Some("7"));
        assert_eq!(order_key("/k", br#"{"k":[1]}"#), None);
        assert_eq!(order_key("/k", b"not json"), None);
    }
}

//! The broker's memory of recent requests, for at-most-once execution across retries.
//!
//! A request that repeats a recent request's `id` with the same function and arguments
//! is a retry: while the first run is going, the retry waits for it; after it finished,
//! the retry gets the stored reply. Entries are bounded in count, in stored bytes and in
//! time. No clock: every call takes `now`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// Identifies a call for retry matching: the client's id plus a fingerprint of what it
/// asks for, so that an id reused for a different call is not mistaken for a retry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RetryKey {
    id: String,
    fingerprint: u64,
}

impl RetryKey {
    /// The key of a request, or `None` when it has no usable id (absent or null).
    pub(crate) fn of(
        id: &Value,
        function: &str,
        args: &[Value],
        kwargs: &Map<String, Value>,
    ) -> Option<RetryKey> {
        let id = match id {
            Value::Null => return None,
            other => other.to_string(),
        };
        let mut h = DefaultHasher::new();
        function.hash(&mut h);
        // JSON text is a canonical enough form here: the same client sends the same bytes.
        // Streamed into the hasher: no copy of the arguments, no string built.
        let _ = serde_json::to_writer(HashWriter(&mut h), args);
        h.write_u8(0xff);
        let _ = serde_json::to_writer(HashWriter(&mut h), kwargs);
        Some(RetryKey {
            id,
            fingerprint: h.finish(),
        })
    }
}

/// Feeds written bytes to a hasher.
struct HashWriter<'h>(&'h mut DefaultHasher);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What is known of a recent request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seen {
    /// Still queued or running, under this broker key.
    Running(u64),
    /// Finished; this is the encoded reply.
    Done(Vec<u8>),
}

struct Entry {
    seen: Seen,
    expires: Instant,
}

/// Bounded map from [`RetryKey`] to [`Seen`].
pub(crate) struct Recent {
    window: Duration,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    entries: HashMap<RetryKey, Entry>,
    /// Insertion order for eviction; may hold keys already removed or re-inserted.
    order: VecDeque<(Instant, RetryKey)>,
}

impl Recent {
    pub(crate) fn new(window: Duration, max_entries: usize, max_bytes: usize) -> Recent {
        Recent {
            window,
            max_entries,
            max_bytes,
            bytes: 0,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn get(&self, key: &RetryKey, now: Instant) -> Option<&Seen> {
        self.entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| &e.seen)
    }

    /// Remembers a request that has started (queued or running) under broker key `job`.
    pub(crate) fn start(&mut self, key: RetryKey, job: u64, now: Instant) {
        self.put(key, Seen::Running(job), now);
    }

    /// Stores the reply of a finished request. Nothing is stored when retries are off
    /// (zero window or capacity) or the reply alone exceeds the byte budget.
    pub(crate) fn finish(&mut self, key: RetryKey, reply: Vec<u8>, now: Instant) {
        if reply.len() + 2 * key.id.len() > self.max_bytes {
            self.forget(&key);
            return;
        }
        self.put(key, Seen::Done(reply), now);
    }

    /// Forgets a request that ended without running (it may safely run if retried).
    pub(crate) fn forget(&mut self, key: &RetryKey) {
        if let Some(e) = self.entries.remove(key) {
            self.bytes -= size(key, &e.seen);
        }
    }

    fn put(&mut self, key: RetryKey, seen: Seen, now: Instant) {
        if self.window.is_zero() || self.max_entries == 0 {
            return;
        }
        self.forget(&key);
        self.bytes += size(&key, &seen);
        let expires = now + self.window;
        self.order.push_back((expires, key.clone()));
        self.entries.insert(key, Entry { seen, expires });
        self.evict(now);
    }

    /// Drops expired entries, then the oldest ones while over a bound. Entries of
    /// running requests are dropped last: dropping one only means a retry runs again.
    pub(crate) fn evict(&mut self, now: Instant) {
        // Looks at the front by reference: this runs on every turn of the broker loop.
        while let Some((expires, _)) = self.order.front() {
            let over = self.entries.len() > self.max_entries || self.bytes > self.max_bytes;
            if *expires > now && !over {
                break;
            }
            let Some((expires, key)) = self.order.pop_front() else {
                break;
            };
            // Remove only if this order slot is the entry's current one.
            if self.entries.get(&key).is_some_and(|e| e.expires == expires) {
                self.forget(&key);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Bytes an entry holds: its stored reply, and its id twice (the map's key and the
/// eviction order's copy). Counting the id keeps huge ids (a hostile client's 4 MiB
/// string, say) inside the byte budget too.
fn size(key: &RetryKey, seen: &Seen) -> usize {
    let reply = match seen {
        Seen::Running(_) => 0,
        Seen::Done(reply) => reply.len(),
    };
    reply + 2 * key.id.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(id: u64) -> RetryKey {
        RetryKey::of(&json!(id), "mul", &[json!(3), json!(4)], &Map::new()).unwrap()
    }

    #[test]
    fn huge_ids_count_against_the_byte_budget() {
        let now = Instant::now();
        let mut r = Recent::new(Duration::from_secs(60), 1000, 10_000);
        let huge = |n: u64| {
            RetryKey::of(
                &json!(format!("{n}{}", "x".repeat(3000))),
                "f",
                &[],
                &Map::new(),
            )
            .unwrap()
        };
        for n in 0..100 {
            r.start(huge(n), n, now);
        }
        assert!(r.bytes <= 10_000, "{}", r.bytes);
        assert!(r.entries.len() <= 2, "{}", r.entries.len());
        assert!(r.get(&huge(99), now).is_some(), "the newest is kept");
    }

    #[test]
    fn same_id_different_call_is_not_a_retry() {
        let a = RetryKey::of(&json!("x"), "mul", &[json!(1)], &Map::new());
        let b = RetryKey::of(&json!("x"), "mul", &[json!(2)], &Map::new());
        assert_ne!(a, b);
        assert_eq!(RetryKey::of(&Value::Null, "mul", &[], &Map::new()), None);
    }

    #[test]
    fn remembers_until_the_window_ends() {
        let now = Instant::now();
        let mut r = Recent::new(Duration::from_secs(60), 100, 1 << 20);
        r.start(key(1), 7, now);
        assert_eq!(r.get(&key(1), now), Some(&Seen::Running(7)));
        r.finish(key(1), b"reply".to_vec(), now);
        assert_eq!(r.get(&key(1), now), Some(&Seen::Done(b"reply".to_vec())));
        let later = now + Duration::from_secs(61);
        assert_eq!(r.get(&key(1), later), None);
        r.evict(later);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let now = Instant::now();
        // Entries cost their reply plus twice their id ("0".."10": 1-2 bytes).
        let mut r = Recent::new(Duration::from_secs(60), 3, 12);
        for i in 0..5 {
            r.finish(key(i), b"12".to_vec(), now);
        }
        assert_eq!(r.len(), 3, "count bound");
        assert_eq!(r.get(&key(0), now), None, "oldest went first");
        r.finish(key(9), b"123456789".to_vec(), now);
        assert!(r.bytes <= 12, "byte bound: {}", r.bytes);
        assert!(r.get(&key(9), now).is_some());
        r.finish(key(10), vec![0; 9], now);
        assert_eq!(
            r.get(&key(10), now),
            None,
            "a reply over the budget is not stored"
        );
    }
}

//! The broker's memory of recent requests, for at-most-once execution across retries.
//!
//! A request that repeats a recent request's `id` with the same function and arguments
//! is a retry: while the first run is going, the retry waits for it; after it finished,
//! the retry gets the stored reply. Entries are bounded in count, in stored bytes and in
//! time. No clock: every call takes `now`.
//!
//! Compact by design (a busy broker remembers ~100,000 calls): an entry is one 32-byte
//! slot in a queue kept in insertion order (which is also the order of eviction), and
//! one 16-byte slot in a hash index from the key's first half to the slot's sequence
//! number. The key is a 128-bit keyed hash of id, function and argument bytes; the id
//! and arguments themselves are not kept. A finished call keeps only its outcome (the
//! result's or the error's JSON): the reply is rebuilt around the retry's own id, which
//! encodes to the same bytes as the original's (that is what made it match). Outcomes
//! of up to 8 bytes (`12`) live inside the slot; longer ones in one allocation of their
//! own, found by the slot's sequence number.
//!
//! A long outcome (at least [`ACK_MIN_BYTES`]) is also indexed by its owner, a hash of
//! the connection it came from and its id: when the client's next request there
//! acknowledges the reply (`ack`, `docs/protocol.md` 4.11), the outcome is released at
//! once instead of at the end of its window. The entry stays, so a repeat of the
//! acknowledged request is still recognised, and refused rather than run again.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::protocol::{OutcomeKind, ACK_MIN_BYTES};

/// Identifies a call for retry matching: a keyed 128-bit hash of the client's id and of
/// what it asks for, so that an id reused for a different call is not mistaken for a
/// retry. The hash keys are random per broker, so no client can aim for another's key;
/// how likely two different calls share one by chance: see [`KeyHasher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RetryKey {
    lo: u64,
    hi: u64,
}

/// Makes [`RetryKey`]s in two steps. The arguments (the only part that may be large:
/// a 1 MiB string is hashed with every call) go through a fast randomly seeded hash,
/// `foldhash`, into a 64-bit digest; two independently keyed SipHash instances then make
/// the key's halves from id, function and that digest.
///
/// Why the arguments need no cryptographic hash: the digest only tells a retry from an
/// id reused for other arguments, which is a client's mistake, and by chance two
/// different argument texts share a digest with about 2^-64 per pair. Someone aiming
/// for a collision would need the other caller's id and arguments, and with those they
/// can send the very same request, which is a retry by design. Calls that differ in id
/// or function share a key with about 2^-128. SipHash over a 1 MiB argument cost about
/// 180 µs, foldhash 35 µs (`docs/performance.md`).
pub(crate) struct KeyHasher {
    args: foldhash::quality::RandomState,
    lo: RandomState,
    hi: RandomState,
}

impl KeyHasher {
    pub(crate) fn new() -> KeyHasher {
        KeyHasher {
            args: foldhash::quality::RandomState::default(),
            lo: RandomState::new(),
            hi: RandomState::new(),
        }
    }

    /// The key of a request. `id` is the id's JSON text (`None`: no id, or `null`:
    /// never remembered); `arguments` the bytes of whatever else a retry must repeat,
    /// as the client sent them (the same client sends the same bytes again): the JSON
    /// text of `args` and `kwargs`, data frames, `accept_frames`.
    pub(crate) fn key(
        &self,
        id: Option<&str>,
        function: &str,
        arguments: &[&[u8]],
    ) -> Option<RetryKey> {
        let id = id.filter(|id| *id != "null")?;
        let mut h = self.args.build_hasher();
        // Each part with its length first: no two splits of the same bytes agree.
        for part in arguments {
            h.write_usize(part.len());
            h.write(part);
        }
        let arguments = h.finish();
        let digest = |state: &RandomState| {
            let mut h = state.build_hasher();
            for part in [id.as_bytes(), function.as_bytes()] {
                h.write_usize(part.len());
                h.write(part);
            }
            h.write_u64(arguments);
            h.finish()
        };
        Some(RetryKey {
            lo: digest(&self.lo),
            hi: digest(&self.hi),
        })
    }

    /// The owner of a request for acknowledgements: its connection (`envelope`, the
    /// routing frames it came with) and its id's JSON text. Keyed, so no client can aim
    /// at another's.
    pub(crate) fn owner(&self, envelope: &[Vec<u8>], id: &str) -> u64 {
        let mut h = self.args.build_hasher();
        for part in envelope.iter().map(Vec::as_slice).chain([id.as_bytes()]) {
            h.write_usize(part.len());
            h.write(part);
        }
        h.finish()
    }
}

/// What is known of a recent request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Seen<'a> {
    /// Still queued or running, under this broker key.
    Running(u64),
    /// Finished; the outcome's bytes, of `kind`.
    Done { kind: OutcomeKind, body: &'a [u8] },
    /// Finished, and the client acknowledged the reply: the outcome is gone.
    Released,
}

/// Outcomes up to this many bytes are kept inside the slot.
const INLINE: usize = 8;

/// The longest an entry can be remembered: expiry times are kept as 32-bit
/// milliseconds, moved to a new base before they could overflow.
const MAX_WINDOW: Duration = Duration::from_millis(1 << 30); // about 12 days

/// A slot's state. 11 bytes, all byte-aligned, so that a slot is 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    /// Forgotten or replaced; skipped until it reaches the front of the queue.
    Dead,
    /// Queued or running under this broker key (little-endian).
    Running([u8; 8]),
    Inline {
        kind: OutcomeKind,
        len: u8,
        bytes: [u8; INLINE],
    },
    /// The outcome is in [`Recent::heap`] under the slot's sequence number.
    Heap { kind: OutcomeKind },
    /// The outcome was acknowledged and released.
    Released,
}

#[derive(Debug)]
struct Slot {
    key: RetryKey,
    /// Milliseconds after [`Recent::base`] at which the entry is forgotten.
    expires: u32,
    stored: Stored,
}

/// The index hashes nothing: its keys are already uniform random 64-bit values.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How long a released outcome's buffer waits to be reused (see [`Recent::spare`]).
const SPARE_FOR_MS: u64 = 1000;

/// An outcome kept outside its slot.
struct Kept {
    body: Vec<u8>,
    /// Its entry in [`Recent::owners`], if it has one.
    owner: Option<u64>,
}

/// Bounded map from [`RetryKey`] to [`Seen`].
pub(crate) struct Recent {
    window: Duration,
    max_entries: usize,
    max_bytes: usize,
    /// Bytes of outcomes stored outside their slots.
    bytes: usize,
    /// Live entries (the queue also holds dead slots).
    live: usize,
    base: Instant,
    /// Outcomes longer than [`INLINE`], by their slot's sequence number.
    heap: HashMap<u64, Kept, BuildHasherDefault<Identity>>,
    /// Owner ([`KeyHasher::owner`]) -> sequence number, for outcomes of at least
    /// [`ACK_MIN_BYTES`] in `heap`.
    owners: HashMap<u64, u64, BuildHasherDefault<Identity>>,
    /// The buffer of the last released outcome, with when it was released (ms after
    /// `base`): the next long outcome is copied into it instead of into memory the
    /// process may have to fault in again (glibc gives large freed blocks back to the
    /// kernel). Dropped when unused for [`SPARE_FOR_MS`].
    spare: Option<(Vec<u8>, u64)>,
    /// Slots in insertion order; `slots[i]` has sequence number `front_seq + i`.
    slots: VecDeque<Slot>,
    front_seq: u64,
    /// The key's `lo` half -> sequence number of its live slot. Two live keys that share
    /// `lo` (chance 2^-64 per pair) cannot both be indexed: the older one is forgotten,
    /// which only means its retry would run again.
    index: HashMap<u64, u64, BuildHasherDefault<Identity>>,
}

impl Recent {
    /// `window` is the longest an entry is remembered (zero turns retries off; at most
    /// about 12 days), `max_entries` and `max_bytes` the bounds on entries and stored
    /// outcome bytes.
    pub(crate) fn new(
        window: Duration,
        max_entries: usize,
        max_bytes: usize,
        now: Instant,
    ) -> Recent {
        Recent {
            window: window.min(MAX_WINDOW),
            max_entries,
            max_bytes,
            bytes: 0,
            live: 0,
            base: now,
            heap: HashMap::default(),
            owners: HashMap::default(),
            spare: None,
            slots: VecDeque::new(),
            front_seq: 0,
            index: HashMap::default(),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }

    /// When an entry remembered for `remember` from `now` expires (evict keeps `now`
    /// below 2^31 ms after the base, and the window is at most 2^30 ms).
    fn expiry(&self, remember: Duration, now: Instant) -> u32 {
        u32::try_from(self.ms(now + remember.min(self.window))).unwrap_or(u32::MAX)
    }

    fn slot(&self, key: &RetryKey) -> Option<usize> {
        let seq = *self.index.get(&key.lo)?;
        let i = usize::try_from(seq.checked_sub(self.front_seq)?).ok()?;
        (self.slots.get(i)?.key == *key).then_some(i)
    }

    pub(crate) fn get(&self, key: &RetryKey, now: Instant) -> Option<Seen<'_>> {
        let i = self.slot(key)?;
        let slot = &self.slots[i];
        if u64::from(slot.expires) <= self.ms(now) {
            return None;
        }
        match &slot.stored {
            Stored::Dead => None,
            Stored::Running(job) => Some(Seen::Running(u64::from_le_bytes(*job))),
            Stored::Inline { kind, len, bytes } => Some(Seen::Done {
                kind: *kind,
                body: &bytes[..usize::from(*len).min(INLINE)],
            }),
            Stored::Heap { kind } => Some(Seen::Done {
                kind: *kind,
                body: &self.heap.get(&(self.front_seq + i as u64))?.body,
            }),
            Stored::Released => Some(Seen::Released),
        }
    }

    /// Remembers a request that has started (queued or running) under broker key `job`,
    /// until `remember` from now (at most the window).
    pub(crate) fn start(&mut self, key: RetryKey, job: u64, remember: Duration, now: Instant) {
        if self.window.is_zero() || self.max_entries == 0 {
            return;
        }
        self.forget(&key);
        if let Some(old) = self
            .index
            .insert(key.lo, self.front_seq + self.slots.len() as u64)
        {
            // A different key with the same `lo`: it loses its place (see `index`).
            self.kill(old);
        }
        let expires = self.expiry(remember, now);
        self.slots.push_back(Slot {
            key,
            expires,
            stored: Stored::Running(job.to_le_bytes()),
        });
        self.live += 1;
        self.evict(now);
    }

    /// A retry of a remembered request arrived: it is remembered at least until
    /// `remember` from now (at most the window).
    pub(crate) fn extend(&mut self, key: &RetryKey, remember: Duration, now: Instant) {
        let until = self.expiry(remember, now);
        if let Some(i) = self.slot(key) {
            let slot = &mut self.slots[i];
            slot.expires = slot.expires.max(until);
        }
    }

    /// Stores the outcome of a finished request (`body`, of `kind`), in the slot its
    /// start took; `owner` ([`KeyHasher::owner`]) may acknowledge it if it is long.
    /// Nothing is stored when the request is no longer remembered or the outcome alone
    /// exceeds the byte budget.
    pub(crate) fn finish(
        &mut self,
        key: &RetryKey,
        kind: OutcomeKind,
        body: &[u8],
        owner: u64,
        now: Instant,
    ) {
        let Some(i) = self.slot(key) else {
            return;
        };
        if body.len() > self.max_bytes {
            self.forget(key);
            return;
        }
        let seq = self.front_seq + i as u64;
        self.take_heap(seq);
        self.slots[i].stored = if body.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..body.len()].copy_from_slice(body);
            Stored::Inline {
                kind,
                len: body.len() as u8,
                bytes,
            }
        } else {
            self.bytes += body.len();
            let owner = (body.len() >= ACK_MIN_BYTES).then(|| {
                if let Some(old) = self.owners.insert(owner, seq) {
                    // Another outcome under the same owner (the id reused, or a hash
                    // collision): it can no longer be acknowledged, only expire.
                    if let Some(kept) = self.heap.get_mut(&old) {
                        kept.owner = None;
                    }
                }
                owner
            });
            let body = self.copy_of(body);
            self.heap.insert(seq, Kept { body, owner });
            Stored::Heap { kind }
        };
        self.evict(now);
    }

    /// `body` in a buffer of its own: the spare one when it fits without wasting more
    /// than half of it.
    fn copy_of(&mut self, body: &[u8]) -> Vec<u8> {
        match self.spare.take() {
            Some((mut buf, _)) if (body.len()..=body.len() * 2).contains(&buf.capacity()) => {
                buf.clear();
                buf.extend_from_slice(body);
                buf
            }
            other => {
                self.spare = other;
                body.to_vec()
            }
        }
    }

    /// The client acknowledged the reply of the request `owner` names: its outcome is
    /// freed (its buffer kept as the spare), and a repeat of the request will be
    /// refused ([`Seen::Released`]). Unknown owners are ignored (short outcomes have
    /// none, and old ones expire).
    pub(crate) fn release(&mut self, owner: u64, now: Instant) {
        let Some(seq) = self.owners.get(&owner).copied() else {
            return;
        };
        if let Some(kept) = self.take_heap(seq) {
            self.spare = Some((kept.body, self.ms(now)));
        }
        let slot = seq
            .checked_sub(self.front_seq)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.slots.get_mut(i));
        if let Some(slot) = slot {
            if matches!(slot.stored, Stored::Heap { .. }) {
                slot.stored = Stored::Released;
            }
        }
    }

    /// Takes the outcome kept apart for slot `seq`, if any, out of the books (dropping
    /// what this returns frees it).
    fn take_heap(&mut self, seq: u64) -> Option<Kept> {
        let kept = self.heap.remove(&seq)?;
        self.bytes -= kept.body.len();
        if let Some(owner) = kept.owner {
            self.owners.remove(&owner);
        }
        Some(kept)
    }

    /// Forgets a request that ended without running (it may safely run if retried).
    pub(crate) fn forget(&mut self, key: &RetryKey) {
        if self.slot(key).is_some() {
            if let Some(seq) = self.index.remove(&key.lo) {
                self.kill(seq);
            }
        }
    }

    /// Marks the slot with sequence number `seq` dead (it is no longer indexed).
    fn kill(&mut self, seq: u64) {
        let Some(i) = seq
            .checked_sub(self.front_seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(i) {
            if slot.stored != Stored::Dead {
                slot.stored = Stored::Dead;
                self.live -= 1;
                self.take_heap(seq);
            }
        }
    }

    /// Drops dead and expired entries from the front, and the oldest ones while over a
    /// bound. An expired entry behind a live one is invisible to [`Recent::get`] and
    /// freed when it reaches the front.
    pub(crate) fn evict(&mut self, now: Instant) {
        let now = self.ms(now);
        if now >= 1 << 31 {
            // Move the base to now, before 32-bit expiry times could overflow.
            let shift = now;
            self.base += Duration::from_millis(shift);
            for slot in &mut self.slots {
                slot.expires = slot.expires.saturating_sub(shift as u32);
            }
            self.spare = None;
            return self.evict(self.base);
        }
        if self
            .spare
            .as_ref()
            .is_some_and(|(_, at)| now >= at + SPARE_FOR_MS)
        {
            self.spare = None;
        }
        while let Some(front) = self.slots.front() {
            let over = self.live > self.max_entries || self.bytes > self.max_bytes;
            let dead = front.stored == Stored::Dead;
            if !dead && u64::from(front.expires) > now && !over {
                break;
            }
            if !dead {
                let lo = front.key.lo;
                self.kill(self.front_seq);
                if self.index.get(&lo) == Some(&self.front_seq) {
                    self.index.remove(&lo);
                }
            }
            self.slots.pop_front();
            self.front_seq += 1;
        }
        // Give memory back after a burst, but not on every small dip.
        if self.slots.capacity() > 1024 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
            self.index.shrink_to(self.index.len() * 2);
            self.heap.shrink_to(self.heap.len() * 2);
            self.owners.shrink_to(self.owners.len() * 2);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn keys() -> KeyHasher {
        KeyHasher::new()
    }

    fn key(h: &KeyHasher, id: u64) -> RetryKey {
        h.key(Some(&id.to_string()), "mul", &[b"[3,4]", b""])
            .unwrap()
    }

    fn done(body: &[u8]) -> Option<Seen<'_>> {
        Some(Seen::Done {
            kind: OutcomeKind::Result,
            body,
        })
    }

    #[test]
    fn an_acknowledged_long_outcome_is_released_and_its_repeat_refused() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        let conn = vec![b"conn-1".to_vec()];
        let owner = h.owner(&conn, "\"c-1\"");
        assert_ne!(owner, h.owner(&[b"conn-2".to_vec()], "\"c-1\""));
        assert_ne!(owner, h.owner(&conn, "\"c-2\""));
        let long = vec![b'x'; ACK_MIN_BYTES];
        r.start(key(&h, 1), 1, MINUTE, now);
        r.finish(&key(&h, 1), OutcomeKind::Text, &long, owner, now);
        assert_eq!(
            r.get(&key(&h, 1), now),
            Some(Seen::Done {
                kind: OutcomeKind::Text,
                body: &long
            })
        );
        assert_eq!(r.bytes, long.len());
        // Someone else's acknowledgement releases nothing.
        r.release(h.owner(&[b"conn-2".to_vec()], "\"c-1\""), now);
        assert_eq!(r.bytes, long.len());
        r.release(owner, now);
        assert_eq!(r.bytes, 0);
        assert!(r.heap.is_empty() && r.owners.is_empty());
        assert_eq!(r.get(&key(&h, 1), now), Some(Seen::Released));
        assert_eq!(r.len(), 1, "the entry stays until its time");
        r.release(owner, now);
        assert_eq!(r.get(&key(&h, 1), now + MINUTE), None, "then it expires");

        // A short outcome has no owner entry: acknowledging it changes nothing.
        let short = vec![b'y'; ACK_MIN_BYTES - 1];
        r.start(key(&h, 2), 2, MINUTE, now);
        r.finish(&key(&h, 2), OutcomeKind::Result, &short, owner, now);
        r.release(owner, now);
        assert_eq!(r.get(&key(&h, 2), now), done(&short));

        // An evicted outcome takes its owner entry with it.
        r.start(key(&h, 3), 3, MINUTE, now);
        r.finish(&key(&h, 3), OutcomeKind::Result, &long, owner, now);
        assert_eq!(r.owners.len(), 1);
        r.forget(&key(&h, 3));
        assert!(r.owners.is_empty());
    }

    #[test]
    fn a_released_buffer_is_reused_for_the_next_long_outcome_within_a_second() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        let owner = |id: u64| h.owner(&[b"c".to_vec()], &id.to_string());
        let long = vec![b'x'; 4 * ACK_MIN_BYTES];
        let kept_at = |r: &Recent, id: u64| match r.get(&key(&h, id), now) {
            Some(Seen::Done { body, .. }) => body.as_ptr(),
            other => panic!("not kept: {other:?}"),
        };
        r.start(key(&h, 1), 1, MINUTE, now);
        r.finish(&key(&h, 1), OutcomeKind::Result, &long, owner(1), now);
        let first = kept_at(&r, 1);
        r.release(owner(1), now);
        // The next outcome of about the same size lands in the same memory.
        r.start(key(&h, 2), 2, MINUTE, now);
        r.finish(&key(&h, 2), OutcomeKind::Result, &long[1..], owner(2), now);
        assert_eq!(kept_at(&r, 2), first);
        assert!(r.spare.is_none());
        // One much smaller does not take it; an unused spare goes after a second.
        r.release(owner(2), now);
        r.start(key(&h, 3), 3, MINUTE, now);
        r.finish(
            &key(&h, 3),
            OutcomeKind::Result,
            &long[..ACK_MIN_BYTES],
            owner(3),
            now,
        );
        assert!(r.spare.is_some());
        r.evict(now + Duration::from_millis(SPARE_FOR_MS - 1));
        assert!(r.spare.is_some());
        r.evict(now + Duration::from_millis(SPARE_FOR_MS));
        assert!(r.spare.is_none());
    }

    #[test]
    fn a_slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn expiry_times_survive_a_long_uptime() {
        let h = keys();
        let start = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, start);
        // 30 days in, past 32-bit milliseconds from the start.
        let now = start + Duration::from_secs(30 * 86_400);
        r.evict(now);
        r.start(key(&h, 1), 1, Duration::from_secs(10), now);
        r.start(key(&h, 2), 2, MINUTE, now);
        r.evict(now + Duration::from_secs(5));
        assert_eq!(
            r.get(&key(&h, 1), now + Duration::from_secs(9)),
            Some(Seen::Running(1))
        );
        assert_eq!(r.get(&key(&h, 1), now + Duration::from_secs(10)), None);
        let later = now + Duration::from_secs(30 * 86_400);
        r.evict(later);
        assert_eq!(r.len(), 0, "expired across a change of base");
        r.start(key(&h, 3), 3, Duration::from_secs(10), later);
        assert!(r.get(&key(&h, 3), later + Duration::from_secs(9)).is_some());
        assert_eq!(r.get(&key(&h, 3), later + Duration::from_secs(10)), None);
    }

    #[test]
    fn same_id_different_call_is_not_a_retry() {
        let h = keys();
        let a = h.key(Some("\"x\""), "mul", &[b"[1]", b""]);
        assert_eq!(a, h.key(Some("\"x\""), "mul", &[b"[1]", b""]));
        assert_ne!(a, h.key(Some("\"x\""), "mul", &[b"[2]", b""]));
        assert_ne!(a, h.key(Some("\"x\""), "add", &[b"[1]", b""]));
        assert_ne!(a, h.key(Some("\"y\""), "mul", &[b"[1]", b""]));
        assert_ne!(a, h.key(Some("\"x\""), "mul", &[b"[1]", b"{\"a\":1}"]));
        // Moving bytes from one part to the next is a different call.
        assert_ne!(
            h.key(Some("1"), "ab", &[b"", b""]),
            h.key(Some("1"), "a", &[b"b", b""])
        );
        assert_eq!(h.key(None, "mul", &[b"[]", b""]), None);
        assert_eq!(h.key(Some("null"), "mul", &[b"[]", b""]), None);
        // A data frame, or `accept_frames`, is part of the call too.
        assert_ne!(
            a,
            h.key(Some("\"x\""), "mul", &[b"[1]", b"", b"0", b"text"])
        );
        // Keys are per broker: another broker's hash keys differ.
        assert_ne!(a, keys().key(Some("\"x\""), "mul", &[b"[1]", b""]));
    }

    #[test]
    fn huge_ids_cost_no_memory() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 1000, 10_000, now);
        let huge = |n: u64| {
            h.key(
                Some(&format!("\"{n}{}\"", "x".repeat(3000))),
                "f",
                &[b"[]", b""],
            )
            .unwrap()
        };
        for n in 0..100 {
            r.start(huge(n), n, MINUTE, now);
        }
        assert_eq!(r.len(), 100);
        assert_eq!(r.bytes, 0);
        assert_eq!(r.get(&huge(0), now), Some(Seen::Running(0)));
    }

    #[test]
    fn remembers_until_its_time_ends() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        r.start(key(&h, 1), 7, Duration::from_secs(10), now);
        assert_eq!(r.get(&key(&h, 1), now), Some(Seen::Running(7)));
        r.finish(
            &key(&h, 1),
            OutcomeKind::Result,
            b"12",
            0,
            now + Duration::from_secs(1),
        );
        assert_eq!(r.get(&key(&h, 1), now), done(b"12"));
        let at = |s| now + Duration::from_secs(s);
        assert_eq!(r.get(&key(&h, 1), at(9)), done(b"12"));
        assert_eq!(r.get(&key(&h, 1), at(10)), None, "forgotten at its time");
        r.evict(at(10));
        assert_eq!(r.len(), 0);
        assert!(r.slots.is_empty() && r.index.is_empty());
    }

    #[test]
    fn never_longer_than_the_window() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(Duration::from_secs(5), 100, 1 << 20, now);
        r.start(key(&h, 1), 7, Duration::from_secs(3600), now);
        assert!(r
            .get(&key(&h, 1), now + Duration::from_millis(4999))
            .is_some());
        assert_eq!(r.get(&key(&h, 1), now + Duration::from_secs(5)), None);
    }

    #[test]
    fn a_retry_extends_the_time() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        r.start(key(&h, 1), 7, Duration::from_secs(10), now);
        r.extend(
            &key(&h, 1),
            Duration::from_secs(10),
            now + Duration::from_secs(8),
        );
        r.extend(
            &key(&h, 1),
            Duration::from_secs(1),
            now + Duration::from_secs(9),
        );
        assert!(r.get(&key(&h, 1), now + Duration::from_secs(17)).is_some());
        assert_eq!(r.get(&key(&h, 1), now + Duration::from_secs(18)), None);
    }

    #[test]
    fn expired_entries_behind_a_live_one_are_freed_when_it_goes() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        r.start(key(&h, 1), 1, Duration::from_secs(30), now);
        for i in 2..10 {
            r.start(key(&h, i), i, Duration::from_secs(1), now);
        }
        let later = now + Duration::from_secs(2);
        r.evict(later);
        assert_eq!(r.get(&key(&h, 5), later), None);
        assert!(r.get(&key(&h, 1), later).is_some());
        r.evict(now + Duration::from_secs(30));
        assert_eq!(r.slots.len(), 0);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn forgotten_and_restarted_entries_leave_no_stale_state() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100, 1 << 20, now);
        r.start(key(&h, 1), 1, MINUTE, now);
        r.forget(&key(&h, 1));
        assert_eq!(r.get(&key(&h, 1), now), None);
        r.finish(&key(&h, 1), OutcomeKind::Result, b"late", 0, now);
        assert_eq!(
            r.get(&key(&h, 1), now),
            None,
            "a forgotten call stores nothing"
        );
        r.start(key(&h, 1), 2, MINUTE, now);
        r.start(key(&h, 1), 3, MINUTE, now);
        assert_eq!(r.get(&key(&h, 1), now), Some(Seen::Running(3)));
        assert_eq!(r.len(), 1);
        let long = vec![b'7'; 100];
        r.finish(&key(&h, 1), OutcomeKind::Error, &long, 0, now);
        assert_eq!(
            r.get(&key(&h, 1), now),
            Some(Seen::Done {
                kind: OutcomeKind::Error,
                body: &long
            })
        );
        assert_eq!(r.bytes, 100);
        r.forget(&key(&h, 1));
        assert_eq!(r.bytes, 0);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 3, 40, now);
        for i in 0..5 {
            r.start(key(&h, i), i, MINUTE, now);
            r.finish(&key(&h, i), OutcomeKind::Result, b"12", 0, now);
        }
        assert_eq!(r.len(), 3, "count bound");
        assert_eq!(r.get(&key(&h, 0), now), None, "oldest went first");
        assert_eq!(r.get(&key(&h, 4), now), done(b"12"));
        // Outcomes over the inline size count against the byte budget.
        let body = [b'x'; 30];
        r.start(key(&h, 9), 9, MINUTE, now);
        r.finish(&key(&h, 9), OutcomeKind::Result, &body, 0, now);
        r.start(key(&h, 10), 10, MINUTE, now);
        r.finish(&key(&h, 10), OutcomeKind::Result, &body, 0, now);
        assert!(r.bytes <= 40, "byte bound: {}", r.bytes);
        assert_eq!(r.get(&key(&h, 9), now), None, "older one dropped for bytes");
        assert_eq!(r.get(&key(&h, 10), now), done(&body));
        r.start(key(&h, 11), 11, MINUTE, now);
        r.finish(&key(&h, 11), OutcomeKind::Result, &[0; 41], 0, now);
        assert_eq!(
            r.get(&key(&h, 11), now),
            None,
            "an outcome over the budget is not stored"
        );
    }

    #[test]
    fn off_when_the_window_or_the_count_is_zero() {
        let h = keys();
        let now = Instant::now();
        for mut r in [
            Recent::new(Duration::ZERO, 100, 1000, now),
            Recent::new(MINUTE, 0, 1000, now),
        ] {
            r.start(key(&h, 1), 1, MINUTE, now);
            r.finish(&key(&h, 1), OutcomeKind::Result, b"1", 0, now);
            assert_eq!(r.get(&key(&h, 1), now), None);
            assert_eq!(r.len(), 0);
        }
    }

    #[test]
    fn memory_is_returned_after_a_burst() {
        let h = keys();
        let now = Instant::now();
        let mut r = Recent::new(MINUTE, 100_000, 1 << 20, now);
        for i in 0..20_000 {
            r.start(key(&h, i), i, Duration::from_secs(1), now);
        }
        let cap = r.slots.capacity();
        r.evict(now + Duration::from_secs(2));
        assert_eq!(r.len(), 0);
        assert!(
            r.slots.capacity() < cap / 4,
            "{} of {cap}",
            r.slots.capacity()
        );
    }
}

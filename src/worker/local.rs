//! Local workers: the threads of an `RpcServer` that run calls in the broker's own
//! process, handed over through memory instead of a socket.
//!
//! The broker thread puts a call on a queue that the pool's threads take from, and
//! wakes a sleeping thread only when the queue holds more calls than there are awake
//! threads free to take them and no wake-up is on its way; a woken thread passes the
//! wake-up on when it takes a call and more are waiting, so a burst costs the broker one
//! futex call. A thread running a call never counts as free, however short the call,
//! so a call never waits for a running one to end. A thread that
//! finishes a call puts the reply in the broker's inbox and writes an eventfd, which the
//! broker polls beside its sockets, only when the inbox was empty. So under load a
//! finished thread finds its next call already queued, and the broker collects several
//! replies per wake-up, where a socket per worker cost a wake-up of each side per call
//! (`docs/performance.md`).
//!
//! While calls come one at a time, one thread that finds the queue empty waits awake
//! for the next call for a moment, yielding its CPU at every turn, before it sleeps:
//! the next call then costs no wake-up, and the CPU stays awake for the threads on the
//! call's way. The moment is twice the last pause between calls, at most
//! `RpcServer::spin` (250 µs by default), and 50 µs after a longer pause. For a large
//! request the broker wakes a thread as the request arrives
//! ([`LocalLink::expect_call`]), so that the wake-up overlaps the broker's checks of
//! it; that thread waits for the call up to the whole bound. These are the only spins
//! on the path of a call: the broker sleeps in `zmq_poll`.
//!
//! The broker counts the pool as one worker with one slot per thread (more while it is
//! the only worker; see `Dispatcher::slots`). A call waiting in the pool's queue waits
//! no longer than it would in the broker's: every thread serves every function, and
//! the first thread to be free takes the oldest call.
//!
//! A call crosses no JSON envelope on the way: the thread gets the function's name and
//! its arguments as the JSON text the client sent (the broker has checked it), and
//! gives back the result as JSON text, which the broker forwards as it is.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::Registry;
use crate::error::Error;
use crate::protocol::{Call, FRAME_MIN_BYTES};

/// How long after two or more calls last ran at once no thread spins for the next call
/// (see [`Shared::take_call`]): under load, the CPU a spin takes is what the other
/// threads need, and a thread finishing a call finds the next one queued anyway.
const CALM: Duration = Duration::from_millis(1);

/// The shortest spin for the next call, after a pause longer than the longest spin.
const MIN_SPIN: Duration = Duration::from_micros(50);

/// How long a thread that finds no call spins for one: twice the last pause between
/// the pool falling idle and the next call, within `MIN_SPIN..=max`; `MIN_SPIN` after a
/// pause longer than `max` (the caller is not calling back that fast, and a spin would
/// be CPU spent for nothing). Zero when `max` is.
fn spin_time(last_pause: Duration, max: Duration) -> Duration {
    let least = MIN_SPIN.min(max);
    if last_pause <= max {
        last_pause.saturating_mul(2).clamp(least, max)
    } else {
        least
    }
}

/// A call for the pool, as the broker hands it over.
#[derive(Debug, PartialEq)]
pub(crate) struct LocalCall {
    /// The broker's key for the call; the reply carries it back.
    pub key: u64,
    pub function: String,
    /// The positional arguments' JSON text (an array), as the client sent it.
    pub args: Vec<u8>,
    /// The keyword arguments' JSON text (an object), if any.
    pub kwargs: Option<Vec<u8>>,
    /// Strings that came in data frames, with their positions in `args`, where the
    /// text has `null`.
    pub frames: Vec<(usize, String)>,
    /// The client reads a string result from a data frame.
    pub accept_frames: bool,
    /// When the caller gives up: a call that waited past it is not started.
    pub deadline: Instant,
}

/// A call's result, as the pool hands it back.
#[derive(Debug, PartialEq)]
pub(crate) enum Output {
    /// The result's JSON text.
    Json(Vec<u8>),
    /// A string result's UTF-8 text, for a client that takes it as a data frame.
    Text(Vec<u8>),
}

/// A finished call: its result, or its error.
#[derive(Debug)]
pub(crate) struct LocalReply {
    pub key: u64,
    pub outcome: Result<Output, Error>,
}

struct Calls {
    queue: VecDeque<LocalCall>,
    /// Threads in the pool.
    threads: usize,
    /// Threads asleep on `Shared::ready` and not yet woken.
    asleep: usize,
    /// Threads running a call.
    running: usize,
    /// Wake-ups given and not yet taken (a thread woken without one, spuriously,
    /// sleeps on).
    wakeups: usize,
    /// No more calls: idle threads end.
    closed: bool,
    /// A thread is spinning for the next call; it counts as free, not asleep.
    spinning: bool,
    /// When two or more calls last ran at once.
    crowded_at: Instant,
    /// Since when no call has run nor waited, if none has since.
    idle_since: Option<Instant>,
    /// The last pause between the pool falling idle and the next call.
    last_pause: Duration,
}

struct Shared {
    calls: Mutex<Calls>,
    ready: Condvar,
    replies: Mutex<Vec<LocalReply>>,
    /// Counts the calls queued and the closing of the pool: what a spinning thread
    /// watches.
    changes: AtomicU64,
    /// The longest a thread that finds no call spins for one before it sleeps.
    spin: Duration,
    /// Readable while `replies` may hold something the broker has not taken.
    inbox_signal: OwnedFd,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks (calls run outside them); if something
    // did, the data is still consistent: each critical section is a push or a pop.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Calls {
    /// Gives a sleeping thread a wake-up if the queue holds more calls than there are
    /// awake threads free to take them, and no wake-up is on its way already (the
    /// thread that takes it passes the next one on; see [`Shared::take_call`]).
    /// Whether the caller must notify.
    fn wake_needed(&mut self) -> bool {
        // Awake threads not running a call take queued calls without a wake-up.
        let free = self.threads - self.asleep - self.running;
        let wake = self.queue.len() > free && self.asleep > 0 && self.wakeups == 0;
        if wake {
            self.asleep -= 1;
            self.wakeups += 1;
        }
        wake
    }
}

impl Shared {
    /// The next call, once there is one; `None` when the pool has closed. `finished`:
    /// the calling thread has just finished a call.
    ///
    /// A thread that takes a call wakes the next sleeping thread itself when more calls
    /// wait than there are free threads: so a burst of calls costs the broker one
    /// wake-up, not one per thread (each is a futex syscall on the broker's path, and
    /// in W4 they were a third of its time), and still no call waits for a running one.
    ///
    /// A thread that finds no call spins for one first (see [`Shared::spin_for_call`]),
    /// if no other thread spins and calls have been coming one at a time (`CALM`), for
    /// as long as [`spin_time`] says.
    fn take_call(&self, finished: bool) -> Option<LocalCall> {
        let mut calls = lock(&self.calls);
        if finished {
            // Calls overlapped until now, however long ago the other one started.
            if calls.running > 1 {
                calls.crowded_at = Instant::now();
            }
            calls.running -= 1;
            if calls.running == 0 && calls.queue.is_empty() {
                calls.idle_since = Some(Instant::now());
            }
        }
        let mut spun = false;
        // Woken with no call queued: the broker expects one (`LocalLink::expect_call`).
        let mut expected = false;
        loop {
            if let Some(call) = calls.queue.pop_front() {
                calls.running += 1;
                if calls.running > 1 {
                    calls.crowded_at = Instant::now();
                }
                let wake = calls.wake_needed();
                drop(calls);
                if wake {
                    self.ready.notify_one();
                }
                return Some(call);
            }
            if calls.closed {
                return None;
            }
            if !spun
                && !self.spin.is_zero()
                && !calls.spinning
                && calls.crowded_at.elapsed() >= CALM
            {
                spun = true;
                calls.spinning = true;
                let seen = self.changes.load(Ordering::Acquire);
                let spin = if expected {
                    self.spin
                } else {
                    spin_time(calls.last_pause, self.spin)
                };
                drop(calls);
                self.spin_for_call(seen, spin);
                calls = lock(&self.calls);
                calls.spinning = false;
                continue;
            }
            calls.asleep += 1;
            loop {
                calls = self
                    .ready
                    .wait(calls)
                    .unwrap_or_else(PoisonError::into_inner);
                // The waker took this thread off `asleep` when it gave the wake-up.
                if calls.wakeups > 0 {
                    calls.wakeups -= 1;
                    if calls.queue.is_empty() {
                        // Woken ahead of a call: wait awake for it once more.
                        spun = false;
                        expected = true;
                    }
                    break;
                }
                if calls.closed {
                    calls.asleep -= 1;
                    break;
                }
            }
        }
    }

    /// Waits awake, up to `spin`, until `changes` has moved on from `seen` (a call was
    /// queued, or the pool closed).
    ///
    /// Why: a thread asleep on a condition variable is woken by a futex call, and on
    /// an idle CPU the wake-up takes tens of microseconds (longer than the call). The
    /// spin yields the CPU at every turn instead of burning it: a thread woken on this
    /// CPU (the broker, or an I/O thread of libzmq's, on their part of the call's way)
    /// runs at once, and the CPU stays awake for it. Measured in `docs/performance.md`
    /// (eighth pass).
    fn spin_for_call(&self, seen: u64, spin: Duration) {
        let until = Instant::now() + spin;
        while self.changes.load(Ordering::Acquire) == seen && Instant::now() < until {
            std::thread::yield_now();
        }
    }

    fn put_reply(&self, reply: LocalReply) {
        let was_empty = {
            let mut replies = lock(&self.replies);
            replies.push(reply);
            replies.len() == 1
        };
        if was_empty {
            // A full counter (2^64 - 2 unread signals) cannot happen: the broker reads
            // it every time it takes the inbox.
            let _ = rustix::io::write(&self.inbox_signal, &1u64.to_ne_bytes());
        }
    }
}

/// The broker's end of the pool.
pub(crate) struct LocalLink {
    shared: Arc<Shared>,
}

impl LocalLink {
    /// Queues a call for the next free thread; gives it back when the pool has stopped.
    /// (Boxed: the refusal is rare, and a `Result` as large as a call is not.)
    pub(crate) fn submit(&self, call: LocalCall) -> Result<(), Box<LocalCall>> {
        let wake = {
            let mut calls = lock(&self.shared.calls);
            if calls.closed {
                return Err(Box::new(call));
            }
            calls.queue.push_back(call);
            self.shared.changes.fetch_add(1, Ordering::Release);
            if let Some(since) = calls.idle_since.take() {
                calls.last_pause = since.elapsed();
            }
            calls.wake_needed()
        };
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }

    /// Wakes a sleeping thread ahead of a call the broker is about to queue, so that
    /// the wake-up overlaps the broker's work on the request instead of following it:
    /// the thread then waits awake for the call (up to the pool's spin bound). Only
    /// while calls come one at a time (`CALM`), and only when no thread is awake and
    /// free and no wake-up is on its way. For large requests, whose checks take longer
    /// than a wake-up (`docs/performance.md`, ninth pass). Whether it woke one.
    pub(crate) fn expect_call(&self) -> bool {
        let wake = {
            let mut calls = lock(&self.shared.calls);
            let free = calls.threads - calls.asleep - calls.running;
            let wake = !self.shared.spin.is_zero()
                && !calls.closed
                && free == 0
                && calls.asleep > 0
                && calls.wakeups == 0
                && calls.crowded_at.elapsed() >= CALM;
            if wake {
                calls.asleep -= 1;
                calls.wakeups += 1;
            }
            wake
        };
        if wake {
            self.shared.ready.notify_one();
        }
        wake
    }

    /// Takes back the calls no thread has started (to refuse them: the server is
    /// shutting down).
    pub(crate) fn take_back(&self) -> Vec<LocalCall> {
        lock(&self.shared.calls).queue.drain(..).collect()
    }

    /// The descriptor to poll: readable when replies may be waiting.
    pub(crate) fn signal_fd(&self) -> RawFd {
        self.shared.inbox_signal.as_raw_fd()
    }

    /// Moves every reply that is waiting into `into` (which should be empty).
    pub(crate) fn take_replies(&self, into: &mut Vec<LocalReply>) {
        // Reset the signal first: a reply put after this either lands in the swap
        // below or signals again.
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(self.shared.inbox_signal.as_fd(), &mut buf);
        std::mem::swap(&mut *lock(&self.shared.replies), into);
    }
}

/// The pool's threads. Stop it with [`LocalPool::stop`] (dropping it does too).
pub(crate) struct LocalPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl LocalPool {
    /// Starts `threads` threads running the functions of `registry`; a thread that
    /// finds no call spins for one up to `spin` before it sleeps.
    pub(crate) fn start(
        registry: &Registry,
        threads: usize,
        grace: Duration,
        spin: Duration,
    ) -> Result<(LocalPool, LocalLink), Error> {
        let inbox_signal = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )
        .map_err(|e| Error::Transport(format!("cannot create an eventfd: {e}")))?;
        let shared = Arc::new(Shared {
            calls: Mutex::new(Calls {
                queue: VecDeque::new(),
                threads,
                asleep: 0,
                running: 0,
                wakeups: 0,
                closed: false,
                spinning: false,
                crowded_at: Instant::now(),
                idle_since: None,
                last_pause: Duration::MAX,
            }),
            ready: Condvar::new(),
            replies: Mutex::new(Vec::new()),
            changes: AtomicU64::new(0),
            spin,
            inbox_signal,
        });
        let mut pool = LocalPool {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(threads),
            grace,
        };
        for index in 0..threads {
            let shared = Arc::clone(&shared);
            let registry = registry.clone();
            let thread = std::thread::Builder::new()
                .name(format!("zmq-rpc-local-{index}"))
                .spawn(move || serve(&shared, &registry))
                .map_err(|e| Error::Transport(format!("cannot start a worker thread: {e}")))?;
            pool.threads.push(thread);
        }
        let link = LocalLink { shared };
        Ok((pool, link))
    }

    /// Takes no more calls; waits up to the shutdown grace for running ones, then
    /// leaves their threads behind (a call cannot be interrupted).
    pub(crate) fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        lock(&self.shared.calls).closed = true;
        self.shared.changes.fetch_add(1, Ordering::Release);
        self.shared.ready.notify_all();
        let by = Instant::now() + self.grace;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.threads)
            .into_iter()
            .partition(JoinHandle::is_finished);
        for t in done {
            let _ = t.join();
        }
        if !running.is_empty() {
            tracing::warn!(
                threads = running.len(),
                "calls still running after the grace period; leaving their threads behind"
            );
        }
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.close();
        }
    }
}

/// A pool thread: takes calls until the pool closes.
fn serve(shared: &Shared, registry: &Registry) {
    let mut finished = false;
    while let Some(call) = shared.take_call(finished) {
        finished = true;
        let key = call.key;
        let outcome = run(registry, call);
        shared.put_reply(LocalReply { key, outcome });
    }
}

/// Runs one call, unless its deadline passed while it waited. (The broker runs direct
/// functions through this too.)
pub(crate) fn run(registry: &Registry, call: LocalCall) -> Result<Output, Error> {
    let left = call.deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(
            "the deadline passed before the call started".into(),
        ));
    }
    // The broker checked the request: these parse. Should one not, the caller hears so.
    let mut args: Vec<Value> = serde_json::from_slice(&call.args)
        .map_err(|e| Error::Protocol(format!("invalid 'args': {e}")))?;
    crate::protocol::put_frames(&mut args, call.frames)?;
    let kwargs: Map<String, Value> = match &call.kwargs {
        Some(text) => serde_json::from_slice(text)
            .map_err(|e| Error::Protocol(format!("invalid 'kwargs': {e}")))?,
        None => Map::new(),
    };
    let value = registry.run(Call {
        function: call.function,
        args,
        kwargs,
        timeout_ms: Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
    })?;
    Ok(match value {
        Value::String(s) if call.accept_frames && s.len() >= FRAME_MIN_BYTES => {
            Output::Text(s.into_bytes())
        }
        value => Output::Json(crate::json::to_vec(&value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.add_typed(|a: i64, b: i64| a + b, "add")
            .params(["a", "b"]);
        r.add_typed(
            |ms: u64| {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            },
            "sleep",
        );
        r
    }

    fn call(key: u64, function: &str, args: &str) -> LocalCall {
        LocalCall {
            key,
            function: function.into(),
            args: args.as_bytes().to_vec(),
            kwargs: None,
            frames: Vec::new(),
            accept_frames: false,
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    /// Waits on the pool's signal as the broker does, until `n` replies came (or 10 s).
    fn replies(link: &LocalLink, n: usize) -> Vec<LocalReply> {
        let by = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        while all.len() < n && Instant::now() < by {
            let mut items = [zmq::PollItem::from_fd(link.signal_fd(), zmq::POLLIN)];
            zmq::poll(&mut items, 100).unwrap();
            let mut got = Vec::new();
            link.take_replies(&mut got);
            all.extend(got);
        }
        all
    }

    #[test]
    fn results_come_back_as_json_text_and_failures_as_errors() {
        let (pool, link) =
            LocalPool::start(&registry(), 2, Duration::from_secs(1), Duration::ZERO).unwrap();
        link.submit(call(1, "add", "[5, 7]")).unwrap();
        link.submit(call(2, "add", "[5]")).unwrap();
        link.submit(call(3, "nope", "[]")).unwrap();
        let mut kw = call(4, "add", "[]");
        kw.kwargs = Some(br#"{"a": 1, "b": 2}"#.to_vec());
        link.submit(kw).unwrap();
        let mut got = replies(&link, 4);
        got.sort_by_key(|r| r.key);
        let outcomes: Vec<_> = got.into_iter().map(|r| (r.key, r.outcome)).collect();
        assert_eq!(outcomes[0], (1, Ok(Output::Json(b"12".to_vec()))));
        assert!(
            matches!(outcomes[1], (2, Err(Error::Type(_)))),
            "{outcomes:?}"
        );
        assert!(
            matches!(outcomes[2], (3, Err(Error::Name(_)))),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[3], (4, Ok(Output::Json(b"3".to_vec()))));
        pool.stop();
    }

    #[test]
    fn a_free_thread_takes_the_next_call_while_another_runs_a_slow_one() {
        let (pool, link) =
            LocalPool::start(&registry(), 2, Duration::from_secs(5), Duration::ZERO).unwrap();
        link.submit(call(1, "sleep", "[1000]")).unwrap();
        link.submit(call(2, "add", "[1, 1]")).unwrap();
        link.submit(call(3, "add", "[2, 2]")).unwrap();
        // Both adds are answered by the free thread before the sleep ends.
        let first = replies(&link, 2);
        let keys: Vec<u64> = first.iter().map(|r| r.key).collect();
        assert_eq!(keys, vec![2, 3]);
        assert_eq!(replies(&link, 1)[0].key, 1);
        pool.stop();
    }

    #[test]
    fn a_call_whose_deadline_passed_while_queued_is_not_started() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let mut r = Registry::default();
        r.add_typed(move || flag.store(true, Ordering::SeqCst), "mark");
        let (pool, link) = LocalPool::start(&r, 1, Duration::from_secs(1), Duration::ZERO).unwrap();
        let mut late = call(7, "mark", "[]");
        late.deadline = Instant::now();
        link.submit(late).unwrap();
        let got = replies(&link, 1);
        assert!(matches!(got[0].outcome, Err(Error::Timeout(_))), "{got:?}");
        assert!(!ran.load(Ordering::SeqCst));
        pool.stop();
    }

    /// (threads asleep, threads running, a thread spinning)
    fn state(pool: &LocalPool) -> (usize, usize, bool) {
        let calls = lock(&pool.shared.calls);
        (calls.asleep, calls.running, calls.spinning)
    }

    /// Waits up to 5 s for the pool to reach `want`; the state it had last.
    fn settle(pool: &LocalPool, want: (usize, usize, bool)) -> (usize, usize, bool) {
        let by = Instant::now() + Duration::from_secs(5);
        loop {
            let now = state(pool);
            if now == want || Instant::now() >= by {
                return now;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A pool whose calm began long ago, so that its threads may spin at once, and
    /// whose last pause was long enough that they spin for all of `spin`.
    fn calm_pool(threads: usize, spin: Duration) -> (LocalPool, LocalLink) {
        let (pool, link) =
            LocalPool::start(&registry(), threads, Duration::from_secs(5), spin).unwrap();
        let mut calls = lock(&pool.shared.calls);
        if let Some(past) = Instant::now().checked_sub(CALM * 2) {
            calls.crowded_at = past;
        }
        calls.last_pause = spin;
        drop(calls);
        (pool, link)
    }

    #[test]
    fn closing_the_pool_ends_a_spin_at_once() {
        let (pool, link) = calm_pool(1, Duration::from_secs(30));
        link.submit(call(1, "add", "[1, 2]")).unwrap();
        assert_eq!(replies(&link, 1).len(), 1);
        assert_eq!(settle(&pool, (0, 0, true)), (0, 0, true));
        let stopping = Instant::now();
        pool.stop();
        assert!(
            stopping.elapsed() < Duration::from_secs(3),
            "{:?}",
            stopping.elapsed()
        );
    }

    #[test]
    fn the_spin_lasts_twice_the_last_pause_within_its_bounds() {
        let us = Duration::from_micros;
        let max = us(300);
        assert_eq!(spin_time(us(60), max), us(120));
        assert_eq!(spin_time(us(10), max), MIN_SPIN);
        assert_eq!(spin_time(us(200), max), max);
        assert_eq!(spin_time(max, max), max);
        // A caller slower than the longest spin gets the shortest.
        assert_eq!(spin_time(us(301), max), MIN_SPIN);
        assert_eq!(spin_time(Duration::MAX, max), MIN_SPIN);
        // Never more than the bound, and none at all when it is zero.
        assert_eq!(spin_time(us(10), us(20)), us(20));
        assert_eq!(spin_time(Duration::ZERO, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn after_a_lone_call_one_thread_waits_awake_and_takes_the_next_without_a_wake_up() {
        let (pool, link) = calm_pool(2, Duration::from_secs(30));
        link.submit(call(1, "add", "[1, 2]")).unwrap();
        assert_eq!(
            replies(&link, 1)[0].outcome,
            Ok(Output::Json(b"3".to_vec()))
        );
        // One thread spins, the other sleeps: the spin is not counted as asleep.
        assert_eq!(settle(&pool, (1, 0, true)), (1, 0, true));
        link.submit(call(2, "add", "[2, 2]")).unwrap();
        // The spinner counted as free, so the submit gave no wake-up.
        assert_eq!(lock(&pool.shared.calls).wakeups, 0);
        assert_eq!(
            replies(&link, 1)[0].outcome,
            Ok(Output::Json(b"4".to_vec()))
        );
        // The pause before this call was milliseconds, not the 30 s allowed: so was the
        // spin after it, and both threads end up asleep.
        let pause = lock(&pool.shared.calls).last_pause;
        assert!(pause < Duration::from_secs(5), "{pause:?}");
        assert_eq!(settle(&pool, (2, 0, false)), (2, 0, false));
        // Another lone call after that finds them asleep, and is answered.
        link.submit(call(3, "add", "[3, 3]")).unwrap();
        assert_eq!(
            replies(&link, 1)[0].outcome,
            Ok(Output::Json(b"6".to_vec()))
        );
        pool.stop();
    }

    #[test]
    fn no_thread_spins_while_calls_run_at_once_nor_when_the_spin_is_zero() {
        let (pool, link) = calm_pool(2, Duration::from_secs(30));
        link.submit(call(1, "sleep", "[50]")).unwrap();
        link.submit(call(2, "sleep", "[50]")).unwrap();
        assert_eq!(replies(&link, 2).len(), 2);
        // Both threads sleep, although a 30 s spin is allowed: two calls ran at once.
        assert_eq!(settle(&pool, (2, 0, false)), (2, 0, false));
        pool.stop();

        let (pool, link) = calm_pool(1, Duration::ZERO);
        link.submit(call(3, "add", "[1, 2]")).unwrap();
        assert_eq!(replies(&link, 1).len(), 1);
        assert_eq!(settle(&pool, (1, 0, false)), (1, 0, false));
        pool.stop();
    }

    /// A one-thread pool asleep, calm, whose last pause was longer than any spin: a
    /// thread that found no call now would wait awake only `MIN_SPIN`.
    fn asleep_after_a_long_pause(spin: Duration) -> (LocalPool, LocalLink) {
        let (pool, link) = LocalPool::start(&registry(), 1, Duration::from_secs(5), spin).unwrap();
        // Not calm at first (it began just now), so the thread sleeps at once, or
        // after `MIN_SPIN` if it started late.
        assert_eq!(settle(&pool, (1, 0, false)), (1, 0, false));
        let mut calls = lock(&pool.shared.calls);
        if let Some(past) = Instant::now().checked_sub(CALM * 2) {
            calls.crowded_at = past;
        }
        calls.last_pause = Duration::from_secs(3600);
        drop(calls);
        (pool, link)
    }

    #[test]
    fn a_thread_woken_ahead_of_a_call_waits_awake_for_it_up_to_the_bound() {
        let (pool, link) = asleep_after_a_long_pause(Duration::from_secs(30));
        assert!(link.expect_call());
        assert_eq!(settle(&pool, (0, 0, true)), (0, 0, true));
        // It is awake and free now: nobody else is woken.
        assert!(!link.expect_call());
        // Still waiting long after `MIN_SPIN`: an expected call gets the whole bound.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(state(&pool), (0, 0, true));
        link.submit(call(1, "add", "[1, 2]")).unwrap();
        let got = replies(&link, 1);
        assert_eq!(got[0].outcome, Ok(Output::Json(b"3".to_vec())));
        pool.stop();
    }

    #[test]
    fn nobody_is_woken_ahead_of_a_call_without_the_wait_nor_under_load() {
        let (pool, link) = asleep_after_a_long_pause(Duration::ZERO);
        assert!(!link.expect_call());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(&pool), (1, 0, false));
        assert_eq!(lock(&pool.shared.calls).wakeups, 0);
        pool.stop();

        let (pool, link) = asleep_after_a_long_pause(Duration::from_secs(30));
        // Two calls ran at once just now: not calm.
        lock(&pool.shared.calls).crowded_at = Instant::now();
        assert!(!link.expect_call());
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(&pool), (1, 0, false));
        assert_eq!(lock(&pool.shared.calls).wakeups, 0);
        pool.stop();
    }

    #[test]
    fn a_stopped_pool_gives_calls_back() {
        let (pool, link) =
            LocalPool::start(&registry(), 1, Duration::from_secs(1), Duration::ZERO).unwrap();
        pool.stop();
        let back = link.submit(call(5, "add", "[1, 2]")).unwrap_err();
        assert_eq!(back.key, 5);
    }
}

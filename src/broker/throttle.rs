//! Slows down password guessing: per peer address, repeated wrong passwords lock that
//! address out for a while, doubling each time.
//!
//! During a lockout every request from the address is refused with `PermissionError`
//! without looking at its password, so guesses sent meanwhile are wasted rather than
//! merely answered late. Time is a parameter; nothing here sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wrong passwords in a row an address may send before it is locked out (typos happen).
pub(crate) const FREE_FAILURES: u32 = 5;
/// First lockout; each further failure doubles it.
pub(crate) const FIRST_LOCKOUT: Duration = Duration::from_millis(250);
/// Longest lockout: bounds how long a peer sharing an attacker's address waits.
pub(crate) const MAX_LOCKOUT: Duration = Duration::from_secs(10);
/// Addresses tracked at once; beyond, the least recently failing one is forgotten, so
/// the table stays bounded whatever a flood of addresses does.
pub(crate) const MAX_PEERS: usize = 10_000;

struct Strikes {
    failures: u32,
    locked_until: Instant,
    last: Instant,
}

/// Failed-password bookkeeping per peer address.
#[derive(Default)]
pub(crate) struct Throttle {
    peers: HashMap<String, Strikes>,
}

impl Throttle {
    /// How much longer `peer` is locked out, if it is.
    pub(crate) fn locked(&self, peer: &str, now: Instant) -> Option<Duration> {
        let s = self.peers.get(peer)?;
        (s.locked_until > now).then(|| s.locked_until - now)
    }

    /// Records a wrong password from `peer`.
    pub(crate) fn failed(&mut self, peer: &str, now: Instant) {
        if !self.peers.contains_key(peer) && self.peers.len() >= MAX_PEERS {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(p, _)| p.clone())
            {
                self.peers.remove(&oldest);
            }
        }
        let s = self.peers.entry(peer.to_owned()).or_insert(Strikes {
            failures: 0,
            locked_until: now,
            last: now,
        });
        s.failures = s.failures.saturating_add(1);
        s.last = now;
        if s.failures > FREE_FAILURES {
            let doublings = (s.failures - FREE_FAILURES - 1).min(16);
            let lockout = FIRST_LOCKOUT
                .saturating_mul(1 << doublings)
                .min(MAX_LOCKOUT);
            s.locked_until = now + lockout;
            tracing::warn!(
                peer,
                failures = s.failures,
                lockout_ms = lockout.as_millis() as u64,
                "repeated wrong passwords: locking the address out"
            );
        }
    }

    /// A right password from `peer`: its record is cleared.
    pub(crate) fn succeeded(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_doubling_lockouts_then_reset_on_success() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed("10.0.0.1", now);
            assert_eq!(t.locked("10.0.0.1", now), None);
        }
        t.failed("10.0.0.1", now);
        assert_eq!(t.locked("10.0.0.1", now), Some(FIRST_LOCKOUT));
        assert_eq!(
            t.locked("10.0.0.2", now),
            None,
            "other addresses unaffected"
        );
        let later = now + FIRST_LOCKOUT;
        assert_eq!(t.locked("10.0.0.1", later), None);
        t.failed("10.0.0.1", later);
        assert_eq!(t.locked("10.0.0.1", later), Some(FIRST_LOCKOUT * 2));
        for _ in 0..40 {
            t.failed("10.0.0.1", later);
        }
        assert_eq!(t.locked("10.0.0.1", later), Some(MAX_LOCKOUT));
        t.succeeded("10.0.0.1");
        assert_eq!(t.locked("10.0.0.1", later), None);
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_PEERS + 100 {
            t.failed(&format!("peer-{i}"), now + Duration::from_micros(i as u64));
        }
        assert_eq!(t.tracked(), MAX_PEERS);
        // The oldest were forgotten, the newest kept.
        t.failed(&format!("peer-{}", MAX_PEERS + 99), now);
        assert_eq!(t.tracked(), MAX_PEERS);
    }
}

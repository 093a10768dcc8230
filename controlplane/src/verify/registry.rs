//! The registry of outgoing calls: what the node answers verification
//! requests from.
//!
//! Each registered call (numbers A and B, destination operator, call id) is
//! kept `call_timer` seconds after its registration or its last refresh
//! (`callUpdate`). A request from another node names A and B (B in clear or
//! hashed), so calls are found by the pair (A, hash of B): the hash is the
//! network's keyed hash ([`super::ber::hash_number`]), computed once at
//! registration, which serves clear and hashed requests alike.
//!
//! Memory: one 32-byte entry (numbers packed, links as slab indexes) per call in a slab, one slot in each of two
//! hash indexes (by call id, by A and B) and 16 bytes in the expiry queue —
//! about 130 bytes per call (bench `verify_registry`). Call ids are kept as
//! 64-bit keyed hashes, not text; two call ids with one hash (odds 2^-64 per
//! pair) would share an entry, the later registration winning.
//!
//! Expiry: a FIFO of (deadline, call key) in registration order; a refreshed
//! call is found not yet due when its old deadline comes, and goes to the
//! back with its new one. As the time to live is the same for all, the queue
//! stays in deadline order up to refreshes, and a call outlives its deadline
//! by at most the sweep interval.
//!
//! Invariants: every live entry is in both indexes and in the queue; methods
//! never panic; one mutex guards it all (each operation is a few hash
//! probes).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::ber::{hash_number, CalledNumber};
use super::numbers::pack;

/// No next entry in a chain.
const NIL: u32 = u32::MAX;

/// Default bound on calls held: 10 million (about 1.7 GB), far above a
/// network's outgoing calls within `call_timer`, low enough that a flood of
/// registrations cannot take the machine's memory.
pub const MAX_CALLS: usize = 10_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Number A, packed.
    a: u64,
    /// Keyed hash of number B.
    bh: u64,
    /// Deadline, seconds since the registry's epoch.
    expires: u32,
    /// Destination operator.
    id_dst: u32,
    /// Next entry with the same (A, B) key, or [`NIL`].
    next: u32,
    /// Previous entry with the same key, or [`NIL`] at the head: unlinking
    /// is O(1) however many calls share A and B.
    prev: u32,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Entry>,
    free: Vec<u32>,
    by_call: HashMap<u64, u32>,
    by_ab: HashMap<u64, u32>,
    queue: VecDeque<(u32, u64)>,
}

/// Why a call cannot be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// Number A is not 1 to 15 digits.
    #[error("number A is not an E.164 number")]
    BadA,
    /// Number B is not 1 to 15 digits.
    #[error("number B is not an E.164 number")]
    BadB,
    /// The registry holds as many calls as it may.
    #[error("registry full")]
    Full,
}

/// A call found for a verification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Its destination operator.
    pub id_dst: u32,
}

/// The registry (see the module documentation).
pub struct Registry {
    inner: Mutex<Inner>,
    key: Vec<u8>,
    ids: std::collections::hash_map::RandomState,
    epoch: Instant,
    ttl: AtomicU32,
    max_calls: usize,
}

fn ab_key(a: u64, bh: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ bh
}

impl Registry {
    /// An empty registry; `hash_key` is the network's number-hash key,
    /// `ttl_s` the time a call is kept. It holds at most [`MAX_CALLS`].
    pub fn new(hash_key: &[u8], ttl_s: u64) -> Registry {
        Registry::with_limit(hash_key, ttl_s, MAX_CALLS)
    }

    /// As [`Registry::new`], holding at most `max_calls` calls (then
    /// registrations are refused with [`RegisterError::Full`]).
    pub fn with_limit(hash_key: &[u8], ttl_s: u64, max_calls: usize) -> Registry {
        Registry {
            inner: Mutex::new(Inner::default()),
            key: hash_key.to_vec(),
            ids: std::collections::hash_map::RandomState::new(),
            epoch: Instant::now(),
            ttl: AtomicU32::new(ttl_s.clamp(1, u64::from(u32::MAX / 2)) as u32),
            max_calls: max_calls.min(NIL as usize - 1),
        }
    }

    /// Changes the time calls are kept (applies to registrations from now).
    pub fn set_ttl(&self, ttl_s: u64) {
        self.ttl.store(
            ttl_s.clamp(1, u64::from(u32::MAX / 2)) as u32,
            Ordering::Relaxed,
        );
    }

    /// Seconds since the registry was made.
    pub fn now(&self) -> u32 {
        self.epoch.elapsed().as_secs().min(u64::from(u32::MAX / 2)) as u32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-operation;
        // the structure is still consistent enough to serve (no operation
        // leaves it half-linked across a panic point).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn call_key(&self, call_id: &str) -> u64 {
        self.ids.hash_one(call_id)
    }

    fn b_hash(&self, b_digits: &str) -> u64 {
        u64::from_be_bytes(hash_number(&self.key, b_digits))
    }

    /// Registers (or re-registers) a call, now.
    pub fn register(
        &self,
        call_id: &str,
        a: &str,
        b: &str,
        id_dst: u32,
    ) -> Result<(), RegisterError> {
        self.register_at(call_id, a, b, id_dst, self.now())
    }

    /// Registers a call at time `now` (seconds since the epoch).
    pub fn register_at(
        &self,
        call_id: &str,
        a: &str,
        b: &str,
        id_dst: u32,
        now: u32,
    ) -> Result<(), RegisterError> {
        let a = pack(a).ok_or(RegisterError::BadA)?;
        let b = b.strip_prefix('+').unwrap_or(b);
        pack(b).ok_or(RegisterError::BadB)?;
        let bh = self.b_hash(b);
        let call = self.call_key(call_id);
        let expires = now.saturating_add(self.ttl.load(Ordering::Relaxed));
        let mut g = self.lock();
        let inner = &mut *g;
        if let Some(&idx) = inner.by_call.get(&call) {
            unlink(inner, idx);
            inner.by_call.remove(&call);
            inner.free.push(idx);
        }
        if inner.by_call.len() >= self.max_calls {
            return Err(RegisterError::Full);
        }
        let key = ab_key(a, bh);
        let next = inner.by_ab.get(&key).copied().unwrap_or(NIL);
        let entry = Entry {
            a,
            bh,
            expires,
            id_dst,
            next,
            prev: NIL,
        };
        let idx = match inner.free.pop() {
            Some(i) => {
                if let Some(slot) = inner.slots.get_mut(i as usize) {
                    *slot = entry;
                }
                i
            }
            None => {
                let i = u32::try_from(inner.slots.len())
                    .ok()
                    .filter(|&i| i < NIL)
                    .ok_or(RegisterError::Full)?;
                inner.slots.push(entry);
                i
            }
        };
        if let Some(old_head) = inner.slots.get_mut(next as usize) {
            old_head.prev = idx;
        }
        inner.by_ab.insert(key, idx);
        inner.by_call.insert(call, idx);
        inner.queue.push_back((expires, call));
        Ok(())
    }

    /// Keeps a call `call_timer` more seconds from now; false when unknown.
    pub fn refresh(&self, call_id: &str) -> bool {
        self.refresh_at(call_id, self.now())
    }

    /// [`Registry::refresh`] at time `now`.
    pub fn refresh_at(&self, call_id: &str, now: u32) -> bool {
        let call = self.call_key(call_id);
        let ttl = self.ttl.load(Ordering::Relaxed);
        let mut g = self.lock();
        let Some(&idx) = g.by_call.get(&call) else {
            return false;
        };
        match g.slots.get_mut(idx as usize) {
            Some(e) if e.expires > now => {
                e.expires = now.saturating_add(ttl);
                true
            }
            _ => false,
        }
    }

    /// The call from `a` to `b` (clear or hashed), if one is registered and
    /// not expired.
    pub fn find(&self, a: &str, b: &CalledNumber) -> Option<Found> {
        self.find_at(a, b, self.now())
    }

    /// [`Registry::find`] at time `now`.
    pub fn find_at(&self, a: &str, b: &CalledNumber, now: u32) -> Option<Found> {
        let a = pack(a)?;
        let bh = match b {
            CalledNumber::Plain(n) => self.b_hash(&n.digits),
            CalledNumber::Hashed(h) => u64::from_be_bytes(*h),
        };
        let g = self.lock();
        let mut idx = *g.by_ab.get(&ab_key(a, bh))?;
        while idx != NIL {
            let e = g.slots.get(idx as usize)?;
            if e.a == a && e.bh == bh && e.expires > now {
                return Some(Found { id_dst: e.id_dst });
            }
            idx = e.next;
        }
        None
    }

    /// Removes the calls whose time is up; returns how many.
    pub fn expire(&self) -> usize {
        self.expire_at(self.now())
    }

    /// [`Registry::expire`] at time `now`.
    pub fn expire_at(&self, now: u32) -> usize {
        let mut removed = 0;
        let mut g = self.lock();
        let inner = &mut *g;
        while let Some(&(due, call)) = inner.queue.front() {
            if due > now {
                break;
            }
            inner.queue.pop_front();
            let Some(&idx) = inner.by_call.get(&call) else {
                continue;
            };
            let Some(e) = inner.slots.get(idx as usize).copied() else {
                continue;
            };
            if e.expires > now {
                // Refreshed (or re-registered) since: requeue if this was its
                // last queue entry, i.e. the deadline it was queued with passed.
                if e.expires != due {
                    inner.queue.push_back((e.expires, call));
                }
                continue;
            }
            unlink(inner, idx);
            inner.by_call.remove(&call);
            inner.free.push(idx);
            removed += 1;
        }
        removed
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.lock().by_call.len()
    }

    /// Whether no call is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Takes entry `idx` out of its (A, B) chain.
fn unlink(inner: &mut Inner, idx: u32) {
    let Some(e) = inner.slots.get(idx as usize).copied() else {
        return;
    };
    if let Some(n) = inner.slots.get_mut(e.next as usize) {
        n.prev = e.prev;
    }
    if e.prev == NIL {
        let key = ab_key(e.a, e.bh);
        if e.next == NIL {
            inner.by_ab.remove(&key);
        } else {
            inner.by_ab.insert(key, e.next);
        }
    } else if let Some(p) = inner.slots.get_mut(e.prev as usize) {
        p.next = e.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::isup::IsupNumber;

    fn plain(d: &str) -> CalledNumber {
        CalledNumber::Plain(IsupNumber::international(d).unwrap())
    }

    #[test]
    fn finds_by_clear_and_hashed_b_until_expiry() {
        let r = Registry::new(b"k", 60);
        r.register_at("c1", "74951234567", "78121234567", 42, 100)
            .unwrap();
        assert_eq!(
            r.find_at("74951234567", &plain("78121234567"), 100),
            Some(Found { id_dst: 42 })
        );
        let h = CalledNumber::Hashed(hash_number(b"k", "78121234567"));
        assert!(r.find_at("74951234567", &h, 159).is_some());
        let wrong = CalledNumber::Hashed(hash_number(b"other", "78121234567"));
        assert!(r.find_at("74951234567", &wrong, 100).is_none());
        assert!(r.find_at("74951234568", &h, 100).is_none());
        assert!(r.find_at("74951234567", &h, 160).is_none());
        assert_eq!(r.expire_at(159), 0);
        assert_eq!(r.expire_at(160), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn refresh_extends_and_reregistration_replaces() {
        let r = Registry::new(b"k", 60);
        r.register_at("c1", "7495", "7812", 1, 0).unwrap();
        assert!(r.refresh_at("c1", 50));
        assert!(!r.refresh_at("nope", 50));
        assert_eq!(r.expire_at(60), 0);
        assert!(r.find_at("7495", &plain("7812"), 100).is_some());
        assert_eq!(r.expire_at(110), 1);
        assert!(!r.refresh_at("c1", 111));
        r.register_at("c2", "7495", "7812", 1, 200).unwrap();
        r.register_at("c2", "7495", "7813", 2, 200).unwrap();
        assert_eq!(r.len(), 1);
        assert!(r.find_at("7495", &plain("7812"), 200).is_none());
        assert_eq!(
            r.find_at("7495", &plain("7813"), 200),
            Some(Found { id_dst: 2 })
        );
    }

    #[test]
    fn same_pair_many_calls_chain_and_unlink() {
        let r = Registry::new(b"k", 10);
        for i in 0..5 {
            r.register_at(&format!("c{i}"), "7495", "7812", i, i)
                .unwrap();
        }
        assert_eq!(r.len(), 5);
        assert_eq!(r.expire_at(12), 3);
        assert!(r.find_at("7495", &plain("7812"), 12).is_some());
        assert_eq!(r.expire_at(20), 2);
        assert!(r.find_at("7495", &plain("7812"), 12).is_none());
        // Slots are reused.
        r.register_at("x", "7495", "7812", 9, 30).unwrap();
        assert_eq!(r.lock().slots.len(), 5);
    }

    #[test]
    fn many_calls_of_one_pair_expire_in_linear_time_and_the_bound_holds() {
        let r = Registry::with_limit(b"k", 10, 100_000);
        for i in 0..100_000u32 {
            r.register_at(&format!("c{i}"), "7495", "7812", 1, 0)
                .unwrap();
        }
        assert_eq!(
            r.register_at("one more", "7495", "7812", 1, 0),
            Err(RegisterError::Full)
        );
        // Re-registering a known call id is not a new call.
        r.register_at("c5", "7495", "7813", 1, 0).unwrap();
        // Oldest first: each removal unlinks the tail of a 100,000-long
        // chain (O(1) each with the back links; quadratic without).
        assert_eq!(r.expire_at(10), 100_000);
        assert!(r.is_empty());
        assert!(r.lock().by_ab.is_empty());
    }

    #[test]
    fn unlinking_from_the_middle_keeps_the_chain() {
        let r = Registry::new(b"k", 100);
        for i in 0..3 {
            r.register_at(&format!("c{i}"), "7495", "7812", i, 0)
                .unwrap();
        }
        // c1 is in the middle of the chain c2 -> c1 -> c0.
        r.register_at("c1", "7000", "7000", 9, 0).unwrap();
        let g = r.lock();
        let head = g.by_ab[&ab_key(pack("7495").unwrap(), r.b_hash("7812"))];
        let mut ids = Vec::new();
        let mut cur = head;
        while cur != NIL {
            ids.push(g.slots[cur as usize].id_dst);
            cur = g.slots[cur as usize].next;
        }
        assert_eq!(ids, vec![2, 0]);
    }

    #[test]
    fn bad_numbers_are_refused() {
        let r = Registry::new(b"k", 10);
        assert_eq!(r.register("c", "74x", "7812", 1), Err(RegisterError::BadA));
        assert_eq!(r.register("c", "7495", "", 1), Err(RegisterError::BadB));
    }
}

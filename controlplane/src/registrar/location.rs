//! The location service (RFC 3261 §10): the bindings of each
//! address-of-record, in memory.
//!
//! It stores what the registrar decided and answers lookups; the rules of a
//! REGISTER (authentication, expiry bounds, Call-ID/CSeq ordering, caps) are
//! in the registrar, which hands over a user's whole new binding list at
//! once so an update is all or nothing (RFC 3261 §10.3 step 7).
//!
//! Invariants: a user's list is in order of last update, oldest first; no
//! user is stored with an empty list; the binding count is the sum of the
//! lists. A binding counts as current while `now < expires_at`; expired ones
//! stay until [`Location::expire`] or the user's next update drops them.

use std::collections::HashMap;

use crate::sip::message::{NameAddr, Uri};
use crate::sip::Peer;

/// One registered contact of an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact as the UA sent it (its `expires` parameter included, if
    /// it had one).
    pub contact: NameAddr,
    /// Where the REGISTER came from. Requests for the user go here rather
    /// than to the Contact URI, so a UA behind NAT stays reachable through
    /// the pinhole its REGISTER opened.
    pub source: Peer,
    /// When the binding lapses (unix seconds).
    pub expires_at: u64,
    /// Call-ID of the REGISTER that last set it.
    pub call_id: String,
    /// CSeq number of that REGISTER.
    pub cseq: u32,
    /// The `+sip.instance` Contact parameter (RFC 5626 §4.1), quotes
    /// removed: `<urn:uuid:...>`.
    pub instance: Option<String>,
}

impl Binding {
    /// Whether the binding is current at `now_unix`.
    pub fn is_current(&self, now_unix: u64) -> bool {
        now_unix < self.expires_at
    }

    /// Seconds left at `now_unix` (0 once expired).
    pub fn remaining(&self, now_unix: u64) -> u64 {
        self.expires_at.saturating_sub(now_unix)
    }

    /// The identity of the binding within its address-of-record.
    pub(super) fn key(&self) -> BindingKey {
        BindingKey::new(&self.contact.uri, self.instance.as_deref())
    }
}

/// What makes two bindings of a user the same: the instance ID when the UA
/// sent one (RFC 5626 §4.1: it stays the same when the UA's address
/// changes), else the
/// Contact URI.
///
/// URIs are compared in a simplified RFC 3261 §19.1.4 way: scheme, user
/// and port exactly, host case-insensitively, parameters and headers in
/// their received order and spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum BindingKey {
    /// `+sip.instance`.
    Instance(String),
    /// The Contact URI, normalised.
    Uri(String),
}

impl BindingKey {
    pub(super) fn new(uri: &Uri, instance: Option<&str>) -> BindingKey {
        match instance {
            Some(i) => BindingKey::Instance(i.to_string()),
            None => {
                let mut u = uri.clone();
                u.host.make_ascii_lowercase();
                BindingKey::Uri(u.to_string())
            }
        }
    }
}

/// Bindings per address-of-record user part.
#[derive(Debug, Default)]
pub(super) struct Location {
    by_user: HashMap<String, Vec<Binding>>,
    count: usize,
}

impl Location {
    /// All stored bindings of `user`, current or not, oldest update first.
    pub(super) fn bindings(&self, user: &str) -> &[Binding] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// Replaces the bindings of `user` (an empty list removes the user).
    pub(super) fn replace(&mut self, user: &str, bindings: Vec<Binding>) {
        let added = bindings.len();
        let removed = if bindings.is_empty() {
            self.by_user.remove(user).map_or(0, |old| old.len())
        } else {
            self.by_user
                .insert(user.to_string(), bindings)
                .map_or(0, |old| old.len())
        };
        self.count = self.count + added - removed;
    }

    /// Drops every binding that is no longer current; returns how many.
    pub(super) fn expire(&mut self, now_unix: u64) -> usize {
        let before = self.count;
        self.by_user.retain(|_, list| {
            list.retain(|b| b.is_current(now_unix));
            !list.is_empty()
        });
        self.count = self.by_user.values().map(Vec::len).sum();
        before - self.count
    }

    /// Stored bindings, expired ones not yet dropped included.
    pub(super) fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Transport;

    fn binding(uri: &str, expires_at: u64, instance: Option<&str>) -> Binding {
        Binding {
            contact: NameAddr::parse(uri).expect("valid contact"),
            source: Peer {
                transport: Transport::Udp,
                addr: "192.0.2.1:5060".parse().expect("valid address"),
                iface: 0,
                conn: None,
            },
            expires_at,
            call_id: "c".into(),
            cseq: 1,
            instance: instance.map(str::to_string),
        }
    }

    #[test]
    fn counts_follow_replace_and_expire() {
        let mut l = Location::default();
        l.replace(
            "alice",
            vec![
                binding("<sip:a@h1>", 100, None),
                binding("<sip:a@h2>", 200, None),
            ],
        );
        l.replace("bob", vec![binding("<sip:b@h>", 100, None)]);
        assert_eq!(l.len(), 3);
        l.replace("alice", vec![binding("<sip:a@h2>", 200, None)]);
        assert_eq!(l.len(), 2);
        assert_eq!(l.expire(100), 1);
        assert!(l.bindings("bob").is_empty());
        assert_eq!(l.len(), 1);
        l.replace("alice", Vec::new());
        assert_eq!(l.len(), 0);
        assert_eq!(l.expire(1000), 0);
    }

    #[test]
    fn keys_prefer_instance_and_ignore_host_case() {
        let a = binding("<sip:a@EXAMPLE.com:5060>", 1, None);
        let b = binding("<sip:a@example.com:5060>;expires=30", 1, None);
        assert_eq!(a.key(), b.key());
        let c = binding("<sip:A@example.com:5060>", 1, None);
        assert_ne!(a.key(), c.key());
        let moved = binding("<sip:a@198.51.100.7>", 1, Some("<urn:uuid:1>"));
        let before = binding("<sip:a@192.0.2.1>", 1, Some("<urn:uuid:1>"));
        assert_eq!(moved.key(), before.key());
    }
}

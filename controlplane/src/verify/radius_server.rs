//! The verification node's RADIUS front door (section 9 of the node's
//! manual): Access-Requests in, Access-Accept or Access-Reject out.
//!
//! What it does: receives datagrams on one UDP socket, drops (and counts)
//! everything that is not a well-formed, authenticated Access-Request, turns
//! each request into a [`CheckRequest`] for [`Node::check`] and answers
//! Access-Reject when the node releases the call, Access-Accept in every
//! other case (section 9: "Access-Reject on failed verification, Access-Accept
//! in all other cases"). Retransmissions (same source, Identifier and Request
//! Authenticator within [`DUPLICATE_WINDOW`]) get the cached answer again and
//! do not reach the node twice (RFC 5080 §2.2.2).
//!
//! What it does not: accounting, CoA, User-Password, EAP, per-client secrets
//! (one secret, `verify.radius_secret`), binding the socket, or deciding
//! anything about the call: classification and verification are
//! [`Node::check`]'s.
//!
//! Fields ([`CallQuery`]): A = Calling-Station-Id, B = Called-Station-Id,
//! C = h323-redirect-number, call id = h323-conf-id, the source and
//! destination operators = the Cisco-AVPair `in-trunkgroup-label=` and
//! `out-trunkgroup-label=` values read as `u32`. A label that is not a
//! decimal `u32` counts as absent. Section 9 then classifies by the numbers
//! alone where it can (one side ours: outgoing or incoming); for a call with
//! both numbers ours it is local (passed), and for a transit call (neither
//! number ours) "in-trunkgroup-label is not our operator" holds, so the call
//! is incoming and goes to verification. A request without A, B or the call
//! id is accepted and counted `unusable`, as is one the node refuses
//! ([`Verdict::Bad`], e.g. a number that is not E.164): the manual releases
//! only on failed verification.
//!
//! Invariants: no datagram makes the loop panic or wait: each request is
//! handled in its own task, at most [`MAX_IN_FLIGHT`] at once (more are
//! dropped and counted), so a request waiting `req_timer` ms on another node
//! never delays the next one. The secret and the Message-Authenticator switch
//! are read from the node's current state for every datagram, so a reload
//! applies to the next packet. Once nothing is in flight, `requests` equals
//! the sum of all the other counters but `send_errors`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::node::{CheckRequest, Node, Verdict};
use super::radius::{self, CallQuery, Code, Packet, MAX_PACKET_LEN};

/// Most requests handled at once; more are dropped (`dropped_overload`) and
/// left to the client's retransmission.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// How long an answer is kept for a retransmission of its request.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5);

/// Most requests remembered for duplicate detection; the oldest go first.
pub const DUPLICATE_CAPACITY: usize = 65_536;

/// Counters of the RADIUS front door.
#[derive(Debug, Default)]
pub struct RadiusStats {
    /// Datagrams received.
    pub requests: AtomicU64,
    /// Access-Accepts sent (first answers, not resends).
    pub accepts: AtomicU64,
    /// Access-Rejects sent (first answers, not resends).
    pub rejects: AtomicU64,
    /// Datagrams that do not decode (lengths, attribute overflow, a
    /// malformed Message-Authenticator).
    pub dropped_malformed: AtomicU64,
    /// Requests whose Message-Authenticator is wrong (wrong secret).
    pub dropped_bad_authenticator: AtomicU64,
    /// Requests without a Message-Authenticator while one is required.
    pub dropped_no_authenticator: AtomicU64,
    /// Well-formed packets of another code than Access-Request.
    pub dropped_not_access_request: AtomicU64,
    /// Requests dropped because [`MAX_IN_FLIGHT`] were being handled.
    pub dropped_overload: AtomicU64,
    /// Retransmissions: answered from the cache, or dropped while the first
    /// copy is still being handled.
    pub duplicates: AtomicU64,
    /// Well-formed requests whose fields could not be used (missing A, B or
    /// call id; numbers the node refuses), answered Access-Accept. Also
    /// counted in `accepts`.
    pub unusable: AtomicU64,
    /// Answers the socket would not send.
    pub send_errors: AtomicU64,
}

impl RadiusStats {
    /// Prometheus text exposition of the counters.
    pub fn metrics(&self) -> String {
        let rows: [(&str, &AtomicU64, &str); 11] = [
            ("requests", &self.requests, "Datagrams received"),
            ("accepts", &self.accepts, "Access-Accept answers sent"),
            ("rejects", &self.rejects, "Access-Reject answers sent"),
            (
                "dropped_malformed",
                &self.dropped_malformed,
                "Datagrams dropped: not a well-formed RADIUS packet",
            ),
            (
                "dropped_bad_authenticator",
                &self.dropped_bad_authenticator,
                "Requests dropped: wrong Message-Authenticator",
            ),
            (
                "dropped_no_authenticator",
                &self.dropped_no_authenticator,
                "Requests dropped: Message-Authenticator required but missing",
            ),
            (
                "dropped_not_access_request",
                &self.dropped_not_access_request,
                "Packets dropped: not an Access-Request",
            ),
            (
                "dropped_overload",
                &self.dropped_overload,
                "Requests dropped: too many in flight",
            ),
            (
                "duplicates",
                &self.duplicates,
                "Retransmitted requests answered from the cache or dropped",
            ),
            (
                "unusable",
                &self.unusable,
                "Requests with unusable fields, accepted",
            ),
            ("send_errors", &self.send_errors, "Answers not sent"),
        ];
        let mut out = String::new();
        for (name, v, help) in rows {
            crate::metrics::write(
                &mut out,
                &format!("kordon_verify_radius_{name}_total"),
                "counter",
                help,
                v.load(Ordering::Relaxed),
            );
        }
        out
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A request as RFC 5080 §2.2.2 identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DupKey {
    src: SocketAddr,
    identifier: u8,
    authenticator: [u8; 16],
}

struct DupEntry {
    at: Instant,
    /// `None` while the first copy is being handled.
    answer: Option<Arc<Vec<u8>>>,
}

/// What to do with a request, from the duplicate cache.
enum Seen {
    /// First copy: handle it.
    New,
    /// A retransmission whose answer is known: send this again.
    Answered(Arc<Vec<u8>>),
    /// A retransmission of a request still being handled: drop it.
    InProgress,
}

/// Time- and size-bounded map of recent requests to their answers.
/// `order` holds the keys in insertion (so time) order; an entry of `order`
/// whose `at` does not match the map's is stale and skipped.
#[derive(Default)]
struct DupCache {
    map: HashMap<DupKey, DupEntry>,
    order: VecDeque<(Instant, DupKey)>,
}

impl DupCache {
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.order.front() {
            let old = now.saturating_duration_since(at) >= DUPLICATE_WINDOW;
            if !old && self.map.len() < DUPLICATE_CAPACITY {
                break;
            }
            self.order.pop_front();
            if self.map.get(&key).is_some_and(|e| e.at == at) {
                self.map.remove(&key);
            }
        }
    }

    fn check(&mut self, key: DupKey, now: Instant) -> Seen {
        self.expire(now);
        if let Some(e) = self.map.get(&key) {
            return match &e.answer {
                Some(a) => Seen::Answered(a.clone()),
                None => Seen::InProgress,
            };
        }
        self.map.insert(
            key,
            DupEntry {
                at: now,
                answer: None,
            },
        );
        self.order.push_back((now, key));
        Seen::New
    }

    fn answered(&mut self, key: DupKey, answer: Arc<Vec<u8>>) {
        if let Some(e) = self.map.get_mut(&key) {
            e.answer = Some(answer);
        }
    }

    fn forget(&mut self, key: DupKey) {
        self.map.remove(&key);
    }
}

/// Why a datagram is not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    Malformed,
    NotAccessRequest,
    BadAuthenticator,
    NoAuthenticator,
}

/// Decodes and authenticates a datagram.
fn admit(raw: &[u8], secret: &[u8], require_ma: bool) -> Result<Packet, Discard> {
    let p = Packet::decode(raw).map_err(|_| Discard::Malformed)?;
    if p.code != Code::AccessRequest {
        return Err(Discard::NotAccessRequest);
    }
    match p.verify_message_authenticator(raw, secret) {
        Some(true) => Ok(p),
        Some(false) => Err(Discard::BadAuthenticator),
        None if require_ma => Err(Discard::NoAuthenticator),
        None => Ok(p),
    }
}

/// A trunk-group label as an operator id; anything but a decimal `u32`
/// counts as absent (see the module docs for what section 9 then does).
fn operator_id(label: Option<&str>) -> Option<u32> {
    label.and_then(|s| s.trim().parse::<u32>().ok())
}

/// The node's request for a packet's fields; `None` when A, B or the call id
/// is missing.
fn check_request(q: CallQuery) -> Option<CheckRequest> {
    let id_src = operator_id(q.id_src.as_deref());
    let id_dst = operator_id(q.id_dst.as_deref());
    Some(CheckRequest {
        a: q.a?,
        b: q.b?,
        c: q.c,
        d: None,
        id_src,
        id_dst,
        call_id: q.call_id?,
    })
}

/// Asks the node about the request and builds the answer.
async fn decide(node: &Node, p: &Packet, secret: &[u8], stats: &RadiusStats) -> Vec<u8> {
    let accept = match check_request(CallQuery::from_packet(p)) {
        None => {
            bump(&stats.unusable);
            true
        }
        Some(req) => match node.check(&req, "radius").await.verdict {
            Verdict::Release(_) => false,
            Verdict::Bad => {
                bump(&stats.unusable);
                true
            }
            Verdict::Pass | Verdict::Registered => true,
        },
    };
    bump(if accept {
        &stats.accepts
    } else {
        &stats.rejects
    });
    radius::answer(p, accept, Vec::new(), secret)
}

async fn send(socket: &UdpSocket, answer: &[u8], to: SocketAddr, stats: &RadiusStats) {
    if let Err(e) = socket.send_to(answer, to).await {
        bump(&stats.send_errors);
        tracing::debug!(%to, error = %e, "radius: answer not sent");
    }
}

/// Serves Access-Requests on `socket` for `node` until the task is dropped.
pub async fn serve(socket: Arc<UdpSocket>, node: Arc<Node>, stats: Arc<RadiusStats>) {
    serve_with(socket, node, stats, in_flight()).await;
}

/// The request slots [`serve_with`] takes one of per request in progress:
/// whoever holds this can wait for every request to finish
/// (`acquire_many(MAX_IN_FLIGHT)`) after stopping the receive loop.
pub fn in_flight() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_IN_FLIGHT))
}

/// As [`serve`], with the caller's request slots ([`in_flight`]).
pub async fn serve_with(
    socket: Arc<UdpSocket>,
    node: Arc<Node>,
    stats: Arc<RadiusStats>,
    slots: Arc<Semaphore>,
) {
    let cache = Arc::new(Mutex::new(DupCache::default()));
    // One byte more than the largest packet, so an oversized datagram is seen
    // as such rather than silently cut to a valid length.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors and the like: nothing to do for this datagram.
                tracing::debug!(error = %e, "radius: receive failed");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        bump(&stats.requests);
        let raw = buf.get(..n).unwrap_or_default();
        let st = node.state();
        let secret = st.cfg.radius_secret.as_bytes();
        let p = match admit(raw, secret, st.cfg.radius_require_message_authenticator) {
            Ok(p) => p,
            Err(d) => {
                bump(match d {
                    Discard::Malformed => &stats.dropped_malformed,
                    Discard::NotAccessRequest => &stats.dropped_not_access_request,
                    Discard::BadAuthenticator => &stats.dropped_bad_authenticator,
                    Discard::NoAuthenticator => &stats.dropped_no_authenticator,
                });
                continue;
            }
        };
        let key = DupKey {
            src,
            identifier: p.identifier,
            authenticator: p.authenticator,
        };
        let seen = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(key, Instant::now());
        match seen {
            Seen::New => {}
            Seen::Answered(a) => {
                bump(&stats.duplicates);
                send(&socket, &a, src, &stats).await;
                continue;
            }
            Seen::InProgress => {
                bump(&stats.duplicates);
                continue;
            }
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            bump(&stats.dropped_overload);
            cache.lock().unwrap_or_else(|e| e.into_inner()).forget(key);
            continue;
        };
        let secret = secret.to_vec();
        let (socket, node, stats, cache) =
            (socket.clone(), node.clone(), stats.clone(), cache.clone());
        tokio::spawn(async move {
            let answer = Arc::new(decide(&node, &p, &secret, &stats).await);
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .answered(key, answer.clone());
            send(&socket, &answer, src, &stats).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8) -> DupKey {
        DupKey {
            src: "127.0.0.1:1000".parse().unwrap(),
            identifier: id,
            authenticator: [id; 16],
        }
    }

    #[test]
    fn duplicate_cache_answers_in_window_and_forgets_after() {
        let mut c = DupCache::default();
        let t0 = Instant::now();
        assert!(matches!(c.check(key(1), t0), Seen::New));
        assert!(matches!(c.check(key(1), t0), Seen::InProgress));
        c.answered(key(1), Arc::new(vec![2, 1]));
        match c.check(key(1), t0 + Duration::from_secs(1)) {
            Seen::Answered(a) => assert_eq!(*a, vec![2, 1]),
            _ => panic!("expected the cached answer"),
        }
        assert!(matches!(c.check(key(2), t0), Seen::New));
        let later = t0 + DUPLICATE_WINDOW + Duration::from_millis(1);
        assert!(matches!(c.check(key(1), later), Seen::New));
        // key(2) expired with key(1); the re-inserted key(1) survives the
        // stale queue entry of its first copy.
        assert_eq!(c.map.len(), 1);
        assert!(matches!(c.check(key(1), later), Seen::InProgress));
    }

    #[test]
    fn duplicate_cache_is_bounded() {
        let mut c = DupCache::default();
        let t0 = Instant::now();
        for i in 0..(DUPLICATE_CAPACITY + 10) {
            let mut k = key(0);
            k.authenticator[..8].copy_from_slice(&(i as u64).to_be_bytes());
            c.check(k, t0);
        }
        assert!(c.map.len() <= DUPLICATE_CAPACITY);
        assert!(c.order.len() <= DUPLICATE_CAPACITY + 1);
    }

    #[test]
    fn trunk_group_labels_that_are_not_numbers_are_absent() {
        assert_eq!(operator_id(Some("100")), Some(100));
        assert_eq!(operator_id(Some(" 7 ")), Some(7));
        assert_eq!(operator_id(Some("trunk-a")), None);
        assert_eq!(operator_id(Some("-1")), None);
        assert_eq!(operator_id(Some("99999999999")), None);
        assert_eq!(operator_id(None), None);
    }

    #[test]
    fn admit_sorts_drops() {
        let secret = b"s";
        let attrs = vec![radius::Attribute {
            typ: radius::attr::CALLING_STATION_ID,
            value: b"1".to_vec(),
        }];
        let with = radius::request(1, [1; 16], attrs.clone(), secret, true);
        let without = radius::request(1, [1; 16], attrs, secret, false);
        assert!(admit(&with, secret, true).is_ok());
        assert!(admit(&without, secret, false).is_ok());
        assert_eq!(
            admit(&without, secret, true).err(),
            Some(Discard::NoAuthenticator)
        );
        assert_eq!(
            admit(&with, b"x", false).err(),
            Some(Discard::BadAuthenticator)
        );
        assert_eq!(
            admit(&with[..10], secret, false).err(),
            Some(Discard::Malformed)
        );
        let mut other = with.clone();
        other[0] = 4;
        assert_eq!(
            admit(&other, secret, false).err(),
            Some(Discard::NotAccessRequest)
        );
    }
}

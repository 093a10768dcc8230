//! The ng UDP listener: `<cookie> <bencoded dictionary>` in, the same cookie and
//! the answer out. A retransmitted cookie gets the cached answer (or nothing,
//! while the first copy is still being handled) instead of a second action.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

use super::bencode::{self, Value};
use super::calls::Calls;

/// `[ng]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NgConfig {
    /// UDP listener of the ng protocol; empty = off.
    pub listen: String,
    /// Interface for both sides when a request names no `direction`; empty =
    /// `internal` if configured, else the first interface by name.
    pub default_interface: String,
    /// How long an answer is kept for retransmitted cookies.
    pub cookie_cache_secs: u64,
}

impl Default for NgConfig {
    fn default() -> Self {
        NgConfig {
            listen: "127.0.0.1:22222".into(),
            default_interface: String::new(),
            cookie_cache_secs: 30,
        }
    }
}

impl NgConfig {
    /// The listener address, `None` when off; the error names the key.
    pub fn addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| format!("ng.listen: {:?} is not an address:port", self.listen))
    }
}

/// Largest ng datagram accepted (an SDP is at most 64 KiB, plus the rest).
const MAX_DATAGRAM: usize = 65_535;
/// Answers kept for retransmissions, at most.
const MAX_CACHED: usize = 100_000;

#[derive(Debug)]
enum Cached {
    /// The first copy is being handled: drop retransmissions until it is done.
    InProgress(Instant),
    Done(Instant, Arc<Vec<u8>>),
}

#[derive(Debug, Default)]
struct Cookies {
    map: HashMap<Vec<u8>, Cached>,
    last_sweep: Option<Instant>,
}

impl Cookies {
    fn sweep(&mut self, now: Instant, ttl: Duration) {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
            && self.map.len() < MAX_CACHED
        {
            return;
        }
        self.last_sweep = Some(now);
        self.map.retain(|_, c| match c {
            Cached::InProgress(t) | Cached::Done(t, _) => now.duration_since(*t) < ttl,
        });
    }
}

/// Splits `<cookie> <payload>`.
fn split(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = datagram.iter().position(|b| *b == b' ')?;
    let (cookie, rest) = datagram.split_at(sp);
    let payload = rest.get(1..)?;
    (!cookie.is_empty()).then_some((cookie, payload))
}

fn reply(cookie: &[u8], v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 64);
    out.extend_from_slice(cookie);
    out.push(b' ');
    bencode::encode(v, &mut out);
    out
}

/// Serves ng on `socket` until the task is dropped.
pub async fn serve(
    socket: UdpSocket,
    calls: Arc<Calls>,
    cookie_ttl: Duration,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let cookies = Arc::new(Mutex::new(Cookies::default()));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer) = socket.recv_from(&mut buf).await?;
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        let Some((cookie, payload)) = split(datagram) else {
            tracing::debug!(%peer, "ng datagram without a cookie dropped");
            continue;
        };
        let now = Instant::now();
        let seen = {
            let mut c = cookies.lock().unwrap_or_else(|p| p.into_inner());
            c.sweep(now, cookie_ttl);
            match c.map.get(cookie) {
                Some(Cached::Done(_, answer)) => Some(Some(answer.clone())),
                Some(Cached::InProgress(_)) => Some(None),
                // Full even after the sweep: a flood of new cookies. Refuse
                // rather than let the cache (and the tasks) grow without bound.
                None if c.map.len() >= MAX_CACHED => Some(Some(Arc::new(reply(
                    cookie,
                    &Value::dict()
                        .with("result", "error")
                        .with("error-reason", "too many requests in flight; retry later"),
                )))),
                None => {
                    c.map.insert(cookie.to_vec(), Cached::InProgress(now));
                    None
                }
            }
        };
        match seen {
            Some(Some(answer)) => {
                let _ = socket.send_to(&answer, peer).await;
                continue;
            }
            Some(None) => continue,
            None => {}
        }
        let cookie = cookie.to_vec();
        let request = bencode::decode_all(payload);
        let (socket, cookies, calls) = (socket.clone(), cookies.clone(), calls.clone());
        tokio::spawn(async move {
            let answer = match request {
                Ok(v) => calls.handle(&v).await,
                Err(e) => Value::dict()
                    .with("result", "error")
                    .with("error-reason", format!("Failed to decode message: {e}")),
            };
            let bytes = Arc::new(reply(&cookie, &answer));
            let _ = socket.send_to(&bytes, peer).await;
            cookies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map
                .insert(cookie, Cached::Done(Instant::now(), bytes));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cookie_and_payload() {
        assert_eq!(
            split(b"abc d4:pingi1ee"),
            Some((&b"abc"[..], &b"d4:pingi1ee"[..]))
        );
        assert_eq!(split(b"nospace"), None);
        assert_eq!(split(b" leading"), None);
    }
}

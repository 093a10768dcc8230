//! A small client of rtpengine's ng control protocol over UDP: each request is
//! `<cookie> <bencoded dictionary>` and each reply `<cookie> <bencoded dictionary>`.
//! A request without a reply in time is resent with the same cookie (rtpengine
//! answers a repeated cookie from its cache).

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use kordon_controlplane::ng::bencode::{self, Value};

/// How long to wait for one reply before resending.
const REPLY_TIMEOUT: Duration = Duration::from_millis(1000);
/// Sends of one request before giving up.
const ATTEMPTS: u32 = 3;

/// An ng client bound to an ephemeral loopback port.
pub struct NgClient {
    sock: UdpSocket,
    next_cookie: u64,
    buf: Vec<u8>,
}

impl NgClient {
    /// Connects (UDP) to rtpengine's ng listener.
    pub fn new(server: SocketAddr) -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("ng socket")?;
        sock.connect(server).context("ng connect")?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(NgClient {
            sock,
            next_cookie: u64::from(std::process::id()) << 32,
            buf: vec![0u8; 65536],
        })
    }

    /// Sends a request and returns the reply dictionary. Fails when rtpengine
    /// answers `result: error` or never answers.
    pub fn request(&mut self, msg: &Value) -> Result<Value> {
        self.next_cookie += 1;
        let cookie = format!("{:x}", self.next_cookie);
        let mut out = cookie.as_bytes().to_vec();
        out.push(b' ');
        bencode::encode(msg, &mut out);
        for _ in 0..ATTEMPTS {
            self.sock.send(&out).context("ng send")?;
            loop {
                let n = match self.sock.recv(&mut self.buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e).context("ng recv"),
                };
                let reply = &self.buf[..n];
                let Some(space) = reply.iter().position(|&c| c == b' ') else {
                    continue;
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue; // a late reply to an earlier request
                }
                let v = bencode::decode_all(&reply[space + 1..]).context("ng reply")?;
                match v.get("result").and_then(Value::as_str) {
                    Some("ok") | Some("pong") => return Ok(v),
                    other => {
                        let reason = v.get("error-reason").and_then(Value::as_str).unwrap_or("");
                        bail!("rtpengine answered {:?}: {reason}", other.unwrap_or("?"));
                    }
                }
            }
        }
        Err(anyhow!("rtpengine did not answer after {ATTEMPTS} tries"))
    }

    /// `ping` → `pong`.
    pub fn ping(&mut self) -> Result<()> {
        self.request(&Value::dict().with("command", "ping"))
            .map(|_| ())
    }

    /// Sets up one call through rtpengine: `offer` with A's SDP, then `answer`
    /// with B's. Returns `(where A sends, where B sends)`.
    pub fn setup_call(
        &mut self,
        call_id: &str,
        a: SocketAddrV4,
        b: SocketAddrV4,
    ) -> Result<(SocketAddrV4, SocketAddrV4)> {
        let flags = || Value::List(vec!["origin".into(), "session-connection".into()]);
        let offer = Value::dict()
            .with("command", "offer")
            .with("call-id", call_id)
            .with("from-tag", "a")
            .with("sdp", sdp(a, 1))
            .with("replace", flags())
            .with("ICE", "remove")
            .with("transport-protocol", "RTP/AVP");
        let r = self
            .request(&offer)
            .with_context(|| format!("offer {call_id}"))?;
        // The offer's rewritten SDP goes to the callee (B): B sends there.
        let b_sends_to = r
            .get("sdp")
            .and_then(Value::as_str)
            .and_then(media_addr)
            .ok_or_else(|| anyhow!("offer {call_id}: no usable SDP in the reply"))?;
        let answer = Value::dict()
            .with("command", "answer")
            .with("call-id", call_id)
            .with("from-tag", "a")
            .with("to-tag", "b")
            .with("sdp", sdp(b, 2))
            .with("replace", flags())
            .with("ICE", "remove");
        let r = self
            .request(&answer)
            .with_context(|| format!("answer {call_id}"))?;
        // The answer's rewritten SDP goes back to the caller (A): A sends there.
        let a_sends_to = r
            .get("sdp")
            .and_then(Value::as_str)
            .and_then(media_addr)
            .ok_or_else(|| anyhow!("answer {call_id}: no usable SDP in the reply"))?;
        Ok((a_sends_to, b_sends_to))
    }

    /// Deletes a call.
    pub fn delete_call(&mut self, call_id: &str) -> Result<()> {
        let del = Value::dict()
            .with("command", "delete")
            .with("call-id", call_id)
            .with("from-tag", "a");
        self.request(&del).map(|_| ())
    }
}

/// A minimal audio SDP announcing PCMU at `addr`.
pub fn sdp(addr: SocketAddrV4, version: u32) -> String {
    let ip = addr.ip();
    let port = addr.port();
    format!(
        "v=0\r\no=- 1 {version} IN IP4 {ip}\r\ns=kordon-bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// The RTP address of the first audio stream of an SDP: the media-level `c=` if
/// any, else the session-level one, and the `m=audio` port.
pub fn media_addr(sdp: &str) -> Option<SocketAddrV4> {
    let mut session_ip = None;
    let mut media_ip = None;
    let mut port = None;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first media section
            }
            let mut f = rest.split_ascii_whitespace();
            if f.next() != Some("audio") {
                continue;
            }
            port = f.next().and_then(|p| p.parse::<u16>().ok());
        } else if let Some(rest) = line.strip_prefix("c=IN IP4 ") {
            let ip = rest.split('/').next()?.trim().parse().ok();
            if port.is_some() {
                media_ip = ip;
            } else {
                session_ip = ip;
            }
        }
    }
    Some(SocketAddrV4::new(media_ip.or(session_ip)?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_addr_prefers_media_level_connection() {
        let s = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 127.0.0.1\r\nm=video 1 RTP/AVP 96\r\n";
        assert_eq!(media_addr(s), Some("127.0.0.1:30000".parse().unwrap()));
    }

    #[test]
    fn media_addr_falls_back_to_session_connection() {
        let s = sdp("127.0.0.1:4000".parse().unwrap(), 1);
        assert_eq!(media_addr(&s), Some("127.0.0.1:4000".parse().unwrap()));
    }
}

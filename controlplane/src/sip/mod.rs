//! SIP: messages, transports, transactions, dialogs and digest authentication.
//!
//! `message` hides the parser; `txn` and `dialog` are sans-IO state machines
//! (messages and time in, messages and events out); `transport` is the thin
//! async layer that moves bytes between sockets and the machines.

pub mod auth;
pub mod dialog;
pub mod message;
pub mod transport;
pub mod txn;

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP (RFC 3261 §18): unreliable, transactions retransmit.
    Udp,
    /// TCP: reliable, framed by Content-Length.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl Transport {
    /// The token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Whether the transport delivers reliably (no retransmissions, timers
    /// D, I, J and K are zero).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The transport named by a Via token or a `transport=` URI parameter.
    pub fn from_token(s: &str) -> Option<Transport> {
        if s.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if s.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// A stream connection, numbered by the transport layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// Where a message came from or goes to: the far address, over which
/// transport, through which of Kordon's interfaces, and (for streams) on
/// which connection. A response to a request goes back to the request's
/// `Peer` (RFC 3581 symmetric response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The far address (the packet's source for inbound messages).
    pub addr: SocketAddr,
    /// Index of the Kordon interface (in configuration order).
    pub iface: u16,
    /// The stream connection, when there is one; `None` asks the transport
    /// to reuse or open one to `addr`.
    pub conn: Option<ConnId>,
}

//! UDP: one socket per interface, one receive task per socket.
//!
//! A datagram is one message (RFC 3261 §18.3), so nothing is framed here:
//! a datagram is sorted by [`classify_datagram`] and delivered, or dropped
//! and counted (over the limit, not SIP, CRLF keep-alive). The receive task
//! never waits on the caller: when the event channel is full the datagram
//! is dropped and counted, as the kernel would have done, and the sender's
//! transaction retransmits.
//!
//! Sending is a non-blocking `send_to` on a duplicate handle of the same
//! socket rather than tokio's `try_send_to`: the latter consults the
//! reactor's readiness cache first, which is empty until the reactor has
//! seen the socket writable, so a send right after bind would be dropped
//! without the kernel being asked.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::error::TrySendError;

use super::framing::{classify_datagram, Datagram};
use super::{bump, raised, Inbound, Shared, TransportError, TransportEvent};
use crate::sip::{Peer, Transport};

/// One bound UDP socket, as two handles.
pub(crate) struct UdpPair {
    /// For the receive task.
    pub(crate) recv: UdpSocket,
    /// The same socket, non-blocking, for sends from any thread.
    pub(crate) send: std::net::UdpSocket,
}

/// Socket buffer size asked for SIP over UDP: bursts of thousands of
/// messages a second must not overflow the kernel's default (~208 KiB)
/// while a task is busy. The kernel caps it at `net.core.rmem_max`/`wmem_max`.
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Binds a UDP socket on `addr`.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<UdpPair> {
    let s2 = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer only costs drops under bursts.
    let _ = s2.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = s2.set_send_buffer_size(UDP_BUFFER_BYTES);
    s2.bind(&addr.into())?;
    let socket: std::net::UdpSocket = s2.into();
    socket.set_nonblocking(true)?;
    let send = socket.try_clone()?;
    Ok(UdpPair {
        recv: UdpSocket::from_std(socket)?,
        send,
    })
}

/// Receives datagrams on `socket` until shutdown, reusing one buffer.
pub(crate) async fn receive_loop(shared: Arc<Shared>, iface: u16, socket: Arc<UdpSocket>) {
    let max = shared.settings.max_message_bytes;
    // One byte more than the limit, so an oversize datagram (truncated to
    // the buffer by the kernel) still shows as oversize.
    let mut buf = vec![0u8; max.saturating_add(1).min(65_536)];
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // ICMP errors from earlier sends can surface here; they
                    // concern one peer, not the socket, which we own.
                    tracing::trace!(error = %e, "udp receive error");
                    continue;
                }
            },
            _ = raised(&mut shutdown) => return,
        };
        let Some(datagram) = buf.get(..n) else {
            continue;
        };
        match classify_datagram(datagram, max) {
            Datagram::Message { start } => {
                let bytes = Bytes::copy_from_slice(datagram.get(start..).unwrap_or_default());
                let peer = Peer {
                    transport: Transport::Udp,
                    addr: from,
                    iface,
                    conn: None,
                };
                let event = TransportEvent::Message(Inbound { peer, bytes });
                match shared.events.try_send(event) {
                    Ok(()) => bump(&shared.counters.received),
                    Err(TrySendError::Full(_)) => {
                        bump(&shared.counters.dropped_event_queue_full);
                    }
                    Err(TrySendError::Closed(_)) => return,
                }
            }
            Datagram::KeepAlive => bump(&shared.counters.keepalives),
            Datagram::Oversize => {
                tracing::trace!(%from, n, "oversize datagram dropped");
                bump(&shared.counters.dropped_oversize);
            }
            Datagram::NotSip => {
                tracing::trace!(%from, n, "non-SIP datagram dropped");
                bump(&shared.counters.dropped_malformed_frame);
            }
        }
    }
}

/// Sends one datagram without waiting. A full socket buffer is a counted
/// drop and not an error, like loss on the wire.
pub(crate) fn send(
    shared: &Shared,
    socket: &std::net::UdpSocket,
    to: SocketAddr,
    bytes: &[u8],
) -> Result<(), TransportError> {
    match socket.send_to(bytes, to) {
        Ok(_) => {
            bump(&shared.counters.sent);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            bump(&shared.counters.dropped_send_would_block);
            Ok(())
        }
        Err(source) => Err(TransportError::Send { addr: to, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{iface, layer, next_message, options, until_stats};
    use super::super::TransportSettings;
    use super::*;

    #[tokio::test]
    async fn udp_round_trip() {
        let (a, mut a_rx) = layer(&[iface("a")], TransportSettings::default()).await;
        let (b, mut b_rx) = layer(&[iface("b")], TransportSettings::default()).await;
        let a_addr = a.local_addr(0, Transport::Udp).unwrap();
        let b_addr = b.local_addr(0, Transport::Udp).unwrap();
        let to_b = Peer {
            transport: Transport::Udp,
            addr: b_addr,
            iface: 0,
            conn: None,
        };
        a.send(&to_b, options("ping")).unwrap();
        let got = next_message(&mut b_rx).await;
        assert_eq!(got.bytes, options("ping"));
        assert_eq!(got.peer.addr, a_addr);
        assert_eq!(got.peer.conn, None);

        b.send(&got.peer, options("pong")).unwrap();
        let back = next_message(&mut a_rx).await;
        assert_eq!(back.bytes, options("pong"));
        assert_eq!(back.peer.addr, b_addr);
        assert_eq!((a.stats().sent, a.stats().received), (1, 1));
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test]
    async fn drops_oversize_junk_and_keepalives() {
        let settings = TransportSettings {
            max_message_bytes: 600,
            ..TransportSettings::default()
        };
        let (l, mut rx) = layer(&[iface("a")], settings).await;
        let addr = l.local_addr(0, Transport::Udp).unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(&options(&"x".repeat(700)), addr).unwrap();
        s.send_to(b"\x00\x01\x00\x00junk", addr).unwrap();
        s.send_to(b"\r\n\r\n", addr).unwrap();
        s.send_to(&options("fits"), addr).unwrap();
        // Datagrams from one socket arrive in order: the good one is last.
        assert_eq!(next_message(&mut rx).await.bytes, options("fits"));
        until_stats(&l, |st| {
            st.dropped_oversize == 1 && st.dropped_malformed_frame == 1 && st.keepalives == 1
        })
        .await;
        assert_eq!(l.stats().received, 1);
        l.shutdown().await;
    }
}

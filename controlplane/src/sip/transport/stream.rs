//! TCP and TLS: listeners, connections and the connection registry.
//!
//! Each listener has an accept task; each connection, accepted or opened by
//! [`send`], has a reader (this connection's task: reads, frames, delivers,
//! watches for idleness) and a writer task draining a bounded queue. Both
//! kinds are registered by [`ConnId`] and by (interface, transport, remote
//! address) from the moment they exist until the reader ends, so sends
//! reuse them and replies on them come tagged with their id.
//!
//! The reader waits when the event channel is full (backpressure reaches
//! the far side through TCP flow control); it never buffers more than one
//! message's worth past the limit. A framing error, the idle timeout, a
//! write failure or shutdown ends both tasks; bytes still queued at that
//! point are reported as one [`TransportEvent::SendFailed`] (not on
//! shutdown). Remote addresses are logged only at trace level.
//!
//! [`TransportEvent::SendFailed`]: super::TransportEvent::SendFailed

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};

use super::framing::{Frame, Framer};
use super::{
    bump, lock, raised, ConnTaskGuard, Inbound, Shared, TransportError, TransportEvent,
    WRITE_QUEUE_MESSAGES,
};
use crate::sip::{ConnId, Peer, Transport};

/// The CRLF answering a CRLFCRLF ping (RFC 5626 §3.5.1).
const PONG: &[u8] = b"\r\n";
/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Queued messages are written together up to about this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Limit on the orderly close (FIN, TLS close_notify) of a connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Accept failures (out of descriptors, typically) are logged at most this
/// often, and the loop pauses this long after one.
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A connection as the registry knows it.
pub(crate) struct ConnEntry {
    iface: u16,
    transport: Transport,
    remote: SocketAddr,
    queue: mpsc::Sender<Bytes>,
}

/// Both ends of a connection's write queue: the reader keeps a sender for
/// pongs, the writer drains the receiver.
struct Queue {
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

/// The peer as seen on connection `id`.
fn conn_peer(id: ConnId, iface: u16, transport: Transport, remote: SocketAddr) -> Peer {
    Peer {
        transport,
        addr: remote,
        iface,
        conn: Some(id),
    }
}

/// Lookup key for reusing a connection.
type RemoteKey = (u16, Transport, SocketAddr);

/// Live stream connections, by id and by remote address. When two
/// connections share a remote address, the newer one is found by address.
#[derive(Default)]
pub(crate) struct ConnTable {
    by_id: HashMap<ConnId, ConnEntry>,
    by_remote: HashMap<RemoteKey, ConnId>,
}

impl ConnTable {
    fn insert(&mut self, id: ConnId, entry: ConnEntry) {
        self.by_remote
            .insert((entry.iface, entry.transport, entry.remote), id);
        self.by_id.insert(id, entry);
    }

    fn remove(&mut self, id: ConnId) {
        if let Some(e) = self.by_id.remove(&id) {
            let key = (e.iface, e.transport, e.remote);
            if self.by_remote.get(&key) == Some(&id) {
                self.by_remote.remove(&key);
            }
        }
    }
}

/// A listening TCP socket (SO_REUSEADDR, so a restart does not wait for
/// old connections' TIME_WAIT).
pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    iface: u16,
    transport: Transport,
    listener: TcpListener,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_warn: Option<Instant> = None;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let guard = ConnTaskGuard::new(&shared);
                    tokio::spawn(inbound(Arc::clone(&shared), iface, transport, tcp, remote, guard));
                }
                Err(e) => {
                    if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_INTERVAL) {
                        tracing::warn!(error = %e, iface, %transport, "accept failed");
                        last_warn = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            _ = raised(&mut shutdown) => return,
        }
    }
}

/// An accepted connection: TLS handshake if needed, then registration and
/// the connection's life.
async fn inbound(
    shared: Arc<Shared>,
    iface: u16,
    transport: Transport,
    tcp: TcpStream,
    remote: SocketAddr,
    guard: ConnTaskGuard,
) {
    // SIP messages are written whole; Nagle would only delay them.
    let _ = tcp.set_nodelay(true);
    match transport {
        Transport::Tls => {
            let Some(ctx) = shared.tls.as_ref() else {
                return;
            };
            let handshake = tokio::time::timeout(ctx.handshake_timeout, ctx.acceptor.accept(tcp));
            let tls = tokio::select! {
                r = handshake => r,
                _ = shared.shut_down() => return,
            };
            match tls {
                Ok(Ok(stream)) => {
                    let (peer, queue) = register(&shared, iface, transport, remote);
                    run(shared, peer, stream, queue, guard).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, iface, "inbound TLS handshake failed");
                    tracing::trace!(%remote, "inbound TLS handshake failed");
                }
                Err(_) => tracing::debug!(iface, "inbound TLS handshake timed out"),
            }
        }
        Transport::Tcp | Transport::Udp => {
            let (peer, queue) = register(&shared, iface, transport, remote);
            run(shared, peer, tcp, queue, guard).await;
        }
    }
}

/// Registers an accepted connection; returns its peer and queue.
fn register(
    shared: &Shared,
    iface: u16,
    transport: Transport,
    remote: SocketAddr,
) -> (Peer, Queue) {
    let id = shared.new_conn_id();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MESSAGES);
    lock(&shared.conns).insert(
        id,
        ConnEntry {
            iface,
            transport,
            remote,
            queue: tx.clone(),
        },
    );
    (conn_peer(id, iface, transport, remote), Queue { tx, rx })
}

/// Queues `bytes` on the connection for `peer`, opening one if there is
/// none (see [`super::TransportLayer::send`]).
pub(crate) fn send(shared: &Arc<Shared>, peer: &Peer, bytes: Bytes) -> Result<(), TransportError> {
    let key = (peer.iface, peer.transport, peer.addr);
    let mut bytes = bytes;
    let mut table = lock(&shared.conns);
    let named = peer.conn.filter(|id| {
        table
            .by_id
            .get(id)
            .is_some_and(|e| e.iface == peer.iface && e.transport == peer.transport)
    });
    let by_addr = table.by_remote.get(&key).copied();
    for id in [named, by_addr].into_iter().flatten() {
        let Some(entry) = table.by_id.get(&id) else {
            continue;
        };
        match entry.queue.try_send(bytes) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => {
                return Err(TransportError::QueueFull {
                    conn: id.0,
                    addr: entry.remote,
                })
            }
            Err(TrySendError::Closed(b)) => {
                // Its writer has ended; the reader will be gone shortly.
                bytes = b;
                table.remove(id);
            }
        }
    }

    let id = shared.new_conn_id();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_MESSAGES);
    if tx.try_send(bytes).is_err() {
        // A new queue with a live receiver has room; this cannot happen.
        return Err(TransportError::QueueFull {
            conn: id.0,
            addr: peer.addr,
        });
    }
    table.insert(
        id,
        ConnEntry {
            iface: peer.iface,
            transport: peer.transport,
            remote: peer.addr,
            queue: tx.clone(),
        },
    );
    drop(table);
    let guard = ConnTaskGuard::new(shared);
    shared.runtime.spawn(outbound(
        Arc::clone(shared),
        conn_peer(id, peer.iface, peer.transport, peer.addr),
        Queue { tx, rx },
        guard,
    ));
    Ok(())
}

/// Opens a TCP connection from the interface's IP.
async fn connect_tcp(shared: &Shared, iface: u16, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let local_ip = shared
        .iface(iface)
        .map_err(|e| io::Error::other(e.to_string()))?
        .local_ip();
    if !local_ip.is_unspecified() && local_ip.is_ipv4() == remote.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = tokio::time::timeout(shared.settings.connect_timeout, socket.connect(remote))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// An outbound connection: connect (and handshake), then the connection's
/// life; on failure, the queued bytes are reported lost.
async fn outbound(shared: Arc<Shared>, peer: Peer, mut queue: Queue, guard: ConnTaskGuard) {
    let Peer {
        transport,
        addr: remote,
        iface,
        ..
    } = peer;
    let tcp = tokio::select! {
        r = connect_tcp(&shared, iface, remote) => r,
        _ = shared.shut_down() => {
            forget(&shared, peer);
            return;
        }
    };
    let tcp = match tcp {
        Ok(tcp) => tcp,
        Err(e) => {
            return fail_before_open(&shared, peer, &mut queue.rx, format!("connect: {e}")).await;
        }
    };
    match transport {
        Transport::Tls => {
            let Some(ctx) = shared.tls.as_ref() else {
                return fail_before_open(&shared, peer, &mut queue.rx, "TLS is off".to_string())
                    .await;
            };
            let name = ctx.server_name(remote);
            let handshake =
                tokio::time::timeout(ctx.handshake_timeout, ctx.connector.connect(name, tcp));
            let tls = tokio::select! {
                r = handshake => r,
                _ = shared.shut_down() => {
                    forget(&shared, peer);
                    return;
                }
            };
            match tls {
                Ok(Ok(stream)) => {
                    run(shared, peer, stream, queue, guard).await;
                }
                Ok(Err(e)) => {
                    let reason = format!("TLS handshake: {e}");
                    fail_before_open(&shared, peer, &mut queue.rx, reason).await;
                }
                Err(_) => {
                    let reason = "TLS handshake timed out".to_string();
                    fail_before_open(&shared, peer, &mut queue.rx, reason).await;
                }
            }
        }
        Transport::Tcp | Transport::Udp => {
            run(shared, peer, tcp, queue, guard).await;
        }
    }
}

/// Unregisters a connection that never opened and reports its queue lost.
async fn fail_before_open(
    shared: &Shared,
    peer: Peer,
    rx: &mut mpsc::Receiver<Bytes>,
    reason: String,
) {
    forget(shared, peer);
    rx.close();
    let mut lost = 0usize;
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    tracing::trace!(remote = %peer.addr, %reason, lost, "outbound connection failed");
    shared.send_failed(peer, reason).await;
}

/// Removes `peer`'s connection from the registry.
fn forget(shared: &Shared, peer: Peer) {
    if let Some(id) = peer.conn {
        lock(&shared.conns).remove(id);
    }
}

/// What the reader and writer of one connection share.
struct ConnState {
    /// Milliseconds since the layer's epoch at the last byte either way.
    last_activity: AtomicU64,
    /// Set when either side decides the connection is over.
    close: watch::Sender<bool>,
}

impl ConnState {
    fn touch(&self, shared: &Shared) {
        self.last_activity.store(shared.now_ms(), Ordering::Relaxed);
    }

    fn close(&self) {
        self.close.send_replace(true);
    }
}

/// The life of an open, registered connection: the writer in its own task,
/// the reader here; when the reader ends, the connection is unregistered
/// and the writer stopped.
async fn run<S>(shared: Arc<Shared>, peer: Peer, io: S, queue: Queue, _guard: ConnTaskGuard)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    if shared.is_shut_down() {
        forget(&shared, peer);
        return;
    }
    let Queue { tx, rx } = queue;
    bump(&shared.counters.connections_open);
    tracing::trace!(conn = ?peer.conn, transport = %peer.transport, remote = %peer.addr, "connection open");
    let state = Arc::new(ConnState {
        last_activity: AtomicU64::new(shared.now_ms()),
        close: watch::channel(false).0,
    });
    let (rd, wr) = tokio::io::split(io);
    let writer = tokio::spawn(write_loop(
        Arc::clone(&shared),
        peer,
        wr,
        rx,
        Arc::clone(&state),
    ));
    let why = read_loop(&shared, peer, rd, &tx, &state).await;
    tracing::trace!(conn = ?peer.conn, why, "connection closing");
    state.close();
    forget(&shared, peer);
    drop(tx);
    // The writer ends on the close signal; a panic in it is gone either way.
    let _ = writer.await;
    shared
        .counters
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// Reads, frames and delivers until the connection should close; returns
/// why.
async fn read_loop<R>(
    shared: &Shared,
    peer: Peer,
    mut rd: R,
    queue: &mpsc::Sender<Bytes>,
    state: &ConnState,
) -> &'static str
where
    R: AsyncRead + Unpin,
{
    let mut framer = Framer::new(shared.settings.max_message_bytes);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut close = state.close.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let idle = shared.settings.idle_timeout;
    loop {
        let last = state.last_activity.load(Ordering::Relaxed);
        let idle_at = tokio::time::Instant::from_std(shared.epoch + Duration::from_millis(last))
            .checked_add(idle)
            .unwrap_or_else(far_future);
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) => return "closed by peer",
                Ok(n) => n,
                Err(_) => return "read error",
            },
            _ = tokio::time::sleep_until(idle_at) => {
                let quiet = shared.now_ms().saturating_sub(state.last_activity.load(Ordering::Relaxed));
                if Duration::from_millis(quiet) >= idle {
                    return "idle";
                }
                continue;
            }
            _ = raised(&mut close) => return "closed by writer",
            _ = raised(&mut shutdown) => return "shutdown",
        };
        state.touch(shared);
        framer.push(chunk.get(..n).unwrap_or_default());
        loop {
            match framer.poll_frame() {
                Ok(None) => break,
                Ok(Some(Frame::KeepAlive)) => {
                    bump(&shared.counters.keepalives);
                    // A full queue already holds traffic that proves liveness.
                    let _ = queue.try_send(Bytes::from_static(PONG));
                }
                Ok(Some(Frame::Message(bytes))) => {
                    let event = TransportEvent::Message(Inbound { peer, bytes });
                    tokio::select! {
                        r = shared.events.send(event) => {
                            if r.is_err() {
                                return "event channel closed";
                            }
                            bump(&shared.counters.received);
                        }
                        _ = raised(&mut close) => return "closed by writer",
                        _ = raised(&mut shutdown) => return "shutdown",
                    }
                }
                Err(e) => {
                    if e.is_oversize() {
                        bump(&shared.counters.dropped_oversize);
                    } else {
                        bump(&shared.counters.dropped_malformed_frame);
                    }
                    tracing::debug!(conn = ?peer.conn, error = %e, "closing connection: bad framing");
                    return "bad framing";
                }
            }
        }
    }
}

/// A deadline that never comes in practice (an idle timeout too large to
/// add to a timestamp means "never").
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Writes queued messages, batching what is already queued, until the
/// connection closes; then reports unsent messages and closes the write
/// side.
async fn write_loop<W>(
    shared: Arc<Shared>,
    peer: Peer,
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    state: Arc<ConnState>,
) where
    W: AsyncWrite + Unpin,
{
    let mut close = state.close.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut lost = 0usize;
    let mut failure: Option<String> = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = raised(&mut close) => break,
            _ = raised(&mut shutdown) => break,
            m = rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
        };
        out.clear();
        out.extend_from_slice(&first);
        let mut messages = usize::from(first.as_ref() != PONG);
        while out.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    out.extend_from_slice(&m);
                    messages += usize::from(m.as_ref() != PONG);
                }
                Err(_) => break,
            }
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        tokio::select! {
            r = write => match r {
                Ok(()) => {
                    state.touch(&shared);
                    shared.counters.sent.fetch_add(messages as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    lost += messages;
                    failure = Some(format!("write: {e}"));
                    break;
                }
            },
            _ = raised(&mut close) => {
                lost += messages;
                break;
            }
            _ = raised(&mut shutdown) => break,
        }
    }
    state.close();
    rx.close();
    while let Ok(m) = rx.try_recv() {
        lost += usize::from(m.as_ref() != PONG);
    }
    if lost > 0 && !shared.is_shut_down() {
        let reason = failure.unwrap_or_else(|| "connection closed".to_string());
        let reason = format!("{reason} ({lost} message(s) not sent)");
        shared.send_failed(peer, reason).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::super::tests::{iface, layer, next_event, next_message, options, until_stats};
    use super::super::{TransportLayer, TransportSettings};
    use super::*;
    use tokio::net::TcpStream;

    fn tcp_peer(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Tcp,
            addr,
            iface: 0,
            conn: None,
        }
    }

    async fn one() -> (TransportLayer, mpsc::Receiver<TransportEvent>, SocketAddr) {
        let (l, rx) = layer(&[iface("a")], TransportSettings::default()).await;
        let addr = l.local_addr(0, Transport::Tcp).expect("tcp bound");
        (l, rx, addr)
    }

    /// Reads from `s` until `want` bytes came or five seconds passed.
    async fn read_exact_within(s: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut buf = vec![0u8; want];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("bytes within 5 s")
            .expect("read");
        buf
    }

    #[tokio::test]
    async fn tcp_message_split_across_writes() {
        let (l, mut rx, addr) = one().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let m = options("split body");
        let (a, b) = m.split_at(40);
        s.write_all(a).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b).await.unwrap();
        let got = next_message(&mut rx).await;
        assert_eq!(got.bytes, m);
        assert_eq!(got.peer.addr, s.local_addr().unwrap());
        assert_eq!(got.peer.transport, Transport::Tcp);
        assert!(got.peer.conn.is_some());
        l.shutdown().await;
    }

    #[tokio::test]
    async fn tcp_two_messages_in_one_write() {
        let (l, mut rx, addr) = one().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (m1, m2) = (options("first"), options("second"));
        s.write_all(&[m1.as_ref(), m2.as_ref()].concat())
            .await
            .unwrap();
        let a = next_message(&mut rx).await;
        let b = next_message(&mut rx).await;
        assert_eq!((a.bytes, b.bytes), (m1, m2));
        assert_eq!(a.peer, b.peer);
        l.shutdown().await;
    }

    #[tokio::test]
    async fn reply_goes_back_on_the_inbound_connection() {
        let (l, mut rx, addr) = one().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&options("req")).await.unwrap();
        let got = next_message(&mut rx).await;
        l.send(&got.peer, options("resp")).unwrap();
        let want = options("resp");
        assert_eq!(read_exact_within(&mut s, want.len()).await, want.as_ref());
        // By address alone, the same connection is reused.
        l.send(
            &Peer {
                conn: None,
                ..got.peer
            },
            options("again"),
        )
        .unwrap();
        let want = options("again");
        assert_eq!(read_exact_within(&mut s, want.len()).await, want.as_ref());
        assert_eq!(l.stats().connections_open, 1);
        l.shutdown().await;
    }

    #[tokio::test]
    async fn crlf_ping_is_answered_with_one_crlf() {
        let (l, mut rx, addr) = one().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"\r\n\r\n").await.unwrap();
        assert_eq!(read_exact_within(&mut s, 2).await, b"\r\n");
        // The connection still carries messages afterwards.
        s.write_all(&options("after ping")).await.unwrap();
        assert_eq!(next_message(&mut rx).await.bytes, options("after ping"));
        assert_eq!(l.stats().keepalives, 1);
        l.shutdown().await;
    }

    #[tokio::test]
    async fn oversize_message_closes_the_connection() {
        let settings = TransportSettings {
            max_message_bytes: 600,
            ..TransportSettings::default()
        };
        let (l, _rx) = layer(&[iface("a")], settings).await;
        let addr = l.local_addr(0, Transport::Tcp).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&options(&"x".repeat(700))).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within 5 s");
        // EOF, or a reset if unread bytes were still in our receive buffer.
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        until_stats(&l, |st| {
            st.dropped_oversize == 1 && st.connections_open == 0
        })
        .await;
        l.shutdown().await;
    }

    #[tokio::test]
    async fn missing_content_length_closes_the_connection() {
        let (l, _rx, addr) = one().await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"OPTIONS sip:a SIP/2.0\r\nCall-ID: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within 5 s");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        until_stats(&l, |st| st.dropped_malformed_frame == 1).await;
        l.shutdown().await;
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        let settings = TransportSettings {
            idle_timeout: Duration::from_millis(100),
            ..TransportSettings::default()
        };
        let (l, _rx) = layer(&[iface("a")], settings).await;
        let addr = l.local_addr(0, Transport::Tcp).unwrap();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("closed within 5 s");
        assert!(matches!(n, Ok(0)), "{n:?}");
        until_stats(&l, |st| st.connections_open == 0).await;
        l.shutdown().await;
    }

    #[tokio::test]
    async fn send_without_connection_opens_one_and_reply_carries_its_id() {
        let (client, mut client_rx, _) = one().await;
        let (server, mut server_rx, server_addr) = one().await;
        client
            .send(&tcp_peer(server_addr), options("hello"))
            .unwrap();
        // A second send before the connect completes shares the new queue.
        client
            .send(&tcp_peer(server_addr), options("hello 2"))
            .unwrap();
        let req = next_message(&mut server_rx).await;
        assert_eq!(req.bytes, options("hello"));
        let req2 = next_message(&mut server_rx).await;
        assert_eq!(req2.bytes, options("hello 2"));
        assert_eq!(req.peer.conn, req2.peer.conn);
        // The connection leaves from the client's interface IP.
        assert_eq!(req.peer.addr.ip(), server_addr.ip());

        server.send(&req.peer, options("reply")).unwrap();
        let reply = next_message(&mut client_rx).await;
        assert_eq!(reply.bytes, options("reply"));
        assert_eq!(reply.peer.addr, server_addr);
        let conn = reply.peer.conn.expect("stream replies carry a ConnId");
        // The same connection is reused for the next request, by id...
        client
            .send(&tcp_peer(server_addr), options("third"))
            .unwrap();
        assert_eq!(next_message(&mut server_rx).await.peer.conn, req.peer.conn);
        client
            .send(
                &Peer {
                    conn: Some(conn),
                    ..tcp_peer(server_addr)
                },
                options("fourth"),
            )
            .unwrap();
        assert_eq!(next_message(&mut server_rx).await.peer.conn, req.peer.conn);
        assert_eq!(client.stats().connections_open, 1);
        assert_eq!(client.stats().sent, 4);
        client.shutdown().await;
        server.shutdown().await;
    }

    #[tokio::test]
    async fn send_to_a_closed_port_yields_send_failed() {
        let (l, mut rx, _) = one().await;
        let closed = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        l.send(&tcp_peer(closed), options("nobody")).unwrap();
        match next_event(&mut rx).await {
            TransportEvent::SendFailed { peer, reason } => {
                assert_eq!(peer.addr, closed);
                assert_eq!(peer.transport, Transport::Tcp);
                assert!(peer.conn.is_some());
                assert!(reason.starts_with("connect"), "{reason}");
            }
            other => panic!("expected SendFailed, got {other:?}"),
        }
        assert_eq!(l.stats().send_failed, 1);
        // The failed connection is gone from the registry: a new send tries
        // again instead of queueing behind it.
        l.send(&tcp_peer(closed), options("again")).unwrap();
        assert!(matches!(
            next_event(&mut rx).await,
            TransportEvent::SendFailed { .. }
        ));
        l.shutdown().await;
    }

    #[tokio::test]
    async fn full_write_queue_refuses_sends() {
        let (l, mut rx, addr) = one().await;
        // A peer that never reads: our writes stall once buffers fill.
        let s = TcpStream::connect(addr).await.unwrap();
        let mut raw = s;
        raw.write_all(&options("hi")).await.unwrap();
        let got = next_message(&mut rx).await;
        let big = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut refused = None;
        for _ in 0..10_000 {
            if let Err(e) = l.send(&got.peer, big.clone()) {
                refused = Some(e);
                break;
            }
            tokio::task::yield_now().await;
        }
        let e = refused.expect("the queue fills up");
        assert!(matches!(e, TransportError::QueueFull { .. }), "{e}");
        assert!(e.retryable());
        l.shutdown().await;
    }
}

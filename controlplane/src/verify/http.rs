//! The small HTTP/1.1 server under the verification node's REST API and its
//! inter-node `VerifyCallState` endpoint.
//!
//! What it does: accepts TCP connections (TCP_NODELAY set), serves each on
//! its own task with hyper's HTTP/1.1 connection (keep-alive on, header
//! names written title-cased), reads each request's body whole up to [`MAX_BODY`] and hands method, path, headers
//! and body to a [`Handler`], whose [`Reply`] is either a response or "hold":
//! keep the request unanswered for a while, then close the connection
//! without a response (the preset "do not answer" of the inter-node
//! exchange).
//!
//! What it does not do: routing, content negotiation, TLS, HTTP/2, or any
//! decision; those belong to the handler ([`super::rest`]).
//!
//! Invariants:
//! - a body announced (Content-Length) or found (chunked) to be larger than
//!   [`MAX_BODY`] is never buffered: the handler's
//!   [`Handler::body_too_large`] answer is sent and the connection closed;
//! - no input from the network panics; an accept error (EMFILE and the
//!   like) is logged and retried after [`ACCEPT_PAUSE`];
//! - [`serve`] runs until its task is aborted; aborting it also ends every
//!   connection it serves (they live in its `JoinSet`);
//! - bounded by peers' behaviour: at most [`MAX_CONNECTIONS`] connections
//!   and [`MAX_HOLDS`] held requests at once, a request head within
//!   [`HEADER_TIMEOUT`] and its body within [`BODY_TIMEOUT`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderValue, CONNECTION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

pub use super::peer::MAX_BODY;

/// Pause after a failed `accept` before trying again.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for a request's head on an open connection (slow clients).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The response type handlers build.
pub type Response = hyper::Response<Full<Bytes>>;

/// One request, body read whole.
#[derive(Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body, at most [`MAX_BODY`] bytes.
    pub body: Bytes,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Reply {
    /// Send this response.
    Answer(Response),
    /// Send nothing: wait this long, then close the connection.
    Hold(Duration),
}

/// Answers requests.
pub trait Handler: Send + Sync + 'static {
    /// The reply to `req`.
    fn handle(&self, req: Request) -> impl Future<Output = Reply> + Send;
    /// The answer to a request whose body is larger than [`MAX_BODY`].
    fn body_too_large(&self) -> Response;
}

/// Most connections served at once per listener; more are closed at once
/// (a client opening connections without end cannot take every descriptor).
pub const MAX_CONNECTIONS: usize = 4096;
/// Longest a request body may take to arrive once its head is read.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most requests held without an answer ([`Reply::Hold`]) at once; beyond,
/// a held request's connection is closed at once (the asker sees no answer
/// either way).
pub const MAX_HOLDS: usize = 1024;

/// Serves `listener` with `handler` until the task is aborted.
pub async fn serve<H: Handler>(listener: TcpListener, handler: H) {
    let (_keep, stop) = tokio::sync::watch::channel(false);
    serve_until(listener, handler, stop).await;
}

/// Serves `listener` with `handler` until `stop` turns true, then stops
/// accepting, lets each connection finish the request it is serving (no
/// new one on it) and returns when all are done. A caller that cannot wait
/// that long aborts the task (which ends every connection at once).
pub async fn serve_until<H: Handler>(
    listener: TcpListener,
    handler: H,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let handler = Arc::new(handler);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let holds = Arc::new(tokio::sync::Semaphore::new(MAX_HOLDS));
    let mut conns = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break; // no one can stop us any more: stop now
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(%peer, "verify http: connection limit reached, closed");
                        drop(stream);
                        continue;
                    };
                    let (handler, holds, stop) = (handler.clone(), holds.clone(), stop.clone());
                    conns.spawn(async move {
                        connection(stream, peer, handler, holds, stop).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "verify http: accept failed, retrying");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "verify http: connection task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection<H: Handler>(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    holds: Arc<tokio::sync::Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "verify http: TCP_NODELAY not set");
    }
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let (handler, holds) = (handler.clone(), holds.clone());
        async move { one(&*handler, &holds, req).await }
    });
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .title_case_headers(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            // The request in progress is answered; none is read after it.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "verify http: connection ended");
    }
}

/// Serves one request. An `Err` makes hyper close the connection without
/// answering (hold, or a body that could not be read).
async fn one<H: Handler>(
    handler: &H,
    holds: &tokio::sync::Semaphore,
    req: hyper::Request<Incoming>,
) -> Result<Response, io::Error> {
    let (parts, body) = req.into_parts();
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Ok(closing(handler.body_too_large()));
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let body = match read.await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(closing(handler.body_too_large()));
        }
        Ok(Err(e)) => return Err(io::Error::other(format!("reading the body: {e}"))),
        Err(_) => return Err(io::Error::other("the body did not arrive in time")),
    };
    let req = Request {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    };
    match handler.handle(req).await {
        Reply::Answer(r) => Ok(r),
        Reply::Hold(d) => {
            if let Ok(_held) = holds.try_acquire() {
                tokio::time::sleep(d).await;
            }
            Err(io::Error::other("held without an answer"))
        }
    }
}

/// `r` with `Connection: close`: the rest of the body is not read, so the
/// connection cannot carry another request.
fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Answers 200 after `delay`.
    struct Slow {
        delay: Duration,
    }

    impl Handler for Slow {
        async fn handle(&self, _req: Request) -> Reply {
            tokio::time::sleep(self.delay).await;
            Reply::Answer(hyper::Response::new(Full::new(Bytes::from_static(b"done"))))
        }

        fn body_too_large(&self) -> Response {
            hyper::Response::new(Full::new(Bytes::new()))
        }
    }

    #[tokio::test]
    async fn a_graceful_stop_answers_the_request_in_progress_then_ends() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(serve_until(
            l,
            Slow {
                delay: Duration::from_millis(300),
            },
            rx,
        ));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send_replace(true);
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer))
            .await
            .expect("the answer and the close")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server ends once its connections are done")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}

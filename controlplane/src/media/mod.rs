//! The gRPC client of a Kordon data plane: the generated client behind a thin
//! typed wrapper whose errors say whose fault a failure is and whether a retry
//! can help, so call control can map them to SIP once (503 + Retry-After for an
//! exhausted or unavailable data plane, for instance).
//!
//! The same API reaches a data plane in the same process without the
//! network ([`MediaClient::local`]): `kordon run` calls its data plane's gRPC
//! service directly, so a call's session requests cost no HTTP/2 exchange
//! over loopback. Requests and answers are the same messages either way.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kordon_proto::v1::dataplane_server::Dataplane;

use kordon_proto::v1 as pb;
use kordon_proto::v1::dataplane_client::DataplaneClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

pub use kordon_proto::v1::{
    CreateSessionRequest, Direction, Endpoint as MediaEndpoint, LatchMode, LegSpec, LegUpdate,
    SessionInfo, UpdateSessionRequest,
};

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request we built was wrong (a bug or bad input we passed on).
    Caller,
    /// The data plane could not serve it now (ports, queue, restart).
    Dataplane,
}

/// A data plane call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// A field was refused; the message names it.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No such session.
    #[error("no such session: {0}")]
    NotFound(String),
    /// The id exists with other parameters, or a requested port is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// No free port (or other resource) on the data plane.
    #[error("data plane exhausted: {0}")]
    Exhausted(String),
    /// Unreachable, restarting or busy.
    #[error("data plane unavailable: {0}")]
    Unavailable(String),
    /// Anything else the data plane reported.
    #[error("data plane error: {0}")]
    Internal(String),
}

impl MediaError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            MediaError::Invalid(_) | MediaError::NotFound(_) | MediaError::Conflict(_) => {
                Fault::Caller
            }
            _ => Fault::Dataplane,
        }
    }

    /// Whether the same request may succeed later (creates are idempotent on
    /// their session id, so retrying one is safe).
    pub fn retryable(&self) -> bool {
        matches!(self, MediaError::Exhausted(_) | MediaError::Unavailable(_))
    }
}

impl From<tonic::Status> for MediaError {
    fn from(s: tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                MediaError::Invalid(m)
            }
            Code::NotFound => MediaError::NotFound(m),
            Code::AlreadyExists => MediaError::Conflict(m),
            Code::ResourceExhausted => MediaError::Exhausted(m),
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                MediaError::Unavailable(m)
            }
            _ => MediaError::Internal(m),
        }
    }
}

impl From<tonic::transport::Error> for MediaError {
    fn from(e: tonic::transport::Error) -> Self {
        MediaError::Unavailable(e.to_string())
    }
}

/// The event stream of an in-process data plane.
pub type LocalEvents =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, tonic::Status>> + Send + 'static>>;

/// A data plane service in this process.
pub type LocalDataplane = Arc<dyn Dataplane<WatchEventsStream = LocalEvents>>;

#[derive(Clone)]
enum Link {
    Remote(DataplaneClient<Channel>),
    Local(LocalDataplane),
}

/// A connection to one data plane.
#[derive(Clone)]
pub struct MediaClient {
    link: Link,
}

impl std::fmt::Debug for MediaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.link {
            Link::Remote(_) => f.write_str("MediaClient(remote)"),
            Link::Local(_) => f.write_str("MediaClient(in-process)"),
        }
    }
}

/// Calls method `$m` with `$req` over whichever link the client has.
macro_rules! call {
    ($self:ident, $m:ident, $req:expr) => {
        match &mut $self.link {
            Link::Remote(c) => c.$m($req).await?.into_inner(),
            Link::Local(s) => s.$m(tonic::Request::new($req)).await?.into_inner(),
        }
    };
}

impl MediaClient {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`), with a per-call timeout.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, MediaError> {
        let ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| MediaError::Invalid(format!("data plane url {url:?}: {e}")))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let channel = ep.connect().await?;
        Ok(MediaClient {
            link: Link::Remote(DataplaneClient::new(channel)),
        })
    }

    /// A client of a data plane service in this process.
    pub fn local(service: LocalDataplane) -> Self {
        MediaClient {
            link: Link::Local(service),
        }
    }

    /// A client that connects on first use and reconnects after failures (for
    /// a data plane started beside it, or restarted under it).
    pub fn lazy(url: &str, timeout: Duration) -> Result<Self, MediaError> {
        let ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| MediaError::Invalid(format!("data plane url {url:?}: {e}")))?
            .timeout(timeout)
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        Ok(MediaClient {
            link: Link::Remote(DataplaneClient::new(ep.connect_lazy())),
        })
    }

    /// Creates a session (idempotent on its id).
    pub async fn create(&mut self, req: CreateSessionRequest) -> Result<SessionInfo, MediaError> {
        let r = call!(self, create_session, req);
        r.session
            .ok_or_else(|| MediaError::Internal("create answer without a session".into()))
    }

    /// Changes a session's legs.
    pub async fn update(&mut self, req: UpdateSessionRequest) -> Result<SessionInfo, MediaError> {
        Ok(call!(self, update_session, req))
    }

    /// Deletes a session; returns its final counters.
    pub async fn delete(&mut self, session_id: &str) -> Result<SessionInfo, MediaError> {
        let req = pb::DeleteSessionRequest {
            session_id: session_id.to_string(),
        };
        let r = call!(self, delete_session, req);
        r.session
            .ok_or_else(|| MediaError::Internal("delete answer without a session".into()))
    }

    /// One session.
    pub async fn get(&mut self, session_id: &str) -> Result<SessionInfo, MediaError> {
        let req = pb::GetSessionRequest {
            session_id: session_id.to_string(),
        };
        Ok(call!(self, get_session, req))
    }

    /// All sessions.
    pub async fn list(&mut self) -> Result<Vec<SessionInfo>, MediaError> {
        Ok(call!(self, list_sessions, pb::ListSessionsRequest {}).sessions)
    }

    /// Counters.
    pub async fn stats(&mut self) -> Result<pb::StatsResponse, MediaError> {
        Ok(call!(self, stats, pb::StatsRequest {}))
    }

    /// The event stream.
    pub async fn events(&mut self) -> Result<LocalEvents, MediaError> {
        Ok(match &mut self.link {
            Link::Remote(c) => Box::pin(
                c.watch_events(pb::WatchEventsRequest {})
                    .await?
                    .into_inner(),
            ),
            Link::Local(s) => s
                .watch_events(tonic::Request::new(pb::WatchEventsRequest {}))
                .await?
                .into_inner(),
        })
    }
}

/// A leg on `interface` whose peer announced `remote` (SDP) and whose media
/// may latch from `expected_source` (the signalling source of a NATed peer).
pub fn leg(
    interface: &str,
    remote: Option<std::net::SocketAddr>,
    expected_source: Option<std::net::IpAddr>,
) -> LegSpec {
    LegSpec {
        interface: interface.to_string(),
        remote_rtp: remote.map(|a| MediaEndpoint {
            ip: a.ip().to_string(),
            port: u32::from(a.port()),
        }),
        expected_source_ip: expected_source.map(|i| i.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;

/// The data plane's direction for an SDP direction.
pub fn pb_direction(d: crate::sdp::Direction) -> kordon_proto::v1::Direction {
    use crate::sdp::Direction as D;
    use kordon_proto::v1::Direction as P;
    match d {
        D::SendRecv => P::Sendrecv,
        D::SendOnly => P::Sendonly,
        D::RecvOnly => P::Recvonly,
        D::Inactive => P::Inactive,
    }
}

/// The data plane's form of a socket address.
pub fn endpoint(a: std::net::SocketAddr) -> kordon_proto::v1::Endpoint {
    MediaEndpoint {
        ip: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

/// A socket address from the data plane's form (`None` when absent or bad).
pub fn endpoint_addr(e: Option<&kordon_proto::v1::Endpoint>) -> Option<std::net::SocketAddr> {
    let e = e?;
    let ip: std::net::IpAddr = e.ip.parse().ok()?;
    Some(std::net::SocketAddr::new(ip, u16::try_from(e.port).ok()?))
}

/// The leg facing a party whose SDP says `side`, created on `interface`;
/// its media may latch from `expected` (default: the SDP's address).
pub fn leg_for(
    interface: &str,
    side: &crate::sdp::MediaSide,
    expected: Option<std::net::IpAddr>,
) -> LegSpec {
    LegSpec {
        interface: interface.to_string(),
        remote_rtp: side.remote_rtp.map(endpoint),
        remote_rtcp: side.remote_rtcp.map(endpoint),
        expected_source_ip: expected.map(|i| i.to_string()).unwrap_or_default(),
        direction: pb_direction(side.direction) as i32,
        rtcp_mux: side.rtcp_mux,
        ..Default::default()
    }
}

/// The update of the leg facing a party whose new SDP says `side`.
pub fn leg_update_for(
    side: &crate::sdp::MediaSide,
    expected: Option<std::net::IpAddr>,
) -> LegUpdate {
    LegUpdate {
        remote_rtp: side.remote_rtp.map(endpoint),
        remote_rtcp: side.remote_rtcp.map(endpoint),
        expected_source_ip: expected.map(|i| i.to_string()),
        direction: pb_direction(side.direction) as i32,
        rtcp_mux: Some(side.rtcp_mux),
        ..Default::default()
    }
}

/// The advertised RTP addresses of a session's leg A and leg B.
pub fn local_rtp(info: &SessionInfo) -> Option<[std::net::SocketAddr; 2]> {
    let a = endpoint_addr(info.leg_a.as_ref()?.local_rtp.as_ref())?;
    let b = endpoint_addr(info.leg_b.as_ref()?.local_rtp.as_ref())?;
    Some([a, b])
}

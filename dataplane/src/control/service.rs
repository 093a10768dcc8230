//! The tonic service: each RPC delegates to the data plane's control side.

use std::pin::Pin;
use std::sync::Arc;

use kordon_proto::v1 as pb;
use kordon_proto::v1::dataplane_server::{Dataplane, DataplaneServer};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::Inner;

/// The gRPC service of one data plane.
#[derive(Debug, Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Service { inner }
    }

    /// As a tonic server.
    pub fn into_server(self) -> DataplaneServer<Service> {
        DataplaneServer::new(self)
    }

    /// Free port pairs per interface.
    pub fn free_pairs(&self) -> Vec<(String, u32)> {
        self.inner.free_pairs()
    }

    /// Counters (the same as the Stats RPC).
    pub async fn stats(&self) -> Result<pb::StatsResponse, Status> {
        self.inner.stats().await
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Dataplane for Service {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        // Run to completion even if the caller goes away, so the directory never
        // keeps a half-made entry and the worker never keeps an orphan session.
        let inner = self.inner.clone();
        let req = request.into_inner();
        let session = tokio::spawn(async move { inner.create(req).await })
            .await
            .map_err(|e| Status::internal(format!("create task: {e}")))??;
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(session),
        }))
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        Ok(Response::new(
            self.inner.update(request.into_inner()).await?,
        ))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let inner = self.inner.clone();
        let id = request.into_inner().session_id;
        let session = tokio::spawn(async move { inner.delete(&id).await })
            .await
            .map_err(|e| Status::internal(format!("delete task: {e}")))??;
        Ok(Response::new(pb::DeleteSessionResponse {
            session: Some(session),
        }))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::SessionInfo>, Status> {
        Ok(Response::new(
            self.inner.get(&request.get_ref().session_id).await?,
        ))
    }

    async fn list_sessions(
        &self,
        _request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: self.inner.list().await?,
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        Ok(Response::new(self.inner.stats().await?))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        _request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let stream = BroadcastStream::new(self.inner.subscribe()).map(|item| match item {
            Ok(ev) => Ok(ev),
            Err(BroadcastStreamRecvError::Lagged(n)) => Ok(pb::Event {
                unix_ms: 0,
                session_id: String::new(),
                kind: Some(pb::event::Kind::EventsLost(pb::EventsLost { count: n })),
            }),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

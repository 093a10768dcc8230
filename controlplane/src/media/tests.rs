//! The client against a real in-process data plane.

use std::time::Duration;

use kordon_dataplane::config::{DataplaneConfig, InterfaceConfig};

use super::*;

async fn start(port_min: u16) -> (kordon_dataplane::Dataplane, String) {
    let mut cfg = DataplaneConfig {
        workers: 1,
        pin_workers: false,
        ..Default::default()
    };
    cfg.interfaces.clear();
    cfg.interfaces.insert(
        "internal".into(),
        InterfaceConfig {
            bind: "127.0.0.1".parse().unwrap(),
            advertised: None,
            port_min,
            port_max: port_min + 3,
        },
    );
    let dp = kordon_dataplane::Dataplane::start(&cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = dp.service().into_server();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (dp, url)
}

fn request(id: &str) -> CreateSessionRequest {
    CreateSessionRequest {
        session_id: id.into(),
        leg_a: Some(leg(
            "internal",
            Some("127.0.0.1:4000".parse().unwrap()),
            None,
        )),
        leg_b: Some(leg(
            "internal",
            Some("127.0.0.1:4002".parse().unwrap()),
            None,
        )),
        inactivity_timeout_secs: 0,
    }
}

#[tokio::test]
async fn maps_statuses_to_typed_errors() {
    let (dp, url) = start(47100).await;
    let mut c = MediaClient::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let s = c.create(request("one")).await.unwrap();
    assert_eq!(s.session_id, "one");
    // The range holds two pairs: the next session cannot get two.
    let e = c.create(request("two")).await.unwrap_err();
    assert!(matches!(e, MediaError::Exhausted(_)), "{e:?}");
    assert!(e.retryable());
    assert_eq!(e.fault(), Fault::Dataplane);
    let e = c.get("nope").await.unwrap_err();
    assert!(matches!(e, MediaError::NotFound(_)), "{e:?}");
    assert_eq!(e.fault(), Fault::Caller);
    let mut bad = request("three");
    bad.leg_a = None;
    let e = c.create(bad).await.unwrap_err();
    assert!(
        matches!(&e, MediaError::Invalid(m) if m.contains("leg_a")),
        "{e:?}"
    );
    let gone = c.delete("one").await.unwrap();
    assert_eq!(gone.session_id, "one");
    assert!(c.list().await.unwrap().is_empty());
    dp.stop();
}

#[tokio::test]
async fn unreachable_data_plane_is_unavailable() {
    let e = MediaClient::connect("http://127.0.0.1:1", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(e.retryable(), "{e:?}");
}

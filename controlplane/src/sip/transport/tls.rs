//! TLS material and policy: the server certificate, the client verifier.
//!
//! The server presents the configured certificate, or a self-signed one
//! made on first start (SANs: `localhost`, the TLS interfaces' listen IPs
//! and advertised hosts) and kept under `<data_dir>/tls/` so peers that
//! pinned it keep working across restarts. Delete the two files to get a
//! new one, e.g. after changing the advertised host.
//!
//! As a client, Kordon verifies servers against the configured CA bundle,
//! matching the peer's IP address (SIP routes here are resolved addresses,
//! not names). Without a bundle, certificates are accepted unverified, which
//! is said once in the log; handshake signatures are still checked, so the
//! server must at least hold the key of the certificate it shows.
//!
//! Everything is built on the ring provider explicitly, so no process-wide
//! default provider needs installing.

use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{TlsConfig, TransportError};

/// Name of the generated certificate under `<data_dir>/tls/`.
pub(crate) const GENERATED_CERT: &str = "kordon-cert.pem";
/// Name of the generated private key under `<data_dir>/tls/`.
pub(crate) const GENERATED_KEY: &str = "kordon-key.pem";

/// The TLS side of the layer: server and client configurations.
pub(crate) struct TlsContext {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
    pub(crate) handshake_timeout: Duration,
    verifies: bool,
    warned: AtomicBool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(field: &str, path: &Path, reason: impl ToString) -> TransportError {
    TransportError::Tls {
        field: field.to_string(),
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl TlsContext {
    /// Loads or makes the server certificate and builds both configurations.
    /// `sans` are used only when a certificate has to be made.
    pub(crate) fn new(
        cfg: &TlsConfig,
        data_dir: &Path,
        sans: &[String],
    ) -> Result<TlsContext, TransportError> {
        let generated_key = data_dir.join("tls").join(GENERATED_KEY);
        let (certs, key, key_path) = match (cfg.cert.is_empty(), cfg.key.is_empty()) {
            (true, true) => {
                let (certs, key) = self_signed(data_dir, sans)?;
                (certs, key, generated_key.as_path())
            }
            (false, false) => {
                let key_path = Path::new(&cfg.key);
                let (certs, key) = load_pair(
                    Path::new(&cfg.cert),
                    key_path,
                    "sip.tls.cert",
                    "sip.tls.key",
                )?;
                (certs, key, key_path)
            }
            (false, true) => {
                return Err(TransportError::Config {
                    field: "sip.tls.key".to_string(),
                    reason: "must be set when sip.tls.cert is".to_string(),
                })
            }
            (true, false) => {
                return Err(TransportError::Config {
                    field: "sip.tls.cert".to_string(),
                    reason: "must be set when sip.tls.key is".to_string(),
                })
            }
        };
        // The ring provider supports the default versions; an error here
        // would be a build problem, reported against the key for lack of a
        // better place.
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("sip.tls.key", key_path, e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| tls_err("sip.tls.key", key_path, e))?;

        let ca_path = Path::new(&cfg.ca);
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("sip.tls.ca", ca_path, e))?;
        let verifies = !cfg.ca.is_empty();
        let client = if verifies {
            let mut roots = rustls::RootCertStore::empty();
            let bundle = CertificateDer::pem_file_iter(ca_path)
                .map_err(|e| tls_err("sip.tls.ca", ca_path, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_err("sip.tls.ca", ca_path, e))?;
            let (added, _ignored) = roots.add_parsable_certificates(bundle);
            if added == 0 {
                return Err(tls_err("sip.tls.ca", ca_path, "no usable CA certificate"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert {
                    algorithms: provider().signature_verification_algorithms,
                }))
                .with_no_client_auth()
        };
        Ok(TlsContext {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            handshake_timeout: Duration::from_millis(cfg.handshake_timeout_ms),
            verifies,
            warned: AtomicBool::new(false),
        })
    }

    /// The name a server at `addr` must prove: its IP address.
    pub(crate) fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        if !self.verifies && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "sip.tls.ca is not set: TLS servers Kordon connects to are not verified"
            );
        }
        ServerName::from(addr.ip())
    }
}

/// Reads a certificate chain and its key.
fn load_pair(
    cert: &Path,
    key: &Path,
    cert_field: &str,
    key_field: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert_field, cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(cert_field, cert, e))?;
    if certs.is_empty() {
        return Err(tls_err(cert_field, cert, "no certificate in file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key_field, key, e))?;
    Ok((certs, key_der))
}

/// The generated pair under `<data_dir>/tls/`, made now if either file is
/// missing.
fn self_signed(
    data_dir: &Path,
    sans: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let dir = data_dir.join("tls");
    let cert_path = dir.join(GENERATED_CERT);
    let key_path = dir.join(GENERATED_KEY);
    if !(cert_path.exists() && key_path.exists()) {
        fs::create_dir_all(&dir).map_err(|e| tls_err("data_dir", &dir, e))?;
        let mut params = rcgen::CertificateParams::new(sans.to_vec())
            .map_err(|e| tls_err("sip.interfaces.advertised", &cert_path, e))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Kordon SBC");
        let key = rcgen::KeyPair::generate().map_err(|e| tls_err("sip.tls", &key_path, e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| tls_err("sip.tls", &cert_path, e))?;
        // Key first: a crash in between leaves no certificate, so the
        // next start makes a fresh pair instead of pairing a stale key.
        write_atomically(&key_path, key.serialize_pem().as_bytes(), true)
            .map_err(|e| tls_err("sip.tls.key", &key_path, e))?;
        write_atomically(&cert_path, cert.pem().as_bytes(), false)
            .map_err(|e| tls_err("sip.tls.cert", &cert_path, e))?;
        tracing::info!(cert = %cert_path.display(), ?sans, "made a self-signed TLS certificate");
    }
    load_pair(&cert_path, &key_path, "sip.tls.cert", "sip.tls.key")
}

/// Writes `data` to `path` through a temporary file and a rename, so a
/// reader never sees half a file; `private` files are readable by the owner
/// only.
fn write_atomically(path: &Path, data: &[u8], private: bool) -> io::Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.set_extension("pem.tmp");
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Accepts any server certificate but still checks the handshake
/// signatures against the certificate's key.
#[derive(Debug)]
struct AcceptAnyCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{iface, next_event, next_message, options, temp_dir};
    use super::super::{InterfaceConfig, TransportEvent, TransportLayer, TransportSettings};
    use super::*;
    use crate::sip::{Peer, Transport};

    /// A port that was free a moment ago (tls_port has no "pick one").
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe bind");
        l.local_addr().expect("probe addr").port()
    }

    fn tls_iface(name: &str) -> InterfaceConfig {
        InterfaceConfig {
            tls_port: free_port(),
            ..iface(name)
        }
    }

    async fn bind(
        c: &InterfaceConfig,
        tls: &TlsConfig,
        dir: &Path,
    ) -> (TransportLayer, tokio::sync::mpsc::Receiver<TransportEvent>) {
        TransportLayer::bind(
            std::slice::from_ref(c),
            tls,
            dir,
            TransportSettings::default(),
        )
        .await
        .expect("bind")
    }

    #[tokio::test]
    async fn tls_round_trip_between_two_layers() {
        let (server_dir, client_dir) = (temp_dir("tls-s"), temp_dir("tls-c"));
        let (server, mut server_rx) =
            bind(&tls_iface("s"), &TlsConfig::default(), &server_dir).await;
        let (client, mut client_rx) =
            bind(&tls_iface("c"), &TlsConfig::default(), &client_dir).await;
        let server_addr = server.local_addr(0, Transport::Tls).unwrap();

        let to_server = Peer {
            transport: Transport::Tls,
            addr: server_addr,
            iface: 0,
            conn: None,
        };
        client.send(&to_server, options("over tls")).unwrap();
        let got = next_message(&mut server_rx).await;
        assert_eq!(got.bytes, options("over tls"));
        assert_eq!(got.peer.transport, Transport::Tls);
        assert!(got.peer.conn.is_some());

        server.send(&got.peer, options("reply")).unwrap();
        let reply = next_message(&mut client_rx).await;
        assert_eq!(reply.bytes, options("reply"));
        assert_eq!(reply.peer.addr, server_addr);
        assert!(reply.peer.conn.is_some());
        assert_eq!(server.stats().connections_open, 1);

        client.shutdown().await;
        server.shutdown().await;
        for d in [server_dir, client_dir] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[tokio::test]
    async fn self_signed_pair_is_made_once_and_reused() {
        let dir = temp_dir("tls-reuse");
        let c = tls_iface("s");
        let (first, _rx) = bind(&c, &TlsConfig::default(), &dir).await;
        first.shutdown().await;
        let cert_path = dir.join("tls").join(GENERATED_CERT);
        let key_path = dir.join("tls").join(GENERATED_KEY);
        let cert = fs::read(&cert_path).unwrap();
        let key = fs::read(&key_path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, _rx) = bind(&c, &TlsConfig::default(), &dir).await;
        second.shutdown().await;
        assert_eq!(fs::read(&cert_path).unwrap(), cert);
        assert_eq!(fs::read(&key_path).unwrap(), key);
        let _ = fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn client_verifies_against_the_ca_bundle() {
        let (server_dir, client_dir, other_dir) =
            (temp_dir("ca-s"), temp_dir("ca-c"), temp_dir("ca-o"));
        let (server, mut server_rx) =
            bind(&tls_iface("s"), &TlsConfig::default(), &server_dir).await;
        let server_addr = server.local_addr(0, Transport::Tls).unwrap();
        let to_server = Peer {
            transport: Transport::Tls,
            addr: server_addr,
            iface: 0,
            conn: None,
        };

        // Trusting the server's own certificate: the IP SAN matches.
        let trusting = TlsConfig {
            ca: server_dir
                .join("tls")
                .join(GENERATED_CERT)
                .display()
                .to_string(),
            ..TlsConfig::default()
        };
        let (client, _client_rx) = bind(&tls_iface("c"), &trusting, &client_dir).await;
        client.send(&to_server, options("trusted")).unwrap();
        assert_eq!(next_message(&mut server_rx).await.bytes, options("trusted"));
        client.shutdown().await;

        // Trusting some other certificate: the handshake fails.
        let (other, _) = bind(&tls_iface("o"), &TlsConfig::default(), &other_dir).await;
        other.shutdown().await;
        let wrong = TlsConfig {
            ca: other_dir
                .join("tls")
                .join(GENERATED_CERT)
                .display()
                .to_string(),
            ..TlsConfig::default()
        };
        let (client, mut client_rx) = bind(&tls_iface("c"), &wrong, &client_dir).await;
        client.send(&to_server, options("untrusted")).unwrap();
        match next_event(&mut client_rx).await {
            TransportEvent::SendFailed { peer, .. } => assert_eq!(peer.addr, server_addr),
            other => panic!("expected SendFailed, got {other:?}"),
        }
        assert_eq!(client.stats().send_failed, 1);
        client.shutdown().await;
        server.shutdown().await;
        for d in [server_dir, client_dir, other_dir] {
            let _ = fs::remove_dir_all(d);
        }
    }

    #[tokio::test]
    async fn missing_key_is_a_config_error() {
        let cfg = TlsConfig {
            cert: "/nonexistent/cert.pem".to_string(),
            ..TlsConfig::default()
        };
        let err = TransportLayer::bind(
            &[tls_iface("s")],
            &cfg,
            &std::env::temp_dir(),
            TransportSettings::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with("sip.tls.key"), "{err}");
        let cfg = TlsConfig {
            cert: "/nonexistent/cert.pem".to_string(),
            key: "/nonexistent/key.pem".to_string(),
            ..TlsConfig::default()
        };
        let err = TransportLayer::bind(
            &[tls_iface("s")],
            &cfg,
            &std::env::temp_dir(),
            TransportSettings::default(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("sip.tls.cert /nonexistent/cert.pem"),
            "{err}"
        );
    }
}

//! The inter-node exchange: `POST /VerifyCallState` with a JSON envelope, as
//! asker ([`PeerClient`]) and the wire types both sides use.
//!
//! Request: `{"request":{"serviceKey":80,"uvrO":<asker>,"uvrT":<answerer>,
//! "sessionId":"<16 hex>","data":"<hex BER>","opcode":"Request"}}`.
//! Answers (HTTP 200): the same envelope under `"response"` with the four
//! first fields echoed, `"data":"3000"` and `"opcode"` one of `Continue`,
//! `Release` or `Error`; an error answer adds `"errorCode"` (number) and
//! `"errorText"`. Codes: 1 malformed request, 2 malformed data, 3 node id
//! not served here, 4 unsupported serviceKey (0x81, encryption), 5 number
//! not served. A body that is not a readable request gets HTTP 400 with an
//! error answer of code 1.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// The serviceKey of the clear exchange.
pub const SERVICE_KEY: u32 = 80;
/// The `data` of answers.
pub const ANSWER_DATA: &str = "3000";
/// Largest body read, either side.
pub const MAX_BODY: usize = 16 * 1024;

/// Error answer codes.
pub mod error_code {
    /// The request is not a readable VerifyCallState request.
    pub const MALFORMED_REQUEST: u32 = 1;
    /// `data` is not hex or not the expected BER.
    pub const MALFORMED_DATA: u32 = 2;
    /// `uvrT` is not a node id of this node.
    pub const UNKNOWN_NODE: u32 = 3;
    /// serviceKey other than 80 (0x81: encryption, not supported).
    pub const UNSUPPORTED_SERVICE: u32 = 4;
    /// Number A is not of our capacity ("number not served, configuration
    /// error").
    pub const NOT_SERVED: u32 = 5;

    /// The text sent with a code.
    pub fn text(c: u32) -> &'static str {
        match c {
            MALFORMED_REQUEST => "Malformed request",
            MALFORMED_DATA => "Malformed data",
            UNKNOWN_NODE => "Node id not served here",
            UNSUPPORTED_SERVICE => "Unsupported serviceKey (encryption is not supported)",
            NOT_SERVED => "Number not served. Configuration error",
            _ => "Error",
        }
    }
}

/// The body of a request or an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_snake_case)]
pub struct Message {
    /// 80.
    pub serviceKey: u32,
    /// Asking node.
    pub uvrO: u32,
    /// Answering node.
    pub uvrT: u32,
    /// 16 hex digits chosen by the asker.
    pub sessionId: String,
    /// Hex BER (requests) or `3000` (answers).
    pub data: String,
    /// `Request`, `Continue`, `Release`, `Error`.
    pub opcode: String,
    /// Error answers: the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorCode: Option<u32>,
    /// Error answers: the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errorText: Option<String>,
}

/// `{"request": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// The request.
    pub request: Message,
}

/// `{"response": ...}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// The answer.
    pub response: Message,
}

impl Message {
    /// The answer to `self` with `opcode`.
    pub fn answer(&self, opcode: &str) -> Message {
        Message {
            serviceKey: self.serviceKey,
            uvrO: self.uvrO,
            uvrT: self.uvrT,
            sessionId: self.sessionId.clone(),
            data: ANSWER_DATA.to_string(),
            opcode: opcode.to_string(),
            errorCode: None,
            errorText: None,
        }
    }

    /// The error answer to `self` with `code`.
    pub fn error(&self, code: u32) -> Message {
        Message {
            errorCode: Some(code),
            errorText: Some(error_code::text(code).to_string()),
            ..self.answer("Error")
        }
    }
}

/// What the asked node said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAnswer {
    /// The call is known: let it through.
    Continue,
    /// The call is not known: release it.
    Release,
    /// An error answer, with its code.
    Error(u32),
    /// No answer within the time.
    Timeout,
    /// The node could not be reached (connection refused or lost before an
    /// answer): no answer, as for a timeout.
    Unreachable(String),
    /// Unreachable, or an answer that is not one (the text says what).
    Failed(String),
}

/// Sends requests to other nodes, at most `w_size` at once.
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    window: Arc<Semaphore>,
}

impl PeerClient {
    /// A client with a window of `w_size` requests in flight.
    pub fn new(w_size: usize) -> PeerClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(w_size.max(1))
            .build(http);
        PeerClient {
            client,
            window: Arc::new(Semaphore::new(w_size.max(1))),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self, w_size: usize) -> usize {
        w_size.saturating_sub(self.window.available_permits())
    }

    /// Sends `msg` to `addr` and waits for the answer, all within `limit`
    /// (time waiting for a place in the window included).
    pub async fn ask(&self, addr: SocketAddr, msg: &Message, limit: Duration) -> PeerAnswer {
        match tokio::time::timeout(limit, self.ask_inner(addr, msg)).await {
            Ok(a) => a,
            Err(_) => PeerAnswer::Timeout,
        }
    }

    async fn ask_inner(&self, addr: SocketAddr, msg: &Message) -> PeerAnswer {
        let Ok(_permit) = self.window.acquire().await else {
            return PeerAnswer::Failed("client closed".to_string());
        };
        let body = match serde_json::to_vec(&RequestEnvelope {
            request: msg.clone(),
        }) {
            Ok(b) => b,
            Err(e) => return PeerAnswer::Failed(e.to_string()),
        };
        let req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(format!("http://{addr}/VerifyCallState"))
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let req = match req {
            Ok(r) => r,
            Err(e) => return PeerAnswer::Failed(e.to_string()),
        };
        let resp = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                // An answer that is not HTTP is an unusable answer; anything
                // else (refused, reset, closed before answering) is none.
                let garbled = std::error::Error::source(&e)
                    .and_then(|s| s.downcast_ref::<hyper::Error>())
                    .is_some_and(|h| h.is_parse() || h.is_parse_status());
                return if garbled {
                    PeerAnswer::Failed(format!("{addr}: {e}"))
                } else {
                    PeerAnswer::Unreachable(format!("{addr}: {e}"))
                };
            }
        };
        let status = resp.status();
        let body = match Limited::new(resp.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return PeerAnswer::Failed(format!("{addr}: reading the answer: {e}")),
        };
        read_answer(msg, status.as_u16(), &body)
    }
}

/// Reads an answer to `asked`.
pub fn read_answer(asked: &Message, status: u16, body: &[u8]) -> PeerAnswer {
    let env: ResponseEnvelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(e) => {
            return PeerAnswer::Failed(format!("HTTP {status}, answer not readable: {e}"));
        }
    };
    let r = env.response;
    if !r.sessionId.eq_ignore_ascii_case(&asked.sessionId) {
        return PeerAnswer::Failed(format!(
            "answer for session {} to request {}",
            r.sessionId, asked.sessionId
        ));
    }
    match r.opcode.as_str() {
        "Continue" if status == 200 => PeerAnswer::Continue,
        "Release" if status == 200 => PeerAnswer::Release,
        "Error" => PeerAnswer::Error(r.errorCode.unwrap_or(0)),
        other => PeerAnswer::Failed(format!("HTTP {status}, opcode {other:?}")),
    }
}

/// Why a request body could not be used: the error answer to send (with
/// what could be read of the request echoed) and the reason.
pub type Unreadable = Box<(Message, String)>;

/// Reads a request body.
pub fn read_request(body: &[u8]) -> Result<Message, Unreadable> {
    read(body).map_err(Box::new)
}

#[allow(clippy::result_large_err)] // boxed once by read_request
fn read(body: &[u8]) -> Result<Message, (Message, String)> {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err((blank().error(error_code::MALFORMED_REQUEST), e.to_string())),
    };
    let Some(r) = v.get("request").and_then(|r| r.as_object()) else {
        return Err((
            blank().error(error_code::MALFORMED_REQUEST),
            "no \"request\" object".to_string(),
        ));
    };
    let num = |k: &str| -> Option<u32> {
        let f = r.get(k)?;
        f.as_u64()
            .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
            .and_then(|n| u32::try_from(n).ok())
    };
    let text = |k: &str| r.get(k).and_then(|f| f.as_str()).map(str::to_string);
    let mut echo = blank();
    echo.serviceKey = num("serviceKey").unwrap_or(0);
    echo.uvrO = num("uvrO").unwrap_or(0);
    echo.uvrT = num("uvrT").unwrap_or(0);
    echo.sessionId = text("sessionId").unwrap_or_default();
    let mut missing = Vec::new();
    for k in ["serviceKey", "uvrO", "uvrT"] {
        if num(k).is_none() {
            missing.push(k);
        }
    }
    for k in ["sessionId", "data", "opcode"] {
        if text(k).is_none() {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        let reason = format!("missing or invalid: {}", missing.join(", "));
        return Err((echo.error(error_code::MALFORMED_REQUEST), reason));
    }
    let msg = Message {
        data: text("data").unwrap_or_default(),
        opcode: text("opcode").unwrap_or_default(),
        ..echo.clone()
    };
    if msg.opcode != "Request" {
        let reason = format!("opcode {:?} is not Request", msg.opcode);
        return Err((echo.error(error_code::MALFORMED_REQUEST), reason));
    }
    let sid = &msg.sessionId;
    if sid.len() != 16 || !sid.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err((
            echo.error(error_code::MALFORMED_REQUEST),
            format!("sessionId {sid:?} is not 16 hex digits"),
        ));
    }
    Ok(msg)
}

fn blank() -> Message {
    Message {
        serviceKey: SERVICE_KEY,
        uvrO: 0,
        uvrT: 0,
        sessionId: String::new(),
        data: ANSWER_DATA.to_string(),
        opcode: "Error".to_string(),
        errorCode: None,
        errorText: None,
    }
}

/// A fresh session id: 16 upper-case hex digits.
pub fn session_id() -> String {
    format!("{:016X}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_and_echoes_in_answers() {
        let body = br#"{ "request": { "opcode": "Request", "uvrO": 11, "uvrT": 1067, "serviceKey": 80, "sessionId": "000b042b27ed7d35", "data": "3000" } }"#;
        let m = read_request(body).unwrap();
        assert_eq!((m.uvrO, m.uvrT, m.serviceKey), (11, 1067, 80));
        let a = serde_json::to_string(&ResponseEnvelope {
            response: m.answer("Continue"),
        })
        .unwrap();
        assert_eq!(
            a,
            r#"{"response":{"serviceKey":80,"uvrO":11,"uvrT":1067,"sessionId":"000b042b27ed7d35","data":"3000","opcode":"Continue"}}"#
        );
        let e = serde_json::to_string(&ResponseEnvelope {
            response: m.error(error_code::NOT_SERVED),
        })
        .unwrap();
        assert!(e.contains(r#""opcode":"Error","errorCode":5"#), "{e}");
    }

    #[test]
    fn bad_requests_get_an_error_answer_with_what_was_readable() {
        let (e, why) = *read_request(b"{not json").unwrap_err();
        assert_eq!(e.errorCode, Some(1));
        assert!(!why.is_empty());
        let (e, why) = *read_request(
            br#"{"request":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000AB"}}"#,
        )
        .unwrap_err();
        assert_eq!((e.uvrO, e.uvrT), (1, 2));
        assert!(why.contains("data") && why.contains("opcode"), "{why}");
        let (_, why) = *read_request(
            br#"{"request":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"xyz","data":"","opcode":"Request"}}"#,
        )
        .unwrap_err();
        assert!(why.contains("sessionId"), "{why}");
    }

    #[test]
    fn answers_are_read() {
        let asked = read_request(
            br#"{"request":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000AB","data":"3000","opcode":"Request"}}"#,
        )
        .unwrap();
        let ok = br#"{"response":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000ab","data":"3000","opcode":"Continue"}}"#;
        assert_eq!(read_answer(&asked, 200, ok), PeerAnswer::Continue);
        let rel = br#"{"response":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000AB","data":"3000","opcode":"Release"}}"#;
        assert_eq!(read_answer(&asked, 200, rel), PeerAnswer::Release);
        let err = br#"{"response":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000AB","data":"3000","opcode":"Error","errorCode":5}}"#;
        assert_eq!(read_answer(&asked, 200, err), PeerAnswer::Error(5));
        let other = br#"{"response":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"1111111111111111","data":"3000","opcode":"Continue"}}"#;
        assert!(matches!(
            read_answer(&asked, 200, other),
            PeerAnswer::Failed(_)
        ));
        assert!(matches!(
            read_answer(&asked, 500, b"oops"),
            PeerAnswer::Failed(_)
        ));
    }

    fn asked() -> Message {
        read_request(
            br#"{"request":{"serviceKey":80,"uvrO":1,"uvrT":2,"sessionId":"00000000000000AB","data":"3000","opcode":"Request"}}"#,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn silence_refusal_and_garbage_are_told_apart() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let client = PeerClient::new(4);
        let limit = Duration::from_millis(300);
        // Accepts, reads, never answers: timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = silent.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        assert_eq!(
            client.ask(silent_addr, &asked(), limit).await,
            PeerAnswer::Timeout
        );
        // Nobody listens: unreachable (the timeout path).
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            client.ask(closed, &asked(), limit).await,
            PeerAnswer::Unreachable(_)
        ));
        // Something that is not HTTP answers: an unusable answer.
        let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let garbage_addr = garbage.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = garbage.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HELLO THERE\r\n\r\n").await;
        });
        assert!(matches!(
            client.ask(garbage_addr, &asked(), limit).await,
            PeerAnswer::Failed(_)
        ));
    }
}

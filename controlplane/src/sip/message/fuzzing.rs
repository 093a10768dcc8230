//! Invariant check for the `sip_message` cargo-fuzz target (and the
//! conformance tests, which run every fixture and regression input through
//! it).
//!
//! Not a parser: it panics, on purpose, when an invariant breaks.

use super::{
    parse, CSeq, Headers, Message, NameAddr, Request, Response, Uri, Via, MAX_MESSAGE_BYTES,
};

/// Statuses a B2BUA answers with on its own; each is built with
/// [`Response::for_request`] from every request that validates.
const LOCAL_STATUSES: [u16; 6] = [100, 180, 200, 400, 487, 503];

/// Parses `data`. An error must be a one-line reason fit for a 400. A
/// message that parses has readable typed views (or errors, never panics),
/// and every view that reads (Request-URI, Via, CSeq, name-addr headers)
/// prints a text that reads back to an equal view: the B2BUA writes headers
/// from these views.
/// A request that validates serializes to bytes that parse and validate
/// again to an equal request, whose serialization is the same bytes; and
/// every response [`Response::for_request`] builds from it serializes and
/// parses back equal. A response that parses round-trips the same way.
/// Serializing may grow a message (compact names are written long, a Via
/// list becomes one line per entry): past [`MAX_MESSAGE_BYTES`] the re-parse
/// must fail as too large instead. Panics only if one of those breaks.
pub fn fuzz_sip_message(data: &[u8]) {
    match parse(data) {
        Err(e) => {
            let reason = e.reason();
            assert!(!reason.is_empty(), "empty reason");
            assert!(
                !reason.contains(['\r', '\n']) && reason.len() <= 120,
                "reason unfit for a status line: {reason:?}"
            );
        }
        Ok(Message::Request(req)) => {
            assert!(req.body.len() <= data.len(), "body longer than the input");
            views_of_request(&req);
            view_round_trips(&req.headers);
            let uri_text = req.uri.to_string();
            assert_eq!(
                Uri::parse(&uri_text).ok().as_ref(),
                Some(&req.uri),
                "Request-URI {uri_text:?}"
            );
            if req.validate().is_ok() {
                request_round_trip(&req);
                for status in LOCAL_STATUSES {
                    response_round_trip(&Response::for_request(&req, status));
                }
            }
        }
        Ok(Message::Response(resp)) => {
            assert!((100..=699).contains(&resp.status));
            assert!(resp.body.len() <= data.len(), "body longer than the input");
            let _ = (resp.via_top(), resp.from(), resp.to(), resp.cseq());
            let _ = (resp.call_id(), resp.contact());
            view_round_trips(&resp.headers);
            response_round_trip(&resp);
        }
    }
}

fn views_of_request(req: &Request) {
    let _ = (req.via_top(), req.from(), req.to(), req.cseq());
    let _ = (req.call_id(), req.contact(), req.max_forwards());
    assert!(
        req.headers.get("Content-Length").is_none(),
        "Content-Length left in the header list"
    );
}

/// Headers read as name-addrs somewhere in the call path.
const NAME_ADDR_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Contact",
    "Route",
    "Record-Route",
    "P-Asserted-Identity",
    "Refer-To",
];

fn view_round_trips(headers: &Headers) {
    for v in headers.get_all("Via") {
        if let Ok(via) = Via::parse(v) {
            let text = via.to_string();
            assert_eq!(
                Via::parse(&text).ok(),
                Some(via),
                "Via {v:?} written {text:?}"
            );
        }
    }
    if let Some(Ok(cseq)) = headers.get("CSeq").map(CSeq::parse) {
        let text = cseq.to_string();
        assert_eq!(CSeq::parse(&text).ok(), Some(cseq), "CSeq written {text:?}");
    }
    for name in NAME_ADDR_HEADERS {
        for v in headers.get_all(name) {
            if let Ok(addr) = NameAddr::parse(v) {
                let text = addr.to_string();
                assert_eq!(
                    NameAddr::parse(&text).ok(),
                    Some(addr),
                    "{name} {v:?} written {text:?}"
                );
            }
        }
    }
}

fn too_large(wire: &[u8], result: &Result<Message, super::ParseError>) -> bool {
    if wire.len() <= MAX_MESSAGE_BYTES {
        return false;
    }
    let Err(e) = result else {
        panic!("{} bytes parsed", wire.len());
    };
    assert_eq!(e.reason(), "message too large");
    true
}

fn request_round_trip(req: &Request) {
    let cseq = req.cseq().expect("a request that validates has a CSeq");
    assert_eq!(
        cseq.method, req.method,
        "validate let a CSeq mismatch through"
    );
    req.via_top()
        .expect("a request that validates has a top Via");
    let wire = req.to_bytes();
    let again = parse(&wire);
    if too_large(&wire, &again) {
        return;
    }
    let again = match again {
        Ok(Message::Request(r)) => r,
        Ok(Message::Response(_)) => panic!("request re-parsed as a response:\n{wire:?}"),
        Err(e) => panic!("serialized request does not parse ({e}):\n{wire:?}"),
    };
    assert_eq!(&again, req, "re-parse differs:\n{wire:?}");
    if let Err(e) = again.validate() {
        panic!("re-parsed request does not validate ({e}):\n{wire:?}");
    }
    assert_eq!(again.to_bytes(), wire, "serializing is not a fixed point");
}

fn response_round_trip(resp: &Response) {
    let wire = resp.to_bytes();
    let again = parse(&wire);
    if too_large(&wire, &again) {
        return;
    }
    match again {
        Ok(Message::Response(r)) => assert_eq!(&r, resp, "re-parse differs:\n{wire:?}"),
        Ok(Message::Request(_)) => panic!("response re-parsed as a request:\n{wire:?}"),
        Err(e) => panic!("serialized response does not parse ({e}):\n{wire:?}"),
    }
}

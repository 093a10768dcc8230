//! RFC 3261 §12 dialogs, as a B2BUA leg sees them: identifiers, CSeq
//! spaces, remote target and route set, and how in-dialog requests are
//! built. Pure data: no IO, no clock.
//!
//! Requests always go to the dialog's fixed [`Peer`] (the trunk, or the
//! address a NATed client's requests came from, RFC 3581), while the
//! Request-URI follows the remote target. That is the NAT fix the SBC makes:
//! a client's private Contact is kept as the URI but never used as a
//! destination.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use super::message::{CSeq, Method, NameAddr, ParseError, Request, Response, Uri, Via};
use super::{Peer, Transport};

/// How Kordon names itself on a leg: the Via sent-by and Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddr {
    /// Advertised host (IP or name).
    pub host: String,
    /// Advertised port.
    pub port: u16,
    /// Transport of the leg.
    pub transport: Transport,
}

impl LocalAddr {
    /// A top Via without a branch (the transaction layer adds it), asking
    /// for rport (RFC 3581).
    pub fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {}:{};rport",
            self.transport.via_token(),
            self.host,
            self.port
        )
    }

    /// Kordon's Contact on this leg, `<sip:user@host:port;transport=..>`.
    pub fn contact(&self, user: &str) -> String {
        let transport = match self.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        format!("<sip:{user}@{}:{}{transport}>", self.host, self.port)
    }
}

/// One dialog (one leg of a call).
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The far side's tag (empty until known on an early UAC dialog).
    pub remote_tag: String,
    /// Our URI (From on requests we send).
    pub local_uri: NameAddr,
    /// The far side's URI (To on requests we send).
    pub remote_uri: NameAddr,
    /// Last CSeq we used.
    pub local_seq: u32,
    /// Last CSeq the far side used.
    pub remote_seq: Option<u32>,
    /// Request-URI of in-dialog requests (the far side's Contact).
    pub remote_target: Uri,
    /// Route headers for in-dialog requests, in sending order.
    pub route_set: Vec<String>,
    /// Where in-dialog requests go.
    pub peer: Peer,
    /// How we name ourselves on this leg.
    pub local: LocalAddr,
    /// User part of our Contact.
    pub contact_user: String,
}

/// Why a dialog could not be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A header needed for the dialog is missing or unreadable.
    #[error("{0}")]
    Header(#[from] ParseError),
    /// The far side gave no tag.
    #[error("missing tag")]
    NoTag,
}

impl Dialog {
    /// The UAC side of a dialog, created by a response (18x with a To tag, or
    /// 2xx) to our INVITE `req` sent to `peer`.
    pub fn uac(
        req: &Request,
        resp: &Response,
        peer: Peer,
        local: LocalAddr,
    ) -> Result<Dialog, DialogError> {
        let from = req.from()?;
        let to = resp.to()?;
        let remote_tag = to.tag().ok_or(DialogError::NoTag)?.to_string();
        let local_tag = from.tag().ok_or(DialogError::NoTag)?.to_string();
        let remote_target = match resp.contact() {
            Some(c) => c?.uri,
            None => req.uri.clone(),
        };
        // RFC 3261 §12.1.2: the route set is the Record-Route of the response,
        // in reverse order.
        let mut route_set: Vec<String> = resp
            .headers
            .get_all("Record-Route")
            .map(str::to_string)
            .collect();
        route_set.reverse();
        let mut local_uri = from;
        local_uri.params.remove("tag");
        let mut remote_uri = to;
        remote_uri.params.remove("tag");
        Ok(Dialog {
            call_id: req
                .call_id()
                .ok_or_else(|| ParseError::new("missing Call-ID"))?
                .to_string(),
            local_tag,
            remote_tag,
            local_uri,
            remote_uri,
            local_seq: req.cseq()?.seq,
            remote_seq: None,
            remote_target,
            route_set,
            peer,
            local,
            contact_user: "kordon".to_string(),
        })
    }

    /// The UAS side of a dialog for an INVITE `req` received from `peer`,
    /// answered with our `local_tag`.
    pub fn uas(
        req: &Request,
        local_tag: &str,
        peer: Peer,
        local: LocalAddr,
    ) -> Result<Dialog, DialogError> {
        let from = req.from()?;
        let remote_tag = from.tag().ok_or(DialogError::NoTag)?.to_string();
        let remote_target = match req.contact() {
            Some(c) => c?.uri,
            None => from.uri.clone(),
        };
        let route_set: Vec<String> = req
            .headers
            .get_all("Record-Route")
            .map(str::to_string)
            .collect();
        let mut local_uri = req.to()?;
        local_uri.params.remove("tag");
        let mut remote_uri = from;
        remote_uri.params.remove("tag");
        Ok(Dialog {
            call_id: req
                .call_id()
                .ok_or_else(|| ParseError::new("missing Call-ID"))?
                .to_string(),
            local_tag: local_tag.to_string(),
            remote_tag,
            local_uri,
            remote_uri,
            local_seq: 0,
            remote_seq: Some(req.cseq()?.seq),
            remote_target,
            route_set,
            peer,
            local,
            contact_user: "kordon".to_string(),
        })
    }

    /// Our Contact header value on this leg.
    pub fn contact(&self) -> String {
        self.local.contact(&self.contact_user)
    }

    /// A new in-dialog request (BYE, re-INVITE, UPDATE, PRACK, INFO) with the
    /// next local CSeq. The top Via has no branch yet.
    pub fn request(&mut self, method: Method) -> Request {
        self.local_seq = self.local_seq.wrapping_add(1).max(1);
        let seq = self.local_seq;
        self.request_with_seq(method, seq)
    }

    /// The ACK for a 2xx to our INVITE with CSeq `seq` (RFC 3261 §13.2.2.4).
    pub fn ack(&self, seq: u32) -> Request {
        self.request_with_seq(Method::Ack, seq)
    }

    fn request_with_seq(&self, method: Method, seq: u32) -> Request {
        let mut r = Request::new(method.clone(), self.remote_target.clone());
        r.headers.push("Via", self.local.via());
        r.headers.push("Max-Forwards", "70");
        let mut from = self.local_uri.clone();
        from.set_tag(&self.local_tag);
        r.headers.push("From", from.to_string());
        let mut to = self.remote_uri.clone();
        if !self.remote_tag.is_empty() {
            to.set_tag(&self.remote_tag);
        }
        r.headers.push("To", to.to_string());
        r.headers.push("Call-ID", self.call_id.clone());
        r.headers.push("CSeq", CSeq { seq, method }.to_string());
        for route in &self.route_set {
            r.headers.push("Route", route.clone());
        }
        r.headers.push("Contact", self.contact());
        r
    }

    /// Checks and records the CSeq of an in-dialog request from the far side
    /// (RFC 3261 §12.2.2): a lower one than seen is out of order (500).
    /// ACK and CANCEL reuse their INVITE's number and are always accepted.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> Result<(), ParseError> {
        let cseq = req.cseq()?;
        if matches!(cseq.method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        if let Some(last) = self.remote_seq {
            if cseq.seq <= last {
                return Err(ParseError::new("CSeq out of order"));
            }
        }
        self.remote_seq = Some(cseq.seq);
        Ok(())
    }

    /// A target refresh (re-INVITE, UPDATE, or its 2xx) moves the remote
    /// target to the new Contact.
    pub fn refresh_target(&mut self, contact: Option<Result<NameAddr, ParseError>>) {
        if let Some(Ok(c)) = contact {
            self.remote_target = c.uri;
        }
    }

    /// Whether an in-dialog request belongs to this dialog (Call-ID and both
    /// tags, from the far side's point of view).
    pub fn matches(&self, req: &Request) -> bool {
        let from_tag = req.from().ok().and_then(|f| f.tag().map(str::to_string));
        let to_tag = req.to().ok().and_then(|t| t.tag().map(str::to_string));
        req.call_id() == Some(self.call_id.as_str())
            && from_tag.as_deref() == Some(self.remote_tag.as_str())
            && to_tag.as_deref() == Some(self.local_tag.as_str())
    }
}

/// The top Via of a request as sent, for building responses.
pub fn top_via(req: &Request) -> Result<Via, ParseError> {
    req.via_top()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "192.0.2.1:5060".parse().expect("addr"),
            iface: 0,
            conn: None,
        }
    }

    fn local() -> LocalAddr {
        LocalAddr {
            host: "198.51.100.1".into(),
            port: 5060,
            transport: Transport::Udp,
        }
    }

    fn invite() -> Request {
        let text = "INVITE sip:bob@198.51.100.1 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
            From: <sip:alice@192.0.2.1>;tag=a1\r\n\
            To: <sip:bob@198.51.100.1>\r\n\
            Call-ID: c1\r\nCSeq: 7 INVITE\r\n\
            Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
            Contact: <sip:alice@10.0.0.5:5060>\r\nContent-Length: 0\r\n\r\n";
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("fixture: {other:?}"),
        }
    }

    #[test]
    fn uas_dialog_builds_bye_to_contact_via_fixed_peer() {
        let mut d = Dialog::uas(&invite(), "k1", peer(), local()).expect("dialog");
        let bye = d.request(Method::Bye);
        assert_eq!(bye.uri.to_string(), "sip:alice@10.0.0.5:5060");
        assert_eq!(bye.to().expect("to").tag(), Some("a1"));
        assert_eq!(bye.from().expect("from").tag(), Some("k1"));
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(routes, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(bye.cseq().expect("cseq").seq, 1);
        assert_eq!(d.peer, peer());
    }

    #[test]
    fn remote_cseq_must_grow() {
        let mut d = Dialog::uas(&invite(), "k1", peer(), local()).expect("dialog");
        let mut bye = invite();
        bye.method = Method::Bye;
        bye.headers.set("CSeq", "7 BYE");
        assert!(d.accept_remote_cseq(&bye).is_err());
        bye.headers.set("CSeq", "8 BYE");
        assert!(d.accept_remote_cseq(&bye).is_ok());
    }

    #[test]
    fn uac_dialog_reverses_record_route() {
        let req = invite();
        let mut resp = Response::for_request(&req, 200);
        resp.headers.set("To", "<sip:bob@198.51.100.1>;tag=b9");
        resp.headers.push("Record-Route", "<sip:p1;lr>");
        resp.headers.push("Record-Route", "<sip:p2;lr>");
        resp.headers.push("Contact", "<sip:bob@203.0.113.7>");
        let mut d = Dialog::uac(&req, &resp, peer(), local()).expect("dialog");
        let bye = d.request(Method::Bye);
        let routes: Vec<_> = bye.headers.get_all("Route").collect();
        assert_eq!(routes, vec!["<sip:p2;lr>", "<sip:p1;lr>"]);
        assert_eq!(bye.cseq().expect("cseq").seq, 8);
        assert_eq!(d.ack(7).cseq().expect("cseq").seq, 7);
    }
}

//! ng commands over per-call state.
//!
//! A call (Call-ID) has two sides: side A is the party whose tag first offered
//! (the From tag of the initial offer), side B the other. Each media section
//! (m= line) of the call is one data plane session whose leg A faces side A and
//! leg B faces side B. An SDP received from one side sets that side's leg; the
//! rewritten SDP goes to the other side and carries the other leg's addresses.
//!
//! Errors are answered as `result: error` with an `error-reason`; flags we do
//! not know or cannot honour are answered as a `warning`, never a failure.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use kordon_proto::v1 as pb;
use tokio::sync::Mutex;

use super::bencode::Value;
use crate::media::{MediaClient, MediaError};
use crate::sdp::{self, Connection, Rtcp, Sdp};

/// Settings of the command layer.
#[derive(Debug, Clone)]
pub struct NgSettings {
    /// Interface used for both sides when a request names no `direction`.
    pub default_interface: String,
}

/// A command that failed: the `error-reason` sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NgError(pub String);

impl From<MediaError> for NgError {
    fn from(e: MediaError) -> Self {
        NgError(format!("media relay: {e}"))
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, NgError> {
    Err(NgError(msg.into()))
}

#[derive(Debug, Clone)]
struct MediaState {
    session_id: String,
    kind: String,
    proto: String,
    /// The `m=` protocol of side A and side B. A side gets SDP in its own:
    /// the one `transport-protocol` chose for it, else the one it last sent.
    protos: [String; 2],
    /// Advertised RTP address of leg A and leg B.
    local: [SocketAddr; 2],
}

#[derive(Debug)]
struct Call {
    tags: [String; 2],
    interfaces: [String; 2],
    medias: Vec<Option<MediaState>>,
    /// The side whose offer was last seen: the other one answers it (side B
    /// offers in a re-INVITE of the callee, and side A answers).
    offerer: usize,
    created: SystemTime,
    last_signal: SystemTime,
}

/// Options read from one request.
#[derive(Debug, Default)]
struct Opts {
    replace_origin: bool,
    replace_session_connection: bool,

    direction: Option<[String; 2]>,
    received_from: Option<IpAddr>,
    media_address: Option<IpAddr>,
    sip_source_address: bool,
    rtcp_mux_offer: bool,
    rtcp_mux_demux: bool,
    rtcp_mux_reject: bool,
    transport: Option<String>,
    warnings: Vec<String>,
}

/// Key lookup that accepts both spellings rtpengine has used (`received-from`
/// and `received from`).
fn get<'a>(d: &'a Value, key: &str) -> Option<&'a Value> {
    d.get(key).or_else(|| d.get(&key.replace('-', " ")))
}

fn get_str<'a>(d: &'a Value, key: &str) -> Result<Option<&'a str>, NgError> {
    match get(d, key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| NgError(format!("'{key}' must be a string, not {}", v.type_name()))),
    }
}

fn required<'a>(d: &'a Value, key: &str) -> Result<&'a str, NgError> {
    get_str(d, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NgError(format!("No {key} in message")))
}

/// Strings of a list (or a single string).
fn strings<'a>(d: &'a Value, key: &str) -> Result<Vec<&'a str>, NgError> {
    match get(d, key) {
        None => Ok(Vec::new()),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| NgError(format!("'{key}' must hold strings")))
            })
            .collect(),
        Some(v) => v
            .as_str()
            .map(|s| vec![s])
            .ok_or_else(|| NgError(format!("'{key}' must be a list of strings"))),
    }
}

fn parse_ip(field: &str, s: &str) -> Result<IpAddr, NgError> {
    s.parse()
        .map_err(|_| NgError(format!("'{field}': {s:?} is not an IP address")))
}

impl Opts {
    fn read(d: &Value) -> Result<Opts, NgError> {
        let mut o = Opts::default();
        for f in strings(d, "flags")? {
            match f.to_ascii_lowercase().as_str() {
                "trust-address" | "symmetric" | "port-latching" | "no-redis-update" | "force"
                | "reset" | "loop-protect" => {}
                "sip-source-address" => o.sip_source_address = true,
                "strict-source" => {}
                "asymmetric" | "unidirectional" | "media-handover" => o
                    .warnings
                    .push(format!("flag '{f}' not supported, ignored")),
                "record-call" => o.warnings.push("call recording is not supported".into()),
                other => o.warnings.push(format!("unknown flag '{other}' ignored")),
            }
        }
        for r in strings(d, "replace")? {
            match r {
                "origin" => o.replace_origin = true,
                "session-connection" | "session connection" => o.replace_session_connection = true,
                other => o
                    .warnings
                    .push(format!("unknown replace option '{other}' ignored")),
            }
        }
        match get_str(d, "ICE")?.map(|s| s.to_ascii_lowercase()) {
            None => {}
            Some(v) if v == "remove" => {}
            Some(v) if v == "force" || v == "force-relay" => {
                o.warnings
                    .push(format!("ICE '{v}' not supported: ICE attributes removed"));
            }
            Some(v) => o.warnings.push(format!("unknown ICE option '{v}' ignored")),
        }
        let dirs = strings(d, "direction")?;
        match dirs.as_slice() {
            [] => {}
            [a, b] => o.direction = Some([(*a).to_string(), (*b).to_string()]),
            _ => return err("'direction' must name exactly two interfaces"),
        }
        if let Some(v) = get(d, "received-from") {
            let ip = match v {
                Value::List(items) => items
                    .get(1)
                    .and_then(Value::as_str)
                    .ok_or_else(|| NgError("'received-from' must be [family, address]".into()))?,
                other => other
                    .as_str()
                    .ok_or_else(|| NgError("'received-from' must be [family, address]".into()))?,
            };
            o.received_from = Some(parse_ip("received-from", ip)?);
        }
        if let Some(a) = get_str(d, "media-address")? {
            o.media_address = Some(parse_ip("media-address", a)?);
        }
        for m in strings(d, "rtcp-mux")? {
            match m {
                "offer" | "require" => o.rtcp_mux_offer = true,
                "demux" => o.rtcp_mux_demux = true,
                "reject" => o.rtcp_mux_reject = true,
                "accept" => {}
                other => o
                    .warnings
                    .push(format!("unknown rtcp-mux option '{other}' ignored")),
            }
        }
        if let Some(t) = get_str(d, "transport-protocol")? {
            if t.contains("SAVP") || t.contains("TLS") {
                o.warnings.push(format!(
                    "transport '{t}' not supported (no SRTP yet): left as offered"
                ));
            } else {
                o.transport = Some(t.to_string());
            }
        }
        if let Some("yes" | "on") = get_str(d, "record-call")? {
            o.warnings.push("call recording is not supported".into());
        }
        Ok(o)
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn addr_of(e: &Option<pb::Endpoint>) -> Option<SocketAddr> {
    crate::media::endpoint_addr(e.as_ref())
}

/// What one side's SDP says about one media section, with the ng options
/// applied.
fn side_of(sdp: &Sdp, m: &sdp::Media, o: &Opts) -> sdp::MediaSide {
    let forced = o.media_address.or(if o.sip_source_address {
        o.received_from
    } else {
        None
    });
    let mut side = sdp::media_side(sdp, m, forced);
    side.rtcp_mux = side.rtcp_mux && !o.rtcp_mux_demux && !o.rtcp_mux_reject;
    side
}

/// The ng commands over a data plane.
#[derive(Debug)]
pub struct Calls {
    media: MediaClient,
    settings: NgSettings,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    calls: HashMap<String, Call>,
    next_id: u64,
    offers: u64,
    answers: u64,
    deletes: u64,
}

impl Calls {
    /// Commands driving the data plane behind `media`.
    pub fn new(media: MediaClient, settings: NgSettings) -> Self {
        Calls {
            media,
            settings,
            state: Mutex::new(State::default()),
        }
    }

    /// Handles one decoded request; always returns the dictionary to send back.
    pub async fn handle(&self, req: &Value) -> Value {
        let result = match req.as_dict() {
            None => err("message is not a dictionary"),
            Some(_) => match get_str(req, "command") {
                Ok(Some(cmd)) => self.dispatch(&cmd.to_ascii_lowercase(), req).await,
                Ok(None) => err("No command in message"),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(v) => v,
            Err(NgError(reason)) => Value::dict()
                .with("result", "error")
                .with("error-reason", reason.as_str()),
        }
    }

    async fn dispatch(&self, cmd: &str, req: &Value) -> Result<Value, NgError> {
        match cmd {
            "ping" => Ok(Value::dict().with("result", "pong")),
            "offer" => self.offer_answer(req, true).await,
            "answer" => self.offer_answer(req, false).await,
            "delete" => self.delete(req).await,
            "query" => self.query(req).await,
            "list" => self.list(req).await,
            "statistics" => self.statistics().await,
            other => err(format!("Unrecognized command '{other}'")),
        }
    }

    async fn offer_answer(&self, req: &Value, offer: bool) -> Result<Value, NgError> {
        let result = self.offer_answer_inner(req, offer).await;
        if result.is_err() && offer {
            // A first offer that failed before any media existed leaves no call
            // behind: a later answer must not find (and pass through) it.
            if let Ok(call_id) = required(req, "call-id") {
                let mut st = self.state.lock().await;
                if st
                    .calls
                    .get(call_id)
                    .is_some_and(|c| c.medias.iter().all(Option::is_none))
                {
                    st.calls.remove(call_id);
                }
            }
        }
        result
    }

    async fn offer_answer_inner(&self, req: &Value, offer: bool) -> Result<Value, NgError> {
        let call_id = required(req, "call-id")?.to_string();
        let from_tag = required(req, "from-tag")?.to_string();
        let to_tag = get_str(req, "to-tag")?.map(str::to_string);
        let text = required(req, "sdp")?;
        let mut sdp = sdp::parse(text).map_err(|e| NgError(format!("Failed to parse SDP: {e}")))?;
        let o = Opts::read(req)?;
        let now = SystemTime::now();
        let mut st = self.state.lock().await;
        // Whose SDP is this? The offer's sender is the From tag; the answer's
        // is the To tag (a re-INVITE from the callee offers with its own tag).
        let owner_tag = if offer {
            from_tag.clone()
        } else {
            to_tag
                .clone()
                .ok_or_else(|| NgError("No to-tag in message".into()))?
        };
        if !st.calls.contains_key(&call_id) {
            if !offer {
                return err("Unknown call-id");
            }
            let dirs = o.direction.clone().unwrap_or_else(|| {
                [
                    self.settings.default_interface.clone(),
                    self.settings.default_interface.clone(),
                ]
            });
            st.calls.insert(
                call_id.clone(),
                Call {
                    tags: [from_tag.clone(), String::new()],
                    interfaces: dirs,
                    medias: Vec::new(),
                    offerer: 0,
                    created: now,
                    last_signal: now,
                },
            );
        }
        let serial = st.next_id;
        let State { calls, next_id, .. } = &mut *st;
        let call = calls
            .get_mut(&call_id)
            .ok_or_else(|| NgError("Unknown call-id".into()))?;
        let owner = if call.tags[0] == owner_tag {
            0
        } else if call.tags[1].is_empty() || call.tags[1] == owner_tag {
            call.tags[1] = owner_tag.clone();
            1
        } else {
            // A second callee (forking): it takes the B side over.
            call.tags[1] = owner_tag.clone();
            1
        };
        if !offer && owner == call.offerer {
            return err("answer from the offerer's own tag");
        }
        if offer {
            call.offerer = owner;
        }
        call.last_signal = now;
        let other = 1 - owner;
        let mut warnings = o.warnings.clone();
        let count = sdp.media().len();
        if call.medias.len() < count {
            call.medias.resize(count, None);
        }
        let mut media_client = self.media.clone();
        let session_c = sdp.connection().is_some();
        for i in 0..count {
            let Some(m) = sdp.media().get(i) else {
                continue;
            };
            if m.is_rejected() {
                continue;
            }
            let side = side_of(&sdp, m, &o);
            let in_proto = m.proto().to_string();
            // Whether the SDP sent to the other side offers (or accepts)
            // rtcp-mux; the other side's leg follows it.
            let out_mux = side.rtcp_mux || o.rtcp_mux_offer;
            // Media may latch from the SIP source (`received-from`: the NAT's
            // public address) when the proxy gives it, else from the SDP address.
            let expected = o.received_from;
            let mut state = match call.medias.get(i).cloned().flatten() {
                Some(ms) => {
                    let upd = crate::media::leg_update_for(&side, expected);
                    // The other side's leg muxes as the SDP sent to it says: an
                    // answer that declines rtcp-mux turns it off on the
                    // offerer's leg too, whose RTCP then uses its own port.
                    let theirs = pb::LegUpdate {
                        rtcp_mux: Some(out_mux),
                        ..Default::default()
                    };
                    let mut req = pb::UpdateSessionRequest {
                        session_id: ms.session_id.clone(),
                        ..Default::default()
                    };
                    if owner == 0 {
                        req.leg_a = Some(upd);
                        req.leg_b = Some(theirs);
                    } else {
                        req.leg_a = Some(theirs);
                        req.leg_b = Some(upd);
                    }
                    media_client.update(req).await?;
                    ms
                }
                None => {
                    if !offer {
                        warnings.push(format!("media {} has no offer: left untouched", i + 1));
                        continue;
                    }
                    *next_id += 1;
                    let session_id = format!("ng-{}-{}-{}", std::process::id(), serial + 1, i + 1);
                    let mine = crate::media::leg_for(&call.interfaces[owner], &side, expected);
                    let theirs = pb::LegSpec {
                        interface: call.interfaces[other].clone(),
                        rtcp_mux: out_mux,
                        ..Default::default()
                    };
                    let (leg_a, leg_b) = if owner == 0 {
                        (mine, theirs)
                    } else {
                        (theirs, mine)
                    };
                    let info = media_client
                        .create(pb::CreateSessionRequest {
                            session_id: session_id.clone(),
                            leg_a: Some(leg_a),
                            leg_b: Some(leg_b),
                            inactivity_timeout_secs: 0,
                        })
                        .await?;
                    let Some([la, lb]) = crate::media::local_rtp(&info) else {
                        return err("media relay answered without local addresses");
                    };
                    let ms = MediaState {
                        session_id,
                        kind: m.kind().to_string(),
                        proto: m.proto().to_string(),
                        protos: [m.proto().to_string(), m.proto().to_string()],
                        local: [la, lb],
                    };
                    if let Some(slot) = call.medias.get_mut(i) {
                        *slot = Some(ms.clone());
                    }
                    ms
                }
            };
            state.protos[owner] = in_proto;
            let mut their_proto = o
                .transport
                .clone()
                .unwrap_or_else(|| state.protos[other].clone());
            // The rewritten SDP goes to the other side: our other leg's address.
            let local = state.local[other];
            if let Some(mm) = sdp.media_mut().get_mut(i) {
                mm.set_port(local.port());
                // A media-level c= is rewritten in place; without one, the
                // session-level c= (rewritten below) covers the media.
                // A peer on hold keeps seeing c=0.0.0.0 (as rtpengine does).
                if mm.connection().is_some() || !session_c {
                    let ip = if side.held {
                        sdp::unspecified(local.ip())
                    } else {
                        local.ip()
                    };
                    mm.set_connection(Connection::from_ip(ip));
                }
                mm.set_rtcp_mux(out_mux);
                // An offer of rtcp-mux still names the RTCP port an answerer
                // that declines mux sends to (RFC 5761 section 5.1.3): the
                // data plane keeps RTP port + 1 for it and opens it when mux
                // is turned off. With mux agreed (an answer), RTCP shares the
                // RTP port.
                let rtcp_port = if out_mux && !offer {
                    local.port()
                } else {
                    local.port().saturating_add(1)
                };
                mm.set_rtcp(Rtcp {
                    port: rtcp_port,
                    connection: None,
                });
                if mm.proto() != their_proto && mm.set_proto(&their_proto).is_err() {
                    warnings.push(format!(
                        "transport '{their_proto}' is not a token: left as offered"
                    ));
                    their_proto = mm.proto().to_string();
                }
            }
            state.protos[other] = their_proto;
            if let Some(slot) = call.medias.get_mut(i) {
                *slot = Some(state);
            }
        }
        // Session-level rewrites. Media-level c= were set above; a session c=
        // is pointed at us too, so no address of the other side is left.
        if let Some(first) = call.medias.iter().flatten().next() {
            let ip = first.local[other].ip();
            if sdp.connection().is_some() || o.replace_session_connection {
                let held = sdp.connection().is_some_and(Connection::is_unspecified);
                let c = if held { sdp::unspecified(ip) } else { ip };
                sdp.set_session_connection(Connection::from_ip(c));
            }
            if o.replace_origin {
                sdp.set_origin_address(ip);
            }
            // A rejected section's own c= would still show the other side's
            // address: point it at us as well.
            for mm in sdp.media_mut().iter_mut() {
                if mm.is_rejected() && mm.connection().is_some() {
                    mm.set_connection(Connection::from_ip(ip));
                }
            }
        }
        // We relay plain RTP: the peer's ICE candidates would be wrong.
        sdp.remove_ice();
        if offer {
            st.offers += 1;
        } else {
            st.answers += 1;
        }
        let mut out = Value::dict()
            .with("result", "ok")
            .with("sdp", sdp.to_string());
        if !warnings.is_empty() {
            out.insert("warning", warnings.join("; "));
        }
        Ok(out)
    }

    async fn call_report(&self, call: &Call, infos: &[(MediaState, pb::SessionInfo)]) -> Value {
        let mut rtp = [0u64; 3];
        let mut rtcp = [0u64; 2];
        let mut tags = Value::dict();
        for (side, tag) in call.tags.iter().enumerate() {
            if tag.is_empty() {
                continue;
            }
            let mut medias = Value::list();
            for (k, (ms, info)) in infos.iter().enumerate() {
                let leg = if side == 0 { &info.leg_a } else { &info.leg_b };
                let Some(leg) = leg else { continue };
                let c = leg.counters.clone().unwrap_or_default();
                let errors: u64 = c.dropped.iter().map(|d| d.count).sum();
                rtp[0] += c.rtp_packets_in;
                rtp[1] += c.rtp_bytes_in;
                rtp[2] += errors;
                rtcp[0] += c.rtcp_packets_in;
                rtcp[1] += c.rtcp_bytes_in;
                let mut stream = Value::dict()
                    .with(
                        "local port",
                        i64::from(addr_of(&leg.local_rtp).map_or(0, |a| a.port())),
                    )
                    .with(
                        "stats",
                        Value::dict()
                            .with("packets", c.rtp_packets_in as i64)
                            .with("bytes", c.rtp_bytes_in as i64)
                            .with("errors", errors as i64),
                    )
                    .with(
                        "stats_out",
                        Value::dict()
                            .with("packets", c.packets_out as i64)
                            .with("bytes", c.bytes_out as i64),
                    );
                let ep = addr_of(&leg.latched_rtp).or_else(|| addr_of(&leg.remote_rtp));
                if let Some(a) = ep {
                    stream.insert(
                        "endpoint",
                        Value::dict()
                            .with("family", if a.is_ipv4() { "IPv4" } else { "IPv6" })
                            .with("address", a.ip().to_string())
                            .with("port", i64::from(a.port())),
                    );
                }
                medias.push(
                    Value::dict()
                        .with("index", (k + 1) as i64)
                        .with("type", ms.kind.as_str())
                        .with("protocol", ms.proto.as_str())
                        .with("interface", leg.interface.as_str())
                        .with("streams", Value::List(vec![stream])),
                );
            }
            tags.insert(
                tag.as_str(),
                Value::dict()
                    .with("tag", tag.as_str())
                    .with("medias", medias),
            );
        }
        Value::dict()
            .with("result", "ok")
            .with("created", unix_secs(call.created))
            .with("last signal", unix_secs(call.last_signal))
            .with("tags", tags)
            .with(
                "totals",
                Value::dict()
                    .with(
                        "RTP",
                        Value::dict()
                            .with("packets", rtp[0] as i64)
                            .with("bytes", rtp[1] as i64)
                            .with("errors", rtp[2] as i64),
                    )
                    .with(
                        "RTCP",
                        Value::dict()
                            .with("packets", rtcp[0] as i64)
                            .with("bytes", rtcp[1] as i64)
                            .with("errors", 0i64),
                    ),
            )
    }

    async fn delete(&self, req: &Value) -> Result<Value, NgError> {
        let call_id = required(req, "call-id")?;
        let mut st = self.state.lock().await;
        let Some(call) = st.calls.remove(call_id) else {
            return err("Call-ID not found or tags didn't match");
        };
        st.deletes += 1;
        drop(st);
        let mut media = self.media.clone();
        let mut infos = Vec::new();
        let mut failed = Vec::new();
        for ms in call.medias.iter().flatten() {
            match media.delete(&ms.session_id).await {
                Ok(info) => infos.push((ms.clone(), info)),
                Err(e) => failed.push(format!("{}: {e}", ms.session_id)),
            }
        }
        let mut out = self.call_report(&call, &infos).await;
        if !failed.is_empty() {
            out.insert(
                "warning",
                format!("some media could not be deleted: {}", failed.join("; ")),
            );
        }
        Ok(out)
    }

    async fn query(&self, req: &Value) -> Result<Value, NgError> {
        let call_id = required(req, "call-id")?;
        let st = self.state.lock().await;
        let Some(call) = st.calls.get(call_id) else {
            return err("Unknown call-id");
        };
        let mut media = self.media.clone();
        let mut infos = Vec::new();
        for ms in call.medias.iter().flatten() {
            infos.push((ms.clone(), media.get(&ms.session_id).await?));
        }
        Ok(self.call_report(call, &infos).await)
    }

    async fn list(&self, req: &Value) -> Result<Value, NgError> {
        let limit = match get(req, "limit") {
            None => 32,
            Some(v) => v
                .as_int()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|n| *n >= 0)
                .ok_or_else(|| NgError("'limit' must be a non-negative number".into()))?,
        };
        let st = self.state.lock().await;
        let mut ids: Vec<&String> = st.calls.keys().collect();
        ids.sort();
        let calls: Vec<Value> = ids
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|c| Value::from(c.as_str()))
            .collect();
        Ok(Value::dict()
            .with("result", "ok")
            .with("calls", Value::List(calls)))
    }

    async fn statistics(&self) -> Result<Value, NgError> {
        let (calls, offers, answers, deletes) = {
            let st = self.state.lock().await;
            (st.calls.len(), st.offers, st.answers, st.deletes)
        };
        let stats = self.media.clone().stats().await?;
        let t = stats.total.unwrap_or_default();
        let drops: u64 = t.dropped.iter().map(|d| d.count).sum();
        Ok(Value::dict().with("result", "ok").with(
            "statistics",
            Value::dict()
                .with(
                    "currentstatistics",
                    Value::dict()
                        .with("sessionsown", calls as i64)
                        .with("sessionstotal", calls as i64)
                        .with("mediasessions", i64::from(t.sessions)),
                )
                .with(
                    "totalstatistics",
                    Value::dict()
                        .with("offers", offers as i64)
                        .with("answers", answers as i64)
                        .with("deletes", deletes as i64)
                        .with("packetsrelayed", t.tx_packets as i64)
                        .with("bytesrelayed", t.tx_bytes as i64)
                        .with("errors", drops as i64),
                ),
        ))
    }
}

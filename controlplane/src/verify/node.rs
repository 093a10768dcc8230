//! The verification node's decisions: classification (the RADIUS strategy,
//! used by REST, RADIUS and SIP alike), registration, verification of
//! incoming calls by asking the node owning number A, and answers to other
//! nodes' requests.
//!
//! The interfaces (REST, RADIUS, inter-node HTTP, the B2BUA) turn their
//! input into the request types here and their [`Outcome`] back into their
//! own answers; no decision is taken outside this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::ber::{hash_number, CalledNumber, VerifyData};
use super::config::{parse_interval, VerifyConfig};
use super::isup::IsupNumber;
use super::numbers::{range_of, RangeMap};
use super::peer::{error_code, session_id, Message, PeerAnswer, PeerClient, SERVICE_KEY};
use super::records::{code, Direction, Record, RecordSink};
use super::registry::{RegisterError, Registry};
use crate::routing::{normalize, E164};

/// `X-Error-Bits` values (section 8 of the node's manual).
pub mod error_bits {
    /// The request's headers (method, path, content type) are wrong.
    pub const HEADER_SYNTAX: u32 = 0x01;
    /// The body is not the expected JSON, or a field is missing or unusable.
    pub const BODY_SYNTAX: u32 = 0x02;
    /// Number A is not of our capacity.
    pub const NOT_OWNER_A: u32 = 0x04;
    /// Number B is not of our capacity.
    pub const NOT_OWNER_B: u32 = 0x08;
    /// Number A is of our capacity.
    pub const OWNER_A: u32 = 0x10;
    /// Number B is of our capacity.
    pub const OWNER_B: u32 = 0x20;

    /// The texts of the bits set in `bits`, in bit order.
    pub fn texts(bits: u32) -> Vec<&'static str> {
        [
            (HEADER_SYNTAX, "Header syntax error"),
            (BODY_SYNTAX, "Body syntax error"),
            (NOT_OWNER_A, "Not the owner of number A"),
            (NOT_OWNER_B, "Not the owner of number B"),
            (OWNER_A, "The owner of number A"),
            (OWNER_B, "The owner of number B"),
        ]
        .into_iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, t)| t)
        .collect()
    }
}

/// `X-Warning-Bits` values.
pub mod warning_bits {
    /// The asked node did not answer in time.
    pub const TIMEOUT: u32 = 0x01;
    /// Verification failed with an error.
    pub const ERROR: u32 = 0x02;

    /// The texts of the bits set in `bits`.
    pub fn texts(bits: u32) -> Vec<&'static str> {
        [(TIMEOUT, "Timeout"), (ERROR, "Error")]
            .into_iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, t)| t)
            .collect()
    }
}

/// What to do with the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (verified, local, or let through by a 0 code).
    Pass,
    /// Registered as an outgoing call.
    Registered,
    /// Release it with this Q.850 cause.
    Release(u8),
    /// The request could not be used (see the error bits and the detail).
    Bad,
}

/// The result of a request, for any interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decision.
    pub verdict: Verdict,
    /// Section 8 error bits.
    pub errors: u32,
    /// Section 8 warning bits.
    pub warnings: u32,
    /// Verification code recorded.
    pub code: u8,
    /// What was wrong, for a [`Verdict::Bad`] (names the field).
    pub detail: Option<String>,
}

impl Outcome {
    /// A refused request: [`Verdict::Bad`] with `errors` and what was wrong.
    pub fn bad(errors: u32, detail: String) -> Outcome {
        Outcome {
            verdict: Verdict::Bad,
            errors,
            warnings: 0,
            code: code::BAD_REQUEST,
            detail: Some(detail),
        }
    }

    /// `X-Error-Messages`: the bits' texts joined by `; `, the detail after
    /// the syntax error it explains.
    pub fn error_messages(&self) -> String {
        let mut t: Vec<String> = error_bits::texts(self.errors)
            .into_iter()
            .map(str::to_string)
            .collect();
        if let (Some(d), Some(first)) = (&self.detail, t.first_mut()) {
            if self.errors & (error_bits::HEADER_SYNTAX | error_bits::BODY_SYNTAX) != 0 {
                first.push_str(": ");
                first.push_str(d);
            }
        }
        t.join("; ")
    }

    /// `X-Warning-Messages`.
    pub fn warning_messages(&self) -> String {
        warning_bits::texts(self.warnings).join("; ")
    }
}

/// `RegisterCall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// Calling number.
    pub a: String,
    /// Called number.
    pub b: String,
    /// Operator the call goes to.
    pub id_dst: u32,
    /// Call id.
    pub call_id: String,
}

/// `CheckCall` (and the other interfaces' calls to classify).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckRequest {
    /// Calling number.
    pub a: String,
    /// Called number.
    pub b: String,
    /// Original called number.
    pub c: Option<String>,
    /// Additional called number (recorded only).
    pub d: Option<String>,
    /// Operator the call comes from (`None`: unknown).
    pub id_src: Option<u32>,
    /// Operator the call goes to, when known (RADIUS, SIP).
    pub id_dst: Option<u32>,
    /// Call id.
    pub call_id: String,
}

/// How section 9 classifies a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// From our network out: register.
    Outgoing,
    /// Into our network from another operator: verify with A's node.
    Incoming,
    /// Into our network from another operator with our own number A:
    /// checked against our own registry when `verify_own_a` is on.
    IncomingOwnA,
    /// Within our network: pass.
    Local,
}

/// Counters of the node (all interfaces).
#[derive(Debug, Default)]
pub struct Stats {
    /// Calls registered.
    pub registered: AtomicU64,
    /// Verifications asked of other nodes.
    pub asked: AtomicU64,
    /// Requests of other nodes answered.
    pub answered: AtomicU64,
    /// Calls released.
    pub released: AtomicU64,
    /// Timeouts waiting for other nodes.
    pub timeouts: AtomicU64,
    /// Errors (error answers, unreachable nodes, no node for A).
    pub errors: AtomicU64,
    /// Requests refused as unusable.
    pub bad_requests: AtomicU64,
}

/// The reloadable part of the node.
#[derive(Debug, Clone)]
pub struct State {
    /// Settings.
    pub cfg: Arc<VerifyConfig>,
    /// Our capacity: number → our node id.
    pub capacity: Arc<RangeMap<u32>>,
    /// Other operators' ranges: number → their node id.
    pub owners: Arc<RangeMap<u32>>,
    /// Preset answers: number → event (0, 1, 2).
    pub presets: Arc<RangeMap<u8>>,
    /// Peers parsed.
    pub peers: Arc<std::collections::BTreeMap<u32, SocketAddr>>,
    /// Hub.
    pub hub: Option<SocketAddr>,
}

impl State {
    /// Builds the parts that come from the configuration alone; `capacity`
    /// and the range files' owners are given.
    pub fn from_config(
        cfg: VerifyConfig,
        capacity: Arc<RangeMap<u32>>,
        file_owners: Vec<(u64, u64, u32)>,
    ) -> Result<State, String> {
        cfg.validate().map_err(|(k, m)| format!("{k}: {m}"))?;
        let mut owners = file_owners;
        for r in &cfg.ranges {
            let (a, b) = range_of(&r.from, &r.to)?;
            owners.push((a, b, r.uvr));
        }
        let owners = RangeMap::build(owners).map_err(|m| format!("verify ranges: {m}"))?;
        let mut presets = Vec::new();
        for p in &cfg.last_numbers.intervals {
            let (a, b) = parse_interval(&p.range)
                .ok_or_else(|| format!("verify.last_numbers: bad range {:?}", p.range))?;
            let (a, b) = range_of(a, b)?;
            presets.push((a, b, p.event.unwrap_or(cfg.last_numbers.int_event)));
        }
        let presets = RangeMap::build(presets).map_err(|m| format!("verify.last_numbers: {m}"))?;
        let peers = cfg.peer_map().map_err(|(k, m)| format!("{k}: {m}"))?;
        let hub = cfg.hub().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(State {
            cfg: Arc::new(cfg),
            capacity,
            owners: Arc::new(owners),
            presets: Arc::new(presets),
            peers: Arc::new(peers),
            hub,
        })
    }

    fn own(&self, digits: &str) -> Option<u32> {
        self.capacity.lookup(digits)
    }

    /// Section 9.
    pub fn classify(&self, a: &str, b: &str, id_src: Option<u32>) -> Class {
        let from_own_network = id_src.is_some_and(|id| self.cfg.is_own_operator(id));
        let from_other_operator = id_src.is_some() && !from_own_network;
        match (self.own(a).is_some(), self.own(b).is_some()) {
            // Our number A arriving from another operator's trunk is not a
            // call our network placed: registering it would make us confirm
            // a spoofed call. It is checked as an incoming call with our A.
            (true, false) if from_other_operator => Class::IncomingOwnA,
            (true, false) => Class::Outgoing,
            (false, true) => Class::Incoming,
            (true, true) if from_own_network || id_src.is_none() => Class::Local,
            (true, true) => Class::IncomingOwnA,
            (false, false) if from_own_network => Class::Outgoing,
            (false, false) => Class::Incoming,
        }
    }

    fn ownership_bits(&self, a: &str, b: &str) -> u32 {
        let mut bits = 0;
        bits |= if self.own(a).is_some() {
            error_bits::OWNER_A
        } else {
            error_bits::NOT_OWNER_A
        };
        bits |= if self.own(b).is_some() {
            error_bits::OWNER_B
        } else {
            error_bits::NOT_OWNER_B
        };
        bits
    }

    /// The node id we speak as when asking about a call to `b`.
    fn our_id_for(&self, b: &str) -> u32 {
        self.own(b)
            .or_else(|| self.cfg.nodes.first().map(|n| n.uvr_id))
            .unwrap_or(0)
    }

    fn node_addr(&self, uvr_t: u32) -> Option<SocketAddr> {
        self.peers.get(&uvr_t).copied().or(self.hub)
    }
}

/// The node.
pub struct Node {
    state: RwLock<Arc<State>>,
    registry: Registry,
    peer: PeerClient,
    records: RecordSink,
    data_dir: PathBuf,
    /// Counters.
    pub stats: Stats,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn normalize_field(name: &str, raw: &str, cfg: &VerifyConfig) -> Result<E164, String> {
    normalize(raw, &cfg.numbering).map_err(|e| format!("{name}: {e}"))
}

impl Node {
    /// A node on `state`, recording into `records`.
    pub fn new(state: State, records: RecordSink, data_dir: &Path) -> Node {
        let cfg = state.cfg.clone();
        Node {
            registry: Registry::new(cfg.hash_key.as_bytes(), cfg.call_timer),
            peer: PeerClient::new(cfg.w_size),
            state: RwLock::new(Arc::new(state)),
            records,
            data_dir: data_dir.to_path_buf(),
            stats: Stats::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the state (reload, capacity change).
    pub fn set_state(&self, s: State) {
        self.registry.set_ttl(s.cfg.call_timer);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// Changes the state with `f` (capacity loads).
    pub fn update_state(&self, f: impl FnOnce(&mut State)) {
        let mut g = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut s = (**g).clone();
        f(&mut s);
        *g = Arc::new(s);
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The record sink.
    pub fn records(&self) -> &RecordSink {
        &self.records
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `RegisterCall`: registers an outgoing call.
    pub fn register(&self, req: &RegisterRequest) -> Outcome {
        let st = self.state();
        let a = match normalize_field("a", &req.a, &st.cfg) {
            Ok(a) => a,
            Err(d) => return self.refuse(d),
        };
        let b = match normalize_field("b", &req.b, &st.cfg) {
            Ok(b) => b,
            Err(d) => return self.refuse(d),
        };
        if req.call_id.is_empty() {
            return self.refuse("call_id: empty".to_string());
        }
        self.register_numbers(&st, a.digits(), b.digits(), req.id_dst, &req.call_id)
    }

    /// Registers a call whose numbers are already normalized (E.164 digits).
    fn register_numbers(
        &self,
        st: &State,
        a: &str,
        b: &str,
        id_dst: u32,
        call_id: &str,
    ) -> Outcome {
        let errors = st.ownership_bits(a, b);
        match self.registry.register(call_id, a, b, id_dst) {
            Ok(()) => {
                self.stats.registered.fetch_add(1, Ordering::Relaxed);
                Outcome {
                    verdict: Verdict::Registered,
                    errors,
                    warnings: 0,
                    code: code::REGISTERED,
                    detail: None,
                }
            }
            Err(RegisterError::Full) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                Outcome {
                    verdict: Verdict::Bad,
                    errors,
                    warnings: warning_bits::ERROR,
                    code: code::BAD_REQUEST,
                    detail: Some("registry full".to_string()),
                }
            }
            Err(e) => self.refuse(e.to_string()),
        }
    }

    /// Refuses a check and records the refusal.
    fn refuse_recorded(
        &self,
        req: &CheckRequest,
        source: &'static str,
        time_ms: i64,
        started: Instant,
        detail: String,
    ) -> Outcome {
        let out = self.refuse(detail);
        self.record(
            req,
            source,
            time_ms,
            started,
            Direction::Local,
            &out,
            None,
            "bad request".into(),
            String::new(),
        );
        out
    }

    fn refuse(&self, detail: String) -> Outcome {
        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        Outcome::bad(error_bits::BODY_SYNTAX, detail)
    }

    /// `callUpdate`: keeps a registered call longer; false when unknown.
    pub fn update(&self, call_id: &str) -> bool {
        self.registry.refresh(call_id)
    }

    /// Classifies a call (section 9) and acts: registers outgoing calls,
    /// verifies incoming ones, passes local ones. `source` names the
    /// interface in the record.
    pub async fn check(&self, req: &CheckRequest, source: &'static str) -> Outcome {
        let started = Instant::now();
        let time_ms = now_ms();
        let st = self.state();
        let (a, b) = match (
            normalize_field("a", &req.a, &st.cfg),
            normalize_field("b", &req.b, &st.cfg),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(d), _) | (_, Err(d)) => {
                return self.refuse_recorded(req, source, time_ms, started, d);
            }
        };
        let c = match &req.c {
            Some(c) if !c.is_empty() => match normalize_field("c", c, &st.cfg) {
                Ok(c) => Some(c),
                Err(d) => return self.refuse_recorded(req, source, time_ms, started, d),
            },
            _ => None,
        };
        if req.call_id.is_empty() {
            return self.refuse_recorded(req, source, time_ms, started, "call_id: empty".into());
        }
        let (a, b) = (a.digits(), b.digits());
        let errors = st.ownership_bits(a, b);
        let class = st.classify(a, b, req.id_src);
        let mk = |verdict, code, warnings| Outcome {
            verdict,
            errors,
            warnings,
            code,
            detail: None,
        };
        let out = match class {
            Class::Outgoing => {
                let o = self.register_numbers(&st, a, b, req.id_dst.unwrap_or(0), &req.call_id);
                self.record(
                    req,
                    source,
                    time_ms,
                    started,
                    Direction::Local,
                    &o,
                    None,
                    "registered".into(),
                    String::new(),
                );
                return o;
            }
            Class::Local => mk(Verdict::Pass, code::PASSED, 0),
            Class::IncomingOwnA if !st.cfg.verify_own_a => mk(Verdict::Pass, code::PASSED, 0),
            Class::IncomingOwnA => {
                let called = CalledNumber::Plain(international(b));
                let found = self.registry.find(a, &called).is_some()
                    || c.as_ref().is_some_and(|c| {
                        self.registry
                            .find(a, &CalledNumber::Plain(international(c.digits())))
                            .is_some()
                    });
                if found {
                    mk(Verdict::Pass, code::CONFIRMED, 0)
                } else {
                    self.stats.released.fetch_add(1, Ordering::Relaxed);
                    mk(
                        Verdict::Release(st.cfg.release_code),
                        code::NOT_CONFIRMED,
                        0,
                    )
                }
            }
            Class::Incoming => {
                let (out, uvr, request, answer) = self
                    .ask_owner(&st, a, b, c.as_ref().map(E164::digits), errors)
                    .await;
                self.record(
                    req,
                    source,
                    time_ms,
                    started,
                    Direction::Out,
                    &out,
                    uvr,
                    answer,
                    request,
                );
                return out;
            }
        };
        let answer = match out.verdict {
            Verdict::Release(_) => "release",
            _ => "pass",
        };
        self.record(
            req,
            source,
            time_ms,
            started,
            Direction::Local,
            &out,
            None,
            answer.into(),
            String::new(),
        );
        out
    }

    /// Asks the node owning `a`. Returns the outcome, the node asked (ours,
    /// theirs), the request sent and the answer's summary.
    async fn ask_owner(
        &self,
        st: &State,
        a: &str,
        b: &str,
        c: Option<&str>,
        errors: u32,
    ) -> (Outcome, Option<(u32, u32)>, String, String) {
        let cfg = &st.cfg;
        let error_out = |code: u8, warnings: u32| -> Outcome {
            let verdict = match (
                warnings & warning_bits::TIMEOUT != 0,
                cfg.timeout_code,
                cfg.error_code,
            ) {
                (true, 0, _) | (false, _, 0) => Verdict::Pass,
                (true, t, _) => Verdict::Release(t),
                (false, _, e) => Verdict::Release(e),
            };
            Outcome {
                verdict,
                errors,
                warnings,
                code,
                detail: None,
            }
        };
        let Some(uvr_t) = st.owners.lookup(a) else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let o = error_out(code::NO_NODE, warning_bits::ERROR);
            self.count_release(&o);
            return (o, None, String::new(), "no node for A".into());
        };
        let uvr_o = st.our_id_for(b);
        let Some(addr) = st.node_addr(uvr_t) else {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            let o = error_out(code::ERROR, warning_bits::ERROR);
            self.count_release(&o);
            return (
                o,
                Some((uvr_o, uvr_t)),
                String::new(),
                format!("no address for node {uvr_t}"),
            );
        };
        let called = |n: &str| {
            if cfg.hashed {
                CalledNumber::Hashed(hash_number(cfg.hash_key.as_bytes(), n))
            } else {
                CalledNumber::Plain(international(n))
            }
        };
        let data = VerifyData {
            calling: international(a),
            called: called(b),
            original_called: c.map(called),
        };
        let msg = Message {
            serviceKey: SERVICE_KEY,
            uvrO: uvr_o,
            uvrT: uvr_t,
            sessionId: session_id(),
            data: data.to_hex(),
            opcode: "Request".to_string(),
            errorCode: None,
            errorText: None,
        };
        self.stats.asked.fetch_add(1, Ordering::Relaxed);
        let request = serde_json::to_string(&msg).unwrap_or_default();
        let answer = self
            .peer
            .ask(addr, &msg, Duration::from_millis(cfg.req_timer))
            .await;
        let (o, summary) = match answer {
            PeerAnswer::Continue => (
                Outcome {
                    verdict: Verdict::Pass,
                    errors,
                    warnings: 0,
                    code: code::CONFIRMED,
                    detail: None,
                },
                "Continue".to_string(),
            ),
            PeerAnswer::Release => (
                Outcome {
                    verdict: Verdict::Release(cfg.release_code),
                    errors,
                    warnings: 0,
                    code: code::NOT_CONFIRMED,
                    detail: None,
                },
                "Release".to_string(),
            ),
            PeerAnswer::Timeout => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                (
                    error_out(code::TIMEOUT, warning_bits::TIMEOUT),
                    "timeout".to_string(),
                )
            }
            PeerAnswer::Unreachable(why) => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = uvr_t, %addr, reason = %why, "verification node unreachable");
                (
                    error_out(code::TIMEOUT, warning_bits::TIMEOUT),
                    format!("unreachable: {why}"),
                )
            }
            PeerAnswer::Error(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                (
                    error_out(code::ERROR, warning_bits::ERROR),
                    format!("Error {e}"),
                )
            }
            PeerAnswer::Failed(why) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = uvr_t, %addr, reason = %why, "verification request failed");
                (
                    error_out(code::ERROR, warning_bits::ERROR),
                    format!("failed: {why}"),
                )
            }
        };
        self.count_release(&o);
        (o, Some((uvr_o, uvr_t)), request, summary)
    }

    fn count_release(&self, o: &Outcome) {
        if matches!(o.verdict, Verdict::Release(_)) {
            self.stats.released.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        req: &CheckRequest,
        source: &'static str,
        time_ms: i64,
        started: Instant,
        direction: Direction,
        out: &Outcome,
        nodes: Option<(u32, u32)>,
        answer: String,
        request: String,
    ) {
        let request = if request.is_empty() {
            format!(
                "a={} b={} c={} d={} id_src={} id_dst={}",
                req.a,
                req.b,
                req.c.as_deref().unwrap_or(""),
                req.d.as_deref().unwrap_or(""),
                req.id_src.map(|v| v.to_string()).unwrap_or_default(),
                req.id_dst.map(|v| v.to_string()).unwrap_or_default()
            )
        } else {
            request
        };
        self.records.submit(Record {
            time_ms,
            direction,
            source,
            call_id: clip(&req.call_id, FIELD_MAX),
            a: clip(&req.a, FIELD_MAX),
            b: clip(&req.b, FIELD_MAX),
            c: req.c.as_deref().map(|c| clip(c, FIELD_MAX)),
            id_src: req.id_src,
            id_dst: req.id_dst,
            uvr_o: nodes.map(|n| n.0),
            uvr_t: nodes.map(|n| n.1),
            request: clip(&request, REQUEST_MAX),
            answer,
            code: out.code,
            incident: matches!(out.code, code::NOT_CONFIRMED | code::A_NOT_SERVED),
            latency_us: started.elapsed().as_micros() as u64,
        });
    }

    /// Answers another node's `VerifyCallState` body. Returns the HTTP
    /// status and the answer to send, or `None` when a preset says not to
    /// answer at all.
    pub fn answer_request(&self, body: &[u8]) -> (u16, Option<Message>) {
        let started = Instant::now();
        let time_ms = now_ms();
        self.stats.answered.fetch_add(1, Ordering::Relaxed);
        let st = self.state();
        let cfg = &st.cfg;
        let msg = match super::peer::read_request(body) {
            Ok(m) => m,
            Err(bad) => {
                let (answer, why) = *bad;
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = %why, "unreadable VerifyCallState request");
                self.record_in(
                    &answer,
                    None,
                    time_ms,
                    started,
                    code::BAD_REQUEST,
                    "Error 1",
                    &why,
                );
                return (400, Some(answer));
            }
        };
        let fail = |code_err: u32, rec_code: u8, data: Option<&VerifyData>, why: &str| {
            let ans = msg.error(code_err);
            self.record_in(
                &msg,
                data,
                time_ms,
                started,
                rec_code,
                &format!("Error {code_err}"),
                why,
            );
            (200, Some(ans))
        };
        if msg.serviceKey != SERVICE_KEY {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return fail(
                error_code::UNSUPPORTED_SERVICE,
                code::BAD_REQUEST,
                None,
                "serviceKey",
            );
        }
        if !cfg.is_own_node(msg.uvrT) {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return fail(error_code::UNKNOWN_NODE, code::BAD_REQUEST, None, "uvrT");
        }
        let data = match VerifyData::from_hex(&msg.data) {
            Ok(d) => d,
            Err(e) => {
                self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                return fail(
                    error_code::MALFORMED_DATA,
                    code::BAD_REQUEST,
                    None,
                    &e.to_string(),
                );
            }
        };
        let a = data.calling.digits.as_str();
        if let Some(event) = st.presets.lookup(a) {
            let (status, ans, summary) = match event {
                0 => (200, Some(msg.answer("Continue")), "Continue (preset)"),
                2 => (200, Some(msg.answer("Release")), "Release (preset)"),
                _ => (200, None, "no answer (preset)"),
            };
            self.record_in(
                &msg,
                Some(&data),
                time_ms,
                started,
                code::PRESET,
                summary,
                "",
            );
            return (status, ans);
        }
        if cfg.verify_own_number && st.own(a).is_none() {
            let ans = msg.error(error_code::NOT_SERVED);
            self.record_in(
                &msg,
                Some(&data),
                time_ms,
                started,
                code::A_NOT_SERVED,
                "Error 5",
                "",
            );
            return (200, Some(ans));
        }
        let found = self.registry.find(a, &data.called).is_some()
            || data
                .original_called
                .as_ref()
                .is_some_and(|c| self.registry.find(a, c).is_some());
        if found {
            self.record_in(
                &msg,
                Some(&data),
                time_ms,
                started,
                code::CONFIRMED,
                "Continue",
                "",
            );
            (200, Some(msg.answer("Continue")))
        } else {
            self.record_in(
                &msg,
                Some(&data),
                time_ms,
                started,
                code::NOT_CONFIRMED,
                "Release",
                "",
            );
            (200, Some(msg.answer("Release")))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_in(
        &self,
        msg: &Message,
        data: Option<&VerifyData>,
        time_ms: i64,
        started: Instant,
        rec_code: u8,
        answer: &str,
        why: &str,
    ) {
        let called = |c: &CalledNumber| match c {
            CalledNumber::Plain(n) => n.digits.clone(),
            CalledNumber::Hashed(h) => h.iter().map(|b| format!("{b:02X}")).collect(),
        };
        let mut request = serde_json::to_string(msg).unwrap_or_default();
        if !why.is_empty() {
            request.push_str(" / ");
            request.push_str(why);
        }
        self.records.submit(Record {
            time_ms,
            direction: Direction::In,
            source: "node",
            call_id: clip(&msg.sessionId, FIELD_MAX),
            a: data.map(|d| d.calling.digits.clone()).unwrap_or_default(),
            b: data.map(|d| called(&d.called)).unwrap_or_default(),
            c: data.and_then(|d| d.original_called.as_ref().map(called)),
            id_src: None,
            id_dst: None,
            uvr_o: Some(msg.uvrO),
            uvr_t: Some(msg.uvrT),
            request: clip(&request, REQUEST_MAX),
            answer: answer.to_string(),
            code: rec_code,
            incident: matches!(rec_code, code::NOT_CONFIRMED | code::A_NOT_SERVED),
            latency_us: started.elapsed().as_micros() as u64,
        });
    }
}

/// Invariant check for the `verify_node_request` cargo-fuzz target (and the
/// unit tests): `data` is the body of another node's `VerifyCallState`
/// request, answered by a node built once (capacity 74950000000-74959999999
/// as node 10, a call from 74951234567 to 78120000001 registered, a preset
/// Release for 74959000000-74959000099 and a silent one for
/// 74959000100-74959000199). [`Node::answer_request`] returns; the answer
/// is HTTP 400 with an error answer of code 1 exactly when
/// [`super::peer::read_request`] refuses the body (and is then the answer it
/// built); otherwise it is HTTP 200 and any answer echoes the request's
/// serviceKey, sessionId, uvrO and uvrT, with `data` `3000` and an opcode of
/// `Continue`, `Release` or `Error` (only the last with a code). Panics only
/// if one of those breaks.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_verify_node_request(data: &[u8]) {
    use super::peer::ANSWER_DATA;
    static NODE: std::sync::OnceLock<Node> = std::sync::OnceLock::new();
    let node = NODE.get_or_init(fuzz_node);
    let (status, answer) = node.answer_request(data);
    match super::peer::read_request(data) {
        Err(bad) => {
            let (expected, why) = *bad;
            assert!(!why.is_empty(), "refused without a reason");
            assert_eq!(status, 400, "unreadable request answered {status}");
            let answer = answer.expect("an unreadable request gets an answer");
            assert_eq!(
                (answer.opcode.as_str(), answer.errorCode),
                ("Error", Some(error_code::MALFORMED_REQUEST)),
                "unreadable request: {answer:?}"
            );
            assert_eq!(answer, expected, "not the answer read_request built");
        }
        Ok(req) => {
            assert_eq!(status, 200, "readable request answered {status}");
            if let Some(a) = answer {
                assert_eq!(
                    (&a.sessionId, a.uvrO, a.uvrT, a.serviceKey),
                    (&req.sessionId, req.uvrO, req.uvrT, req.serviceKey),
                    "answer does not echo the request"
                );
                assert_eq!(a.data, ANSWER_DATA, "answer data");
                match a.opcode.as_str() {
                    "Continue" | "Release" => assert_eq!(a.errorCode, None, "{a:?}"),
                    "Error" => assert!(a.errorCode.is_some(), "error without code"),
                    other => panic!("answer opcode {other:?}"),
                }
            }
        }
    }
}

/// The node [`fuzz_verify_node_request`] asks.
#[cfg(any(test, feature = "fuzzing"))]
fn fuzz_node() -> Node {
    use super::config::{NodeIdConfig, PresetInterval};
    let (from, to) =
        range_of("74950000000", "74959999999").expect("a valid range: both ends 11 digits");
    let capacity = RangeMap::build(vec![(from, to, 10)]).expect("one range cannot overlap another");
    let mut cfg = VerifyConfig {
        nodes: vec![NodeIdConfig {
            uvr_id: 10,
            operator_id: 100,
        }],
        ..VerifyConfig::default()
    };
    cfg.last_numbers.intervals = vec![
        PresetInterval {
            range: "74959000000-74959000099".into(),
            event: Some(2),
        },
        PresetInterval {
            range: "74959000100-74959000199".into(),
            event: Some(1),
        },
    ];
    let state = State::from_config(cfg, Arc::new(capacity), Vec::new())
        .expect("the default configuration with one node id is valid");
    let node = Node::new(state, RecordSink::disabled(), Path::new("."));
    let out = node.register(&RegisterRequest {
        a: "+74951234567".into(),
        b: "+78120000001".into(),
        id_dst: 5,
        call_id: "fuzz".into(),
    });
    assert_eq!(out.verdict, Verdict::Registered, "fuzz node registration");
    node
}

/// Longest number or id kept in a record, bytes.
const FIELD_MAX: usize = 64;
/// Longest request kept in a record, bytes: a record queue full of the
/// largest bodies a peer may send must not hold gigabytes.
const REQUEST_MAX: usize = 512;

/// `s` cut to at most `max` bytes on a character boundary, `…` marking a cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s.get(..end).unwrap_or_default().to_string();
    out.push('…');
    out
}

fn international(digits: &str) -> IsupNumber {
    // Digits come from `normalize` (1-15 digits), which `international`
    // accepts; the fallback keeps this total anyway.
    IsupNumber::international(digits).unwrap_or_else(|_| IsupNumber {
        nature: 4,
        plan: 1,
        digits: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cap: &[(&str, &str, u32)], owners: &[(&str, &str, u32)]) -> State {
        let cap = cap
            .iter()
            .map(|(a, b, v)| {
                let (a, b) = range_of(a, b).unwrap();
                (a, b, *v)
            })
            .collect();
        let owners = owners
            .iter()
            .map(|(a, b, v)| {
                let (a, b) = range_of(a, b).unwrap();
                (a, b, *v)
            })
            .collect();
        let cfg = VerifyConfig {
            nodes: vec![super::super::config::NodeIdConfig {
                uvr_id: 10,
                operator_id: 100,
            }],
            ..VerifyConfig::default()
        };
        State::from_config(cfg, Arc::new(RangeMap::build(cap).unwrap()), owners).unwrap()
    }

    #[test]
    fn clip_cuts_on_character_boundaries() {
        assert_eq!(clip("abc", 3), "abc");
        assert_eq!(clip("abcd", 3), "abc…");
        assert_eq!(clip("aéb", 2), "a…");
        assert_eq!(
            clip(&"x".repeat(10_000), REQUEST_MAX).len(),
            REQUEST_MAX + '…'.len_utf8()
        );
    }

    #[test]
    fn requests_go_to_the_peer_of_the_node_else_the_hub() {
        let s = state(&[], &[]);
        let mut cfg = (*s.cfg).clone();
        cfg.peers.insert("5".into(), "127.0.0.5:9000".into());
        let direct = State::from_config(cfg.clone(), s.capacity.clone(), Vec::new()).unwrap();
        assert_eq!(direct.node_addr(5), Some("127.0.0.5:9000".parse().unwrap()));
        assert_eq!(direct.node_addr(6), None);
        cfg.remote_addr = "127.0.0.9".into();
        cfg.remote_port = 8090;
        let hub = State::from_config(cfg, s.capacity.clone(), Vec::new()).unwrap();
        assert_eq!(hub.node_addr(5), Some("127.0.0.5:9000".parse().unwrap()));
        assert_eq!(hub.node_addr(6), Some("127.0.0.9:8090".parse().unwrap()));
    }

    #[test]
    fn classification_follows_section_9() {
        let s = state(&[("74950000000", "74959999999", 10)], &[]);
        let own = "74951234567";
        let other = "78121234567";
        assert_eq!(s.classify(own, other, Some(100)), Class::Outgoing);
        assert_eq!(s.classify(own, other, None), Class::Outgoing);
        assert_eq!(s.classify(own, other, Some(5)), Class::IncomingOwnA);
        assert_eq!(s.classify(other, own, Some(5)), Class::Incoming);
        assert_eq!(s.classify(own, own, Some(100)), Class::Local);
        assert_eq!(s.classify(own, own, None), Class::Local);
        assert_eq!(s.classify(own, own, Some(5)), Class::IncomingOwnA);
        assert_eq!(s.classify(other, other, Some(100)), Class::Outgoing);
        assert_eq!(s.classify(other, other, Some(5)), Class::Incoming);
        assert_eq!(s.classify(other, other, None), Class::Incoming);
    }

    #[test]
    fn answers_from_registry_presets_and_capacity() {
        let mut s = state(&[("74950000000", "74959999999", 10)], &[]);
        let mut cfg = (*s.cfg).clone();
        cfg.last_numbers.intervals = vec![
            super::super::config::PresetInterval {
                range: "74959000000-74959000099".into(),
                event: Some(2),
            },
            super::super::config::PresetInterval {
                range: "74959000100-74959000199".into(),
                event: None,
            },
        ];
        cfg.last_numbers.int_event = 0;
        s = State::from_config(cfg, s.capacity.clone(), Vec::new()).unwrap();
        let node = Node::new(s, RecordSink::disabled(), Path::new("."));
        let ask = |a: &str, b: &str, hashed: bool| {
            let called = if hashed {
                CalledNumber::Hashed(hash_number(b"change-this-network-key", b))
            } else {
                CalledNumber::Plain(international(b))
            };
            let data = VerifyData {
                calling: international(a),
                called,
                original_called: None,
            }
            .to_hex();
            let body = format!(
                r#"{{"request":{{"serviceKey":80,"uvrO":7,"uvrT":10,"sessionId":"00000000000000AB","data":"{data}","opcode":"Request"}}}}"#
            );
            node.answer_request(body.as_bytes())
        };
        let op = |r: (u16, Option<Message>)| r.1.map(|m| (m.opcode, m.errorCode));
        // Not in the registry yet.
        assert_eq!(
            op(ask("74951234567", "78120000001", true)),
            Some(("Release".into(), None))
        );
        node.register(&RegisterRequest {
            a: "+74951234567".into(),
            b: "88120000001".into(),
            id_dst: 5,
            call_id: "x".into(),
        });
        assert_eq!(
            op(ask("74951234567", "78120000001", true)),
            Some(("Continue".into(), None))
        );
        assert_eq!(
            op(ask("74951234567", "78120000001", false)),
            Some(("Continue".into(), None))
        );
        assert_eq!(
            op(ask("74951234567", "78120000002", true)),
            Some(("Release".into(), None))
        );
        // Not ours: error 5.
        assert_eq!(
            op(ask("78121234567", "74950000001", true)),
            Some(("Error".into(), Some(5)))
        );
        // Without verify_own_number the registry answers for any A.
        let mut cfg = (*node.state().cfg).clone();
        cfg.verify_own_number = false;
        let st = node.state();
        node.set_state(State::from_config(cfg, st.capacity.clone(), Vec::new()).unwrap());
        assert_eq!(
            op(ask("78121234567", "74950000001", true)),
            Some(("Release".into(), None))
        );
        node.register(&RegisterRequest {
            a: "+78121234567".into(),
            b: "+74950000001".into(),
            id_dst: 5,
            call_id: "y".into(),
        });
        assert_eq!(
            op(ask("78121234567", "74950000001", true)),
            Some(("Continue".into(), None))
        );
        let mut cfg = (*node.state().cfg).clone();
        cfg.verify_own_number = true;
        let st = node.state();
        node.set_state(State::from_config(cfg, st.capacity.clone(), Vec::new()).unwrap());
        // Presets.
        assert_eq!(
            op(ask("74959000005", "78120000001", true)),
            Some(("Release".into(), None))
        );
        assert_eq!(
            op(ask("74959000105", "78120000001", true)),
            Some(("Continue".into(), None))
        );
        // Bad data, bad node.
        let bad = br#"{"request":{"serviceKey":80,"uvrO":7,"uvrT":10,"sessionId":"00000000000000AB","data":"30zz","opcode":"Request"}}"#;
        assert_eq!(
            op(node.answer_request(bad)),
            Some(("Error".into(), Some(2)))
        );
        let other = br#"{"request":{"serviceKey":80,"uvrO":7,"uvrT":11,"sessionId":"00000000000000AB","data":"3000","opcode":"Request"}}"#;
        assert_eq!(
            op(node.answer_request(other)),
            Some(("Error".into(), Some(3)))
        );
        let enc = br#"{"request":{"serviceKey":129,"uvrO":7,"uvrT":10,"sessionId":"00000000000000AB","data":"3000","opcode":"Request"}}"#;
        assert_eq!(
            op(node.answer_request(enc)),
            Some(("Error".into(), Some(4)))
        );
        assert_eq!(node.answer_request(b"[]").0, 400);
    }

    #[test]
    fn fuzz_body_accepts_samples_and_hostile_input() {
        let body = |a: &str, b: &str, uvr_t: u32| {
            let data = VerifyData {
                calling: international(a),
                called: CalledNumber::Plain(international(b)),
                original_called: None,
            }
            .to_hex();
            format!(
                r#"{{"request":{{"serviceKey":80,"uvrO":7,"uvrT":{uvr_t},"sessionId":"00000000000000AB","data":"{data}","opcode":"Request"}}}}"#
            )
        };
        for b in [
            body("74951234567", "78120000001", 10),
            body("74951234567", "78120000002", 10),
            body("74959000005", "78120000001", 10),
            body("74959000105", "78120000001", 10),
            body("78121234567", "74950000001", 10),
            body("74951234567", "78120000001", 11),
        ] {
            fuzz_verify_node_request(b.as_bytes());
        }
        for b in [
            &br#"{"request":{"serviceKey":80,"uvrO":7,"uvrT":10,"sessionId":"00000000000000AB","data":"30zz","opcode":"Request"}}"#[..],
            br#"{"request":{"serviceKey":129,"uvrO":7,"uvrT":10,"sessionId":"00000000000000AB","data":"3000","opcode":"Request"}}"#,
            br#"{"request":{"serviceKey":80,"uvrO":7,"uvrT":10,"sessionId":"xyz","data":"3000","opcode":"Request"}}"#,
            b"[]",
            b"{",
            b"",
        ] {
            fuzz_verify_node_request(b);
        }
    }

    async fn ask(node: &Node, a: &str, b: &str, id_src: Option<u32>, call_id: &str) -> Outcome {
        let req = CheckRequest {
            a: a.into(),
            b: b.into(),
            id_src,
            call_id: call_id.into(),
            ..CheckRequest::default()
        };
        node.check(&req, "test").await
    }

    #[tokio::test]
    async fn check_registers_passes_and_handles_missing_nodes() {
        let s = state(&[("74950000000", "74959999999", 10)], &[]);
        let node = Node::new(s, RecordSink::disabled(), Path::new("."));
        let out = ask(&node, "74951234567", "78121234567", Some(100), "c1").await;
        assert_eq!(out.verdict, Verdict::Registered);
        assert_eq!(out.errors, error_bits::OWNER_A | error_bits::NOT_OWNER_B);
        assert_eq!(node.registry().len(), 1);
        // A foreign B keeps its country code (normalized once, not twice).
        let out = ask(&node, "74951234567", "+33123456789", Some(100), "c1b").await;
        assert_eq!(out.verdict, Verdict::Registered, "{out:?}");
        assert!(node
            .registry()
            .find(
                "74951234567",
                &CalledNumber::Plain(international("33123456789"))
            )
            .is_some());
        // Our A from another operator towards a foreign B is not registered.
        let out = ask(&node, "74951234568", "78121234567", Some(5), "c1c").await;
        assert_eq!(out.verdict, Verdict::Release(50));
        assert_eq!(node.registry().len(), 2);
        // Incoming with no node known for A: error path, error_code 0 → pass.
        let out = ask(&node, "78121234567", "74951234567", Some(5), "c2").await;
        assert_eq!(out.verdict, Verdict::Pass);
        assert_eq!(out.warnings, warning_bits::ERROR);
        assert_eq!(out.code, code::NO_NODE);
        // Own A from another operator, not registered: released.
        let out = ask(&node, "74951111111", "74952222222", Some(5), "c3").await;
        assert_eq!(out.verdict, Verdict::Release(50));
        let bad = ask(&node, "7495x", "74952222222", None, "c4").await;
        assert_eq!(bad.verdict, Verdict::Bad);
        assert!(
            bad.error_messages().starts_with("Body syntax error: a:"),
            "{}",
            bad.error_messages()
        );
    }
}

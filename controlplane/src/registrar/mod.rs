//! Registrar: users from config, digest-authenticated REGISTER, locations in
//! memory (RFC 3261 §10), and the Proxy-Authorization check for other
//! requests from those users.
//!
//! Sans-IO: a request, its source and the time go in, a complete response
//! comes out; nothing here reads a clock or touches a socket. Randomness
//! (nonce secrets, To tags) comes from an rng given to [`Registrar::new`].
//!
//! Not here: the domain check of the Request-URI (one realm serves every
//! domain), `Path` (RFC 3327), GRUU and the flow handling of RFC 5626 (the
//! `+sip.instance` is only used to tell bindings apart), and persistence:
//! bindings live in memory and a restart forgets them; phones re-register.
//!
//! Authentication never tells whether a user exists: an unknown user is
//! challenged like a known one, and its credentials are checked against a
//! random password nobody knows, so it ends in the same 403 as a wrong
//! password, by the same code path.
//!
//! How [`AuthError`] maps onto SIP, for REGISTER (401 / WWW-Authenticate)
//! and other requests (407 / Proxy-Authenticate) alike:
//! - no credentials for our realm, or a nonce not ours (e.g. from before a
//!   restart) → challenge;
//! - a stale nonce, or a replayed nonce count with a right response →
//!   challenge with `stale=true` (the client retries without its user);
//! - a wrong response, an unknown user, an algorithm or qop we do not do,
//!   or credentials of another user than the To user (REGISTER) → 403;
//! - an unreadable header → 400 naming the problem.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

mod location;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::sip::auth::{hex, Algorithm, AuthError, Credentials, NonceKeeper};
use crate::sip::message::{Method, NameAddr, Request, Response, UriScheme};
use crate::sip::Peer;

pub use location::Binding;
use location::{BindingKey, Location};

/// A user allowed to register and to place calls (`[[users]]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// The user part of the address-of-record, and the digest username.
    pub username: String,
    /// The digest password (kept in the clear: digest needs it, or H(A1)).
    pub password: String,
    /// Class of service name for routing; empty = none.
    pub cos: String,
    /// Display name for calls from this user; empty = none.
    pub display_name: String,
}

/// `[registrar]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Digest realm.
    pub realm: String,
    /// Digest algorithms offered, one challenge header each in this order
    /// (RFC 8760 §2.3 and §2.4: in order of preference; a client takes the
    /// first it supports).
    pub algorithms: Vec<String>,
    /// How long a nonce is good for, in seconds.
    pub nonce_lifetime_s: u64,
    /// Shortest registration accepted (shorter ones get 423), in seconds.
    pub min_expires: u32,
    /// Longest registration granted (longer ones are shortened), in seconds.
    pub max_expires: u32,
    /// Registration length when the request names none, in seconds.
    pub default_expires: u32,
    /// Most bindings per user; a new one replaces the least recently
    /// refreshed.
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            realm: "kordon".into(),
            algorithms: vec!["SHA-256".into(), "MD5".into()],
            nonce_lifetime_s: 300,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 5,
        }
    }
}

/// The answer of [`Registrar::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// No such user in the configuration.
    UnknownUser,
    /// The user exists but has no current binding.
    NotRegistered,
    /// The current bindings, least recently refreshed first.
    Bindings(Vec<&'a Binding>),
}

/// The answer of [`Registrar::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The request carries valid credentials of `user`. This, not the From
    /// header, is who is calling.
    Authenticated {
        /// The configured username.
        user: String,
    },
    /// Send this response instead of handling the request: 407 with
    /// Proxy-Authenticate challenges, 403, or 400.
    Respond(Response),
}

/// Why credentials were not accepted, in SIP terms.
#[derive(Debug)]
enum Denial {
    /// Challenge (again).
    Challenge { stale: bool },
    /// 400 with this reason.
    Malformed(String),
    /// 403 with this reason.
    Forbidden(&'static str),
}

/// Nonce counts tracked per configured binding (REGISTER and calls).
const TRACKED_PER_BINDING: usize = 2;
/// Bounds of the nonce tracking map.
const MIN_TRACKED: usize = 1024;
const MAX_TRACKED: usize = 1 << 20;

/// The registrar: users, their bindings, and digest authentication.
pub struct Registrar {
    cfg: RegistrarConfig,
    algorithms: Vec<Algorithm>,
    users: HashMap<String, UserConfig>,
    nonces: NonceKeeper,
    location: Location,
    /// For To tags.
    rng: StdRng,
    /// Checked against when the username is unknown; random, so nothing
    /// matches it, and unknown users cost what known ones do.
    decoy_password: String,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Passwords stay out of logs.
        f.debug_struct("Registrar")
            .field("realm", &self.cfg.realm)
            .field("users", &self.users.len())
            .field("bindings", &self.location.len())
            .field("nonces", &self.nonces)
            .finish_non_exhaustive()
    }
}

impl Registrar {
    /// A registrar for `users`. The error names the configuration key at
    /// fault: an empty realm, an unknown or repeated algorithm, inconsistent
    /// expiry bounds, a duplicate or empty username, an empty password.
    pub fn new(
        cfg: RegistrarConfig,
        users: Vec<UserConfig>,
        rng: &mut impl RngCore,
    ) -> Result<Registrar, String> {
        if cfg.realm.is_empty() {
            return Err("registrar.realm: must not be empty".into());
        }
        if cfg.realm.chars().any(char::is_control) {
            return Err("registrar.realm: must not contain control characters".into());
        }
        let mut algorithms = Vec::new();
        for name in &cfg.algorithms {
            let alg = Algorithm::from_token(name).ok_or_else(|| {
                format!(
                    "registrar.algorithms: unknown algorithm {name:?} (use \"SHA-256\" or \"MD5\")"
                )
            })?;
            if algorithms.contains(&alg) {
                return Err(format!("registrar.algorithms: {name:?} listed twice"));
            }
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err("registrar.algorithms: at least one algorithm is needed".into());
        }
        if cfg.nonce_lifetime_s == 0 {
            return Err("registrar.nonce_lifetime_s: must be at least 1".into());
        }
        if cfg.max_expires == 0 {
            return Err("registrar.max_expires: must be at least 1".into());
        }
        if cfg.min_expires > cfg.max_expires {
            return Err(format!(
                "registrar.min_expires: {} is above registrar.max_expires {}",
                cfg.min_expires, cfg.max_expires
            ));
        }
        if !(cfg.min_expires..=cfg.max_expires).contains(&cfg.default_expires) {
            return Err(format!(
                "registrar.default_expires: {} is outside min_expires..=max_expires ({}..={})",
                cfg.default_expires, cfg.min_expires, cfg.max_expires
            ));
        }
        if cfg.max_contacts == 0 {
            return Err("registrar.max_contacts: must be at least 1".into());
        }
        let mut by_name = HashMap::with_capacity(users.len());
        for (i, u) in users.into_iter().enumerate() {
            if u.username.is_empty() {
                return Err(format!("users[{i}].username: must not be empty"));
            }
            if u.username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "users[{i}].username: {:?} contains whitespace or control characters",
                    u.username
                ));
            }
            if u.password.is_empty() {
                return Err(format!(
                    "users[{i}].password: must not be empty (user {:?})",
                    u.username
                ));
            }
            if by_name.contains_key(&u.username) {
                return Err(format!(
                    "users[{i}].username: duplicate user {:?}",
                    u.username
                ));
            }
            by_name.insert(u.username.clone(), u);
        }
        let max_tracked = by_name
            .len()
            .saturating_mul(cfg.max_contacts)
            .saturating_mul(TRACKED_PER_BINDING)
            .clamp(MIN_TRACKED, MAX_TRACKED);
        let nonces = NonceKeeper::new(rng, Duration::from_secs(cfg.nonce_lifetime_s), max_tracked);
        let mut decoy = [0u8; 16];
        rng.fill_bytes(&mut decoy);
        Ok(Registrar {
            algorithms,
            users: by_name,
            nonces,
            location: Location::default(),
            rng: StdRng::from_rng(rng),
            decoy_password: hex(&decoy),
            cfg,
        })
    }

    /// The configured user `name`.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.get(name)
    }

    /// Stored bindings of all users, expired ones not yet dropped by
    /// [`Registrar::expire`] included.
    pub fn binding_count(&self) -> usize {
        self.location.len()
    }

    /// Drops every binding expired at `now_unix`; returns how many.
    pub fn expire(&mut self, now_unix: u64) -> usize {
        self.location.expire(now_unix)
    }

    /// The current bindings of `user`.
    pub fn lookup(&self, user: &str, now_unix: u64) -> Lookup<'_> {
        if !self.users.contains_key(user) {
            return Lookup::UnknownUser;
        }
        let current: Vec<&Binding> = self
            .location
            .bindings(user)
            .iter()
            .filter(|b| b.is_current(now_unix))
            .collect();
        if current.is_empty() {
            Lookup::NotRegistered
        } else {
            Lookup::Bindings(current)
        }
    }

    /// Handles a REGISTER received from `source` (RFC 3261 §10.3) and
    /// returns the response to send: 401 with one WWW-Authenticate per
    /// configured algorithm, 403, 400 naming the problem, 420, 423 with
    /// Min-Expires, or 200 listing every current binding of the
    /// address-of-record with its `expires` (405 for other methods). Never
    /// 500.
    pub fn handle_register(&mut self, req: &Request, source: Peer, now_unix: u64) -> Response {
        if req.method != Method::Register {
            let mut resp = self.reply(req, 405);
            resp.headers.push("Allow", "REGISTER");
            return resp;
        }
        if let Err(e) = req.validate() {
            return self.bad_request(req, e.reason());
        }
        // §10.3 step 2: we support no extension a request could require.
        if let Some(resp) = self.unsupported_extensions(req) {
            return resp;
        }
        // §10.2: the To header holds the address-of-record, a SIP(S) URI.
        let aor = match req.to() {
            Ok(to) => to.uri,
            Err(e) => return self.bad_request(req, e.reason()),
        };
        if !matches!(aor.scheme, UriScheme::Sip | UriScheme::Sips) {
            return self.bad_request(req, "To must be a SIP or SIPS URI");
        }
        let Some(aor_user) = aor.user else {
            return self.bad_request(req, "To URI has no user part");
        };
        // §10.3 step 4, §22.
        let user = match self.check_credentials(req, "Authorization", now_unix) {
            Ok(user) => user,
            Err(denial) => return self.deny(req, denial, 401, "WWW-Authenticate", now_unix),
        };
        // §10.3 step 5: only the owner registers an address-of-record.
        if user != aor_user {
            tracing::debug!("REGISTER refused: credentials are not the To user's");
            return self.forbidden(req, "credentials are not for the To user");
        }
        let new = match self.updated_bindings(req, &aor_user, source, now_unix) {
            Ok(new) => new,
            Err(resp) => return resp,
        };
        self.location.replace(&aor_user, new);
        // §10.3 step 8.
        let mut resp = self.reply(req, 200);
        for b in self.location.bindings(&aor_user) {
            if b.is_current(now_unix) {
                let mut contact = b.contact.clone();
                contact
                    .params
                    .set("expires", Some(b.remaining(now_unix).to_string()));
                resp.headers.push("Contact", contact.to_string());
            }
        }
        if let Some(date) = http_date(now_unix) {
            resp.headers.push("Date", date);
        }
        resp
    }

    /// Checks the Proxy-Authorization of a request from a user (an INVITE,
    /// a MESSAGE; not ACK or CANCEL, which cannot be challenged, RFC 3261
    /// §22.1). Gives the authenticated username, or the response to send:
    /// 407 with one Proxy-Authenticate per configured algorithm, 403 or 400.
    pub fn authenticate(&mut self, req: &Request, now_unix: u64) -> AuthOutcome {
        match self.check_credentials(req, "Proxy-Authorization", now_unix) {
            Ok(user) => AuthOutcome::Authenticated { user },
            Err(denial) => {
                AuthOutcome::Respond(self.deny(req, denial, 407, "Proxy-Authenticate", now_unix))
            }
        }
    }

    /// The authenticated username of `req`'s credentials in `header`.
    fn check_credentials(
        &mut self,
        req: &Request,
        header: &str,
        now_unix: u64,
    ) -> Result<String, Denial> {
        // Credentials for other realms may ride along (RFC 3261 §22.3):
        // take the first for ours; report a bad value only if none is ours.
        let mut found = None;
        let mut first_error = None;
        for value in req.headers.get_all(header) {
            match Credentials::parse(value) {
                Ok(c) if c.realm == self.cfg.realm => {
                    found = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let Some(creds) = found else {
            return Err(match first_error {
                None => Denial::Challenge { stale: false },
                Some(e) => denial_for(e),
            });
        };
        let password = self
            .users
            .get(&creds.username)
            .map_or(self.decoy_password.as_str(), |u| u.password.as_str());
        match self.nonces.verify(
            &creds,
            req.method.as_str(),
            password,
            &self.cfg.realm,
            now_unix,
        ) {
            Ok(()) if self.users.contains_key(&creds.username) => Ok(creds.username),
            Ok(()) => Err(Denial::Forbidden("bad credentials")),
            Err(e) => {
                tracing::debug!(method = %req.method, reason = %e, "credentials refused");
                Err(denial_for(e))
            }
        }
    }

    /// The user's binding list after applying the Contacts of `req`
    /// (RFC 3261 §10.3 steps 6 and 7), or the response refusing it. Nothing
    /// is stored here: the caller commits the whole list, so a refused
    /// request changes nothing.
    fn updated_bindings(
        &mut self,
        req: &Request,
        user: &str,
        source: Peer,
        now_unix: u64,
    ) -> Result<Vec<Binding>, Response> {
        // validate() checked both.
        let call_id = req.call_id().unwrap_or_default().to_string();
        let cseq = match req.cseq() {
            Ok(c) => c.seq,
            Err(e) => return Err(self.bad_request(req, e.reason())),
        };
        let expires_header = match req.headers.get("Expires") {
            None => None,
            Some(v) => match parse_expires(v) {
                Some(e) => Some(e),
                None => return Err(self.bad_request(req, "bad Expires")),
            },
        };
        let mut bindings: Vec<Binding> = self
            .location
            .bindings(user)
            .iter()
            .filter(|b| b.is_current(now_unix))
            .cloned()
            .collect();
        let contacts: Vec<&str> = req.headers.get_all("Contact").collect();
        // §10.3 step 7: a binding last set by this Call-ID may only be
        // changed by a higher CSeq; otherwise "the update MUST be aborted and
        // the request fails". The RFC names no status. 400 says it is the
        // client's doing and is not to be retried as is; 500 would say the
        // fault is ours.
        let out_of_order = |b: &Binding| b.call_id == call_id && cseq <= b.cseq;
        const OUT_OF_ORDER: &str = "CSeq not above the binding's (RFC 3261 10.3 step 7)";

        if contacts.iter().any(|c| c.trim() == "*") {
            // §10.3 step 6: `*` only alone and with Expires: 0.
            if contacts.len() != 1 || expires_header != Some(0) {
                return Err(
                    self.bad_request(req, "Contact: * needs Expires: 0 and no other Contact")
                );
            }
            if bindings.iter().any(out_of_order) {
                return Err(self.bad_request(req, OUT_OF_ORDER));
            }
            return Ok(Vec::new());
        }

        let mut touched = HashSet::new();
        for raw in contacts {
            let contact = match NameAddr::parse(raw) {
                Ok(c) => c,
                Err(e) => {
                    return Err(self.bad_request(req, &format!("bad Contact: {}", e.reason())))
                }
            };
            // §10.3 step 6: the expires parameter, else Expires, else ours.
            let requested = if contact.params.has("expires") {
                match contact.params.get("expires").and_then(parse_expires) {
                    Some(e) => e,
                    None => return Err(self.bad_request(req, "bad Contact expires parameter")),
                }
            } else {
                expires_header.unwrap_or(self.cfg.default_expires)
            };
            if requested != 0 && requested < self.cfg.min_expires {
                // §10.3 step 6, §20.23.
                let mut resp = self.reply(req, 423);
                resp.headers
                    .push("Min-Expires", self.cfg.min_expires.to_string());
                return Err(resp);
            }
            let granted = requested.min(self.cfg.max_expires);
            let instance = contact
                .params
                .get("+sip.instance")
                .map(|v| v.trim_matches('"').to_string());
            let key = BindingKey::new(&contact.uri, instance.as_deref());
            if let Some(pos) = bindings.iter().position(|b| b.key() == key) {
                // A contact listed twice in one request is not out of order
                // with itself.
                if !touched.contains(&key) && bindings.get(pos).is_some_and(out_of_order) {
                    return Err(self.bad_request(req, OUT_OF_ORDER));
                }
                bindings.remove(pos);
            }
            if granted > 0 {
                bindings.push(Binding {
                    contact,
                    source,
                    expires_at: now_unix.saturating_add(u64::from(granted)),
                    call_id: call_id.clone(),
                    cseq,
                    instance,
                });
            }
            touched.insert(key);
        }
        // The least recently refreshed make room.
        let excess = bindings.len().saturating_sub(self.cfg.max_contacts);
        bindings.drain(..excess);
        Ok(bindings)
    }

    /// 420 listing the Require tokens, if there are any (RFC 3261 §8.2.2.3).
    fn unsupported_extensions(&mut self, req: &Request) -> Option<Response> {
        let tokens: Vec<&str> = req
            .headers
            .get_all("Require")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return None;
        }
        let unsupported = tokens.join(", ");
        let mut resp = self.reply(req, 420);
        resp.headers.push("Unsupported", unsupported);
        Some(resp)
    }

    /// The response for a denial: a challenge per configured algorithm, 403
    /// or 400.
    fn deny(
        &mut self,
        req: &Request,
        denial: Denial,
        challenge_status: u16,
        challenge_header: &str,
        now_unix: u64,
    ) -> Response {
        match denial {
            Denial::Challenge { stale } => {
                let mut resp = self.reply(req, challenge_status);
                for &alg in &self.algorithms {
                    let value = self.nonces.challenge(&self.cfg.realm, alg, now_unix, stale);
                    resp.headers.push(challenge_header, value);
                }
                resp
            }
            Denial::Malformed(reason) => self.bad_request(req, &reason),
            Denial::Forbidden(reason) => self.forbidden(req, reason),
        }
    }

    fn bad_request(&mut self, req: &Request, reason: &str) -> Response {
        let mut resp = self.reply(req, 400);
        resp.reason = reason_phrase("Bad Request", reason);
        resp
    }

    fn forbidden(&mut self, req: &Request, reason: &str) -> Response {
        let mut resp = self.reply(req, 403);
        resp.reason = reason_phrase("Forbidden", reason);
        resp
    }

    /// A response to `req` with a To tag (RFC 3261 §8.2.6.2), unless the To
    /// header is unreadable or already tagged.
    fn reply(&mut self, req: &Request, status: u16) -> Response {
        let mut resp = Response::for_request(req, status);
        if let Ok(mut to) = req.to() {
            if to.tag().is_none() {
                let mut tag = [0u8; 8];
                self.rng.fill_bytes(&mut tag);
                to.set_tag(&hex(&tag));
                resp.headers.set("To", to.to_string());
            }
        }
        resp
    }
}

/// How each [`AuthError`] is answered (see the module doc).
fn denial_for(e: AuthError) -> Denial {
    match e {
        AuthError::Malformed(m) => Denial::Malformed(format!("bad credentials: {m}")),
        AuthError::WrongRealm | AuthError::ForgedNonce => Denial::Challenge { stale: false },
        AuthError::StaleNonce | AuthError::Replay => Denial::Challenge { stale: true },
        AuthError::BadResponse => Denial::Forbidden("bad credentials"),
        AuthError::UnsupportedAlgorithm(_) => Denial::Forbidden("unsupported digest algorithm"),
        AuthError::UnsupportedQop(_) => Denial::Forbidden("unsupported digest qop"),
    }
}

/// `"Bad Request - missing Call-ID"`: one line, bounded.
fn reason_phrase(base: &str, detail: &str) -> String {
    let mut s = format!("{base} - {detail}");
    s.retain(|c| !c.is_control());
    if s.len() > 160 {
        let mut cut = 160;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A delta-seconds value (RFC 3261 §20.19); above 2^32-1 it is 2^32-1.
fn parse_expires(v: &str) -> Option<u32> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u32>().unwrap_or(u32::MAX))
}

/// The Date header value for `now_unix` (RFC 3261 §20.17, RFC 1123 form).
fn http_date(now_unix: u64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp(i64::try_from(now_unix).ok()?, 0)?;
    Some(t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::Challenge;
    use crate::sip::message::{parse, Message};
    use crate::sip::Transport;

    const T0: u64 = 1_700_000_000;
    const CALL_ID: &str = "reg-1@10.0.0.5";

    fn users() -> Vec<UserConfig> {
        ["alice", "bob"]
            .iter()
            .map(|name| UserConfig {
                username: (*name).to_string(),
                password: format!("{name}-secret"),
                cos: "local".into(),
                display_name: String::new(),
            })
            .collect()
    }

    fn registrar_with(cfg: RegistrarConfig) -> Registrar {
        Registrar::new(cfg, users(), &mut StdRng::seed_from_u64(1)).expect("valid config")
    }

    fn registrar() -> Registrar {
        registrar_with(RegistrarConfig::default())
    }

    fn peer(port: u16) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: std::net::SocketAddr::from(([203, 0, 113, 9], port)),
            iface: 1,
            conn: None,
        }
    }

    fn request(text: &str) -> Request {
        match parse(text.replace('\n', "\r\n").as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("test request does not parse: {other:?}"),
        }
    }

    /// A REGISTER for `user`; `extra` holds Contact, Expires, Authorization
    /// lines as needed.
    fn register_in(call_id: &str, user: &str, cseq: u32, extra: &str) -> Request {
        request(&format!(
            "REGISTER sip:kordon.example SIP/2.0\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{cseq}x;rport\n\
             Max-Forwards: 70\n\
             From: <sip:{user}@kordon.example>;tag=f{cseq}\n\
             To: <sip:{user}@kordon.example>\n\
             Call-ID: {call_id}\n\
             CSeq: {cseq} REGISTER\n\
             {extra}\
             Content-Length: 0\n\n"
        ))
    }

    fn register(user: &str, cseq: u32, extra: &str) -> Request {
        register_in(CALL_ID, user, cseq, extra)
    }

    fn invite(extra: &str) -> Request {
        request(&format!(
            "INVITE sip:+15551234567@kordon.example SIP/2.0\n\
             Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKinv;rport\n\
             Max-Forwards: 70\n\
             From: <sip:alice@kordon.example>;tag=inv1\n\
             To: <sip:+15551234567@kordon.example>\n\
             Call-ID: call-1@10.0.0.5\n\
             CSeq: 1 INVITE\n\
             Contact: <sip:alice@10.0.0.5:5060>\n\
             {extra}\
             Content-Length: 0\n\n"
        ))
    }

    /// Credentials answering the `alg` challenge in `resp`, as a phone
    /// computes them.
    fn answer(
        resp: &Response,
        header: &str,
        alg: Algorithm,
        user: &str,
        password: &str,
        method: &str,
        nc: u32,
    ) -> Credentials {
        let ch = resp
            .headers
            .get_all(header)
            .filter_map(|v| Challenge::parse(v).ok())
            .find(|c| c.algorithm == alg)
            .expect("a challenge for the algorithm");
        let mut c = Credentials {
            username: user.into(),
            realm: ch.realm,
            nonce: ch.nonce,
            uri: "sip:kordon.example".into(),
            response: String::new(),
            algorithm: alg,
            qop: Some("auth".into()),
            nc: Some(nc),
            cnonce: Some("9a8b7c6d".into()),
            opaque: ch.opaque,
        };
        c.response = c.expected_response(method, password);
        c
    }

    fn authorization(c: &Credentials) -> String {
        format!("Authorization: {c}\n")
    }

    /// Alice's right answer to the SHA-256 challenge in `ch`.
    fn alice_auth(ch: &Response, nc: u32) -> String {
        authorization(&answer(
            ch,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "alice",
            "alice-secret",
            "REGISTER",
            nc,
        ))
    }

    /// Challenges, then registers `user` with `contact` and `expires`.
    fn register_ok(r: &mut Registrar, user: &str, cseq: u32, contact: &str, src: Peer) -> Response {
        let ch = r.handle_register(&register(user, cseq, ""), src, T0);
        assert_eq!(ch.status, 401);
        let c = answer(
            &ch,
            "WWW-Authenticate",
            Algorithm::Sha256,
            user,
            &format!("{user}-secret"),
            "REGISTER",
            1,
        );
        let extra = format!("Contact: {contact}\n{}", authorization(&c));
        r.handle_register(&register(user, cseq + 1, &extra), src, T0)
    }

    fn contacts(resp: &Response) -> Vec<NameAddr> {
        resp.headers
            .get_all("Contact")
            .map(|c| NameAddr::parse(c).expect("our Contact parses"))
            .collect()
    }

    #[test]
    fn challenge_then_register_then_lookup_gives_the_source() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(40000), T0);
        assert_eq!(ch.status, 401);
        let challenges: Vec<Challenge> = ch
            .headers
            .get_all("WWW-Authenticate")
            .map(|v| Challenge::parse(v).expect("parses"))
            .collect();
        let algs: Vec<Algorithm> = challenges.iter().map(|c| c.algorithm).collect();
        assert_eq!(algs, [Algorithm::Sha256, Algorithm::Md5]);
        assert!(challenges.iter().all(|c| c.realm == "kordon" && !c.stale));
        assert!(ch.to().expect("To").tag().is_some());
        assert_eq!(r.binding_count(), 0);

        let ok = register_ok(
            &mut r,
            "alice",
            1,
            "<sip:alice@10.0.0.5:5060;ob>",
            peer(40000),
        );
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert!(ok.to().expect("To").tag().is_some());
        assert!(ok.headers.get("Date").is_some_and(|d| d.ends_with(" GMT")));
        let listed = contacts(&ok);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed.first().and_then(|c| c.params.get("expires")),
            Some("3600")
        );

        let Lookup::Bindings(found) = r.lookup("alice", T0 + 10) else {
            panic!("alice is registered");
        };
        let [b] = found.as_slice() else {
            panic!("one binding");
        };
        assert_eq!(b.source, peer(40000));
        assert_eq!(b.contact.uri.host, "10.0.0.5");
        assert_eq!(b.expires_at, T0 + 3600);
        assert_eq!(b.cseq, 2);
        assert_eq!(r.lookup("bob", T0), Lookup::NotRegistered);
        assert_eq!(r.lookup("carol", T0), Lookup::UnknownUser);
        assert_eq!(r.user("alice").map(|u| u.cos.as_str()), Some("local"));
        assert_eq!(r.binding_count(), 1);
    }

    #[test]
    fn md5_is_accepted_as_well_as_sha256() {
        let mut r = registrar();
        let ch = r.handle_register(&register("bob", 1, ""), peer(1), T0);
        let c = answer(
            &ch,
            "WWW-Authenticate",
            Algorithm::Md5,
            "bob",
            "bob-secret",
            "REGISTER",
            1,
        );
        let extra = format!("Contact: <sip:bob@10.0.0.6>\n{}", authorization(&c));
        let ok = r.handle_register(&register("bob", 2, &extra), peer(1), T0);
        assert_eq!(ok.status, 200, "{}", ok.reason);

        // With only SHA-256 configured, one challenge, and MD5 gets nowhere.
        let cfg = RegistrarConfig {
            algorithms: vec!["SHA-256".into()],
            ..RegistrarConfig::default()
        };
        let mut strict = registrar_with(cfg);
        let ch = strict.handle_register(&register("bob", 1, ""), peer(1), T0);
        assert_eq!(ch.headers.get_all("WWW-Authenticate").count(), 1);
        let mut c = answer(
            &ch,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "bob",
            "bob-secret",
            "REGISTER",
            1,
        );
        c.algorithm = Algorithm::Md5;
        c.response = c.expected_response("REGISTER", "bob-secret");
        let resp = strict.handle_register(&register("bob", 2, &authorization(&c)), peer(1), T0);
        assert_eq!(resp.status, 401);
    }

    #[test]
    fn unknown_user_looks_like_a_wrong_password() {
        let mut r = registrar();
        let known = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let unknown = r.handle_register(&register("mallory", 1, ""), peer(1), T0);
        assert_eq!(unknown.status, known.status);
        assert_eq!(
            unknown.headers.get_all("WWW-Authenticate").count(),
            known.headers.get_all("WWW-Authenticate").count()
        );

        let c = answer(
            &unknown,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "mallory",
            "x",
            "REGISTER",
            1,
        );
        let extra = format!("Contact: <sip:m@10.0.0.66>\n{}", authorization(&c));
        let refused_unknown = r.handle_register(&register("mallory", 2, &extra), peer(1), T0);
        assert_eq!(refused_unknown.status, 403);

        let c = answer(
            &known,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "alice",
            "guess",
            "REGISTER",
            1,
        );
        let extra = format!("Contact: <sip:a@10.0.0.66>\n{}", authorization(&c));
        let refused_known = r.handle_register(&register("alice", 2, &extra), peer(1), T0);
        assert_eq!(refused_known.status, 403);
        assert_eq!(refused_known.reason, refused_unknown.reason);
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn credentials_of_another_user_are_forbidden() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let c = answer(
            &ch,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "bob",
            "bob-secret",
            "REGISTER",
            1,
        );
        let extra = format!("Contact: <sip:evil@10.0.0.66>\n{}", authorization(&c));
        let resp = r.handle_register(&register("alice", 2, &extra), peer(1), T0);
        assert_eq!(resp.status, 403);
        assert_eq!(r.lookup("alice", T0), Lookup::NotRegistered);
    }

    #[test]
    fn expires_zero_removes_one_and_star_removes_all() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let two = format!(
            "Contact: <sip:alice@10.0.0.5>, <sip:alice@10.0.0.7>;expires=120\n{}",
            alice_auth(&ch, 1)
        );
        let ok = r.handle_register(&register("alice", 2, &two), peer(1), T0);
        assert_eq!(ok.status, 200, "{}", ok.reason);
        let expires: Vec<String> = contacts(&ok)
            .iter()
            .filter_map(|c| c.params.get("expires").map(str::to_string))
            .collect();
        assert_eq!(expires, ["3600", "120"]);

        let drop_one = format!(
            "Contact: <sip:alice@10.0.0.5>\nExpires: 0\n{}",
            alice_auth(&ch, 2)
        );
        let ok = r.handle_register(&register("alice", 3, &drop_one), peer(1), T0 + 5);
        assert_eq!(ok.status, 200, "{}", ok.reason);
        let left = contacts(&ok);
        assert_eq!(left.len(), 1);
        assert_eq!(left.first().map(|c| c.uri.host.as_str()), Some("10.0.0.7"));
        assert_eq!(
            left.first().and_then(|c| c.params.get("expires")),
            Some("115")
        );

        let bad_star = format!("Contact: *\nExpires: 60\n{}", alice_auth(&ch, 3));
        let resp = r.handle_register(&register("alice", 4, &bad_star), peer(1), T0 + 6);
        assert_eq!(resp.status, 400);
        assert!(resp.reason.contains("Expires: 0"), "{}", resp.reason);

        let star = format!("Contact: *\nExpires: 0\n{}", alice_auth(&ch, 4));
        let ok = r.handle_register(&register("alice", 5, &star), peer(1), T0 + 6);
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert!(ok.headers.get("Contact").is_none());
        assert_eq!(r.lookup("alice", T0 + 6), Lookup::NotRegistered);
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn too_brief_gets_423_and_too_long_is_shortened() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let brief = format!(
            "Contact: <sip:alice@10.0.0.5>\nExpires: 30\n{}",
            alice_auth(&ch, 1)
        );
        let resp = r.handle_register(&register("alice", 2, &brief), peer(1), T0);
        assert_eq!(resp.status, 423);
        assert_eq!(resp.reason, "Interval Too Brief");
        assert_eq!(resp.headers.get("Min-Expires"), Some("60"));
        assert_eq!(r.binding_count(), 0);

        let long = format!(
            "Contact: <sip:alice@10.0.0.5>;expires=99999999999\n{}",
            alice_auth(&ch, 2)
        );
        let ok = r.handle_register(&register("alice", 3, &long), peer(1), T0);
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert_eq!(
            contacts(&ok).first().and_then(|c| c.params.get("expires")),
            Some("3600")
        );
    }

    #[test]
    fn expire_drops_lapsed_bindings() {
        let mut r = registrar();
        let ok = register_ok(
            &mut r,
            "alice",
            1,
            "<sip:alice@10.0.0.5>;expires=60",
            peer(1),
        );
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert!(matches!(r.lookup("alice", T0 + 59), Lookup::Bindings(b) if b.len() == 1));
        assert_eq!(r.lookup("alice", T0 + 60), Lookup::NotRegistered);
        assert_eq!(r.expire(T0 + 59), 0);
        assert_eq!(r.expire(T0 + 60), 1);
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn stale_nonce_is_rechallenged_with_stale() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let extra = format!("Contact: <sip:alice@10.0.0.5>\n{}", alice_auth(&ch, 1));
        let resp = r.handle_register(&register("alice", 2, &extra), peer(1), T0 + 300);
        assert_eq!(resp.status, 401);
        let fresh: Vec<Challenge> = resp
            .headers
            .get_all("WWW-Authenticate")
            .map(|v| Challenge::parse(v).expect("parses"))
            .collect();
        assert_eq!(fresh.len(), 2);
        assert!(fresh.iter().all(|c| c.stale));
        // The same credentials with a wrong password are not told "stale".
        let wrong = answer(
            &ch,
            "WWW-Authenticate",
            Algorithm::Sha256,
            "alice",
            "nope",
            "REGISTER",
            1,
        );
        let extra = format!("Contact: <sip:alice@10.0.0.5>\n{}", authorization(&wrong));
        let resp = r.handle_register(&register("alice", 3, &extra), peer(1), T0 + 300);
        assert_eq!(resp.status, 403);
    }

    #[test]
    fn replayed_nonce_count_is_rechallenged_and_a_higher_one_accepted() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let extra = format!("Contact: <sip:alice@10.0.0.5>\n{}", alice_auth(&ch, 1));
        assert_eq!(
            r.handle_register(&register("alice", 2, &extra), peer(1), T0)
                .status,
            200
        );
        // A captured REGISTER sent again, with a new CSeq to get past the
        // ordering check: the nonce count gives it away.
        let replay = r.handle_register(&register("alice", 3, &extra), peer(2), T0 + 1);
        assert_eq!(replay.status, 401);
        assert!(replay
            .headers
            .get_all("WWW-Authenticate")
            .all(|v| Challenge::parse(v).is_ok_and(|c| c.stale)));
        let Lookup::Bindings(b) = r.lookup("alice", T0 + 1) else {
            panic!("still registered");
        };
        assert!(b.iter().all(|b| b.source == peer(1)));
        let extra = format!("Contact: <sip:alice@10.0.0.5>\n{}", alice_auth(&ch, 2));
        assert_eq!(
            r.handle_register(&register("alice", 4, &extra), peer(1), T0 + 2)
                .status,
            200
        );
    }

    #[test]
    fn forged_nonce_gets_a_fresh_challenge() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        // The same phone against a restarted registrar.
        let mut restarted = Registrar::new(
            RegistrarConfig::default(),
            users(),
            &mut StdRng::seed_from_u64(2),
        )
        .expect("valid config");
        let extra = format!("Contact: <sip:alice@10.0.0.5>\n{}", alice_auth(&ch, 1));
        let resp = restarted.handle_register(&register("alice", 2, &extra), peer(1), T0);
        assert_eq!(resp.status, 401);
        assert!(resp
            .headers
            .get_all("WWW-Authenticate")
            .all(|v| Challenge::parse(v).is_ok_and(|c| !c.stale)));
    }

    #[test]
    fn cseq_must_grow_within_a_call_id() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let first = format!("Contact: <sip:alice@10.0.0.5>\n{}", alice_auth(&ch, 1));
        assert_eq!(
            r.handle_register(&register("alice", 5, &first), peer(1), T0)
                .status,
            200
        );
        let older = format!(
            "Contact: <sip:alice@10.0.0.5>\nExpires: 0\n{}",
            alice_auth(&ch, 2)
        );
        let resp = r.handle_register(&register("alice", 5, &older), peer(1), T0);
        assert_eq!(resp.status, 400);
        assert!(resp.reason.contains("CSeq"), "{}", resp.reason);
        assert_eq!(r.binding_count(), 1);
        // Another Call-ID (a rebooted phone) may start low.
        let other = format!(
            "Contact: <sip:alice@10.0.0.5>\nExpires: 0\n{}",
            alice_auth(&ch, 3)
        );
        let ok = r.handle_register(
            &register_in("reg-2@10.0.0.5", "alice", 1, &other),
            peer(1),
            T0,
        );
        assert_eq!(ok.status, 200, "{}", ok.reason);
        assert_eq!(r.binding_count(), 0);
    }

    #[test]
    fn contacts_are_capped_oldest_first_and_instance_replaces() {
        let cfg = RegistrarConfig {
            max_contacts: 2,
            ..RegistrarConfig::default()
        };
        let mut r = registrar_with(cfg);
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        for (i, host) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            let n = u32::try_from(i).expect("small") + 1;
            let extra = format!("Contact: <sip:alice@{host}>\n{}", alice_auth(&ch, n));
            let ok = r.handle_register(&register("alice", 1 + n, &extra), peer(1), T0);
            assert_eq!(ok.status, 200, "{}", ok.reason);
        }
        let Lookup::Bindings(b) = r.lookup("alice", T0) else {
            panic!("registered");
        };
        let hosts: Vec<&str> = b.iter().map(|b| b.contact.uri.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.2", "10.0.0.3"]);

        // A phone that moved keeps its instance: its binding is replaced.
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000a95a0e128>\"";
        let extra = format!(
            "Contact: <sip:alice@10.0.0.9>;{inst}\n{}",
            alice_auth(&ch, 4)
        );
        assert_eq!(
            r.handle_register(&register("alice", 10, &extra), peer(1), T0)
                .status,
            200
        );
        let extra = format!(
            "Contact: <sip:alice@192.0.2.50>;{inst}\n{}",
            alice_auth(&ch, 5)
        );
        let ok = r.handle_register(&register("alice", 11, &extra), peer(3), T0);
        assert_eq!(ok.status, 200, "{}", ok.reason);
        let Lookup::Bindings(b) = r.lookup("alice", T0) else {
            panic!("registered");
        };
        let hosts: Vec<&str> = b.iter().map(|b| b.contact.uri.host.as_str()).collect();
        assert_eq!(hosts, ["10.0.0.3", "192.0.2.50"]);
        assert_eq!(
            b.last().and_then(|b| b.instance.as_deref()),
            Some("<urn:uuid:00000000-0000-1000-8000-000a95a0e128>")
        );
        assert_eq!(r.binding_count(), 2);
    }

    #[test]
    fn malformed_requests_get_400_naming_the_problem() {
        let mut r = registrar();
        let cases = [
            (
                register("alice", 1, "Authorization: Digest username=\"alice\n"),
                "unterminated",
            ),
            (
                register(
                    "alice",
                    1,
                    "Authorization: Digest realm=\"kordon\", nonce=\"n\"\n",
                ),
                "missing username",
            ),
            (
                request(
                    "REGISTER sip:kordon.example SIP/2.0\n\
                     Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\n\
                     From: <sip:kordon.example>;tag=1\n\
                     To: <sip:kordon.example>\n\
                     Call-ID: x\n\
                     CSeq: 1 REGISTER\n\
                     Content-Length: 0\n\n",
                ),
                "no user part",
            ),
            (
                request(
                    "REGISTER sip:kordon.example SIP/2.0\n\
                     Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx\n\
                     From: <sip:a@kordon.example>;tag=1\n\
                     To: <sip:a@kordon.example>\n\
                     CSeq: 1 REGISTER\n\
                     Content-Length: 0\n\n",
                ),
                "missing Call-ID",
            ),
        ];
        for (req, needle) in cases {
            let resp = r.handle_register(&req, peer(1), T0);
            assert_eq!(resp.status, 400, "{needle}: {}", resp.reason);
            assert!(resp.reason.starts_with("Bad Request - "), "{}", resp.reason);
            assert!(resp.reason.contains(needle), "{needle}: {}", resp.reason);
        }
        // After authentication: a bad expires parameter.
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let extra = format!(
            "Contact: <sip:alice@10.0.0.5>;expires=never\n{}",
            alice_auth(&ch, 1)
        );
        let resp = r.handle_register(&register("alice", 2, &extra), peer(1), T0);
        assert_eq!(resp.status, 400);
        assert!(resp.reason.contains("expires"), "{}", resp.reason);
        let extra = format!(
            "Contact: <sip:alice@10.0.0.5>\nExpires: soon\n{}",
            alice_auth(&ch, 2)
        );
        let resp = r.handle_register(&register("alice", 3, &extra), peer(1), T0);
        assert_eq!(resp.status, 400);
        assert_eq!(resp.reason, "Bad Request - bad Expires");
        // Extensions we lack.
        let resp = r.handle_register(&register("alice", 4, "Require: gruu\n"), peer(1), T0);
        assert_eq!(resp.status, 420);
        assert_eq!(resp.headers.get("Unsupported"), Some("gruu"));
    }

    #[test]
    fn credentials_for_other_realms_are_skipped() {
        let mut r = registrar();
        let ch = r.handle_register(&register("alice", 1, ""), peer(1), T0);
        let extra = format!(
            "Contact: <sip:alice@10.0.0.5>\n\
             Authorization: Digest username=\"a\", realm=\"carrier\", nonce=\"n\", uri=\"sip:x\", response=\"00\"\n\
             {}",
            alice_auth(&ch, 1)
        );
        let ok = r.handle_register(&register("alice", 2, &extra), peer(1), T0);
        assert_eq!(ok.status, 200, "{}", ok.reason);
    }

    #[test]
    fn invite_is_challenged_with_407_then_authenticated() {
        let mut r = registrar();
        let AuthOutcome::Respond(ch) = r.authenticate(&invite(""), T0) else {
            panic!("no credentials yet");
        };
        assert_eq!(ch.status, 407);
        assert_eq!(ch.headers.get_all("Proxy-Authenticate").count(), 2);
        assert!(ch.headers.get("WWW-Authenticate").is_none());

        let c = answer(
            &ch,
            "Proxy-Authenticate",
            Algorithm::Md5,
            "alice",
            "alice-secret",
            "INVITE",
            1,
        );
        let outcome = r.authenticate(&invite(&format!("Proxy-Authorization: {c}\n")), T0 + 1);
        assert_eq!(
            outcome,
            AuthOutcome::Authenticated {
                user: "alice".into()
            }
        );

        // Credentials in the wrong header do not count.
        let c = answer(
            &ch,
            "Proxy-Authenticate",
            Algorithm::Sha256,
            "alice",
            "alice-secret",
            "INVITE",
            1,
        );
        let AuthOutcome::Respond(resp) = r.authenticate(&invite(&authorization(&c)), T0) else {
            panic!("Authorization is not Proxy-Authorization");
        };
        assert_eq!(resp.status, 407);

        // A REGISTER's response does not authenticate an INVITE.
        let c = answer(
            &ch,
            "Proxy-Authenticate",
            Algorithm::Sha256,
            "alice",
            "alice-secret",
            "REGISTER",
            1,
        );
        let outcome = r.authenticate(&invite(&format!("Proxy-Authorization: {c}\n")), T0);
        assert!(
            matches!(outcome, AuthOutcome::Respond(ref resp) if resp.status == 403),
            "{outcome:?}"
        );

        let c = answer(
            &ch,
            "Proxy-Authenticate",
            Algorithm::Sha256,
            "alice",
            "wrong",
            "INVITE",
            2,
        );
        let outcome = r.authenticate(&invite(&format!("Proxy-Authorization: {c}\n")), T0);
        assert!(
            matches!(outcome, AuthOutcome::Respond(ref resp) if resp.status == 403),
            "{outcome:?}"
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut dup = users();
        dup.extend(users());
        let err = Registrar::new(RegistrarConfig::default(), dup, &mut rng).expect_err("duplicate");
        assert!(
            err.starts_with("users[2].username") && err.contains("duplicate"),
            "{err}"
        );

        let mut empty = users();
        if let Some(u) = empty.first_mut() {
            u.password.clear();
        }
        let err = Registrar::new(RegistrarConfig::default(), empty, &mut rng).expect_err("empty");
        assert!(err.starts_with("users[0].password"), "{err}");

        let cfg = RegistrarConfig {
            algorithms: vec!["SHA-512-256".into()],
            ..RegistrarConfig::default()
        };
        let err = Registrar::new(cfg, users(), &mut rng).expect_err("algorithm");
        assert!(err.starts_with("registrar.algorithms"), "{err}");

        let cfg = RegistrarConfig {
            default_expires: 30,
            ..RegistrarConfig::default()
        };
        let err = Registrar::new(cfg, users(), &mut rng).expect_err("expires");
        assert!(err.starts_with("registrar.default_expires"), "{err}");
    }
}

//! Result records (one JSON line each) and the markdown tables built from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::gen::Outcome;

/// One measured point of relay load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayResult {
    /// Name of the relay set-up (e.g. `kordon-io_uring`, `fwd`, `rtpengine`).
    pub label: String,
    /// `kordon`, `fwd` or `rtpengine`.
    pub target: String,
    /// What the point is for: `grid` (fixed load), `search` (max rate) or free text.
    pub tag: String,
    /// Streams (sessions), each with two directions.
    pub streams: u64,
    /// Asked rate, packets/s, both directions together.
    pub rate_pps: u64,
    /// Measuring window, s.
    pub duration_s: f64,
    /// Packets sent in the window.
    pub sent: u64,
    /// Packets of the window received back.
    pub received: u64,
    /// `sent / duration`.
    pub sent_pps: f64,
    /// `received / duration`: the forwarded rate.
    pub recv_pps: f64,
    /// `1 − received / sent`, in %.
    pub loss_pct: f64,
    /// Stream-directions that received nothing sent in the window's last second.
    pub dead_streams: u64,
    /// Stream-directions in total (2 × streams).
    pub stream_dirs: u64,
    /// Added latency, µs: median.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// Relay CPU time (utime+stime, all threads) per forwarded packet, ns.
    pub relay_cpu_ns_per_pkt: Option<f64>,
    /// Relay CPU time over the window as a fraction of one core.
    pub relay_cpu_util: Option<f64>,
    /// Busy time of the relay's CPU (incl. softirq, ksoftirqd) per forwarded packet, ns.
    pub relay_core_ns_per_pkt: Option<f64>,
    /// Generator CPU time over the window as a fraction of one core.
    pub gen_cpu_util: Option<f64>,
    /// The generator sent at least 99 % of the asked packets in the window.
    pub gen_reached_target: bool,
    /// Receive-buffer drops on the generator's sockets in the window.
    pub gen_udp_drops: Option<u64>,
    /// Receive-buffer drops on every other UDP socket (the relay's) in the window.
    pub relay_udp_drops: Option<u64>,
    /// Sends the kernel refused, whole run.
    pub send_errors: u64,
    /// Datagrams received that were not the bench's.
    pub foreign: u64,
    /// All criteria met: loss < max, no dead stream, p50 < max, generator on target.
    pub pass: bool,
    /// Which criteria failed.
    pub fail_reasons: Vec<String>,
    /// `none`, `generator` (the generator, not the relay, was the limit) or `relay`.
    pub limit: String,
}

/// Pass criteria of a point.
#[derive(Debug, Clone, Copy)]
pub struct Criteria {
    /// Highest loss allowed, %.
    pub max_loss_pct: f64,
    /// Highest median latency allowed, µs.
    pub max_p50_us: f64,
}

/// Identity of a point, to label its result.
pub struct PointInfo {
    /// See [`RelayResult::label`].
    pub label: String,
    /// See [`RelayResult::target`].
    pub target: String,
    /// See [`RelayResult::tag`].
    pub tag: String,
    /// Asked rate, packets/s.
    pub rate_pps: u64,
}

impl RelayResult {
    /// Derives the reported figures from a run's counters.
    pub fn from_outcome(info: PointInfo, o: &Outcome, c: Criteria) -> Self {
        let secs = o.window_ns as f64 / 1e9;
        let per_pkt = |ns: Option<u64>| {
            ns.filter(|_| o.received > 0)
                .map(|ns| ns as f64 / o.received as f64)
        };
        let util = |ns: Option<u64>| ns.map(|ns| ns as f64 / o.window_ns.max(1) as f64);
        let loss_pct = if o.sent == 0 {
            100.0
        } else {
            (1.0 - o.received as f64 / o.sent as f64).max(0.0) * 100.0
        };
        let us = |q: f64| o.latency.quantile(q) as f64 / 1000.0;
        let asked = info.rate_pps as f64 * secs;
        let gen_reached_target = o.sent as f64 >= 0.99 * asked;
        let p50_us = us(0.5);
        let mut fail_reasons = Vec::new();
        if !gen_reached_target {
            fail_reasons.push(format!(
                "generator sent {:.1} % of the asked rate",
                100.0 * o.sent as f64 / asked.max(1.0)
            ));
        }
        if loss_pct >= c.max_loss_pct {
            fail_reasons.push(format!("loss {loss_pct:.3} %"));
        }
        if o.dead > 0 {
            fail_reasons.push(format!("{} dead stream-directions", o.dead));
        }
        if p50_us >= c.max_p50_us {
            fail_reasons.push(format!("p50 {p50_us:.0} µs"));
        }
        let pass = fail_reasons.is_empty();
        let gen_udp_drops = o.udp_drops.map(|d| d.mine);
        let lost = o.sent.saturating_sub(o.received);
        // The generator is the limit when it could not send the asked rate, or
        // when most of the loss happened in its own receive buffers.
        let limit = if pass {
            "none"
        } else if !gen_reached_target || (lost > 0 && gen_udp_drops.unwrap_or(0) * 2 >= lost) {
            "generator"
        } else {
            "relay"
        };
        RelayResult {
            label: info.label,
            target: info.target,
            tag: info.tag,
            streams: o.stream_dirs / 2,
            rate_pps: info.rate_pps,
            duration_s: secs,
            sent: o.sent,
            received: o.received,
            sent_pps: o.sent as f64 / secs,
            recv_pps: o.received as f64 / secs,
            loss_pct,
            dead_streams: o.dead,
            stream_dirs: o.stream_dirs,
            p50_us,
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: o.latency.max() as f64 / 1000.0,
            relay_cpu_ns_per_pkt: per_pkt(o.relay_cpu_ns),
            relay_cpu_util: util(o.relay_cpu_ns),
            relay_core_ns_per_pkt: per_pkt(o.relay_core_ns),
            gen_cpu_util: util(o.gen_cpu_ns),
            gen_reached_target,
            gen_udp_drops,
            relay_udp_drops: o.udp_drops.map(|d| d.others),
            send_errors: o.send_errors,
            foreign: o.foreign,
            pass,
            fail_reasons,
            limit: limit.to_string(),
        }
    }

    /// A one-paragraph human summary.
    pub fn summary(&self) -> String {
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        format!(
            "{label} {tag} {streams} streams @ {rate} pps: sent {sent:.0} pps, received {recv:.0} pps, loss {loss:.3} %, \
             dead {dead}/{dirs}, latency p50/p99/p99.9/max {p50:.1}/{p99:.1}/{p999:.1}/{max:.1} µs, \
             relay CPU {cpu} ns/pkt ({util} core; CPU busy {core} ns/pkt), generator CPU {gutil} core, \
             drops gen/relay {gd}/{rd}, send errors {se}, foreign {fo} => {verdict}",
            label = self.label,
            tag = self.tag,
            streams = self.streams,
            rate = self.rate_pps,
            sent = self.sent_pps,
            recv = self.recv_pps,
            loss = self.loss_pct,
            dead = self.dead_streams,
            dirs = self.stream_dirs,
            p50 = self.p50_us,
            p99 = self.p99_us,
            p999 = self.p999_us,
            max = self.max_us,
            cpu = opt(self.relay_cpu_ns_per_pkt, 0),
            util = opt(self.relay_cpu_util, 2),
            core = opt(self.relay_core_ns_per_pkt, 0),
            gutil = opt(self.gen_cpu_util, 2),
            gd = self.gen_udp_drops.map_or("-".into(), |v| v.to_string()),
            rd = self.relay_udp_drops.map_or("-".into(), |v| v.to_string()),
            se = self.send_errors,
            fo = self.foreign,
            verdict = if self.pass {
                "PASS".to_string()
            } else {
                format!("FAIL ({}; limit: {})", self.fail_reasons.join(", "), self.limit)
            },
        )
    }
}

/// Session set-up rate and idle memory of a relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionsResult {
    /// Name of the relay set-up.
    pub label: String,
    /// Sessions asked.
    pub count: u64,
    /// Requests in flight.
    pub concurrency: u64,
    /// Sessions created.
    pub created: u64,
    /// Creates that failed.
    pub create_failed: u64,
    /// First create error, if any.
    pub first_error: Option<String>,
    /// Created sessions per second (wall time of the whole batch).
    pub create_per_s: f64,
    /// Create RPC latency, ms: median.
    pub create_p50_ms: f64,
    /// 99th percentile, ms.
    pub create_p99_ms: f64,
    /// Deleted sessions per second.
    pub delete_per_s: f64,
    /// Deletes that failed.
    pub delete_failed: u64,
    /// Relay VmRSS before creating, bytes.
    pub rss_before: Option<u64>,
    /// Relay VmRSS with all sessions, after a settle, bytes.
    pub rss_after: Option<u64>,
    /// Relay VmRSS after deleting them, bytes.
    pub rss_after_delete: Option<u64>,
    /// `(rss_after − rss_before) / created`, bytes.
    pub rss_per_session: Option<f64>,
    /// Open descriptors added per session (sockets; their kernel buffers are not in RSS).
    pub fds_per_session: Option<f64>,
}

/// Any record of the JSON-lines output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// A relay load point.
    Relay(RelayResult),
    /// A session set-up measurement.
    Sessions(SessionsResult),
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

fn kpps(rate: u64) -> String {
    if rate.is_multiple_of(1000) {
        format!("{}k", rate / 1000)
    } else {
        format!("{:.1}k", rate as f64 / 1000.0)
    }
}

/// Renders the markdown tables: CPU per packet at fixed loads (ratio against
/// `baseline`), the max sustained rate per relay, and session figures.
pub fn markdown(records: &[Record], baseline: &str) -> String {
    let relay: Vec<&RelayResult> = records
        .iter()
        .filter_map(|r| match r {
            Record::Relay(x) => Some(x),
            _ => None,
        })
        .collect();
    let mut labels: Vec<&str> = Vec::new();
    for r in &relay {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    let mut out = String::new();

    // Fixed loads.
    let grid: Vec<&&RelayResult> = relay.iter().filter(|r| r.tag == "grid").collect();
    if !grid.is_empty() {
        let mut points: Vec<(u64, u64)> = grid.iter().map(|r| (r.rate_pps, r.streams)).collect();
        points.sort();
        points.dedup();
        let _ = writeln!(out, "### Relay CPU per forwarded packet at fixed loads\n");
        let _ = writeln!(
            out,
            "| relay | load (pps) | streams | CPU ns/pkt | × {baseline} | CPU-1 busy ns/pkt | relay CPU (cores) | forwarded pps | loss % | dead | p50 / p99 / p99.9 µs | generator |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (rate, streams) in points {
            let base = grid
                .iter()
                .find(|r| r.label == baseline && r.rate_pps == rate && r.streams == streams)
                .and_then(|r| r.relay_cpu_ns_per_pkt);
            for label in &labels {
                let Some(r) = grid
                    .iter()
                    .rev()
                    .find(|r| r.label == *label && r.rate_pps == rate && r.streams == streams)
                else {
                    continue;
                };
                let ratio = match (r.relay_cpu_ns_per_pkt, base) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                let gen = if r.gen_reached_target {
                    "on target".to_string()
                } else {
                    format!(
                        "{:.0} % of target",
                        100.0 * r.sent_pps / r.rate_pps.max(1) as f64
                    )
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.3} | {} | {:.0} / {:.0} / {:.0} | {} |",
                    r.label,
                    kpps(rate),
                    streams,
                    f(r.relay_cpu_ns_per_pkt, 0),
                    ratio,
                    f(r.relay_core_ns_per_pkt, 0),
                    f(r.relay_cpu_util, 2),
                    r.recv_pps,
                    r.loss_pct,
                    r.dead_streams,
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    gen
                );
            }
        }
        out.push('\n');
    }

    // Max sustained rate.
    let search: Vec<&&RelayResult> = relay.iter().filter(|r| r.tag == "search").collect();
    if !search.is_empty() {
        let _ = writeln!(out, "### Highest rate sustained (loss < 0.1 %, no dead stream, p50 < 1 ms, generator on target)\n");
        let _ = writeln!(
            out,
            "| relay | streams | max sustained (pps) | CPU ns/pkt there | relay CPU (cores) there | p50 / p99 / p99.9 µs there | next step | limited by |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for label in &labels {
            let mut steps: Vec<&&&RelayResult> =
                search.iter().filter(|r| r.label == *label).collect();
            if steps.is_empty() {
                continue;
            }
            steps.sort_by_key(|r| r.rate_pps);
            // The rate search stops at the first failure; count passes below it.
            let first_fail = steps.iter().position(|r| !r.pass);
            let passed = &steps[..first_fail.unwrap_or(steps.len())];
            let best = passed.last();
            let (next, why) = match first_fail.map(|i| steps[i]) {
                Some(r) => (
                    format!("{} failed: {}", kpps(r.rate_pps), r.fail_reasons.join(", ")),
                    if r.limit == "generator" {
                        "generator (not the relay)".to_string()
                    } else {
                        "relay".to_string()
                    },
                ),
                None => (
                    "(no failure up to the last step)".to_string(),
                    "search range".to_string(),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                label,
                steps[0].streams,
                best.map_or("< first step".to_string(), |r| kpps(r.rate_pps)),
                best.map_or("-".into(), |r| f(r.relay_cpu_ns_per_pkt, 0)),
                best.map_or("-".into(), |r| f(r.relay_cpu_util, 2)),
                best.map_or("-".into(), |r| format!(
                    "{:.0} / {:.0} / {:.0}",
                    r.p50_us, r.p99_us, r.p999_us
                )),
                next,
                why
            );
        }
        out.push('\n');
    }

    // Sessions.
    let mut sessions: BTreeMap<&str, &SessionsResult> = BTreeMap::new();
    for r in records {
        if let Record::Sessions(s) = r {
            sessions.insert(&s.label, s);
        }
    }
    if !sessions.is_empty() {
        let _ = writeln!(out, "### Session set-up over gRPC and idle memory\n");
        let _ = writeln!(
            out,
            "| relay | sessions | in flight | created/s | create p50 / p99 ms | deleted/s | failed | RSS growth/session | fds/session |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for s in sessions.values() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} / {:.2} | {:.0} | {} | {} | {} |",
                s.label,
                s.created,
                s.concurrency,
                s.create_per_s,
                s.create_p50_ms,
                s.create_p99_ms,
                s.delete_per_s,
                s.create_failed + s.delete_failed,
                s.rss_per_session.map_or("-".into(), |b| format!(
                    "{:.0} B ({:.2} KiB)",
                    b,
                    b / 1024.0
                )),
                f(s.fds_per_session, 2)
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::Histogram;

    fn outcome(sent: u64, received: u64) -> Outcome {
        let mut latency = Histogram::new();
        for _ in 0..received {
            latency.record(50_000);
        }
        Outcome {
            window_ns: 1_000_000_000,
            sent,
            received,
            send_errors: 0,
            foreign: 0,
            latency,
            dead: 0,
            stream_dirs: 200,
            relay_cpu_ns: Some(100_000_000),
            relay_core_ns: None,
            gen_cpu_ns: None,
            udp_drops: None,
        }
    }

    fn info(rate: u64) -> PointInfo {
        PointInfo {
            label: "fwd".into(),
            target: "fwd".into(),
            tag: "grid".into(),
            rate_pps: rate,
        }
    }

    const C: Criteria = Criteria {
        max_loss_pct: 0.1,
        max_p50_us: 1000.0,
    };

    #[test]
    fn a_clean_point_passes_and_reports_cpu_per_packet() {
        let r = RelayResult::from_outcome(info(10_000), &outcome(10_000, 10_000), C);
        assert!(r.pass, "{:?}", r.fail_reasons);
        assert_eq!(r.relay_cpu_ns_per_pkt, Some(10_000.0));
        assert_eq!(r.limit, "none");
    }

    #[test]
    fn a_short_generator_is_blamed_not_the_relay() {
        let r = RelayResult::from_outcome(info(10_000), &outcome(9_000, 9_000), C);
        assert!(!r.pass);
        assert_eq!(r.limit, "generator");
    }

    #[test]
    fn loss_fails_the_point_on_the_relay() {
        let r = RelayResult::from_outcome(info(10_000), &outcome(10_000, 9_900), C);
        assert!(!r.pass);
        assert_eq!(r.limit, "relay");
    }

    #[test]
    fn records_round_trip_through_json_and_render() {
        let r = RelayResult::from_outcome(info(10_000), &outcome(10_000, 10_000), C);
        let line = serde_json::to_string(&Record::Relay(r)).unwrap();
        assert!(line.contains("\"kind\":\"relay\""));
        let back: Record = serde_json::from_str(&line).unwrap();
        let md = markdown(&[back], "fwd");
        assert!(md.contains("| fwd | 10k | 100 | 10000 | 1.00 |"), "{md}");
    }
}

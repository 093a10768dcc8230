//! Result records (one JSON line each) and the markdown tables built from them.

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
    /// Busy time (wall − idle − iowait) of the relay's CPU per forwarded packet, ns;
    /// includes softirq work in ksoftirqd and anything else that ran there.
    pub relay_core_ns_per_pkt: Option<f64>,
    /// Generator CPU time over the window as a fraction of one core.
    pub gen_cpu_util: Option<f64>,
    /// Busy share of the generator's CPU over the window (more than the generator
    /// itself used = something else ran there).
    #[serde(default)]
    pub gen_core_util: Option<f64>,
    /// The generator sent at least 99 % of the asked packets in the window.
    pub gen_reached_target: bool,
    /// Receive-buffer drops on the generator's sockets, warm-up to drain.
    pub gen_udp_drops: Option<u64>,
    /// Receive-buffer drops on the relay's sockets, warm-up to drain.
    pub relay_udp_drops: Option<u64>,
    /// Receive-buffer drops on other sockets of the host (someone else's traffic).
    pub other_udp_drops: Option<u64>,
    /// Sends the kernel refused, whole run.
    pub send_errors: u64,
    /// Datagrams received that were not the bench's.
    pub foreign: u64,
    /// Other work ran on the relay's or the generator's CPU during the window:
    /// that CPU was busier than its owner by more than [`DISTURBED_GAP`] of a core.
    #[serde(default)]
    pub disturbed: bool,
    /// All criteria met: loss < max, no dead stream, p50 < max, generator on target.
    pub pass: bool,
    /// Which criteria failed.
    pub fail_reasons: Vec<String>,
    /// `none`, `relay` (latency over the limit, ≥ 95 % of a core used, or loss
    /// not in the generator's buffers) or `generator` (it could not send the
    /// asked rate, or most loss was in its own buffers, the relay being fine).
    pub limit: String,
}

/// Share of one core from which the relay counts as saturated.
pub const RELAY_SATURATED: f64 = 0.95;

/// Gap (share of a core) between a CPU's busy time and its owner's CPU time
/// from which a point counts as disturbed by other work.
pub const DISTURBED_GAP: f64 = 0.2;

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
        let gap = |core: Option<u64>, own: Option<u64>| match (util(core), util(own)) {
            (Some(c), Some(o)) => c - o > DISTURBED_GAP,
            _ => false,
        };
        let disturbed = gap(o.relay_core_ns, o.relay_cpu_ns) || gap(o.gen_core_ns, o.gen_cpu_ns);
        let pass = fail_reasons.is_empty();
        let gen_udp_drops = o.udp_drops.map(|d| d.mine);
        let lost = o.sent.saturating_sub(o.received);
        // Who was the limit. Latency is measured from the stamp just before
        // sendmmsg to the kernel's arrival stamp at the sink's socket, so neither
        // the generator's send delay nor its receive backlog is in it: a median
        // over the limit means queueing on the relay's side. A relay using
        // (nearly) a whole core is the limit too. Otherwise the generator is,
        // when it could not send the asked rate or when most of the loss
        // happened in its own receive buffers.
        let relay_saturated = util(o.relay_cpu_ns).is_some_and(|u| u >= RELAY_SATURATED);
        let limit = if pass {
            "none"
        } else if relay_saturated || p50_us >= c.max_p50_us {
            "relay"
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
            gen_core_util: util(o.gen_core_ns),
            gen_reached_target,
            gen_udp_drops,
            relay_udp_drops: o.udp_drops.map(|d| d.relay),
            other_udp_drops: o.udp_drops.map(|d| d.others),
            send_errors: o.send_errors,
            foreign: o.foreign,
            pass,
            disturbed,
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
             relay CPU {cpu} ns/pkt ({util} core; CPU busy {core} ns/pkt), generator CPU {gutil} core (CPU busy {gcore}), \
             drops gen/relay/other {gd}/{rd}/{od}, send errors {se}, foreign {fo} => {verdict}{dist}",
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
            gcore = opt(self.gen_core_util, 2),
            gd = self.gen_udp_drops.map_or("-".into(), |v| v.to_string()),
            rd = self.relay_udp_drops.map_or("-".into(), |v| v.to_string()),
            od = self.other_udp_drops.map_or("-".into(), |v| v.to_string()),
            se = self.send_errors,
            dist = if self.disturbed { " [disturbed: other work ran on a bench CPU]" } else { "" },
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

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn median_of<'a>(
    rs: &[&'a RelayResult],
    field: impl Fn(&'a RelayResult) -> Option<f64>,
) -> Option<f64> {
    median(rs.iter().filter_map(|r| field(r)).collect())
}

/// The outcome of one run's rate search for one relay.
struct SearchRun<'a> {
    best: Option<&'a RelayResult>,
    first_fail: Option<&'a RelayResult>,
}

fn search_run<'a>(run: &'a [Record], label: &str) -> Option<SearchRun<'a>> {
    let mut steps: Vec<&RelayResult> = run
        .iter()
        .filter_map(|r| match r {
            Record::Relay(x) if x.tag == "search" && x.label == label => Some(x),
            _ => None,
        })
        .collect();
    if steps.is_empty() {
        return None;
    }
    // A failure disturbed by other work that was tried again does not count.
    let all = steps.clone();
    steps.retain(|r| {
        r.pass
            || !r.disturbed
            || !all
                .iter()
                .any(|o| o.rate_pps == r.rate_pps && !std::ptr::eq(*o, *r))
    });
    steps.sort_by_key(|r| r.rate_pps);
    // The search stops at its first failure: only passes below the lowest
    // failing rate count.
    let fail = steps.iter().position(|r| !r.pass);
    let passed = &steps[..fail.unwrap_or(steps.len())];
    Some(SearchRun {
        best: passed.last().copied(),
        first_fail: fail.map(|i| steps[i]),
    })
}

/// Renders the markdown tables from one or more runs (each a list of records):
/// CPU per packet at fixed loads (medians over runs, ratio against `baseline`),
/// the highest sustained rate per relay (median over runs), and session figures.
pub fn markdown(runs: &[Vec<Record>], baseline: &str) -> String {
    let relay: Vec<&RelayResult> = runs
        .iter()
        .flatten()
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
    let n_runs = runs.len();
    let medians_note = if n_runs > 1 {
        format!(" (medians of {n_runs} runs)")
    } else {
        String::new()
    };

    // Fixed loads.
    let grid: Vec<&RelayResult> = relay.iter().copied().filter(|r| r.tag == "grid").collect();
    if !grid.is_empty() {
        let mut points: Vec<(u64, u64)> = grid.iter().map(|r| (r.rate_pps, r.streams)).collect();
        points.sort();
        points.dedup();
        let _ = writeln!(
            out,
            "### Relay CPU per forwarded packet at fixed loads{medians_note}\n"
        );
        let _ = writeln!(
            out,
            "| relay | load (pps) | streams | CPU ns/pkt | × {baseline} | CPU-1 busy ns/pkt | relay CPU (cores) | forwarded pps | loss % | dead | p50 / p99 / p99.9 µs | generator |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (rate, streams) in points {
            // Undisturbed runs when there are any.
            let at = |label: &str| -> Vec<&RelayResult> {
                let all: Vec<&RelayResult> = grid
                    .iter()
                    .copied()
                    .filter(|r| r.label == label && r.rate_pps == rate && r.streams == streams)
                    .collect();
                let clean: Vec<&RelayResult> =
                    all.iter().copied().filter(|r| !r.disturbed).collect();
                if clean.is_empty() {
                    all
                } else {
                    clean
                }
            };
            let base = median_of(&at(baseline), |r| r.relay_cpu_ns_per_pkt);
            for label in &labels {
                let rs = at(label);
                if rs.is_empty() {
                    continue;
                }
                let cpu = median_of(&rs, |r| r.relay_cpu_ns_per_pkt);
                let ratio = match (cpu, base) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                let short: Vec<String> = rs
                    .iter()
                    .filter(|r| !r.gen_reached_target)
                    .map(|r| format!("{:.1} %", 100.0 * r.sent_pps / r.rate_pps.max(1) as f64))
                    .collect();
                let mut gen = if short.is_empty() {
                    "on target".to_string()
                } else {
                    format!("short: sent {} of target", short.join(", "))
                };
                if rs.iter().all(|r| r.disturbed) {
                    gen.push_str("; disturbed by other work");
                }
                let m = |field: fn(&RelayResult) -> Option<f64>| median_of(&rs, field);
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} |",
                    label,
                    kpps(rate),
                    streams,
                    f(cpu, 0),
                    ratio,
                    f(m(|r| r.relay_core_ns_per_pkt), 0),
                    f(m(|r| r.relay_cpu_util), 2),
                    f(m(|r| Some(r.recv_pps)), 0),
                    f(m(|r| Some(r.loss_pct)), 3),
                    f(m(|r| Some(r.dead_streams as f64)), 0),
                    f(m(|r| Some(r.p50_us)), 0),
                    f(m(|r| Some(r.p99_us)), 0),
                    f(m(|r| Some(r.p999_us)), 0),
                    gen
                );
            }
        }
        out.push('\n');
    }

    // Max sustained rate.
    if relay.iter().any(|r| r.tag == "search") {
        let _ = writeln!(
            out,
            "### Highest rate sustained (loss < 0.1 %, no dead stream, p50 < 1 ms, generator on target){medians_note}\n\n\
             `*`: that run's search was stopped by a step disturbed by other work on a bench CPU; such runs are left out of the median when others exist.\n"
        );
        let _ = writeln!(
            out,
            "| relay | streams | max sustained (pps) | per run | CPU ns/pkt there | relay CPU (cores) there | p50 / p99 / p99.9 µs there | next rate tried | limited by |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for label in &labels {
            let per_run: Vec<SearchRun> = runs
                .iter()
                .filter_map(|run| search_run(run, label))
                .collect();
            if per_run.is_empty() {
                continue;
            }
            let maxima: Vec<u64> = per_run
                .iter()
                .map(|s| s.best.map_or(0, |b| b.rate_pps))
                .collect();
            let disturbed: Vec<bool> = per_run
                .iter()
                .map(|s| s.first_fail.is_some_and(|r| r.disturbed))
                .collect();
            // Runs stopped by a disturbed failure only count when all were.
            let mut sorted: Vec<u64> = maxima
                .iter()
                .zip(&disturbed)
                .filter(|(_, d)| !**d)
                .map(|(m, _)| *m)
                .collect();
            if sorted.is_empty() {
                sorted = maxima.clone();
            }
            sorted.sort();
            // Lower median: a rate some run actually sustained.
            let med = sorted[(sorted.len() - 1) / 2];
            let Some(rep) = per_run
                .iter()
                .zip(&disturbed)
                .filter(|(_, d)| !**d || disturbed.iter().all(|x| *x))
                .map(|(s, _)| s)
                .find(|s| s.best.map_or(0, |b| b.rate_pps) == med)
            else {
                continue;
            };
            let best = rep.best;
            let (next, why) = match rep.first_fail {
                Some(r) => (
                    format!("{}: {}", kpps(r.rate_pps), r.fail_reasons.join(", ")),
                    if r.limit == "generator" {
                        "generator (not the relay)".to_string()
                    } else {
                        "relay".to_string()
                    },
                ),
                None => ("(none failed)".to_string(), "search range".to_string()),
            };
            let streams = best.or(rep.first_fail).map_or(0, |r| r.streams);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label,
                streams,
                if med == 0 {
                    "< first step".to_string()
                } else {
                    kpps(med)
                },
                maxima
                    .iter()
                    .zip(&disturbed)
                    .map(|(&m, &d)| {
                        let v = if m == 0 { "-".to_string() } else { kpps(m) };
                        if d {
                            format!("{v}*")
                        } else {
                            v
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
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
    let sessions: Vec<&SessionsResult> = runs
        .iter()
        .flatten()
        .filter_map(|r| match r {
            Record::Sessions(s) => Some(s),
            _ => None,
        })
        .collect();
    if !sessions.is_empty() {
        let _ = writeln!(
            out,
            "### Session set-up over gRPC and idle memory{medians_note}\n"
        );
        let _ = writeln!(
            out,
            "| relay | sessions | in flight | created/s | create p50 / p99 ms | deleted/s | failed | RSS growth/session | fds/session |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        let mut seen: Vec<&str> = Vec::new();
        for s in &sessions {
            if seen.contains(&s.label.as_str()) {
                continue;
            }
            seen.push(&s.label);
            let rs: Vec<&&SessionsResult> =
                sessions.iter().filter(|x| x.label == s.label).collect();
            let m = |field: fn(&SessionsResult) -> Option<f64>| {
                median(rs.iter().filter_map(|x| field(x)).collect())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                s.label,
                f(m(|x| Some(x.created as f64)), 0),
                s.concurrency,
                f(m(|x| Some(x.create_per_s)), 0),
                f(m(|x| Some(x.create_p50_ms)), 2),
                f(m(|x| Some(x.create_p99_ms)), 2),
                f(m(|x| Some(x.delete_per_s)), 0),
                rs.iter()
                    .map(|x| x.create_failed + x.delete_failed)
                    .sum::<u64>(),
                m(|x| x.rss_per_session).map_or("-".into(), |b| format!(
                    "{:.0} B ({:.2} KiB)",
                    b,
                    b / 1024.0
                )),
                f(m(|x| x.fds_per_session), 2)
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
            gen_core_ns: None,
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
    fn a_saturated_relay_is_the_limit_even_with_a_short_generator() {
        let mut o = outcome(9_000, 9_000);
        o.relay_cpu_ns = Some(990_000_000);
        let r = RelayResult::from_outcome(info(10_000), &o, C);
        assert_eq!(r.limit, "relay");
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
        let md = markdown(&[vec![back]], "fwd");
        assert!(md.contains("| fwd | 10k | 100 | 10000 | 1.00 |"), "{md}");
    }
}

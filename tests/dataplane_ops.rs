//! Operating the binary: `kordon config check` / `config print`, the Prometheus
//! endpoint, logs, and several instances side by side.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn kordon(args: &[&str]) -> Output {
    Command::new(kordon_bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running kordon")
}

/// `kordon config check` on `text`: (exit code, stderr).
fn check(text: &str) -> (Option<i32>, String) {
    let dir = temp_dir("check");
    let path = write_file(&dir, "k.toml", text);
    let out = kordon(&["config", "check", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(text: &str, key: &str) {
    let (code, err) = check(text);
    assert_eq!(code, Some(2), "exit code 2 for {text:?}; stderr: {err}");
    assert!(err.contains(key), "stderr names {key:?}: {err}");
}

#[test]
fn config_check_refuses_bad_files_naming_the_key() {
    assert_refused("[dataplane]\nworkerz = 2\n", "workerz");
    assert_refused("[sip]\nport = 5060\n", "port");
    assert_refused("[dataplane]\nworkers = \"two\"\n", "workers");
    assert_refused(
        "[dataplane.interfaces.edge]\nbind = \"127.0.0.1\"\nport_min = 40000\nport_max = 30000\n",
        "dataplane.interfaces.edge.port_max",
    );
    assert_refused(
        "[dataplane.interfaces.edge]\nbind = \"127.0.0.1\"\nport_min = 40000\nport_max = 40999\nmtu = 1500\n",
        "mtu",
    );
    assert_refused(
        "[dataplane]\nmax_packets_per_turn = 0\n",
        "dataplane.max_packets_per_turn",
    );
    assert_refused(
        "[dataplane]\nlatch_mode = \"learn-any\"\n",
        "dataplane.latch_mode",
    );
    assert_refused("[metrics]\nlisten = \"nowhere\"\n", "metrics.listen");
    assert_refused("this is not toml", "k.toml");
}

#[test]
fn config_check_accepts_a_good_file_and_a_missing_file_is_refused() {
    let (code, err) = check("[dataplane]\nworkers = 2\n");
    assert_eq!(code, Some(0), "{err}");
    let out = kordon(&["config", "check", "--config", "/nonexistent/kordon.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kordon.toml"));
}

#[test]
fn config_print_defaults_parse_back_to_the_same_configuration() {
    let out = kordon(&["config", "print"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    for key in [
        "[dataplane]",
        "grpc_listen",
        "max_packets_per_turn",
        "relatch_idle_ms",
        "[metrics]",
    ] {
        assert!(printed.contains(key), "defaults show {key}:\n{printed}");
    }
    let dir = temp_dir("print");
    let path = write_file(&dir, "defaults.toml", &printed);
    let p = path.to_str().unwrap();
    assert_eq!(
        kordon(&["config", "check", "--config", p]).status.code(),
        Some(0)
    );
    let again = kordon(&["config", "print", "--config", p]);
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        printed,
        "print is a fixed point"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dataplane_refuses_to_start_on_a_bad_config() {
    let dir = temp_dir("bad-start");
    let path = write_file(&dir, "k.toml", "[dataplane]\nworkerz = 1\n");
    let out = kordon(&["--config", path.to_str().unwrap(), "dataplane"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("workerz"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_instances_run_side_by_side() {
    let (k1, k2) = (Kordon::start(Config::new()), Kordon::start(Config::new()));
    assert_ne!(k1.grpc, k2.grpc);
    for (k, id) in [(&k1, "one"), (&k2, "two")] {
        let (a, b) = (Peer::bind("127.0.0.1"), Peer::bind("127.0.0.1"));
        let call = k.call(id, &a, &b);
        relay_one(&a, call.a_local, &b, call.b_local, 1, 1);
        relay_one(&b, call.b_local, &a, call.a_local, 2, 1);
    }
    for (k, id) in [(&k1, "one"), (&k2, "two")] {
        let ids: Vec<String> = k.list().into_iter().map(|s| s.session_id).collect();
        assert_eq!(ids, [id], "each instance has its own sessions");
        assert_eq!(k.total().rx_packets, 2);
    }
}

#[test]
fn a_second_instance_on_a_taken_grpc_port_exits_and_says_so() {
    let k = Kordon::start(Config::new());
    let text = Config::new().toml(k.grpc.port(), free_tcp_port());
    let dir = temp_dir("taken");
    let path = write_file(&dir, "k.toml", &text);
    let mut child = Command::new(kordon_bin())
        .args(["--config", path.to_str().unwrap(), "dataplane"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until("the second instance to exit", WAIT, || {
        child.try_wait().unwrap()
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&k.grpc.to_string()),
        "stderr names the address: {err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The first one is unharmed.
    k.total();
}

#[test]
fn logs_go_to_stderr_and_stdout_stays_empty() {
    let k = Kordon::start(Config::new());
    wait_until("the start-up log line", WAIT, || {
        k.log().contains("data plane started").then_some(())
    });
    let (out, err) = (k.stdout(), k.stderr());
    assert!(
        err.contains("data plane started"),
        "logs on stderr; stderr: {err:?}; stdout: {out:?}"
    );
    assert!(out.is_empty(), "nothing on stdout: {out:?}");
}

/// GET `path` from `addr`: (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = wait_until("the metrics listener", WAIT, || {
        TcpStream::connect(addr).ok()
    });
    s.set_read_timeout(Some(RECV_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .expect("reading the HTTP answer");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head and body");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

#[test]
fn metrics_endpoint_exposes_counters_and_drop_reasons() {
    let k = Kordon::start(Config::new());
    let (a, b, stranger) = (
        Peer::bind("127.0.0.1"),
        Peer::bind("127.0.0.1"),
        Peer::bind("127.0.0.2"),
    );
    let call = k.call("metrics", &a, &b);
    relay(&a, call.a_local, &b, call.b_local, 1, 1, 3);
    stranger.send(call.b_local, &rtp(9, 9));
    k.wait_session(&call.id, "dropping the stranger", |s| {
        dropped(leg_b(s), "unexpected_source") == 1
    });

    let deadline = Instant::now() + WAIT;
    let (status, body) = loop {
        let (status, body) = http_get(k.metrics, "/metrics");
        // The listener comes up beside gRPC; a first answer may predate traffic.
        if sample(&body, "kordon_dataplane_rx_packets_total{worker=\"0\"}") == Some(4)
            || Instant::now() > deadline
        {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        sample(&body, "kordon_dataplane_rx_packets_total{worker=\"0\"}"),
        Some(4),
        "{body}"
    );
    assert_eq!(
        sample(&body, "kordon_dataplane_tx_packets_total{worker=\"0\"}"),
        Some(3),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "kordon_dataplane_dropped_packets_total{worker=\"0\",reason=\"unexpected_source\"}"
        ),
        Some(1),
        "{body}"
    );
    assert!(
        body.contains("# TYPE kordon_dataplane_rx_packets_total counter"),
        "{body}"
    );
    let backend = k.total().backend;
    assert_eq!(
        sample(
            &body,
            &format!("kordon_dataplane_sessions{{worker=\"0\",backend=\"{backend}\"}}")
        ),
        Some(1),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "kordon_dataplane_free_port_pairs{interface=\"edge\"}"
        ),
        Some(15),
        "{body}"
    );

    let (status, _) = http_get(k.metrics, "/nope");
    assert!(status.contains("404"), "{status}");
}

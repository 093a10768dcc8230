//! After warm-up, relaying packets allocates nothing: a counting global
//! allocator watches the whole process while real UDP packets cross a session,
//! for both IO backends.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kordon_dataplane::config::{BackendChoice, DataplaneConfig, InterfaceConfig};
use kordon_proto::v1 as pb;
use kordon_proto::v1::dataplane_server::Dataplane as _;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn endpoint(s: &UdpSocket) -> pb::Endpoint {
    let a = s.local_addr().unwrap();
    pb::Endpoint {
        ip: a.ip().to_string(),
        port: u32::from(a.port()),
    }
}

fn relay_allocations(backend: BackendChoice, port_min: u16) -> u64 {
    let mut cfg = DataplaneConfig {
        workers: 1,
        pin_workers: false,
        backend,
        ..Default::default()
    };
    cfg.interfaces.clear();
    cfg.interfaces.insert(
        "internal".into(),
        InterfaceConfig {
            bind: "127.0.0.1".parse().unwrap(),
            advertised: None,
            port_min,
            port_max: port_min + 15,
        },
    );
    let dp = kordon_dataplane::Dataplane::start(&cfg).unwrap();
    let svc = dp.service();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let info = rt
        .block_on(
            svc.create_session(tonic::Request::new(pb::CreateSessionRequest {
                session_id: "zero".into(),
                leg_a: Some(pb::LegSpec {
                    interface: "internal".into(),
                    remote_rtp: Some(endpoint(&a)),
                    rewrite_ssrc: true,
                    ..Default::default()
                }),
                leg_b: Some(pb::LegSpec {
                    interface: "internal".into(),
                    remote_rtp: Some(endpoint(&b)),
                    ..Default::default()
                }),
                inactivity_timeout_secs: 0,
            })),
        )
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let port_a = info.leg_a.unwrap().local_rtp.unwrap().port as u16;
    let port_b = info.leg_b.unwrap().local_rtp.unwrap().port as u16;
    let to_a: std::net::SocketAddr = ([127, 0, 0, 1], port_a).into();
    let to_b: std::net::SocketAddr = ([127, 0, 0, 1], port_b).into();
    let mut pkt = [0u8; 172];
    pkt[0] = 0x80;
    let mut rx = [0u8; 2048];
    // A blocking receive may be interrupted (EINTR) by a signal to the
    // process; that is no lost packet, so it is simply retried.
    fn recv(s: &UdpSocket, buf: &mut [u8]) -> usize {
        loop {
            match s.recv_from(buf) {
                Ok((n, _)) => return n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("receive: {e}"),
            }
        }
    }
    let mut round = |seq: u16| {
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        a.send_to(&pkt, to_a).unwrap();
        assert_eq!(recv(&b, &mut rx), 172);
        b.send_to(&pkt, to_b).unwrap();
        assert_eq!(recv(&a, &mut rx), 172);
    };
    // Warm-up: latching (an event), first touches of buffers.
    for seq in 0..200 {
        round(seq);
    }
    let before = ALLOCS.load(Ordering::SeqCst);
    for seq in 200..2200 {
        round(seq);
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    drop(rt);
    dp.stop();
    after - before
}

#[test]
fn relaying_allocates_nothing_after_warm_up() {
    let uring = relay_allocations(BackendChoice::IoUring, 47200);
    let mmsg = relay_allocations(BackendChoice::Mmsg, 47300);
    assert_eq!(
        uring, 0,
        "io_uring backend allocated {uring} times for 4000 packets"
    );
    assert_eq!(
        mmsg, 0,
        "mmsg backend allocated {mmsg} times for 4000 packets"
    );
}

//! Packet-path parsers: demux, RTP and RTCP header parsing, in-place rewrite.
//!
//! Groups are named by what varies, so one run compares them side by side:
//! `packet/classify`, `packet/rtp_parse/{plain,csrc_ext_pad}`,
//! `packet/rtcp_parse/sr_sdes`, `packet/rtp_rewrite`. Each iteration handles one
//! packet. Figures go to `bench/RESULTS.md`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kordon_dataplane::packet::{classify, rtcp, rtp};

/// A 20 ms PCMU packet: 12-byte header, 160 bytes of payload.
fn pcmu() -> Vec<u8> {
    let mut buf = vec![0xffu8; 172];
    rtp::write_header(&mut buf, 0, false, 1000, 160_000, 0x1234_5678)
        .expect("172 bytes hold a 12-byte header");
    buf
}

/// Two CSRCs, a one-byte-header extension (RFC 8285) of two words, 20 bytes of
/// Opus and 4 bytes of padding: every optional part of the header at once.
fn csrc_ext_pad() -> Vec<u8> {
    let mut buf = vec![0u8; 12];
    rtp::write_header(&mut buf, 111, true, 1000, 48_000, 0x1234_5678)
        .expect("12 bytes hold a 12-byte header");
    if let Some(b0) = buf.first_mut() {
        *b0 |= 0x20 | 0x10 | 2;
    }
    buf.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    buf.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02]);
    buf.extend_from_slice(&[0x10, 0xff, 0x22, 0x12, 0x34, 0, 0, 0]);
    buf.extend_from_slice(&[0xaa; 20]);
    buf.extend_from_slice(&[0, 0, 0, 4]);
    buf
}

/// A sender report without report blocks followed by an SDES CNAME chunk.
fn sr_sdes() -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&[0x80, 200, 0, 6, 0x12, 0x34, 0x56, 0x78]);
    buf.extend_from_slice(&[0; 20]);
    buf.extend_from_slice(&[0x81, 202, 0, 4, 0x12, 0x34, 0x56, 0x78]);
    buf.extend_from_slice(&[1, 6, b'k', b'o', b'r', b'd', b'o', b'n', 0, 0, 0, 0]);
    buf
}

fn bench_classify(c: &mut Criterion) {
    let pkt = pcmu();
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("classify", |b| b.iter(|| classify(black_box(&pkt))));
    g.finish();
}

fn bench_rtp_parse(c: &mut Criterion) {
    let plain = pcmu();
    let full = csrc_ext_pad();
    assert!(rtp::parse(&plain).is_ok() && rtp::parse(&full).is_ok());
    let mut g = c.benchmark_group("packet/rtp_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("plain", |b| b.iter(|| rtp::parse(black_box(&plain))));
    g.bench_function("csrc_ext_pad", |b| b.iter(|| rtp::parse(black_box(&full))));
    g.finish();
}

fn bench_rtcp_parse(c: &mut Criterion) {
    let pkt = sr_sdes();
    assert!(rtcp::parse(&pkt).is_ok());
    let mut g = c.benchmark_group("packet/rtcp_parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sr_sdes", |b| b.iter(|| rtcp::parse(black_box(&pkt))));
    g.finish();
}

fn bench_rtp_rewrite(c: &mut Criterion) {
    let mut pkt = pcmu();
    let mut seq = 0u16;
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rtp_rewrite", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            rtp::set_ssrc_seq(black_box(&mut pkt), black_box(0xcafe_f00d), seq);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_classify,
    bench_rtp_parse,
    bench_rtcp_parse,
    bench_rtp_rewrite
);
criterion_main!(benches);

//! Signaling message handling without sockets: splitting a read buffer into lines
//! (`codec::LineCodec`), parsing the requests a server sees most (ping, login, invite with
//! a 0.9 KiB offer), parsing the events a client sees (incoming-call, an `ok` reply), and
//! encoding a request.
//!
//! Run: `cargo bench -p magpie-benches --bench signaling`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use magpie_signaling::codec::{DEFAULT_MAX_LINE, LineCodec};
use magpie_signaling::proto::{
    CallId, Event, Invite, Request, UserName, encode_ok, parse_request, parse_server_message,
};
use serde_json::json;

/// A media offer of realistic size (about 0.9 KiB: codecs, a dozen candidates).
fn offer() -> serde_json::Value {
    let candidates: Vec<String> = (0..12)
        .map(|i| {
            format!(
                "candidate:{i} 1 udp 2130706431 192.0.2.{i} {} typ host",
                40000 + i
            )
        })
        .collect();
    json!({
        "sdp": "v=0 o=- 0 0 IN IP4 0.0.0.0 s=magpie",
        "audio": {"codec": "opus", "pt": 111, "clock": 48000, "fec": true, "ptime": 20},
        "video": {"codec": "H264", "pt": 96, "clock": 90000, "profile": "42e01f"},
        "candidates": candidates,
    })
}

fn lines() -> Vec<(&'static str, Vec<u8>)> {
    let invite = Request::Invite(Invite {
        to: "bob".into(),
        offer: offer(),
    });
    vec![
        ("ping", br#"{"type":"ping","id":42}"#.to_vec()),
        (
            "login",
            br#"{"type":"login","id":1,"user":"alice","password":"correct horse"}"#.to_vec(),
        ),
        ("invite_1k_offer", invite.encode(7)),
    ]
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("signaling_parse");
    group.throughput(Throughput::Elements(1));
    for (name, line) in lines() {
        eprintln!("{name}: {} bytes", line.len());
        group.bench_function(format!("request_{name}"), |b| {
            b.iter(|| parse_request(black_box(&line)).expect("a valid request"))
        });
    }
    let incoming = Event::IncomingCall {
        call_id: CallId(7),
        from: UserName::parse("alice").expect("a valid name"),
        offer: offer(),
    }
    .encode();
    group.bench_function("event_incoming_call_1k_offer", |b| {
        b.iter(|| parse_server_message(black_box(&incoming)).expect("a valid event"))
    });
    let ok = encode_ok(7, &json!({"call_id": 7}));
    group.bench_function("reply_ok", |b| {
        b.iter(|| parse_server_message(black_box(&ok)).expect("a valid reply"))
    });
    let invite = Request::Invite(Invite {
        to: "bob".into(),
        offer: offer(),
    });
    group.bench_function("encode_invite_1k_offer", |b| {
        b.iter(|| black_box(&invite).encode(7))
    });
    group.finish();
}

/// Splits a buffer of 100 mixed lines, as one large read from a busy client would hold.
fn framing(c: &mut Criterion) {
    let codec = LineCodec::new(DEFAULT_MAX_LINE);
    let mut input = Vec::new();
    for i in 0..100 {
        let (_, line) = &lines()[i % 3];
        input.extend_from_slice(line);
        input.extend_from_slice(b"\r\n");
    }
    let mut group = c.benchmark_group("signaling_framing");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("split_100_lines", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Some(line) = codec.decode(&mut buf).expect("lines within the limit") {
                n += line.len();
            }
            n
        })
    });
    group.finish();
}

criterion_group! {
    name = signaling;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = parse, framing
}
criterion_main!(signaling);

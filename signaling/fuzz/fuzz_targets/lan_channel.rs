//! Bytes from a LAN peer, split into arbitrary reads, into both ends of the direct
//! channel: before the handshake (responder and initiator) and after it (a channel that
//! finished a genuine handshake). Nothing may panic, a refused line closes the channel
//! for good, and every refusal is counted.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use magpie_signaling::lan::{Channel, Identity};
use magpie_signaling::proto::UserName;

fn name(s: &str) -> UserName {
    UserName::parse(s).expect("a valid name")
}

fn pair() -> (Channel, Channel) {
    let alice = Channel::initiator(Identity::from_seed([1; 32]), name("alice"), [11; 32]);
    let bob = Channel::responder(Identity::from_seed([2; 32]), name("bob"), [22; 32]);
    (alice, bob)
}

fn carry(from: &mut Channel, to: &mut Channel) {
    let mut buf = BytesMut::new();
    while let Some(line) = from.poll_transmit() {
        buf.extend_from_slice(&line);
    }
    while let Ok(Some(_)) = to.handle_input(&mut buf) {}
}

fn feed(channel: &mut Channel, cuts: &[u8], data: &[u8]) {
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut cuts = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut failed = false;
    while !rest.is_empty() {
        let take = cuts.next().unwrap_or(rest.len()).min(rest.len());
        buf.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match channel.handle_input(&mut buf) {
                Ok(Some(_)) => assert!(!failed, "an event after a refusal"),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    assert!(channel.refusals().total() > 0, "a refusal not counted");
                    assert!(!channel.is_established());
                    break;
                }
            }
        }
        if failed {
            return;
        }
    }
}

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (which, cuts, data) = input;
    match which % 3 {
        0 => {
            let (_, mut bob) = pair();
            feed(&mut bob, &cuts, &data);
        }
        1 => {
            let (mut alice, _) = pair();
            let _ = alice.poll_transmit();
            feed(&mut alice, &cuts, &data);
        }
        _ => {
            let (mut alice, mut bob) = pair();
            for _ in 0..4 {
                carry(&mut alice, &mut bob);
                carry(&mut bob, &mut alice);
            }
            assert!(alice.is_established() && bob.is_established());
            feed(&mut bob, &cuts, &data);
        }
    }
});

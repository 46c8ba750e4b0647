//! Arbitrary sequences of call requests, losses and clock steps against the call
//! state machine: it must never panic, never put a user in two calls, and its ring
//! timer must never be in the past after `handle_timeout`.
#![no_main]

use std::collections::HashSet;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use magpie_signaling::calls::{CallEvent, Calls};
use magpie_signaling::proto::{CallId, EndReason, UserName};
use tokio::time::Instant;

#[derive(Debug, Arbitrary)]
enum Operation {
    Invite(u8, u8),
    Accept(u8, u8),
    Reject(u8, u8),
    Cancel(u8, u8),
    Hangup(u8, u8),
    Drop(u8),
    Advance(u16),
    Shutdown,
}

fuzz_target!(|ops: Vec<Operation>| {
    let users: Vec<UserName> =
        (0..6).map(|i| UserName::parse(&format!("user{i}")).expect("valid name")).collect();
    let user = |i: u8| &users[usize::from(i) % users.len()];
    let call = |i: u8| CallId(u64::from(i % 8) + 1);
    let mut calls = Calls::new(Duration::from_secs(30), 1);
    let mut now = Instant::now();
    let mut ended = HashSet::new();
    for op in ops {
        match op {
            Operation::Invite(a, b) => {
                let _ = calls.handle_invite(now, user(a), user(b));
            }
            Operation::Accept(u, c) => {
                let _ = calls.handle_accept(now, user(u), call(c));
            }
            Operation::Reject(u, c) => {
                let _ = calls.handle_reject(now, user(u), call(c));
            }
            Operation::Cancel(u, c) => {
                let _ = calls.handle_cancel(now, user(u), call(c));
            }
            Operation::Hangup(u, c) => {
                let _ = calls.handle_hangup(now, user(u), call(c));
            }
            Operation::Drop(u) => calls.drop_user(now, user(u), EndReason::PeerLost),
            Operation::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                calls.handle_timeout(now);
                assert!(calls.poll_timeout().is_none_or(|t| t > now), "timer in the past");
            }
            Operation::Shutdown => calls.end_all(now, EndReason::ServerShutdown),
        }
        while let Some(event) = calls.poll_event() {
            if let CallEvent::Ended(end) = event {
                assert!(ended.insert(end.id), "a call ended twice");
                assert!(!end.to_notify().is_empty());
                assert!(end.created <= end.ended);
            }
        }
        let mut busy = HashSet::new();
        for u in &users {
            if let Some(id) = calls.call_of(u) {
                assert!(!ended.contains(&id), "a user is in an ended call");
                busy.insert(u.clone());
            }
        }
        assert!(calls.len() * 2 == busy.len(), "each call has exactly two distinct users");
    }
});

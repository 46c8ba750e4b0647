//! A bounded load run on loopback: starts an in-process server with a temporary
//! database, logs in N users, then measures call set-up (invite sent -> callee has
//! `incoming-call`, and accept sent -> caller has `accepted`) and chat delivery
//! (message sent -> recipient has it) over N/2 concurrent pairs. Prints percentiles.
//!
//! ```text
//! cargo run --release -p magpie-signaling --example load -- 100 20
//! ```
//! (users, rounds per pair; defaults 100 and 20)

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use magpie_signaling::client::{self, Client, Events, Incoming};
use magpie_signaling::proto::Event;
use magpie_signaling::{Config, server};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::time::timeout;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let users = args
        .next()
        .transpose()
        .context("users must be a number")?
        .unwrap_or(100);
    let rounds = args
        .next()
        .transpose()
        .context("rounds must be a number")?
        .unwrap_or(20);
    let users = users.max(2) & !1;

    let dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = Config::new(dir.path().join("load.db"))
        .set_max_per_address(users + 10)
        .set_rate(1000, 1000);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server::run(listener, config, async move {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..users {
        let name = format!("user{i:04}");
        let (client, events) = client::connect(addr).await?;
        client.register(&name, "load-test-password").await?;
        client.login(&name, "load-test-password").await?;
        clients.push((name, client, events));
    }
    let login_time = started.elapsed();

    let started = Instant::now();
    let mut pairs = Vec::new();
    while let (Some(callee), Some(caller)) = (clients.pop(), clients.pop()) {
        pairs.push(tokio::spawn(pair(caller, callee, rounds)));
    }
    let mut samples = Samples::default();
    for pair in pairs {
        samples.merge(pair.await??);
    }
    let run_time = started.elapsed();
    let _ = stop.send(());
    server.await??;

    println!(
        "{users} users registered and logged in in {:.2} s (argon2id each)",
        login_time.as_secs_f64()
    );
    println!(
        "{} pairs x {rounds} rounds in {:.2} s",
        users / 2,
        run_time.as_secs_f64()
    );
    report("invite -> incoming-call", &mut samples.ring);
    report("accept -> accepted", &mut samples.answer);
    report("message -> delivered", &mut samples.chat);
    Ok(())
}

#[derive(Default)]
struct Samples {
    ring: Vec<Duration>,
    answer: Vec<Duration>,
    chat: Vec<Duration>,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.ring.extend(other.ring);
        self.answer.extend(other.answer);
        self.chat.extend(other.chat);
    }
}

async fn pair(
    (_, caller, mut caller_events): (String, Client, Events),
    (callee_name, callee, mut callee_events): (String, Client, Events),
    rounds: usize,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    for _ in 0..rounds {
        let sent = Instant::now();
        let call = caller.invite(&callee_name, json!({"sdp": "offer"})).await?;
        wait_for(&mut callee_events, |e| {
            matches!(e, Event::IncomingCall { .. })
        })
        .await?;
        samples.ring.push(sent.elapsed());
        let sent = Instant::now();
        callee.accept(call, json!({"sdp": "answer"})).await?;
        wait_for(&mut caller_events, |e| matches!(e, Event::Accepted { .. })).await?;
        samples.answer.push(sent.elapsed());
        let sent = Instant::now();
        caller.message(&callee_name, "hello").await?;
        let message = wait_for(&mut callee_events, |e| matches!(e, Event::Message(_))).await?;
        samples.chat.push(sent.elapsed());
        if let Event::Message(message) = message {
            callee.ack(&[message.message_id]).await?;
        }
        caller.hangup(call).await?;
        wait_for(&mut callee_events, |e| matches!(e, Event::Hangup { .. })).await?;
    }
    Ok(samples)
}

async fn wait_for(events: &mut Events, wanted: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    loop {
        match timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Incoming::Event(event))) if wanted(&event) => return Ok(event),
            Ok(Some(_)) => continue,
            Ok(None) => bail!("connection closed"),
            Err(_) => bail!("no event within 10 s"),
        }
    }
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    println!(
        "{what:<24} n={:<5} p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        samples.len(),
        at(0.50),
        at(0.95),
        at(0.99),
        at(1.0)
    );
}

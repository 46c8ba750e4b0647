//! A scripted signaling session against a running `magpie-server`, printed as a
//! transcript: alice and bob register and log in, alice calls bob, it rings, bob
//! answers, they chat, alice hangs up, bob misses a message while offline and gets it
//! at his next login, the call history is shown, and the server's STUN port reports
//! our reflexive address.
//!
//! With a fingerprint (the `tls_fingerprint` of the server's ready line) it talks TLS
//! and trusts exactly that certificate; without one, plain TCP to a `--plain` server.
//!
//! ```text
//! cargo run --example scripted_call -- 127.0.0.1:7400 2A:75:9D:...:B1
//! cargo run --example scripted_call -- 127.0.0.1:7400        # magpie-server --plain
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use magpie_signaling::client::{self, Client, Events, Incoming};
use magpie_signaling::proto::{ErrorCode, Event};
use magpie_signaling::stun_server;
use magpie_signaling::tls::{Fingerprint, Trust};
use serde_json::json;
use tokio::net::UdpSocket;
use tokio::time::timeout;

const PASSWORD: &str = "correct horse battery";

struct Transcript {
    start: Instant,
}

impl Transcript {
    fn say(&self, who: &str, what: impl std::fmt::Display) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {who:<6} {what}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7400".into())
        .parse()
        .context("usage: scripted_call HOST:PORT [FINGERPRINT]")?;
    let tls = match std::env::args().nth(2) {
        Some(fingerprint) => {
            let fingerprint: Fingerprint = fingerprint.parse()?;
            Some(Trust::Fingerprint(fingerprint).client_config()?)
        }
        None => None,
    };
    let connect = async || -> anyhow::Result<(Client, Events)> {
        Ok(match &tls {
            Some(tls) => {
                client::connect_tls(&addr.to_string(), tls.clone(), Default::default()).await?
            }
            None => client::connect(addr).await?,
        })
    };
    let log = Transcript {
        start: Instant::now(),
    };

    let (alice, mut alice_events) = connect().await?;
    let hello = alice.hello();
    log.say(
        "server",
        format!(
            "hello: protocol v{}, heartbeat every {} s, {}",
            hello.version, hello.heartbeat_secs, hello.server
        ),
    );
    let (bob, mut bob_events) = connect().await?;
    for (name, client) in [("alice", &alice), ("bob", &bob)] {
        register(&log, name, client).await?;
        let ok = client.login(name, PASSWORD).await?;
        log.say(
            name,
            format!("login -> ok ({} stored messages)", ok.pending_messages),
        );
    }
    let presence = alice.watch(&["bob"]).await?;
    log.say(
        "alice",
        format!("watch bob -> online: {}", presence[0].online),
    );
    let online: Vec<String> = alice.who().await?.iter().map(ToString::to_string).collect();
    log.say("alice", format!("who -> {}", online.join(", ")));

    let offer =
        json!({"media": ["opus/48000/2", "H264/90000"], "candidates": ["192.0.2.10:50000"]});
    let call = alice.invite("bob", offer).await?;
    log.say("alice", format!("invite bob -> call {call}"));
    let incoming = expect(&mut bob_events).await?;
    log.say("bob", format!("<- {}", describe(&incoming)));
    let ringing = expect(&mut alice_events).await?;
    log.say("alice", format!("<- {}", describe(&ringing)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.accept(
        call,
        json!({"media": ["opus/48000/2"], "candidates": ["198.51.100.7:40000"]}),
    )
    .await?;
    log.say("bob", format!("accept call {call} -> ok"));
    let accepted = expect(&mut alice_events).await?;
    log.say("alice", format!("<- {}", describe(&accepted)));

    chat(
        &log,
        ("alice", &alice),
        ("bob", &bob, &mut bob_events),
        "Can you hear me?",
    )
    .await?;
    chat(
        &log,
        ("bob", &bob),
        ("alice", &alice, &mut alice_events),
        "Loud and clear.",
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    alice.hangup(call).await?;
    log.say("alice", format!("hangup call {call} -> ok"));
    let hangup = expect(&mut bob_events).await?;
    log.say("bob", format!("<- {}", describe(&hangup)));

    drop((bob, bob_events));
    log.say("bob", "disconnects");
    // alice sees bob leave, then writes to him while he is away.
    let gone = expect(&mut alice_events).await?;
    log.say("alice", format!("<- {}", describe(&gone)));
    let sent = alice.message("bob", "Call me back later!").await?;
    log.say(
        "alice",
        format!(
            "message bob -> stored as {} (delivered now: {})",
            sent.message_id, sent.delivered
        ),
    );
    let (bob, mut bob_events) = connect().await?;
    let ok = bob.login("bob", PASSWORD).await?;
    log.say(
        "bob",
        format!("login -> ok ({} stored messages)", ok.pending_messages),
    );
    let stored = expect(&mut bob_events).await?;
    log.say("bob", format!("<- {}", describe(&stored)));
    if let Event::Message(message) = &stored {
        bob.ack(&[message.message_id]).await?;
        log.say(
            "bob",
            format!("ack {} -> ok (deleted from the server)", message.message_id),
        );
    }

    log.say("alice", "history:");
    for record in alice.history().await? {
        let answered = record.answered.map_or("never".to_owned(), |a| {
            format!("+{} ms", a - record.created)
        });
        log.say(
            "",
            format!(
                "  call {} {} -> {}: answered {}, lasted {} ms, ended: {}",
                record.call_id,
                record.caller,
                record.callee,
                answered,
                record.ended - record.created,
                record.end_reason.as_str()
            ),
        );
    }
    let socket = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).await?;
    match stun_server::discover(&socket, addr, Duration::from_secs(2)).await {
        Ok(mapped) => log.say(
            "stun",
            format!("binding request to udp {addr} -> we are {mapped}"),
        ),
        Err(err) => log.say("stun", format!("no answer on udp {addr}: {err:#}")),
    }
    log.say("", "done");
    Ok(())
}

async fn register(log: &Transcript, name: &str, client: &Client) -> anyhow::Result<()> {
    match client.register(name, PASSWORD).await {
        Ok(()) => log.say(name, "register -> ok"),
        Err(err) if err.code() == Some(ErrorCode::UserExists) => {
            log.say(name, "register -> user-exists (from an earlier run)");
        }
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

async fn chat(
    log: &Transcript,
    (from, sender): (&str, &Client),
    (to, receiver, events): (&str, &Client, &mut Events),
    text: &str,
) -> anyhow::Result<()> {
    let sent = sender.message(to, text).await?;
    log.say(
        from,
        format!("message {to} {text:?} -> {}", sent.message_id),
    );
    let received = expect(events).await?;
    log.say(to, format!("<- {}", describe(&received)));
    if let Event::Message(message) = received {
        receiver.ack(&[message.message_id]).await?;
    }
    Ok(())
}

async fn expect(events: &mut Events) -> anyhow::Result<Event> {
    match timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Some(Incoming::Event(event))) => Ok(event),
        Ok(Some(Incoming::Error(err))) => bail!("server error: {err}"),
        Ok(None) => bail!("connection closed"),
        Err(_) => bail!("no event within 10 s"),
    }
}

fn describe(event: &Event) -> String {
    match event {
        Event::IncomingCall {
            call_id,
            from,
            offer,
        } => {
            format!("incoming-call {call_id} from {from}, offer {offer}")
        }
        Event::Ringing { call_id } => format!("ringing {call_id}"),
        Event::Accepted { call_id, answer } => format!("accepted {call_id}, answer {answer}"),
        Event::Rejected { call_id, .. } => format!("rejected {call_id}"),
        Event::Cancelled { call_id, .. } => format!("cancelled {call_id}"),
        Event::Missed { call_id, .. } => format!("missed {call_id}"),
        Event::Hangup { call_id, reason } => format!("hangup {call_id} ({})", reason.as_str()),
        Event::AnsweredElsewhere { call_id, accepted } => {
            let how = if *accepted { "answered" } else { "declined" };
            format!("{how} elsewhere {call_id}")
        }
        Event::Message(m) => format!("message {} from {}: {:?}", m.message_id, m.from, m.text),
        Event::Presence(p) => {
            format!(
                "presence: {} is {}",
                p.user,
                if p.online { "online" } else { "offline" }
            )
        }
        Event::Candidates(t) => format!("candidates {}: {} more", t.call_id, t.candidates.len()),
        Event::File(f) => format!(
            "file {} from {}: {}, {} bytes",
            f.file_id, f.from, f.file.name, f.file.size
        ),
        Event::ServerShutdown => "server-shutdown".into(),
    }
}

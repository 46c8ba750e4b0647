//! `magpie send` and the receiving side (`magpie receive`, and offers that reach a
//! running `magpie answer`): a file offer rides on the call machinery of signaling
//! (`invite` carries the [`TransferOffer`], `accept` the [`TransferAnswer`], `reject`
//! declines, `candidates` trickles the relay, `hangup` ends it), so the server's relay
//! permissions, ringing on every device and refusals work for files as for calls.

use std::net::SocketAddr;
use std::path::PathBuf;

use magpie_media::ice::Candidate;
use std::str::FromStr;

use magpie_media::netsim::{NetSim, NetSimConfig};
use magpie_media::srtp::exchange::Role;
use magpie_signaling::client::{Client, Events, Incoming};
use magpie_signaling::proto::{CallId, EndReason, ErrorCode, Event, UserName};
use tokio::sync::mpsc;
use tracing::debug;

use crate::cli::{CallArgs, ReceiveArgs, TransferArgs};
use crate::commands::{
    Error, await_answer, candidates_of, interrupted, refusal, relay_config, show_message,
    trickle_relay,
};
use crate::transfer::progress::Progress;
use crate::transfer::proto::{FileInfo, Reply, TransferAnswer, TransferOffer, human_size};
use crate::transfer::store::{Inbox, Incoming as IncomingFile};
use crate::transfer::{Side, describe_file, quic};

pub(crate) fn bind(args: &TransferArgs) -> SocketAddr {
    args.bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// `--sim`, parsed, with a fresh seed.
pub(crate) fn sim(args: &TransferArgs) -> Result<Option<NetSim>, Error> {
    let Some(spec) = &args.sim else {
        return Ok(None);
    };
    let config = NetSimConfig::from_str(spec).map_err(crate::engine::Error::from)?;
    Ok(Some(NetSim::new(config.set_seed(rand::random()))))
}

/// Relay settings for a transfer: the server's relay unless `--no-relay`, and required
/// with `--relay-only`.
fn relay_args(args: &TransferArgs) -> CallArgs {
    CallArgs {
        no_relay: args.no_relay,
        relay_only: args.relay_only,
        ..CallArgs::default()
    }
}

/// `magpie send TO PATH...`.
pub async fn send(
    client: &Client,
    mut events: Events,
    to: &str,
    paths: &[PathBuf],
    args: &TransferArgs,
    leave: bool,
    stun: Option<SocketAddr>,
) -> Result<(), Error> {
    let files = paths
        .iter()
        .map(|p| describe_file(p))
        .collect::<Result<Vec<FileInfo>, _>>()?;
    let sim = sim(args)?;
    let mut side = Side::new(bind(args), stun, args.relay_only).await?;
    if let Some(sim) = sim {
        side.set_sim(sim);
    }
    let offer = side.offer(files);
    let value = serde_json::to_value(&offer).expect("offers serialize");
    let call_id = match client.invite(to, value).await {
        Ok(call_id) => call_id,
        Err(e) if leave && e.code() == Some(ErrorCode::Offline) => {
            eprintln!("{to} is offline: leaving the file(s) on the server for their next login");
            return crate::mailbox::leave(client, to, paths, args.quiet).await;
        }
        Err(e) => return Err(refusal(e, to)),
    };
    let total = human_size(offer.total_size());
    eprintln!(
        "offering {} file(s), {total}, to {to} ...",
        offer.files.len()
    );
    trickle_relay(
        client,
        call_id,
        &relay_args(args),
        "the server offers none",
        async |config| side.allocate_relay(config).await,
    )
    .await?;
    let (answer, early) =
        await_answer(client, &mut events, call_id, to, false, Error::Declined).await?;
    let (trickle_tx, mut trickle) = mpsc::channel(16);
    if !early.is_empty() {
        let _ = trickle_tx.try_send(early);
    }
    let answer = match TransferAnswer::from_value(answer, &offer) {
        Ok(answer) => answer,
        Err(e) => {
            let _ = client.hangup(call_id).await;
            return Err(Error::Description(e.to_string()));
        }
    };
    if !show_replies(to, &offer, &answer) {
        let _ = client.hangup(call_id).await;
        return Err(Error::Declined(to.to_owned()));
    }
    let run = send_files(side, &offer, &answer, paths, args, &mut trickle);
    let lost = "the receiver went away (its connection to the server was lost)";
    let result = during_transfer(client, &mut events, call_id, trickle_tx, lost, run).await;
    let _ = client.hangup(call_id).await;
    show_sent(to, &result?);
    Ok(())
}

/// Says what the receiver's replies mean; `false` when it declined every file. The same
/// whichever channel carried the answer (signaling, or a direct LAN channel).
pub(crate) fn show_replies(to: &str, offer: &TransferOffer, answer: &TransferAnswer) -> bool {
    for (file, reply) in offer.files.iter().zip(&answer.replies) {
        match reply {
            Reply::Decline => eprintln!("{to} declined {}", file.name),
            Reply::Accept { offset } if *offset > 0 => eprintln!(
                "{to} has {} of {} already: resuming",
                human_size(*offset),
                file.name
            ),
            Reply::Accept { .. } => {}
        }
    }
    answer.replies.iter().any(|r| *r != Reply::Decline)
}

/// The sender's half once answered: the path, the safety code, the bytes.
pub(crate) async fn send_files(
    side: Side,
    offer: &TransferOffer,
    answer: &TransferAnswer,
    paths: &[PathBuf],
    args: &TransferArgs,
    trickle: &mut mpsc::Receiver<Vec<Candidate>>,
) -> Result<quic::SendReport, Error> {
    let progress = Progress::for_stderr(args.quiet);
    let connected = side.connect(Role::Caller, offer, answer, trickle).await?;
    say_connected(&connected);
    let peer = answer.fingerprint.0;
    let report = quic::send(
        connected.socket,
        &connected.identity,
        peer,
        offer,
        &answer.replies,
        paths,
        &progress,
    )
    .await?;
    Ok(report)
}

/// The line that ends a sender's transfer.
pub(crate) fn show_sent(to: &str, report: &quic::SendReport) {
    println!(
        "sent {} file(s) to {to}: {} bytes sent, {} bytes the receiver already had \
         (RTT {} ms, {} packets lost and resent)",
        report.files,
        report.bytes_sent,
        report.bytes_resumed,
        report.rtt.as_millis(),
        report.lost_packets
    );
}

/// Says which path the transfer takes and the code both people can compare.
fn say_connected(connected: &crate::transfer::Connected) {
    let socket = &connected.socket;
    let how = if socket.relayed() {
        "relayed via our relay"
    } else {
        "direct"
    };
    eprintln!(
        "path: {how} to {}; safety code {} (the same on both sides: nobody swapped keys)",
        socket.peer(),
        connected.safety_code
    );
}

/// Runs `work` while passing the peer's late candidates on and watching for its hangup.
/// When the server says the peer's connection was lost, the transfer ends at once with
/// `when_lost` rather than after QUIC's idle timeout.
async fn during_transfer<T>(
    client: &Client,
    events: &mut Events,
    call_id: CallId,
    trickle: mpsc::Sender<Vec<Candidate>>,
    when_lost: &str,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            incoming = events.recv() => match incoming {
                Some(Incoming::Event(Event::Candidates(t))) if t.call_id == call_id => {
                    let _ = trickle.try_send(candidates_of(t));
                }
                Some(Incoming::Event(Event::Message(m))) => show_message(client, &m).await,
                Some(Incoming::Event(Event::Hangup { call_id: id, reason }))
                    if id == call_id && reason == EndReason::PeerLost =>
                {
                    return Err(Error::Ended(when_lost.to_owned()));
                }
                // Any other end of the call on the server: the QUIC connection tells
                // this side what happened to the bytes.
                Some(Incoming::Event(other)) => debug!(?other, "event during a transfer"),
                Some(Incoming::Error(e)) => debug!(?e, "error during a transfer"),
                None => {}
            },
            _ = interrupted() => return Err(Error::Ended("interrupted".into())),
        }
    }
}

/// What the receiving side decided about an offer.
pub enum OfferDecision {
    /// Replies per file (some may be declines), and the files to receive into.
    Take(Vec<Reply>, Vec<Option<IncomingFile>>),
    /// Everything declined.
    Decline,
}

/// Shows an offer, and decides: files over the limit are declined; the rest are taken
/// with `--yes`, else after `ask` says yes.
pub async fn decide(
    from: &UserName,
    offer: &TransferOffer,
    args: &ReceiveArgs,
    inbox: &Inbox,
    ask: impl Future<Output = bool>,
) -> Result<OfferDecision, Error> {
    eprintln!("{from} offers {} file(s):", offer.files.len());
    let mut wanted = Vec::new();
    for file in &offer.files {
        let fits = file.size <= args.max_size;
        let note = match inbox.free_name(&file.name) {
            _ if !fits => format!(" — declined: over --max-size {}", human_size(args.max_size)),
            Some(name) if name != file.name.as_str() => format!(" (saved as {name})"),
            Some(_) => String::new(),
            None => " — declined: no free name".to_owned(),
        };
        eprintln!("  {}{note}", file.describe());
        wanted.push(fits && !note.contains("declined"));
    }
    if !wanted.iter().any(|w| *w) || !(args.yes || ask.await) {
        return Ok(OfferDecision::Decline);
    }
    let mut replies = Vec::new();
    let mut incoming = Vec::new();
    for (file, want) in offer.files.iter().zip(wanted) {
        if want {
            let prepared = inbox.prepare(file)?;
            replies.push(Reply::Accept {
                offset: prepared.offset(),
            });
            incoming.push(Some(prepared));
        } else {
            replies.push(Reply::Decline);
            incoming.push(None);
        }
    }
    Ok(OfferDecision::Take(replies, incoming))
}

/// Receives an offer that was accepted with `replies`: answers, finds the path, stores
/// the files and says where they went.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    client: &Client,
    events: &mut Events,
    call_id: CallId,
    from: &UserName,
    offer: TransferOffer,
    (replies, incoming): (Vec<Reply>, Vec<Option<IncomingFile>>),
    inbox: &Inbox,
    args: &TransferArgs,
    stun: Option<SocketAddr>,
) -> Result<(), Error> {
    let made = match sim(args) {
        Ok(sim) => Side::new(bind(args), stun, args.relay_only)
            .await
            .map(|side| (side, sim)),
        Err(e) => {
            let _ = client.reject(call_id).await;
            return Err(e);
        }
    };
    let mut side = match made {
        Ok((mut side, sim)) => {
            if let Some(sim) = sim {
                side.set_sim(sim);
            }
            side
        }
        Err(e) => {
            let _ = client.reject(call_id).await;
            return Err(e.into());
        }
    };
    if let Some(config) = relay_config(client, call_id, &relay_args(args)).await
        && let Err(e) = side.allocate_relay(config).await
    {
        debug!(error = %e, "receiving without a relay");
    }
    let answer = side.answer(replies);
    let value = serde_json::to_value(&answer).expect("answers serialize");
    client.accept(call_id, value).await.map_err(Error::Server)?;
    let (trickle_tx, mut trickle) = mpsc::channel(16);
    let run = receive_files(side, &offer, &answer, incoming, inbox, args, &mut trickle);
    let lost = "the sender went away (its connection to the server was lost); what arrived \
                is kept in the .part file, to resume when it is sent again";
    let result = during_transfer(client, events, call_id, trickle_tx, lost, run).await;
    let _ = client.hangup(call_id).await;
    show_stored(from.as_str(), result?);
    Ok(())
}

/// The receiver's half once it answered: the path, the safety code, the bytes into
/// `incoming`. Returns where the files went.
pub(crate) async fn receive_files(
    side: Side,
    offer: &TransferOffer,
    answer: &TransferAnswer,
    incoming: Vec<Option<IncomingFile>>,
    inbox: &Inbox,
    args: &TransferArgs,
    trickle: &mut mpsc::Receiver<Vec<Candidate>>,
) -> Result<Vec<PathBuf>, Error> {
    let progress = Progress::for_stderr(args.quiet);
    let connected = side.connect(Role::Callee, offer, answer, trickle).await?;
    say_connected(&connected);
    let stored = quic::receive(
        connected.socket,
        &connected.identity,
        offer.fingerprint.0,
        offer,
        &answer.replies,
        incoming,
        inbox,
        &progress,
    )
    .await?;
    Ok(stored)
}

/// Says where each received file went, described again from what arrived, not from
/// what the offer claimed.
pub(crate) fn show_stored(from: &str, stored: Vec<PathBuf>) {
    for path in stored {
        match describe_file(&path) {
            Ok(info) => println!(
                "{from} sent {}: saved as {}",
                info.describe(),
                path.display()
            ),
            Err(e) => println!("{from} sent {}: {e}", path.display()),
        }
    }
}

/// Handles a file offer that arrived as an incoming call: parse (a bad one is declined
/// with the reason), show, ask (unless `--yes`), receive.
#[allow(clippy::too_many_arguments)]
pub async fn handle_offer(
    client: &Client,
    events: &mut Events,
    lines: &mut mpsc::Receiver<String>,
    call_id: CallId,
    from: &UserName,
    offer: serde_json::Value,
    receive_args: &ReceiveArgs,
    args: &TransferArgs,
    stun: Option<SocketAddr>,
) -> Result<(), Error> {
    let offer = match TransferOffer::from_value(offer) {
        Ok(offer) => offer,
        Err(e) => {
            eprintln!("refused a file offer from {from}: {e}");
            let _ = client.reject(call_id).await;
            return Ok(());
        }
    };
    let inbox = Inbox::open(&receive_args.dir)?;
    let question = format!(
        "take the file(s) from {from} into {}? [y/N] ",
        inbox.dir().display()
    );
    let gone = std::cell::Cell::new(false);
    let ask = async {
        match crate::commands::prompt(&question, client, call_id, events, lines).await {
            crate::commands::Decision::Take => true,
            crate::commands::Decision::Gone(why) => {
                eprintln!("\nthe offer from {from} {why}");
                gone.set(true);
                false
            }
            _ => false,
        }
    };
    match decide(from, &offer, receive_args, &inbox, ask).await? {
        OfferDecision::Decline if gone.get() => Ok(()),
        OfferDecision::Decline => {
            eprintln!("declined the file(s) from {from}");
            let _ = client.reject(call_id).await;
            Ok(())
        }
        OfferDecision::Take(replies, incoming) => {
            let taken = (replies, incoming);
            receive(
                client, events, call_id, from, offer, taken, &inbox, args, stun,
            )
            .await
        }
    }
}

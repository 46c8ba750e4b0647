//! Files on the LAN: `magpie send NAME@lan PATH...`, and the offers `answer --lan` takes.
//!
//! The transfer is the one `magpie send` runs through the server (`crate::transfer`:
//! QUIC on the path the connectivity checks select, certificates pinned by the
//! fingerprints in the offer and answer); only the offer, the answer and the end travel
//! over the direct channel, as [`Message::Transfer`] and [`Message::Reject`].

use std::path::PathBuf;

use magpie_signaling::lan::Message;
use tokio::sync::mpsc;

use super::Error;
use super::call::{ask, hangup, reach, reject, send as send_message, vouch};
use super::link::Link;
use crate::cli::{Cli, LanArgs, ReceiveArgs, TransferArgs};
use crate::commands::{self, stdin_lines};
use crate::config::FileConfig;
use crate::files::{self, OfferDecision};
use crate::transfer::proto::{FileInfo, TransferAnswer, TransferOffer, human_size};
use crate::transfer::store::Inbox;
use crate::transfer::{Side, describe_file};

/// `magpie send NAME@lan PATH...`.
pub async fn send(
    cli: &Cli,
    file: &FileConfig,
    to: &str,
    paths: &[PathBuf],
    args: &TransferArgs,
    lan: &LanArgs,
) -> Result<(), commands::Error> {
    let described = paths
        .iter()
        .map(|p| describe_file(p))
        .collect::<Result<Vec<FileInfo>, _>>()?;
    if args.relay_only {
        let why = "there is no relay on the LAN".into();
        return Err(crate::engine::Error::NoRelay(why).into());
    }
    let sim = files::sim(args)?;
    let (_me, trusted, mut link) = reach(cli, file, to, lan).await?;
    let mut lines = stdin_lines();
    let mut side = Side::new(files::bind(args), None, false).await?;
    if let Some(sim) = sim {
        side.set_sim(sim);
    }
    let offer = side.offer(described);
    let body = serde_json::to_value(&offer).expect("offers serialize");
    send_message(&mut link, Message::Transfer { body }).await?;
    eprintln!(
        "offering {} file(s), {}, to {to} on the LAN ...",
        offer.files.len(),
        human_size(offer.total_size())
    );
    vouch(&trusted, &mut link, lan.trust, &mut lines, false).await?;
    let answer = loop {
        let message = link.recv().await.map_err(|source| Error::Link {
            peer: to.to_owned(),
            source,
        })?;
        match message {
            Message::Transfer { body } => break body,
            Message::Reject { reason } => {
                return Err(Error::Rejected {
                    name: to.to_owned(),
                    reason,
                }
                .into());
            }
            Message::Hangup { reason } => return Err(commands::Error::Ended(reason)),
            other => tracing::debug!(?other, "message while offering"),
        }
    };
    let answer = match TransferAnswer::from_value(answer, &offer) {
        Ok(answer) => answer,
        Err(e) => {
            let _ = link.send(&hangup("unusable answer")).await;
            return Err(commands::Error::Description(e.to_string()));
        }
    };
    if !files::show_replies(to, &offer, &answer) {
        return Err(commands::Error::Declined(to.to_owned()));
    }
    // Every candidate is in the offer and the answer: nothing trickles on the LAN.
    let (_trickle_tx, mut trickle) = mpsc::channel(1);
    let sent = watch(
        &mut link,
        files::send_files(side, &offer, &answer, paths, args, &mut trickle),
    )
    .await;
    let _ = link.send(&hangup("done")).await;
    files::show_sent(to, &sent?);
    Ok(())
}

/// A file offer that came over the channel to `answer --lan`: shown, asked about (unless
/// `--yes`), received into `--to`. `Ok(true)` when files were received.
pub(super) async fn receive(
    link: &mut Link,
    lines: &mut mpsc::Receiver<String>,
    body: serde_json::Value,
    (args, trust): (&ReceiveArgs, bool),
    trusted: &super::trust::LanFiles,
) -> Result<bool, commands::Error> {
    let from = link.peer.name.clone();
    let offer = match TransferOffer::from_value(body) {
        Ok(offer) => offer,
        Err(e) => {
            eprintln!("refused a file offer from {}: {e}", from.as_str());
            let _ = link.send(&reject("unusable file offer")).await;
            return Ok(false);
        }
    };
    vouch(trusted, link, trust, lines, true).await?;
    let inbox = Inbox::open(&args.dir)?;
    let question = format!(
        "take the file(s) from {} into {}? [y/N] ",
        from.as_str(),
        inbox.dir().display()
    );
    let decision = files::decide(&from, &offer, args, &inbox, ask(&question, link, lines)).await?;
    let OfferDecision::Take(replies, incoming) = decision else {
        eprintln!("declined the file(s) from {}", from.as_str());
        let _ = link.send(&reject("declined the file(s)")).await;
        return Ok(false);
    };
    let transfer = TransferArgs::default();
    let side = match Side::new(files::bind(&transfer), None, false).await {
        Ok(side) => side,
        Err(e) => {
            let _ = link.send(&reject(&e.to_string())).await;
            return Err(e.into());
        }
    };
    let answer = side.answer(replies);
    let body = serde_json::to_value(&answer).expect("answers serialize");
    send_message(link, Message::Transfer { body }).await?;
    let (_trickle_tx, mut trickle) = mpsc::channel(1);
    let run = files::receive_files(
        side,
        &offer,
        &answer,
        incoming,
        &inbox,
        &transfer,
        &mut trickle,
    );
    let stored = watch(link, run).await?;
    files::show_stored(from.as_str(), stored);
    Ok(true)
}

/// Runs `work` while reading the channel, so a peer that hangs up or vanishes is seen
/// in the log; QUIC itself tells this side what became of the bytes.
async fn watch<T>(
    link: &mut Link,
    work: impl Future<Output = Result<T, commands::Error>>,
) -> Result<T, commands::Error> {
    tokio::pin!(work);
    let mut open = true;
    loop {
        tokio::select! {
            done = &mut work => return done,
            message = link.recv(), if open => match message {
                Ok(other) => tracing::debug!(?other, "message during a transfer"),
                Err(e) => {
                    tracing::debug!(error = %e, "the channel closed during a transfer");
                    open = false;
                }
            },
            _ = commands::interrupted() => {
                return Err(commands::Error::Ended("interrupted".into()));
            }
        }
    }
}

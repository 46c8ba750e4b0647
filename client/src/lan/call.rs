//! Both ends of a call on the LAN: the caller finds the callee by mDNS and connects to
//! its control listener; offer and answer travel over the direct channel; the media runs
//! on the same engine as a call through the server.

use std::net::SocketAddr;
use std::time::Duration;

use magpie_signaling::lan::{Identity, Message, Refusals};
use magpie_signaling::proto::UserName;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::discovery::{self, Announcement};
use super::link::{Link, LinkError};
use super::trust::{LanFiles, PinCheck};
use super::{Error, pin_check, whoami};
use crate::cli::{CallArgs, Cli, LanArgs, MediaSettings, ReceiveArgs};
use crate::commands::{self, bind_addr, chat_line, finish, interrupted, stdin_lines};
use crate::config::FileConfig;
use crate::engine::{self, EndCause, Outcome, Prepared, RunOptions, Stop, Trickle};
use crate::offer::SessionDescription;

/// How long the callee waits for the offer after the handshake: the caller opens its
/// devices in between.
const OFFER_TIMEOUT: Duration = Duration::from_secs(30);

/// `magpie call NAME@lan`.
pub async fn call(
    cli: &Cli,
    file: &FileConfig,
    callee: &str,
    call: &CallArgs,
    media: MediaSettings,
) -> Result<(), commands::Error> {
    let (me, files, mut link) = reach(cli, file, callee, &call.lan).await?;
    let link_error = |source| Error::Link {
        peer: callee.to_owned(),
        source,
    };
    let mut lines = stdin_lines();
    let prepared = Prepared::new(media, bind_addr(call), None, false).await?;
    let offer = serde_json::to_value(prepared.description()).expect("descriptions serialize");
    send(&mut link, Message::Offer { description: offer }).await?;
    eprintln!("calling {callee} on the LAN ...");
    // On first contact both people see the code now, and compare it; the answer waits
    // in the channel meanwhile.
    vouch(&files, &mut link, call.lan.trust, &mut lines, false).await?;
    let answer = loop {
        let message = tokio::select! {
            message = link.recv() => message.map_err(link_error)?,
            _ = interrupted() => {
                let _ = link.send(&Message::Hangup { reason: "cancelled".into() }).await;
                return Err(commands::Error::Ended("cancelled".into()));
            }
        };
        match message {
            Message::Answer { description } => break description,
            Message::Reject { reason } => {
                return Err(Error::Rejected {
                    name: callee.to_owned(),
                    reason,
                }
                .into());
            }
            Message::Hangup { reason } => return Err(commands::Error::Ended(reason)),
            other => debug!(?other, "message while ringing"),
        }
    };
    let answer = description(&mut link, answer, hangup("unusable answer")).await?;
    eprintln!("{callee} answered");
    in_call(me.as_str(), &mut link, call, prepared, answer, &mut lines).await
}

/// Finds `callee` on the LAN, connects to it, and checks that it is who was called and
/// that its key is not another than the one trusted for it. Returns this client's name,
/// its LAN files and the channel.
pub(super) async fn reach(
    cli: &Cli,
    file: &FileConfig,
    callee: &str,
    lan: &LanArgs,
) -> Result<(UserName, LanFiles, Link), commands::Error> {
    let (me, files, identity) = whoami(cli, file)?;
    let name = UserName::parse(callee).map_err(|_| Error::Name(callee.to_owned()))?;
    eprintln!("looking for {callee} on the LAN ...");
    let found = discovery::resolve(&name, Duration::from_secs_f64(lan.lan_wait))
        .await
        .map_err(Error::from)?
        .ok_or_else(|| Error::NotFound {
            name: callee.to_owned(),
            secs: lan.lan_wait,
        })?;
    let mut link = Link::connect(&found.addrs, identity, me.clone())
        .await
        .map_err(|source| Error::Link {
            peer: callee.to_owned(),
            source,
        })?;
    if link.peer.name != name {
        return Err(Error::WrongPeer {
            expected: callee.to_owned(),
            got: link.peer.name.as_str().to_owned(),
        }
        .into());
    }
    // A changed key is refused before anything is sent.
    if let Err(e) = pin_check(&files, &link) {
        let _ = link.send(&reject(NOT_TRUSTED)).await;
        return Err(e.into());
    }
    Ok((me, files, link))
}

/// `magpie answer --lan`: announces this user and takes calls on the control listener.
#[allow(clippy::too_many_arguments)]
pub async fn answer(
    cli: &Cli,
    file: &FileConfig,
    listen: Option<SocketAddr>,
    auto_answer: bool,
    once: bool,
    (call, receive): (&CallArgs, &ReceiveArgs),
    media: MediaSettings,
) -> Result<(), commands::Error> {
    let (me, files, identity) = whoami(cli, file)?;
    let addr = listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let port = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?
        .port();
    let _announcement = Announcement::new(&me, port, identity.public()).map_err(Error::from)?;
    let waiting = format!(
        "{me} is waiting for calls on the LAN (Ctrl-C to stop)",
        me = me.as_str()
    );
    eprintln!(
        "{waiting}\n  control port {port}, key {}",
        identity.public().fingerprint().short()
    );
    let mut lines = stdin_lines();
    let mut refused = Refusals::default();
    let answering = Answering {
        me: &me,
        files: &files,
        auto_answer,
        call,
        media: &media,
        receive,
    };
    // Handshakes run at once, each in its own task, so a second peer's does not wait for
    // (or time out behind) the person answering the first; the sessions that finish
    // their handshake then wait their turn for the person here.
    let (ready_tx, mut ready) = mpsc::channel(QUEUED_PEERS);
    let acceptor = tokio::spawn(accept_all(listener, identity.clone(), me.clone(), ready_tx));
    let result = loop {
        let accepted = tokio::select! {
            accepted = ready.recv() => accepted,
            _ = interrupted() => break Ok(()),
        };
        let (mut link, from) = match accepted {
            Some(Accepted::Link(link, from)) => (*link, from),
            Some(Accepted::Refused(counted)) => {
                refused.add(&counted);
                continue;
            }
            None => break Ok(()),
        };
        let result = answering.serve(&mut link, from, &mut lines).await;
        refused.add(&link.refusals());
        match result {
            Err(e) if once => break Err(e),
            Err(e) => eprintln!("magpie: {e}"),
            Ok(true) if once => break Ok(()),
            Ok(_) => {}
        }
        eprintln!("{waiting}");
    };
    acceptor.abort();
    if refused.total() > 0 {
        eprintln!(
            "refused on the LAN channel: {}",
            serde_json::to_string(&refused).expect("counters serialize")
        );
    }
    result
}

/// Sessions whose handshake is done that may wait for the person at once; a peer beyond
/// them is told the person is busy.
const QUEUED_PEERS: usize = 8;

/// A connection to the control listener, after its handshake.
enum Accepted {
    /// A peer, and where it connected from.
    Link(Box<Link>, SocketAddr),
    /// The handshake failed; what the channel counted.
    Refused(Refusals),
}

/// Accepts connections until aborted, each handshake in a task of its own, and hands
/// the sessions to `ready` in the order their handshakes finish.
async fn accept_all(
    listener: TcpListener,
    identity: Identity,
    me: UserName,
    ready: mpsc::Sender<Accepted>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (identity, me, ready) = (identity.clone(), me.clone(), ready.clone());
        tokio::spawn(async move {
            let accepted = match Link::accept(stream, identity, me).await {
                Ok(link) => Accepted::Link(Box::new(link), from),
                Err((e, counted)) => {
                    warn!(%from, error = %e, "LAN connection refused");
                    eprintln!("refused a LAN connection from {from}: {e}");
                    Accepted::Refused(counted)
                }
            };
            match ready.try_send(accepted) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Accepted::Link(mut link, _))) => {
                    let _ = link.send(&reject("busy: too many people waiting")).await;
                }
                Err(_) => {}
            }
        });
    }
}

/// What `answer --lan` needs for each connection.
struct Answering<'a> {
    me: &'a UserName,
    files: &'a LanFiles,
    auto_answer: bool,
    call: &'a CallArgs,
    media: &'a MediaSettings,
    /// What to do with file offers.
    receive: &'a ReceiveArgs,
}

impl Answering<'_> {
    /// One connection whose handshake is done: the offer, the pairing code on first
    /// contact, the question, the call. `Ok(true)` when a call ran.
    async fn serve(
        &self,
        link: &mut Link,
        from: SocketAddr,
        lines: &mut mpsc::Receiver<String>,
    ) -> Result<bool, commands::Error> {
        let name = link.peer.name.as_str().to_owned();
        let link_error = |source| Error::Link {
            peer: name.clone(),
            source,
        };
        let offer = match tokio::time::timeout(OFFER_TIMEOUT, link.recv()).await {
            Ok(Ok(Message::Offer { description })) => description,
            Ok(Ok(Message::Transfer { body })) => {
                let how = (self.receive, self.call.lan.trust);
                return super::send::receive(link, lines, body, how, self.files).await;
            }
            Ok(Ok(Message::Reject { reason })) => {
                return Err(Error::Rejected { name, reason }.into());
            }
            Ok(Ok(_)) => return Err(Error::Unexpected(name).into()),
            Ok(Err(e)) => return Err(link_error(e).into()),
            Err(_) => return Err(link_error(LinkError::Timeout).into()),
        };
        let offer = description(link, offer, reject("unusable offer")).await?;
        eprintln!("incoming call from {name} on the LAN ({from})");
        vouch(self.files, link, self.call.lan.trust, lines, true).await?;
        let take = self.auto_answer
            || ask(&format!("answer the call from {name}? [y/N] "), link, lines).await;
        if !take {
            let _ = link.send(&reject("declined the call")).await;
            return Ok(false);
        }
        let prepared = Prepared::new(self.media.clone(), bind_addr(self.call), None, false).await;
        let answered = prepared.and_then(|mut prepared| {
            let answer = prepared.answer(&offer)?;
            Ok((prepared, answer))
        });
        let (prepared, answer) = match answered {
            Ok(done) => done,
            Err(e) => {
                let _ = link.send(&reject(&e.to_string())).await;
                return Err(e.into());
            }
        };
        let answer = serde_json::to_value(&answer).expect("descriptions serialize");
        send(
            link,
            Message::Answer {
                description: answer,
            },
        )
        .await?;
        in_call(self.me.as_str(), link, self.call, prepared, offer, lines).await?;
        Ok(true)
    }
}

/// The reason a side gives when it refuses the other's key.
const NOT_TRUSTED: &str = "your key is not the one I trust for you";

/// Checks the peer's key against the one pinned for its name; on first contact, shows
/// the pairing code and asks the person to confirm it (or trusts it with `--trust`),
/// then pins the key. A changed key is refused. With `watch`, the peer giving up while
/// the person thinks ends the question.
pub(super) async fn vouch(
    files: &LanFiles,
    link: &mut Link,
    trust: bool,
    lines: &mut mpsc::Receiver<String>,
    watch: bool,
) -> Result<(), Error> {
    let name = link.peer.name.as_str().to_owned();
    let check = match pin_check(files, link) {
        Ok(check) => check,
        Err(e) => {
            let _ = link.send(&reject(NOT_TRUSTED)).await;
            return Err(e);
        }
    };
    if check == PinCheck::Known {
        return Ok(());
    }
    let (code, key) = (link.code, link.peer.identity);
    eprintln!(
        "first contact with {name} (key {}): pairing code {code}",
        key.fingerprint().short()
    );
    let confirmed = if trust {
        eprintln!("trusting {name}'s key without comparing codes (--trust)");
        true
    } else {
        let question = format!("does {name} see pairing code {code} too? type y or the code: ");
        let line = prompt(&question, watch.then_some(&mut *link), lines).await;
        line.is_some_and(|l| l.trim().eq_ignore_ascii_case("y") || code.matches(&l))
    };
    if !confirmed {
        let _ = link
            .send(&reject("the pairing code was not confirmed"))
            .await;
        return Err(Error::NotConfirmed(name));
    }
    files.pin(&name, key)?;
    eprintln!(
        "{name}'s key is now trusted (in {})",
        files.peers_path().display()
    );
    Ok(())
}

/// Asks y/N while the caller waits; the caller giving up or Ctrl-C is a no.
pub(super) async fn ask(
    question: &str,
    link: &mut Link,
    lines: &mut mpsc::Receiver<String>,
) -> bool {
    let line = prompt(question, Some(link), lines).await;
    line.is_some_and(|l| l.trim().eq_ignore_ascii_case("y"))
}

/// Asks `question` and returns the line typed; `None` at Ctrl-C, at the end of input,
/// or (with `link`) when the peer hangs up, says no or vanishes meanwhile.
async fn prompt(
    question: &str,
    mut link: Option<&mut Link>,
    lines: &mut mpsc::Receiver<String>,
) -> Option<String> {
    eprint!("{question}");
    loop {
        let from_peer = async {
            match link.as_mut() {
                Some(link) => link.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = lines.recv() => return line,
            message = from_peer => match message {
                Ok(Message::Hangup { reason } | Message::Reject { reason }) => {
                    eprintln!("\nthe other side gave up ({reason})");
                    return None;
                }
                Ok(other) => debug!(?other, "message at the prompt"),
                Err(e) => {
                    eprintln!("\nthe other side went away: {e}");
                    return None;
                }
            },
            _ = interrupted() => return None,
        }
    }
}

/// The call itself: media on the engine, the channel for hangup and chat.
async fn in_call(
    me: &str,
    link: &mut Link,
    call: &CallArgs,
    prepared: Prepared,
    remote: SessionDescription,
    lines: &mut mpsc::Receiver<String>,
) -> Result<(), commands::Error> {
    let peer = link.peer.name.as_str().to_owned();
    let mut options = RunOptions::new(call, engine::now());
    options.peer = Some(peer.clone());
    // No relay and no trickle on the LAN: every candidate is in the descriptions.

    let (mut stopper, stop_rx) = Stop::new();
    let mut stop = |cause| stopper.stop(cause);
    let fps = remote.video.as_ref().map(|v| v.fps);
    let engine = prepared.run(remote, options, stop_rx, Trickle::none());
    tokio::pin!(engine);
    let (mut stdin_open, mut link_open) = (true, true);
    let outcome: Outcome = loop {
        tokio::select! {
            outcome = &mut engine => match outcome {
                Ok(outcome) => break outcome,
                Err(e) => {
                    if link_open {
                        let _ = link.send(&hangup(&e.to_string())).await;
                    }
                    return Err(e.into());
                }
            },
            message = link.recv(), if link_open => match message {
                Ok(Message::Hangup { reason }) => {
                    link_open = false;
                    stop(EndCause::Remote(reason));
                }
                Ok(Message::Text { text }) => chat_line(unix_ms(), &peer, &text),
                Ok(other) => debug!(?other, "message in call"),
                Err(e) => {
                    link_open = false;
                    stop(EndCause::Remote(format!("the LAN channel closed: {e}")));
                }
            },
            line = lines.recv(), if stdin_open => match line {
                Some(text) if !text.trim().is_empty() && link_open => {
                    let text = text.trim().to_owned();
                    match link.send(&Message::Text { text: text.clone() }).await {
                        Ok(()) => chat_line(unix_ms(), me, &text),
                        Err(e) => eprintln!("message not sent: {e}"),
                    }
                }
                Some(_) => {}
                None => stdin_open = false,
            },
            _ = interrupted() => stop(EndCause::Local),
        }
    };
    if link_open && let Err(e) = link.send(&hangup("hangup")).await {
        debug!(error = %e, "hangup");
    }
    finish(me, &peer, None, call, &outcome, fps)
}

/// The peer's description; when it does not parse, `refusal` tells the peer so.
async fn description(
    link: &mut Link,
    value: serde_json::Value,
    refusal: Message,
) -> Result<SessionDescription, commands::Error> {
    match serde_json::from_value(value) {
        Ok(description) => Ok(description),
        Err(e) => {
            let _ = link.send(&refusal).await;
            Err(commands::Error::Description(e.to_string()))
        }
    }
}

pub(super) async fn send(link: &mut Link, message: Message) -> Result<(), Error> {
    let peer = link.peer.name.as_str().to_owned();
    link.send(&message)
        .await
        .map_err(|source| Error::Link { peer, source })
}

pub(super) fn reject(reason: &str) -> Message {
    Message::Reject {
        reason: reason.to_owned(),
    }
}

pub(super) fn hangup(reason: &str) -> Message {
    Message::Hangup {
        reason: reason.to_owned(),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

//! What each `magpie` command does.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use magpie_signaling::client::{self, Client, ClientError, Events, Incoming};
use magpie_signaling::proto::{CallId, ErrorCode, Event, UserName};
use magpie_signaling::tls::{KnownServers, TlsError, Trust};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use crate::cli::{CallArgs, Cli, Command, MediaSettings, PERSON_DEFAULTS};
use crate::config::FileConfig;
use crate::engine::{self, EndCause, Outcome, PathSummary, Prepared, RunOptions, Stop, Trickle};
use crate::offer::SessionDescription;
use magpie_media::ice::Candidate;
use magpie_media::ice::turn::TurnConfig;
use magpie_media::srtp::exchange::SafetyCode;

/// A command that failed, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// No user name anywhere.
    #[error("no user given: use --user NAME, MAGPIE_USER, or `user` in the config file")]
    NoUser,
    /// The password could not be read.
    #[error("cannot read the password (set MAGPIE_PASSWORD or run in a terminal): {0}")]
    Password(#[source] std::io::Error),
    /// TLS cannot be set up (e.g. an unreadable --ca file).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Pinning needs a place for `known_servers`.
    #[error(
        "no config directory to keep known_servers in: set MAGPIE_CONFIG, or use --ca PEM \
         (or --plain for a server run with --plain)"
    )]
    NoKnownServers,
    /// The server's certificate is not the one pinned for it.
    #[error("refusing the server: {0}")]
    ServerChanged(#[source] ClientError),
    /// The server cannot be reached.
    #[error("cannot reach the server at {server}: {source}")]
    Unreachable {
        /// Where we tried.
        server: String,
        /// Why it failed.
        #[source]
        source: ClientError,
    },
    /// Wrong user name or password.
    #[error("login failed: wrong user name or password for {0}")]
    BadCredentials(String),
    /// The callee is not logged in.
    #[error("{0} is offline")]
    Offline(String),
    /// No such user.
    #[error("there is no user named {0}")]
    UnknownUser(String),
    /// The callee is in another call.
    #[error("{0} is busy in another call")]
    Busy(String),
    /// The callee declined.
    #[error("{0} rejected the call")]
    Rejected(String),
    /// Nobody answered.
    #[error("{0} did not answer")]
    NoAnswer(String),
    /// The call ended before it was answered.
    #[error("the call ended before it was answered ({0})")]
    Ended(String),
    /// The server refused something else.
    #[error("the server refused: {0}")]
    Server(#[source] ClientError),
    /// The connection to the server broke.
    #[error("lost the connection to the server")]
    Disconnected,
    /// The peer's offer or answer is unusable.
    #[error("the peer's media description is unusable: {0}")]
    Description(String),
    /// Media failed.
    #[error(transparent)]
    Media(#[from] engine::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The peer declined the files.
    #[error("{0} declined the file(s)")]
    Declined(String),
    /// A file transfer could not start.
    #[error(transparent)]
    Transfer(#[from] crate::transfer::Error),
    /// A file transfer failed.
    #[error(transparent)]
    TransferFailed(#[from] crate::transfer::quic::TransferError),
    /// The receiving folder.
    #[error(transparent)]
    Store(#[from] crate::transfer::store::StoreError),
    /// Plain RTP streaming or playing failed.
    #[error(transparent)]
    Interop(#[from] crate::interop::Error),
    /// The demo could not run.
    #[error("demo: {0}")]
    Demo(String),
    /// A call on the LAN failed.
    #[error(transparent)]
    Lan(#[from] crate::lan::Error),
}

/// Ctrl-C presses not yet acted on: one permit each (see [`interrupted`]).
static INTERRUPT: Notify = Notify::const_new();

/// Completes on the next Ctrl-C, or at once for one pressed since the last was taken.
/// One task listens for the whole command, so a press between two waits (while the loop
/// prints a line, say) is kept rather than lost.
pub(crate) fn interrupted() -> tokio::sync::futures::Notified<'static> {
    INTERRUPT.notified()
}

fn listen_for_interrupts() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::interrupt()) {
        Ok(mut presses) => {
            tokio::spawn(async move {
                while presses.recv().await.is_some() {
                    INTERRUPT.notify_one();
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot listen for Ctrl-C"),
    }
}

/// Runs the command the user gave.
pub async fn run(cli: Cli) -> Result<(), Error> {
    listen_for_interrupts();
    let file = match &cli.config {
        Some(path) => FileConfig::load(path, true)?,
        None => match FileConfig::default_path() {
            Some(path) => FileConfig::load(&path, false)?,
            None => FileConfig::default(),
        },
    };
    let server = Server::new(&cli, &file);
    match &cli.command {
        Command::Register => {
            let user = cli.user(&file).ok_or(Error::NoUser)?;
            let password = password(&user)?;
            let (client, _events) = server.connect().await?;
            client
                .register(&user, &password)
                .await
                .map_err(Error::Server)?;
            println!("registered {user} on {}", server.addr);
            Ok(())
        }
        Command::Chat { to, text } => {
            let (client, events, user) = login(&cli, &file, &server).await?;
            match (to, text) {
                (Some(to), Some(text)) => {
                    let sent = client.message(to, text).await.map_err(|e| refusal(e, to))?;
                    let how = if sent.delivered {
                        "delivered"
                    } else {
                        "stored until they log in"
                    };
                    println!("message {} to {to}: {how}", sent.message_id);
                    Ok(())
                }
                (None, None) => {
                    let stun = stun_address(&server.addr).await;
                    chat_interactive(&client, events, &user, stun).await
                }
                _ => Err(Error::Description(
                    "chat takes both USER and TEXT, or neither".into(),
                )),
            }
        }
        Command::History { limit } => {
            let (client, _events, user) = login(&cli, &file, &server).await?;
            let calls = client
                .history_limit(Some(*limit))
                .await
                .map_err(Error::Server)?;
            if calls.is_empty() {
                println!("no calls yet");
            }
            for call in calls {
                let (dir, peer) = if call.caller.as_str() == user {
                    ("to  ", &call.callee)
                } else {
                    ("from", &call.caller)
                };
                let talked = call.answered.map_or("not answered".to_owned(), |answered| {
                    format!("{} s", call.ended.saturating_sub(answered) / 1000)
                });
                println!(
                    "#{:<6} {dir} {peer:<16} {:<24} {talked:<14} {}",
                    call.call_id,
                    format_time(call.created),
                    call.end_reason.as_str()
                );
            }
            Ok(())
        }
        Command::Who => {
            let (client, _events, _user) = login(&cli, &file, &server).await?;
            let users = client.who().await.map_err(Error::Server)?;
            println!("{} online:", users.len());
            for user in users {
                println!("  {user}");
            }
            Ok(())
        }
        Command::Devices => {
            print!(
                "{}",
                crate::devices_text(&magpie_media::devices::list_devices())
            );
            Ok(())
        }
        Command::Lan { wait } => crate::lan::list(&cli, Duration::from_secs_f64(*wait)).await,
        Command::Call { callee, call } => {
            let media = call.media.resolve(&file.media, PERSON_DEFAULTS);
            preflight(&media, call)?;
            if let Some(name) = callee.strip_suffix("@lan") {
                return crate::lan::call::call(&cli, &file, name, call, media).await;
            }
            let (client, events, user) = login(&cli, &file, &server).await?;
            let stun = stun_address(&server.addr).await;
            let mut lines = stdin_lines();
            place_call(
                &client, events, &user, callee, call, media, stun, &mut lines,
            )
            .await
        }
        Command::Answer {
            lan,
            lan_listen,
            auto_answer,
            once,
            call,
            receive,
        } => {
            let media = call.media.resolve(&file.media, PERSON_DEFAULTS);
            preflight(&media, call)?;
            if *lan {
                let (auto, once, args) = (*auto_answer, *once, (call, receive));
                let answer =
                    crate::lan::call::answer(&cli, &file, *lan_listen, auto, once, args, media);
                return answer.await;
            }
            let user = cli.user(&file).ok_or(Error::NoUser)?;
            let password = password(&user)?;
            let answer = Answering {
                server: &server,
                user: &user,
                password: &password,
                auto_answer: *auto_answer,
                once: *once,
                call,
                media,
                receive: receive.clone(),
            };
            answer.run().await
        }
        Command::Demo { call } => crate::demo::run(call, &file).await,
        Command::Send {
            to,
            paths,
            no_leave,
            transfer,
            lan,
        } => {
            if let Some(name) = to.strip_suffix("@lan") {
                return crate::lan::send::send(&cli, &file, name, paths, transfer, lan).await;
            }
            let (client, events, _user) = login(&cli, &file, &server).await?;
            let stun = stun_address(&server.addr).await;
            let leave = !*no_leave;
            crate::files::send(&client, events, to, paths, transfer, leave, stun).await
        }
        Command::Receive {
            receive,
            once,
            transfer,
        } => {
            let (client, mut events, user) = login(&cli, &file, &server).await?;
            let stun = stun_address(&server.addr).await;
            let mut lines = stdin_lines();
            receive_files(
                &client,
                &mut events,
                &mut lines,
                &user,
                receive,
                *once,
                transfer,
                stun,
            )
            .await
        }
        Command::Stream(args) => Ok(crate::interop::stream(args).await?),
        Command::Play(args) => Ok(crate::interop::play(args).await?),
    }
}

/// `magpie receive`: takes file offers one after another (or one with `--once`);
/// calls are declined.
#[allow(clippy::too_many_arguments)]
async fn receive_files(
    client: &Client,
    events: &mut Events,
    lines: &mut mpsc::Receiver<String>,
    user: &str,
    receive: &crate::cli::ReceiveArgs,
    once: bool,
    transfer: &crate::cli::TransferArgs,
    stun: Option<SocketAddr>,
) -> Result<(), Error> {
    eprintln!(
        "{user} is waiting for files into {} (Ctrl-C to stop)",
        receive.dir.display()
    );
    loop {
        let incoming = tokio::select! {
            incoming = events.recv() => incoming,
            _ = interrupted() => return Ok(()),
        };
        match incoming {
            Some(Incoming::Event(Event::IncomingCall {
                call_id,
                from,
                offer,
            })) => {
                if !crate::transfer::proto::TransferOffer::is_offer(&offer) {
                    // Left ringing for a `magpie answer` elsewhere.
                    eprintln!("(a call from {from}: answer calls with `magpie answer`)");
                    continue;
                }
                let result = crate::files::handle_offer(
                    client, events, lines, call_id, &from, offer, receive, transfer, stun,
                )
                .await;
                match result {
                    Err(e) if once => return Err(e),
                    Err(e) => eprintln!("magpie: {e}"),
                    Ok(()) if once => return Ok(()),
                    Ok(()) => {}
                }
            }
            Some(Incoming::Event(Event::File(offer))) => {
                let from = offer.from.clone();
                let question =
                    format!("take it from {from} into {}? [y/N] ", receive.dir.display());
                let ask = ask_line(&question, lines);
                let result =
                    crate::mailbox::take(client, offer, receive, transfer.quiet, ask).await;
                match result {
                    Err(e) if once => return Err(e),
                    Err(e) => eprintln!("magpie: {e}"),
                    Ok(_) if once => return Ok(()),
                    Ok(_) => {}
                }
            }
            Some(Incoming::Event(Event::Message(m))) => show_message(client, &m).await,
            Some(Incoming::Event(Event::ServerShutdown)) | None => return Err(Error::Disconnected),
            Some(Incoming::Error(e)) => return Err(Error::Server(ClientError::Server(e))),
            Some(Incoming::Event(other)) => debug!(?other, "event while waiting for files"),
        }
    }
}

/// Checks what can be checked before anyone is rung: see [`crate::preflight`].
pub fn preflight(media: &MediaSettings, call: &CallArgs) -> Result<(), Error> {
    crate::preflight::check(media, call.sim.as_deref(), bind_addr(call))?;
    Ok(())
}

/// The password from `MAGPIE_PASSWORD`, or asked for on the terminal.
fn password(user: &str) -> Result<String, Error> {
    if let Ok(password) = std::env::var("MAGPIE_PASSWORD") {
        return Ok(password);
    }
    rpassword::prompt_password(format!("password for {user}: ")).map_err(Error::Password)
}

/// The signaling server and how to talk to it.
struct Server {
    /// `HOST:PORT`, as given: where to connect, the name its certificate must carry,
    /// and the key of its pin.
    addr: String,
    plain: bool,
    ca: Option<PathBuf>,
    config_path: Option<PathBuf>,
}

impl Server {
    fn new(cli: &Cli, file: &FileConfig) -> Self {
        Self {
            addr: cli.server(file),
            plain: cli.plain || file.plain == Some(true),
            ca: cli.ca.clone().or_else(|| file.ca.clone()),
            config_path: cli.config_path(),
        }
    }

    /// What the client trusts: `--ca`, else the system's roots or the pin in
    /// `known_servers` beside the config file.
    fn trust(&self) -> Result<Trust, Error> {
        if let Some(ca) = &self.ca {
            return Ok(Trust::ca_file(ca)?);
        }
        let config = self.config_path.as_deref().ok_or(Error::NoKnownServers)?;
        Ok(Trust::RootsOrPin {
            known: KnownServers::beside(config),
            server: self.addr.clone(),
        })
    }

    async fn connect(&self) -> Result<(Client, Events), Error> {
        let connected = if self.plain {
            client::connect(self.addr.as_str()).await
        } else {
            let tls = self.trust()?.client_config()?;
            client::connect_tls(&self.addr, tls, client::ClientConfig::default()).await
        };
        connected.map_err(|source| match source {
            ClientError::ServerChanged(_) => Error::ServerChanged(source),
            source => Error::Unreachable {
                server: self.addr.clone(),
                source,
            },
        })
    }
}

async fn login(
    cli: &Cli,
    file: &FileConfig,
    server: &Server,
) -> Result<(Client, Events, String), Error> {
    let user = cli.user(file).ok_or(Error::NoUser)?;
    let password = password(&user)?;
    let (client, events) = login_as(server, &user, &password).await?;
    Ok((client, events, user))
}

async fn login_as(server: &Server, user: &str, password: &str) -> Result<(Client, Events), Error> {
    let (client, events) = server.connect().await?;
    match client.login(user, password).await {
        Ok(_) => Ok((client, events)),
        Err(e) if e.code() == Some(ErrorCode::BadCredentials) => {
            Err(Error::BadCredentials(user.to_owned()))
        }
        Err(e) => Err(Error::Server(e)),
    }
}

/// Lines typed on stdin, read by one task for the whole command (the y/N prompt and chat
/// during a call share it). The channel closes at end of input.
pub(crate) fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Maps the server's refusal of a request about `peer` to what the user should hear.
pub(crate) fn refusal(e: ClientError, peer: &str) -> Error {
    match e.code() {
        Some(ErrorCode::Offline) => Error::Offline(peer.to_owned()),
        Some(ErrorCode::UnknownUser) => Error::UnknownUser(peer.to_owned()),
        Some(ErrorCode::Busy) => Error::Busy(peer.to_owned()),
        _ => Error::Server(e),
    }
}

async fn chat_interactive(
    client: &Client,
    mut events: Events,
    user: &str,
    stun: Option<SocketAddr>,
) -> Result<(), Error> {
    eprintln!("chatting as {user}: type 'name: text' to send, Ctrl-D to leave");
    let mut lines = stdin_lines();
    // Files offered meanwhile are asked about, and go to the current folder.
    let receive = crate::cli::ReceiveArgs {
        dir: PathBuf::from("."),
        yes: false,
        max_size: 4 << 30,
    };
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    let Some((to, text)) = line.split_once(':') else {
                        eprintln!("say it as 'name: text'");
                        continue;
                    };
                    let (to, text) = (to.trim(), text.trim());
                    match client.message(to, text).await {
                        Ok(sent) if sent.delivered => {}
                        Ok(_) => eprintln!("({to} is offline: stored until they log in)"),
                        Err(e) => eprintln!("not sent: {}", refusal(e, to)),
                    }
                }
                None => return Ok(()),
            },
            incoming = events.recv() => match incoming {
                Some(Incoming::Event(Event::Message(m))) => show_message(client, &m).await,
                Some(Incoming::Event(Event::File(offer))) => note_file(&offer),
                Some(Incoming::Event(Event::IncomingCall { call_id, from, offer }))
                    if crate::transfer::proto::TransferOffer::is_offer(&offer) =>
                {
                    let transfer = crate::cli::TransferArgs::default();
                    let result = crate::files::handle_offer(
                        client, &mut events, &mut lines, call_id, &from, offer, &receive,
                        &transfer, stun,
                    )
                    .await;
                    if let Err(e) = result {
                        eprintln!("magpie: {e}");
                    }
                }
                Some(Incoming::Event(Event::ServerShutdown)) | None => return Err(Error::Disconnected),
                Some(Incoming::Error(e)) => return Err(Error::Server(ClientError::Server(e))),
                Some(Incoming::Event(other)) => debug!(?other, "event"),
            },
        }
    }
}

pub(crate) async fn show_message(client: &Client, m: &magpie_signaling::proto::ChatMessage) {
    chat_line(m.sent_at, m.from.as_str(), &m.text);
    if let Err(e) = client.ack(&[m.message_id]).await {
        warn!(error = %e, "ack failed");
    }
}

/// A chat line on stdout, on a line of its own: the live status line on stderr (redrawn
/// each second) is cleared first when both go to a terminal.
pub(crate) fn chat_line(sent_at: u64, from: &str, text: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    println!("[{}] {from}: {text}", format_time(sent_at));
    let _ = std::io::stdout().flush();
}

/// The signaling server answers STUN on its own address.
async fn stun_address(server: &str) -> Option<SocketAddr> {
    tokio::net::lookup_host(server).await.ok()?.next()
}

#[allow(clippy::too_many_arguments)]
async fn place_call(
    client: &Client,
    mut events: Events,
    user: &str,
    callee: &str,
    call: &CallArgs,
    media: MediaSettings,
    stun: Option<SocketAddr>,
    lines: &mut mpsc::Receiver<String>,
) -> Result<(), Error> {
    let mut prepared = Prepared::new(media, bind_addr(call), stun, call.relay_only).await?;
    let offer = serde_json::to_value(prepared.description()).expect("descriptions serialize");
    let call_id = client
        .invite(callee, offer)
        .await
        .map_err(|e| refusal(e, callee))?;
    eprintln!("calling {callee} ...");
    // The call exists now, so the server hands out relay credentials: allocate while it
    // rings and send the relay candidate after the offer.
    let none = "the server offers none; give --turn";
    trickle_relay(client, call_id, call, none, async |config| {
        prepared.allocate_relay(config, false).await
    })
    .await?;
    let (answer, early) =
        await_answer(client, &mut events, call_id, callee, true, Error::Rejected).await?;
    let answer: SessionDescription = match serde_json::from_value(answer) {
        Ok(answer) => answer,
        Err(e) => {
            let _ = client.hangup(call_id).await;
            return Err(Error::Description(e.to_string()));
        }
    };
    eprintln!("{callee} answered");
    let call = InCall {
        client,
        user,
        peer: callee,
        call_id,
        call,
        accepted_at: engine::now(),
    };
    call.run(&mut events, lines, prepared, answer, early).await
}

/// `magpie answer`: waits for calls, one after another (or one with `--once`), and
/// logs in again with backoff when the server goes away.
struct Answering<'a> {
    server: &'a Server,
    user: &'a str,
    password: &'a str,
    auto_answer: bool,
    once: bool,
    call: &'a CallArgs,
    media: MediaSettings,
    /// What to do with file offers.
    receive: crate::cli::ReceiveArgs,
}

/// What the person at the y/N prompt, or the server meanwhile, decided.
pub(crate) enum Decision {
    Take,
    Decline,
    /// The call went away before anyone answered here: why.
    Gone(&'static str),
    /// Ctrl-C: stop answering.
    Quit,
    Lost,
}

/// How long to wait before logging in again: 1 s doubling to 30 s, with jitter so that
/// clients a restart dropped together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(5)).min(Duration::from_secs(30));
    base.mul_f64(rand::random_range(0.75..1.25))
}

impl Answering<'_> {
    async fn run(&self) -> Result<(), Error> {
        let mut lines = stdin_lines();
        let mut attempt = 0u32;
        loop {
            let lost = match login_as(self.server, self.user, self.password).await {
                Ok((client, mut events)) => {
                    attempt = 0;
                    let stun = stun_address(&self.server.addr).await;
                    match self.serve(&client, &mut events, stun, &mut lines).await {
                        Err(Error::Disconnected) if !self.once => {
                            "lost the connection to the server".to_owned()
                        }
                        other => return other,
                    }
                }
                // The first try says what is wrong; later ones wait for the server.
                Err(e @ (Error::BadCredentials(_) | Error::ServerChanged(_))) => return Err(e),
                Err(e) if attempt == 0 && !self.once => return Err(e),
                Err(e) if self.once => return Err(e),
                Err(e) => e.to_string(),
            };
            let wait = backoff(attempt);
            attempt += 1;
            eprintln!("{lost}; logging in again in {:.1} s", wait.as_secs_f64());
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = interrupted() => return Ok(()),
            }
        }
    }

    /// Answers calls on one connection until Ctrl-C, `--once`'s call ends, or the
    /// connection is lost.
    async fn serve(
        &self,
        client: &Client,
        events: &mut Events,
        stun: Option<SocketAddr>,
        lines: &mut mpsc::Receiver<String>,
    ) -> Result<(), Error> {
        let user = self.user;
        eprintln!("{user} is waiting for calls (Ctrl-C to stop)");
        loop {
            let incoming = tokio::select! {
                incoming = events.recv() => incoming,
                _ = interrupted() => return Ok(()),
            };
            let (call_id, from, offer) = match incoming {
                Some(Incoming::Event(Event::IncomingCall {
                    call_id,
                    from,
                    offer,
                })) => (call_id, from, offer),
                Some(Incoming::Event(Event::Message(m))) => {
                    show_message(client, &m).await;
                    continue;
                }
                Some(Incoming::Event(Event::File(offer))) => {
                    note_file(&offer);
                    continue;
                }
                Some(Incoming::Event(Event::ServerShutdown)) | None => {
                    return Err(Error::Disconnected);
                }
                Some(Incoming::Error(e)) => return Err(Error::Server(ClientError::Server(e))),
                Some(Incoming::Event(other)) => {
                    debug!(?other, "event while waiting");
                    continue;
                }
            };
            if crate::transfer::proto::TransferOffer::is_offer(&offer) {
                let result = crate::files::handle_offer(
                    client,
                    events,
                    lines,
                    call_id,
                    &from,
                    offer,
                    &self.receive,
                    &crate::cli::TransferArgs::default(),
                    stun,
                )
                .await;
                match result {
                    Err(Error::Disconnected) => return Err(Error::Disconnected),
                    Err(e) => eprintln!("magpie: {e}"),
                    Ok(()) => {}
                }
                eprintln!("{user} is waiting for calls (Ctrl-C to stop)");
                continue;
            }
            let offer: SessionDescription = match serde_json::from_value(offer) {
                Ok(offer) => offer,
                Err(e) => {
                    warn!(error = %e, %from, "unusable offer: rejecting");
                    let _ = client.reject(call_id).await;
                    continue;
                }
            };
            eprintln!("incoming call from {from}");
            let decision = if self.auto_answer {
                Decision::Take
            } else {
                let question = format!("answer the call from {from}? [y/N] ");
                prompt(&question, client, call_id, events, lines).await
            };
            match decision {
                Decision::Take => {}
                Decision::Decline => {
                    let _ = client.reject(call_id).await;
                    continue;
                }
                Decision::Gone(why) => {
                    eprintln!("\nthe call from {from} {why}");
                    eprintln!("{user} is waiting for calls (Ctrl-C to stop)");
                    continue;
                }
                Decision::Quit => {
                    let _ = client.reject(call_id).await;
                    return Ok(());
                }
                Decision::Lost => return Err(Error::Disconnected),
            }
            let result = self.take(client, events, lines, call_id, &from, offer, stun);
            match result.await {
                Err(e) if self.once || matches!(e, Error::Disconnected) => return Err(e),
                Err(e) => eprintln!("magpie: {e}"),
                Ok(()) if self.once => return Ok(()),
                Ok(()) => {}
            }
            eprintln!("{user} is waiting for calls (Ctrl-C to stop)");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn take(
        &self,
        client: &Client,
        events: &mut Events,
        lines: &mut mpsc::Receiver<String>,
        call_id: CallId,
        from: &UserName,
        offer: SessionDescription,
        stun: Option<SocketAddr>,
    ) -> Result<(), Error> {
        let bind = bind_addr(self.call);
        let relay_only = self.call.relay_only;
        let mut prepared = match Prepared::new(self.media.clone(), bind, stun, relay_only).await {
            Ok(prepared) => prepared,
            Err(e) => {
                // A device that worked at start and fails now: tell the caller at once.
                let _ = client.reject(call_id).await;
                return Err(e.into());
            }
        };
        // The callee allocates while its phone rings and puts the relay in its answer.
        if let Some(config) = relay_config(client, call_id, self.call).await {
            match prepared.allocate_relay(config, true).await {
                Ok(_) => {}
                Err(e) if relay_only => {
                    let _ = client.reject(call_id).await;
                    return Err(e.into());
                }
                Err(e) => debug!(error = %e, "answering without a relay"),
            }
        } else if relay_only {
            let _ = client.reject(call_id).await;
            let why = "the server offers none; give --turn";
            return Err(engine::Error::NoRelay(why.into()).into());
        }
        let answer = match prepared.answer(&offer) {
            Ok(answer) => answer,
            Err(e) => {
                let _ = client.reject(call_id).await;
                return Err(e.into());
            }
        };
        let answer_json = serde_json::to_value(&answer).expect("descriptions serialize");
        client
            .accept(call_id, answer_json)
            .await
            .map_err(Error::Server)?;
        let call = InCall {
            client,
            user: self.user,
            peer: from.as_str(),
            call_id,
            call: self.call,
            accepted_at: engine::now(),
        };
        call.run(events, lines, prepared, offer, Vec::new()).await
    }
}

/// Asks y/N on the terminal (or the lines given on stdin); Ctrl-C or the end of input
/// is a no.
pub(crate) async fn ask_line(question: &str, lines: &mut mpsc::Receiver<String>) -> bool {
    eprint!("{question}");
    tokio::select! {
        line = lines.recv() => line.is_some_and(|l| l.trim().eq_ignore_ascii_case("y")),
        _ = interrupted() => false,
    }
}

/// Tells the person a file waits on the server, where only `magpie receive` takes it.
pub(crate) fn note_file(offer: &magpie_signaling::proto::FileOffer) {
    eprintln!(
        "{} left {} on the server for you: `magpie receive` takes it",
        offer.from,
        crate::transfer::proto::FileInfo::from(offer.file.clone()).describe()
    );
}

/// Asks y/N while the call rings; the caller giving up, the ring timing out or another
/// session taking the call closes the question, and Ctrl-C leaves.
pub(crate) async fn prompt(
    question: &str,
    client: &Client,
    call_id: CallId,
    events: &mut Events,
    lines: &mut mpsc::Receiver<String>,
) -> Decision {
    eprint!("{question}");
    loop {
        tokio::select! {
            line = lines.recv() => return match line {
                Some(line) if line.trim().eq_ignore_ascii_case("y") => Decision::Take,
                _ => Decision::Decline,
            },
            incoming = events.recv() => match incoming {
                Some(Incoming::Event(Event::Cancelled { call_id: id, .. })) if id == call_id => {
                    return Decision::Gone("was cancelled");
                }
                Some(Incoming::Event(Event::Missed { call_id: id, .. })) if id == call_id => {
                    return Decision::Gone("was missed");
                }
                Some(Incoming::Event(Event::Hangup { call_id: id, .. })) if id == call_id => {
                    return Decision::Gone("ended");
                }
                Some(Incoming::Event(Event::AnsweredElsewhere { call_id: id, accepted }))
                    if id == call_id =>
                {
                    return Decision::Gone(if accepted {
                        "was answered on another device"
                    } else {
                        "was declined on another device"
                    });
                }
                Some(Incoming::Event(Event::Message(m))) => show_message(client, &m).await,
                Some(Incoming::Event(Event::ServerShutdown)) | None => return Decision::Lost,
                Some(other) => debug!(?other, "event at the prompt"),
            },
            _ = interrupted() => return Decision::Quit,
        }
    }
}

pub(crate) fn bind_addr(call: &CallArgs) -> SocketAddr {
    call.bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// What `--stats-json` holds.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    user: &'a str,
    peer: &'a str,
    /// The server's call id; `null` for a call on the LAN, which has none.
    call_id: Option<u64>,
    ended_because: String,
    report: &'a magpie_media::call::Report,
    /// The session's statistics: refusals by reason, counters of every stream.
    stats: &'a magpie_media::Stats,
    endpoint: &'a magpie_media::call::EndpointCounters,
    /// Which path media took: `{"kind", "remote", "relay", "switches", "selected_ms",
    /// "first_audio_ms"}`, `null` when none was found.
    path: Option<&'a PathSummary>,
    /// The code both people could read to each other (`"123 456"`).
    safety_code: SafetyCode,
    /// What `--sim` did to what we sent (`sent`, `lost`, `queue_drops`, `duplicated`,
    /// `delivered`); absent without `--sim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    sim: Option<magpie_media::netsim::NetSimStats>,
    /// `--sim` with a rate: our outgoing bottleneck (`utilization_percent`,
    /// `queue_delay_ms` p50/p95, `queue_delay_max_ms`, `self_inflicted_loss_percent`,
    /// `..._after_warm_up_percent`, `recovery_ms`, `drops_after_rate_drop`); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    bottleneck: Option<&'a magpie_media::netsim::BottleneckStats>,
}

/// While the peer rings: allocates a relay with `allocate` when the server (or `--turn`)
/// gives credentials, and trickles its candidate. An error cancels the invitation: a
/// relay was required (`--relay-only`) and none could be had (`none` says why, when no
/// credentials came).
pub(crate) async fn trickle_relay<E: Into<Error> + std::fmt::Display>(
    client: &Client,
    call_id: CallId,
    call: &CallArgs,
    none: &str,
    allocate: impl AsyncFnOnce(TurnConfig) -> Result<Candidate, E>,
) -> Result<(), Error> {
    let Some(config) = relay_config(client, call_id, call).await else {
        if call.relay_only {
            let _ = client.cancel(call_id).await;
            return Err(engine::Error::NoRelay(none.into()).into());
        }
        return Ok(());
    };
    match allocate(config).await {
        Ok(candidate) => {
            let value = serde_json::to_value(candidate).expect("candidates serialize");
            if let Err(e) = client.candidates(call_id, vec![value]).await {
                warn!(error = %e, "could not send the relay candidate");
            }
            Ok(())
        }
        Err(e) if call.relay_only => {
            let _ = client.cancel(call_id).await;
            Err(e.into())
        }
        Err(e) => {
            debug!(error = %e, "going on without a relay");
            Ok(())
        }
    }
}

/// Waits while `call_id` rings at `peer`: its answer, and the candidates the peer
/// trickled meanwhile. A rejection is the error `rejected` makes of the peer's name;
/// Ctrl-C cancels the invitation.
pub(crate) async fn await_answer(
    client: &Client,
    events: &mut Events,
    call_id: CallId,
    peer: &str,
    say_ringing: bool,
    rejected: fn(String) -> Error,
) -> Result<(serde_json::Value, Vec<Candidate>), Error> {
    let mut early = Vec::new();
    loop {
        let incoming = tokio::select! {
            incoming = events.recv() => incoming,
            _ = interrupted() => {
                let _ = client.cancel(call_id).await;
                return Err(Error::Ended("cancelled".into()));
            }
        };
        match incoming {
            Some(Incoming::Event(event)) => match event {
                Event::Ringing { call_id: id } if id == call_id => {
                    if say_ringing {
                        eprintln!("ringing ...");
                    }
                }
                Event::Accepted {
                    call_id: id,
                    answer,
                } if id == call_id => return Ok((answer, early)),
                Event::Rejected { call_id: id, .. } if id == call_id => {
                    return Err(rejected(peer.to_owned()));
                }
                Event::Missed { call_id: id, .. } if id == call_id => {
                    return Err(Error::NoAnswer(peer.to_owned()));
                }
                Event::Hangup {
                    call_id: id,
                    reason,
                } if id == call_id => {
                    return Err(Error::Ended(reason.as_str().to_owned()));
                }
                Event::Message(m) => show_message(client, &m).await,
                Event::Candidates(t) if t.call_id == call_id => early.extend(candidates_of(t)),
                Event::ServerShutdown => return Err(Error::Disconnected),
                other => debug!(?other, "event while ringing"),
            },
            Some(Incoming::Error(e)) => return Err(Error::Server(ClientError::Server(e))),
            None => return Err(Error::Disconnected),
        }
    }
}

/// Where to relay, and with which credentials: `--turn`, else the signaling server's
/// relay if it offers one; `None` with `--no-relay` or without a relay.
pub(crate) async fn relay_config(
    client: &Client,
    call_id: CallId,
    call: &CallArgs,
) -> Option<TurnConfig> {
    if call.no_relay {
        return None;
    }
    let (url, user, pass) = match &call.turn {
        Some(addr) => (
            addr.clone(),
            call.turn_user.clone()?,
            call.turn_pass.clone()?,
        ),
        None => match client.relay(call_id).await {
            Ok(servers) => {
                let server = servers.into_iter().next()?;
                let addr = crate::cli::turn_url(&server.url)
                    .inspect_err(|e| warn!(error = %e, "unusable relay from the server"))
                    .ok()?;
                (addr, server.username, server.credential)
            }
            Err(e) if e.code() == Some(ErrorCode::NoRelay) => return None,
            Err(e) => {
                warn!(error = %e, "no relay credentials");
                return None;
            }
        },
    };
    let server = match tokio::net::lookup_host(url.as_str()).await {
        Ok(mut addrs) => addrs.next()?,
        Err(e) => {
            warn!(error = %e, %url, "cannot resolve the relay");
            return None;
        }
    };
    Some(TurnConfig::new(server, user, pass))
}

/// The candidates of a `candidates` event that this client can use; the others are
/// logged and dropped (the peer's list is input from the network).
pub(crate) fn candidates_of(trickle: magpie_signaling::proto::Trickle) -> Vec<Candidate> {
    let parsed: Vec<Candidate> = trickle
        .candidates
        .into_iter()
        .filter_map(|v| {
            serde_json::from_value(v)
                .inspect_err(|e| warn!(error = %e, "unusable candidate from the peer"))
                .ok()
        })
        .collect();
    match crate::offer::validate_candidates(&parsed) {
        Ok(()) => parsed,
        Err(e) => {
            warn!(error = %e, "unusable candidates from the peer");
            Vec::new()
        }
    }
}

/// A call that was answered, on this side.
struct InCall<'a> {
    client: &'a Client,
    user: &'a str,
    peer: &'a str,
    call_id: CallId,
    call: &'a CallArgs,
    /// When the call was accepted, on this side's clock.
    accepted_at: std::time::Instant,
}

impl InCall<'_> {
    async fn run(
        &self,
        events: &mut Events,
        lines: &mut mpsc::Receiver<String>,
        prepared: Prepared,
        remote: SessionDescription,
        early: Vec<Candidate>,
    ) -> Result<(), Error> {
        let Self {
            client,
            user,
            peer,
            call_id,
            call,
            accepted_at,
        } = *self;
        let mut options = RunOptions::new(call, accepted_at);
        options.peer = Some(peer.to_string());
        // Candidates the peer sends after its description (its relay, trickled).
        let (trickle_tx, trickle_rx) = mpsc::channel(16);
        if !early.is_empty() {
            let _ = trickle_tx.try_send(early);
        }
        // Ours the engine finds during the call (a relay allocated again), for the peer.
        let (ours_tx, mut ours) = mpsc::channel(4);
        let trickle = Trickle {
            incoming: trickle_rx,
            outgoing: ours_tx,
        };
        let (mut stopper, stop_rx) = Stop::new();
        let mut stop = |cause| stopper.stop(cause);
        let fps = remote.video.as_ref().map(|v| v.fps);
        let engine = prepared.run(remote, options, stop_rx, trickle);
        tokio::pin!(engine);
        let mut stdin_open = true;
        let mut remote_ended = false;
        let peer_name = UserName::parse(peer).ok();
        let outcome: Outcome = loop {
            tokio::select! {
                outcome = &mut engine => match outcome {
                    Ok(outcome) => break outcome,
                    Err(e) => {
                        // Tell the peer at once rather than leave it to notice a silent path.
                        if !remote_ended && let Err(e) = client.hangup(call_id).await {
                            debug!(error = %e, "hangup");
                        }
                        return Err(e.into());
                    }
                },
                incoming = events.recv() => match incoming {
                    Some(Incoming::Event(Event::Hangup { call_id: id, reason })) if id == call_id => {
                        remote_ended = true;
                        stop(EndCause::Remote(reason.as_str().to_owned()));
                    }
                    Some(Incoming::Event(Event::Message(m))) => show_message(client, &m).await,
                    Some(Incoming::Event(Event::Candidates(t))) if t.call_id == call_id => {
                        let candidates = candidates_of(t);
                        if !candidates.is_empty() && trickle_tx.try_send(candidates).is_err() {
                            warn!("late candidates dropped: the call is not taking them");
                        }
                    }
                    Some(Incoming::Event(Event::ServerShutdown)) | None => {
                        remote_ended = true;
                        stop(EndCause::Remote("the signaling server went away".into()));
                    }
                    Some(Incoming::Error(e)) => {
                        remote_ended = true;
                        stop(EndCause::Remote(e.message));
                    }
                    Some(Incoming::Event(other)) => debug!(?other, "event in call"),
                },
                Some(candidates) = ours.recv() => {
                    let values = candidates
                        .iter()
                        .map(|c| serde_json::to_value(c).expect("candidates serialize"))
                        .collect();
                    if let Err(e) = client.candidates(call_id, values).await {
                        warn!(error = %e, "could not send a new candidate to the peer");
                    }
                }
                line = lines.recv(), if stdin_open => match line {
                    Some(text) if !text.trim().is_empty() => {
                        if let Some(to) = &peer_name {
                            // The sender sees their own line, as the peer will.
                            match client.message(to.as_str(), text.trim()).await {
                                Ok(sent) => chat_line(sent.sent_at, user, text.trim()),
                                Err(e) => eprintln!("message not sent: {e}"),
                            }
                        }
                    }
                    Some(_) => {}
                    None => stdin_open = false,
                },
                _ = interrupted() => stop(EndCause::Local),
            }
        };
        if !remote_ended && let Err(e) = client.hangup(call_id).await {
            debug!(error = %e, "hangup");
        }
        finish(user, peer, Some(call_id.0), call, &outcome, fps)
    }
}

/// What every call does at its end, through a server or on the LAN: the summary on
/// stderr, and `--stats-json`.
pub(crate) fn finish(
    user: &str,
    peer: &str,
    call_id: Option<u64>,
    call: &CallArgs,
    outcome: &Outcome,
    fps: Option<u32>,
) -> Result<(), Error> {
    if !call.no_summary {
        let summary = crate::summary::Summary::new(
            user,
            peer,
            outcome.cause.to_string(),
            &outcome.report,
            fps,
        );
        eprintln!("\n{summary}");
        match &outcome.path {
            Some(path) => eprintln!("{path}"),
            None => eprintln!("path: none found"),
        }
        eprintln!(
            "safety code {} (your peer's must be the same, or someone swapped the keys)",
            outcome.safety_code
        );
    }
    if let Some(path) = &call.stats_json {
        let summary = Summary {
            user,
            peer,
            call_id,
            ended_because: outcome.cause.to_string(),
            report: &outcome.report,
            stats: &outcome.stats,
            endpoint: &outcome.endpoint,
            path: outcome.path.as_ref(),
            safety_code: outcome.safety_code,
            sim: outcome.sim,
            bottleneck: outcome.bottleneck.as_ref(),
        };
        let json = serde_json::to_vec_pretty(&summary).expect("summaries serialize");
        std::fs::write(path, json).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc_dates() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_560_000_123), "2026-11-24 22:40:00 UTC");
    }
}

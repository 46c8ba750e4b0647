//! Finding the path a transfer runs on: the same connectivity checks as a call
//! ([`magpie_media::ice::Checker`], keyed by the exchange), direct or through our relay,
//! until a pair is selected. Then the socket, the checker and the relay become the
//! [`PathSocket`] QUIC runs on.

use std::sync::Arc;
use std::time::Duration;

use magpie_media::ice::turn::TurnClient;
use magpie_media::ice::{Candidate, Checker, Event};
use magpie_media::netsim::NetSim;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::socket::{PathSocket, outgoing};
use crate::engine::now;

/// The largest datagram read.
const MAX_DATAGRAM: usize = 2048;
/// How long to wait for a path when the checker sets no deadline of its own.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// No path was found.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No candidate pair answered.
    #[error("no UDP path to the peer: none of its {0} addresses answered")]
    NoPath(usize),
    /// The socket failed.
    #[error("transfer socket: {0}")]
    Socket(#[source] std::io::Error),
}

/// Runs the checks on `socket` (and through `turn`, when allocated) until a pair is
/// selected; candidates the peer sends late come through `trickle`. With `sim`, what
/// QUIC sends on the path is impaired first.
pub async fn establish(
    socket: UdpSocket,
    mut checker: Checker,
    mut turn: Option<TurnClient>,
    trickle: &mut mpsc::Receiver<Vec<Candidate>>,
    sim: Option<NetSim>,
) -> Result<Arc<PathSocket>, PathError> {
    let mut sim = Some(sim);
    let start = now();
    if let Some(t) = &turn {
        checker.add_relay_base(start, t.server().ip());
    }
    permit_all(&checker, turn.as_mut());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut trickle_open = true;
    loop {
        flush(&socket, &mut checker, turn.as_mut()).await;
        if let Some(event) = checker.poll_event() {
            match event {
                Event::Selected(path) => {
                    info!(%path, "transfer path selected");
                    let sim = sim.take().flatten();
                    return Ok(PathSocket::new(socket, path, Some(checker), turn, sim));
                }
                Event::Failed | Event::PathLost => {
                    return Err(PathError::NoPath(checker.remote_candidates().len()));
                }
            }
        }
        let deadline = [
            checker.poll_timeout(),
            turn.as_ref().and_then(TurnClient::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now() + IDLE_WAIT);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(PathError::Socket(e)),
                };
                let t = now();
                let server = turn.as_ref().map(TurnClient::server);
                if server == Some(from) {
                    let turn = turn.as_mut().expect("checked above");
                    match turn.handle_datagram(t, &buf[..len]) {
                        Ok(Some(relayed)) if Checker::is_stun(relayed.payload) => {
                            if let Err(e) = checker.handle_relayed(t, relayed.peer, relayed.payload)
                            {
                                debug!(error = %e, "relayed STUN refused");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => debug!(error = %e, "TURN datagram refused"),
                    }
                } else if let Err(e) = checker.handle_datagram(t, from, &buf[..len]) {
                    debug!(error = %e, "STUN refused");
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let t = now();
                checker.handle_timeout(t);
                if let Some(turn) = turn.as_mut() {
                    turn.handle_timeout(t);
                }
            }
            candidates = trickle.recv(), if trickle_open => match candidates {
                Some(candidates) => {
                    checker.add_remote_candidates(now(), &candidates);
                    permit_all(&checker, turn.as_mut());
                }
                None => trickle_open = false,
            },
        }
    }
}

/// Asks our relay to let every candidate of the peer through.
fn permit_all(checker: &Checker, turn: Option<&mut TurnClient>) {
    if let Some(turn) = turn {
        let t = now();
        for c in checker.remote_candidates() {
            turn.permit(t, c.addr);
        }
    }
}

async fn flush(socket: &UdpSocket, checker: &mut Checker, turn: Option<&mut TurnClient>) {
    for (bytes, to) in outgoing(Some(checker), turn) {
        if let Err(e) = socket.send_to(&bytes, to).await {
            debug!(error = %e, %to, "not sent");
        }
    }
}

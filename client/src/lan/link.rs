//! The socket shell of the direct channel: a TCP connection and the sans-IO
//! [`Channel`] of `magpie_signaling::lan`, which admits or refuses every line.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use magpie_signaling::lan::{Channel, Event, Identity, LanError, Message, PairingCode, Peer};
use magpie_signaling::lan::{MAX_LINE, Refusals};
use magpie_signaling::proto::UserName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a peer may take over the handshake: a connection that says nothing (a port
/// scan, a peer that vanished) is closed after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to try each announced address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The direct channel failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The socket failed.
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a line the channel refused.
    #[error("refused the peer's line: {0}")]
    Refused(#[from] LanError),
    /// The peer closed the connection.
    #[error("the peer closed the connection")]
    Closed,
    /// The handshake did not finish in time.
    #[error("the peer did not finish the handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout,
    /// None of the announced addresses took the connection.
    #[error("could not connect to any of {0:?}")]
    Unreachable(Vec<SocketAddr>),
}

/// An established direct channel to one peer.
pub struct Link {
    stream: TcpStream,
    buf: BytesMut,
    channel: Channel,
    /// Who the peer proved to be.
    pub peer: Peer,
    /// The code to compare on first contact.
    pub code: PairingCode,
}

impl Link {
    /// Connects to the first of `addrs` that answers and runs the handshake as initiator.
    pub async fn connect(
        addrs: &[SocketAddr],
        identity: Identity,
        me: UserName,
    ) -> Result<Self, LinkError> {
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "connect"),
                Err(_) => tracing::debug!(%addr, "connect timed out"),
            }
        }
        let stream = stream.ok_or_else(|| LinkError::Unreachable(addrs.to_vec()))?;
        let channel = Channel::initiator(identity, me, rand::random());
        Self::handshake(stream, channel).await.map_err(|(e, _)| e)
    }

    /// Runs the handshake as responder on an accepted connection. On failure, the
    /// refusals the channel counted come back with the error.
    pub async fn accept(
        stream: TcpStream,
        identity: Identity,
        me: UserName,
    ) -> Result<Self, (LinkError, Refusals)> {
        let channel = Channel::responder(identity, me, rand::random());
        Self::handshake(stream, channel).await
    }

    /// Runs the handshake; on failure, with what the channel refused.
    async fn handshake(stream: TcpStream, channel: Channel) -> Result<Self, (LinkError, Refusals)> {
        let _ = stream.set_nodelay(true);
        let mut pending = Pending {
            stream,
            buf: BytesMut::with_capacity(4096),
            channel,
        };
        let established = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            match pending.next().await? {
                Event::Established { peer, code } => Ok((peer, code)),
                // The channel yields messages only once established.
                Event::Message(_) => Err(LinkError::from(LanError::Unexpected("message"))),
            }
        });
        let (peer, code) = match established.await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err((e, pending.channel.refusals())),
            Err(_) => return Err((LinkError::Timeout, pending.channel.refusals())),
        };
        let Pending {
            stream,
            buf,
            channel,
        } = pending;
        Ok(Self {
            stream,
            buf,
            channel,
            peer,
            code,
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &Message) -> Result<(), LinkError> {
        self.channel.send(message)?;
        flush(&mut self.stream, &mut self.channel).await
    }

    /// The next message. Cancel-safe: what was read stays buffered.
    pub async fn recv(&mut self) -> Result<Message, LinkError> {
        loop {
            if let Some(event) = self.channel.handle_input(&mut self.buf)? {
                match event {
                    Event::Message(m) => return Ok(m),
                    Event::Established { .. } => return Err(LanError::Unexpected("auth").into()),
                }
            }
            read_more(&mut self.stream, &mut self.buf).await?;
        }
    }

    /// Lines refused on this channel.
    pub fn refusals(&self) -> Refusals {
        self.channel.refusals()
    }
}

/// A connection during its handshake.
struct Pending {
    stream: TcpStream,
    buf: BytesMut,
    channel: Channel,
}

impl Pending {
    async fn next(&mut self) -> Result<Event, LinkError> {
        loop {
            flush(&mut self.stream, &mut self.channel).await?;
            if let Some(event) = self.channel.handle_input(&mut self.buf)? {
                flush(&mut self.stream, &mut self.channel).await?;
                return Ok(event);
            }
            flush(&mut self.stream, &mut self.channel).await?;
            read_more(&mut self.stream, &mut self.buf).await?;
        }
    }
}

async fn flush(stream: &mut TcpStream, channel: &mut Channel) -> Result<(), LinkError> {
    while let Some(line) = channel.poll_transmit() {
        stream.write_all(&line).await?;
    }
    Ok(())
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), LinkError> {
    // The channel refuses a line past the limit before the buffer grows further.
    buf.reserve(4096.min(MAX_LINE));
    match stream.read_buf(buf).await? {
        0 => Err(LinkError::Closed),
        _ => Ok(()),
    }
}

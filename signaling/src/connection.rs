//! Buffered line I/O on a byte stream (TCP, or TLS over TCP). Framing is the codec's job;
//! this only moves bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;

use crate::codec::{CodecError, LineCodec};

/// Reading a line failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The peer sent an over-long line.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer closed the connection in the middle of a line.
    #[error("connection closed in the middle of a line")]
    ClosedMidLine,
}

/// A stream read and written a line at a time. `S` is the transport; the server and the
/// client use [`Stream`], plain TCP or TLS, so TLS is only a matter of what is accepted.
#[derive(Debug)]
pub struct Connection<S = Stream> {
    stream: BufWriter<S>,
    buffer: BytesMut,
    codec: LineCodec,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream; lines longer than `codec` allows are refused.
    pub fn new(socket: S, codec: LineCodec) -> Self {
        Self {
            stream: BufWriter::new(socket),
            buffer: BytesMut::with_capacity(4096),
            codec,
        }
    }

    /// Reads the next line, without its newline. `Ok(None)` when the peer closed
    /// cleanly. Cancel-safe: a partial line stays buffered.
    pub async fn read_line(&mut self) -> Result<Option<BytesMut>, ConnectionError> {
        loop {
            if let Some(line) = self.codec.decode(&mut self.buffer)? {
                return Ok(Some(line));
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                return Err(ConnectionError::ClosedMidLine);
            }
        }
    }

    /// Writes one line (a newline is appended) and flushes it.
    pub async fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.stream.write_all(line).await?;
        self.stream.write_all(b"\n").await?;
        self.stream.flush().await
    }

    /// Reads and drops input until end-of-file, `limit` bytes or `wait`, whichever
    /// comes first.
    pub async fn discard_input(&mut self, limit: usize, wait: std::time::Duration) {
        self.buffer.clear();
        let _ = tokio::time::timeout(wait, async {
            let mut discarded = 0;
            while discarded < limit {
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => discarded += n,
                }
                self.buffer.clear();
            }
        })
        .await;
    }

    /// Shuts down the write side, so the peer sees end-of-file after what was written.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }
}

/// A signaling transport: TCP, or TLS over TCP (server or client side).
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP (`--plain`, in-process tests).
    Plain(TcpStream),
    /// TLS over TCP. Boxed: a TLS session is some kilobytes, a TCP stream a few words.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Self {
        Self::Plain(stream)
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Stream {
    fn from(stream: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        Self::Tls(Box::new(stream.into()))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for Stream {
    fn from(stream: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        Self::Tls(Box::new(stream.into()))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

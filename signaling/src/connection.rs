//! Buffered line I/O on a TCP stream. Framing is the codec's job; this only moves bytes.

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
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

/// A TCP stream read and written a line at a time.
#[derive(Debug)]
pub struct Connection {
    stream: BufWriter<TcpStream>,
    buffer: BytesMut,
    codec: LineCodec,
}

impl Connection {
    /// Wraps a connected stream; lines longer than `codec` allows are refused.
    pub fn new(socket: TcpStream, codec: LineCodec) -> Self {
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

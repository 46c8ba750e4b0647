//! QUIC for file transfers: a self-signed identity per transfer, a verifier that accepts
//! exactly the peer's certificate named in its description, and the two ends of a
//! transfer over an established path.
//!
//! The receiver is the QUIC server and the sender the client; both present a
//! certificate (mutual TLS 1.3) and each checks the other's SHA-256 against the
//! fingerprint in the other's offer or answer. There is no unverified QUIC: a peer that
//! presents any other certificate fails the handshake. Reliability and congestion
//! control are QUIC's (BBR, which does not read the random loss of a bad link as
//! congestion the way CUBIC does).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use magpie_signaling::tls::{Fingerprint, provider};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{
    ClientConfig, Connection, Endpoint, EndpointConfig, ServerConfig, TokioRuntime,
    TransportConfig, VarInt,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tracing::{debug, info};

use super::progress::Progress;
use super::proto::{ALPN, Reply, StreamHeader, TransferOffer, Verdict};
use super::socket::PathSocket;
use super::store::{Inbox, Incoming, StoreError};

/// The name the sender asks for; the receiver's certificate is checked by fingerprint,
/// never by name.
const SERVER_NAME: &str = "magpie-peer";
/// How much of a file is read and written at a time.
const CHUNK: usize = 256 * 1024;
/// How long the receiver waits for the sender's connection once the path is up.
const CONNECT_WAIT: Duration = Duration::from_secs(15);
/// A peer silent this long is gone (keep-alives every 5 s keep an idle path open).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// A transfer that failed, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// TLS or QUIC could not be set up.
    #[error("cannot set up QUIC: {0}")]
    Setup(String),
    /// The QUIC handshake or connection failed (a wrong certificate ends here).
    #[error("the QUIC connection to the peer failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer never connected.
    #[error("the peer did not connect within {0:?}")]
    NoConnection(Duration),
    /// The peer went away mid-transfer.
    #[error("the peer went away: {0}")]
    Lost(String),
    /// The peer broke the protocol.
    #[error("the peer broke the transfer protocol: {0}")]
    Protocol(#[from] super::proto::ProtoError),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file changed since it was offered.
    #[error("{0} changed since it was offered")]
    Changed(PathBuf),
    /// The receiving side could not store a file.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The receiver refused a file at the end.
    #[error("{name}: {verdict}")]
    Refused {
        /// The file.
        name: String,
        /// What the receiver said.
        verdict: Verdict,
    },
}

/// A certificate and key made for one transfer, and the certificate's fingerprint.
pub struct QuicIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl QuicIdentity {
    /// A fresh self-signed identity (ECDSA P-256).
    pub fn generate() -> Result<Self, TransferError> {
        let made = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| TransferError::Setup(e.to_string()))?;
        let cert = made.cert.der().clone();
        let fingerprint = Fingerprint::of(&cert);
        Ok(Self {
            cert,
            key: PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()),
            fingerprint,
        })
    }

    /// The fingerprint that goes into this side's offer or answer.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// Accepts exactly one certificate: the peer's, by SHA-256.
#[derive(Debug)]
struct PinnedPeer {
    expected: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedPeer {
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let seen = Fingerprint::of(cert);
        if seen == self.expected {
            Ok(())
        } else {
            debug!(%seen, expected = %self.expected, "peer certificate refused");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for PinnedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for PinnedPeer {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

fn pinned(peer: Fingerprint) -> Arc<PinnedPeer> {
    Arc::new(PinnedPeer {
        expected: peer,
        provider: provider(),
    })
}

/// Tuned for bulk transfer on paths up to about 100 ms RTT at tens of Mbit/s: windows
/// of 16 MiB per stream cover that bandwidth-delay product with room for loss recovery.
fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("20 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    t.stream_receive_window(VarInt::from_u32(16 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(t)
}

fn server_config(
    identity: &QuicIdentity,
    peer: Fingerprint,
) -> Result<ServerConfig, TransferError> {
    let setup = |e: &dyn std::fmt::Display| TransferError::Setup(e.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup(&e))?
        .with_client_cert_verifier(pinned(peer))
        .with_single_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| setup(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| setup(&e))?;
    let mut config = ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

fn client_config(
    identity: &QuicIdentity,
    peer: Fingerprint,
) -> Result<ClientConfig, TransferError> {
    let setup = |e: &dyn std::fmt::Display| TransferError::Setup(e.to_string());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup(&e))?
        .dangerous()
        .with_custom_certificate_verifier(pinned(peer))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
        .map_err(|e| setup(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| setup(&e))?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

fn endpoint(
    socket: Arc<PathSocket>,
    server: Option<ServerConfig>,
) -> Result<Endpoint, TransferError> {
    Endpoint::new_with_abstract_socket(
        EndpointConfig::default(),
        server,
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(|e| TransferError::Setup(e.to_string()))
}

/// What the sender sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Files the receiver stored and verified.
    pub files: usize,
    /// File bytes put on the wire (the parts before the receiver's offsets excluded).
    pub bytes_sent: u64,
    /// Bytes skipped because the receiver had them from an earlier attempt.
    pub bytes_resumed: u64,
    /// QUIC's smoothed RTT of the path at the end.
    pub rtt: Duration,
    /// Packets QUIC declared lost and sent again.
    pub lost_packets: u64,
}

/// The sending end: connects to the receiver over `socket`, accepting only the
/// certificate `peer`, and sends each accepted file of `offer` (read from `sources`,
/// in the offer's order) from the offset the receiver asked for.
pub async fn send(
    socket: Arc<PathSocket>,
    identity: &QuicIdentity,
    peer: Fingerprint,
    offer: &TransferOffer,
    replies: &[Reply],
    sources: &[PathBuf],
    progress: &Progress,
) -> Result<SendReport, TransferError> {
    let to = socket.peer();
    let endpoint = endpoint(socket, None)?;
    let connecting = endpoint
        .connect_with(client_config(identity, peer)?, to, SERVER_NAME)
        .map_err(|e| TransferError::Setup(e.to_string()))?;
    let connection = connecting.await?;
    info!(peer = %to, "QUIC connected");
    let mut report = SendReport::default();
    for (index, ((file, reply), source)) in offer.files.iter().zip(replies).zip(sources).enumerate()
    {
        let Reply::Accept { offset } = *reply else {
            continue;
        };
        let header = StreamHeader {
            index: u16::try_from(index).expect("offers carry at most MAX_FILES files"),
            offset,
            length: file.size - offset,
        };
        progress.start_file(&file.name.to_string(), file.size, offset);
        let verdict = send_one(&connection, source, header, progress).await?;
        report.bytes_sent += header.length;
        report.bytes_resumed += offset;
        if verdict != Verdict::Stored {
            connection.close(VarInt::from_u32(1), b"refused");
            return Err(TransferError::Refused {
                name: file.name.to_string(),
                verdict,
            });
        }
        progress.finish_file();
        report.files += 1;
    }
    let stats = connection.stats();
    report.rtt = stats.path.rtt;
    report.lost_packets = stats.path.lost_packets;
    connection.close(VarInt::from_u32(0), b"done");
    // Let the close reach the peer.
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(report)
}

async fn send_one(
    connection: &Connection,
    source: &PathBuf,
    header: StreamHeader,
    progress: &Progress,
) -> Result<Verdict, TransferError> {
    let read_err = |source_err| TransferError::Read {
        path: source.clone(),
        source: source_err,
    };
    let mut file = File::open(source).map_err(read_err)?;
    if file.metadata().map_err(read_err)?.len() != header.offset + header.length {
        return Err(TransferError::Changed(source.clone()));
    }
    file.seek(SeekFrom::Start(header.offset))
        .map_err(read_err)?;
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(TransferError::Connection)?;
    let lost = |e: &dyn std::fmt::Display| TransferError::Lost(e.to_string());
    send.write_all(&header.encode())
        .await
        .map_err(|e| lost(&e))?;
    let mut remaining = header.length;
    let mut buf = vec![0u8; CHUNK];
    while remaining > 0 {
        let want = usize::try_from(remaining).unwrap_or(CHUNK).min(CHUNK);
        let n = file.read(&mut buf[..want]).map_err(read_err)?;
        if n == 0 {
            return Err(TransferError::Changed(source.clone()));
        }
        send.write_all(&buf[..n]).await.map_err(|e| lost(&e))?;
        remaining -= n as u64;
        progress.advance(n as u64);
    }
    send.finish().map_err(|e| lost(&e))?;
    let verdict = recv.read_to_end(1).await.map_err(|e| lost(&e))?;
    verdict
        .first()
        .and_then(|&b| Verdict::from_byte(b))
        .ok_or_else(|| TransferError::Lost("no verdict from the receiver".into()))
}

/// The receiving end: waits for the sender's connection over `socket`, accepting only
/// the certificate `peer`, and stores each accepted file of `offer` into `inbox`
/// through its `incoming` (one per file; `None` for a declined one). Returns where
/// each stored file went.
#[allow(clippy::too_many_arguments)]
pub async fn receive(
    socket: Arc<PathSocket>,
    identity: &QuicIdentity,
    peer: Fingerprint,
    offer: &TransferOffer,
    replies: &[Reply],
    mut incoming: Vec<Option<Incoming>>,
    inbox: &Inbox,
    progress: &Progress,
) -> Result<Vec<PathBuf>, TransferError> {
    let endpoint = endpoint(socket, Some(server_config(identity, peer)?))?;
    let accepting = tokio::time::timeout(CONNECT_WAIT, endpoint.accept())
        .await
        .map_err(|_| TransferError::NoConnection(CONNECT_WAIT))?
        .ok_or_else(|| TransferError::Setup("the endpoint closed".into()))?;
    let connection = accepting.await?;
    info!(peer = %connection.remote_address(), "QUIC connected");
    let mut stored = Vec::new();
    let mut pending = incoming.iter().filter(|i| i.is_some()).count();
    while pending > 0 {
        let (mut send, mut recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(e) => return Err(gone(&e, &incoming)),
        };
        let mut head = [0u8; StreamHeader::LEN];
        if let Err(e) = recv.read_exact(&mut head).await {
            return Err(gone(&e, &incoming));
        }
        let header = match StreamHeader::parse(&head, offer, replies) {
            Ok(header) => header,
            Err(e) => {
                let _ = send.write_all(&[Verdict::Refused as u8]).await;
                connection.close(VarInt::from_u32(2), b"protocol");
                return Err(e.into());
            }
        };
        let index = usize::from(header.index);
        let Some(mut file) = incoming.get_mut(index).and_then(Option::take) else {
            let _ = send.write_all(&[Verdict::Refused as u8]).await;
            connection.close(VarInt::from_u32(2), b"protocol");
            return Err(TransferError::Lost(format!("file {index} sent twice")));
        };
        let name = offer.files[index].name.to_string();
        progress.start_file(&name, offer.files[index].size, header.offset);
        loop {
            match recv.read_chunk(CHUNK, true).await {
                Ok(Some(chunk)) => {
                    if let Err(e) = file.write(&chunk.bytes) {
                        let _ = send.write_all(&[Verdict::WriteFailed as u8]).await;
                        let _ = send.finish();
                        connection.close(VarInt::from_u32(3), b"write failed");
                        return Err(e.into());
                    }
                    progress.advance(chunk.bytes.len() as u64);
                }
                Ok(None) => break,
                Err(e) => {
                    incoming[index] = Some(file);
                    return Err(gone(&e, &incoming));
                }
            }
        }
        if !file.is_complete() {
            incoming[index] = Some(file);
            return Err(gone(&"the stream ended early", &incoming));
        }
        let verdict = match file.finish(inbox) {
            Ok(path) => {
                stored.push(path);
                Ok(Verdict::Stored)
            }
            Err(e @ StoreError::HashMismatch { .. }) => Err((Verdict::HashMismatch, e)),
            Err(e) => Err((Verdict::WriteFailed, e)),
        };
        let byte = match &verdict {
            Ok(v) | Err((v, _)) => *v as u8,
        };
        let _ = send.write_all(&[byte]).await;
        let _ = send.finish();
        if let Err((_, e)) = verdict {
            let _ = send.stopped().await;
            connection.close(VarInt::from_u32(3), b"not stored");
            return Err(e.into());
        }
        progress.finish_file();
        pending -= 1;
    }
    // The sender closes once it has every verdict.
    let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
    Ok(stored)
}

/// The sender went away: say what is kept for a resume.
fn gone(e: &dyn std::fmt::Display, incoming: &[Option<Incoming>]) -> TransferError {
    let kept: Vec<String> = incoming
        .iter()
        .flatten()
        .filter(|i| i.written() > 0)
        .map(|i| format!("{} ({} bytes)", i.part_path().display(), i.written()))
        .collect();
    if kept.is_empty() {
        TransferError::Lost(e.to_string())
    } else {
        TransferError::Lost(format!(
            "{e}; kept {} to resume when it is sent again",
            kept.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use magpie_media::srtp::exchange::KeyPair;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::transfer::proto::{CertFingerprint, FileInfo, SafeName, Sha256Digest, VERSION};

    fn offer(content: &[u8], fingerprint: Fingerprint) -> TransferOffer {
        TransferOffer {
            version: VERSION,
            key: KeyPair::from_random([1; 32]).public(),
            candidates: vec![],
            fingerprint: CertFingerprint(fingerprint),
            files: vec![FileInfo {
                name: SafeName::parse("f.bin").unwrap(),
                size: content.len() as u64,
                sha256: Sha256Digest(Sha256::digest(content).into()),
                image: None,
            }],
        }
    }

    /// Two sockets on loopback, each a direct path to the other.
    async fn pair() -> (Arc<PathSocket>, Arc<PathSocket>) {
        let a = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        (PathSocket::direct(a, b_addr), PathSocket::direct(b, a_addr))
    }

    #[tokio::test]
    async fn a_file_crosses_when_both_certificates_match_their_pins() {
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f.bin");
        std::fs::write(&source, &content).unwrap();
        let (sender, receiver) = (
            QuicIdentity::generate().unwrap(),
            QuicIdentity::generate().unwrap(),
        );
        let offer = offer(&content, sender.fingerprint());
        let inbox = Inbox::open(dir.path().join("in")).unwrap();
        let incoming = vec![Some(inbox.prepare(&offer.files[0]).unwrap())];
        let replies = [Reply::Accept { offset: 0 }];
        let sources = &[source][..];
        let (a, b) = pair().await;
        let progress = Progress::Hidden;
        let (sent, stored) = tokio::join!(
            send(
                a,
                &sender,
                receiver.fingerprint(),
                &offer,
                &replies,
                sources,
                &progress
            ),
            receive(
                b,
                &receiver,
                sender.fingerprint(),
                &offer,
                &replies,
                incoming,
                &inbox,
                &progress
            ),
        );
        assert_eq!(sent.unwrap().bytes_sent, content.len() as u64);
        let stored = stored.unwrap();
        assert_eq!(std::fs::read(&stored[0]).unwrap(), content);
    }

    #[tokio::test]
    async fn a_peer_with_another_certificate_is_refused_and_gets_nothing() {
        let content = b"secret".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f.bin");
        std::fs::write(&source, &content).unwrap();
        let sender = QuicIdentity::generate().unwrap();
        let receiver = QuicIdentity::generate().unwrap();
        // Someone in the middle with its own certificate, where the sender expects the
        // receiver's fingerprint.
        let impostor = QuicIdentity::generate().unwrap();
        let offer = offer(&content, sender.fingerprint());
        let inbox = Inbox::open(dir.path().join("in")).unwrap();
        let incoming = vec![Some(inbox.prepare(&offer.files[0]).unwrap())];
        let replies = [Reply::Accept { offset: 0 }];
        let sources = &[source][..];
        let (a, b) = pair().await;
        let progress = Progress::Hidden;
        let received = tokio::time::timeout(
            Duration::from_secs(10),
            receive(
                b,
                &impostor,
                sender.fingerprint(),
                &offer,
                &replies,
                incoming,
                &inbox,
                &progress,
            ),
        );
        let (sent, received) = tokio::join!(
            send(
                a,
                &sender,
                receiver.fingerprint(),
                &offer,
                &replies,
                sources,
                &progress
            ),
            received,
        );
        let err = sent.unwrap_err();
        assert!(matches!(err, TransferError::Connection(_)), "{err}");
        assert!(
            !matches!(received, Ok(Ok(_))),
            "the impostor must not get the file"
        );
        assert!(!inbox.dir().join("f.bin").exists());
    }

    #[tokio::test]
    async fn a_sender_with_another_certificate_is_refused_by_the_receiver() {
        let content = b"unsolicited".to_vec();
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f.bin");
        std::fs::write(&source, &content).unwrap();
        let (sender, receiver) = (
            QuicIdentity::generate().unwrap(),
            QuicIdentity::generate().unwrap(),
        );
        // The receiver was told of another sender's certificate.
        let expected = QuicIdentity::generate().unwrap().fingerprint();
        let offer = offer(&content, expected);
        let inbox = Inbox::open(dir.path().join("in")).unwrap();
        let incoming = vec![Some(inbox.prepare(&offer.files[0]).unwrap())];
        let replies = [Reply::Accept { offset: 0 }];
        let sources = &[source][..];
        let (a, b) = pair().await;
        let progress = Progress::Hidden;
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            send(
                a,
                &sender,
                receiver.fingerprint(),
                &offer,
                &replies,
                sources,
                &progress,
            ),
        );
        let (sent, received) = tokio::join!(
            sent,
            receive(
                b, &receiver, expected, &offer, &replies, incoming, &inbox, &progress
            ),
        );
        assert!(
            !matches!(sent, Ok(Ok(_))),
            "the sender must not be told it succeeded"
        );
        let err = received.unwrap_err();
        assert!(matches!(err, TransferError::Connection(_)), "{err}");
        assert!(!inbox.dir().join("f.bin").exists());
    }
}

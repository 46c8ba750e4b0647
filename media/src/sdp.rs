//! SDP (RFC 8866) for plain RTP interop: the description `magpie stream` writes for
//! ffplay and GStreamer, and the one ffmpeg writes (`-sdp_file`) that `magpie play` reads.
//!
//! Only what a unicast RTP/AVP stream of Opus (RFC 7587 §7) or H.264 (RFC 6184 §8) needs
//! is understood: `c=` (session or media level), `m=` with its port, `a=rtpmap`,
//! `a=fmtp` (`packetization-mode`, `sprop-parameter-sets`, `sprop-stereo`) and
//! `a=rtcp`/`a=rtcp-mux`. Other lines are skipped; media in other formats are counted in
//! [`Sdp::unsupported`] and left out. Calls between Magpie users never use SDP: their
//! descriptions are JSON, with keys (see `srtp::exchange`).

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use thiserror::Error;

use crate::types::Pt;

/// The largest description read: ffmpeg's are a few hundred bytes.
pub const MAX_LEN: usize = 64 * 1024;
/// The most media sections read.
const MAX_MEDIA: usize = 16;
/// The most parameter sets taken from `sprop-parameter-sets`.
const MAX_PARAMETER_SETS: usize = 8;

/// Why a description cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SdpError {
    /// Longer than [`MAX_LEN`].
    #[error("the description is {0} bytes; at most {MAX_LEN} are read")]
    TooLarge(usize),
    /// A line that breaks the grammar.
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More media sections than [`MAX_MEDIA`].
    #[error("more than {MAX_MEDIA} media sections")]
    TooManyMedia,
    /// A media section with no `c=` address, at its level or the session's.
    #[error("the {0} section has no connection address (c=)")]
    NoConnection(MediaKind),
    /// Nothing in the description is Opus audio or H.264 video over RTP/AVP.
    #[error("no Opus audio or H.264 video over RTP/AVP in the description")]
    NothingPlayable,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Audio => "audio",
            Self::Video => "video",
        })
    }
}

/// A codec this crate packetizes, with what its SDP parameters say.
#[derive(Debug, Clone, PartialEq)]
pub enum Codec {
    /// Opus on its 48 kHz RTP clock (the `rtpmap` always says two channels).
    Opus {
        /// `sprop-stereo=1`: the sender is likely to send stereo.
        stereo: bool,
        /// Frame duration in ms (`a=ptime`), when given.
        ptime_ms: Option<u32>,
    },
    /// H.264 on its 90 kHz RTP clock.
    H264 {
        /// `packetization-mode` (0 single NAL, 1 non-interleaved).
        packetization_mode: u8,
        /// `sprop-parameter-sets`: the SPS and PPS NAL units, decoded.
        parameter_sets: Vec<Bytes>,
        /// `profile-level-id`, as written.
        profile_level_id: Option<String>,
        /// `a=framerate`, when given.
        framerate: Option<f32>,
    },
}

/// One media section: where its RTP and RTCP go, and what it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Media {
    /// Audio or video.
    pub kind: MediaKind,
    /// The connection address (`c=`): the receiver, for unicast.
    pub addr: IpAddr,
    /// The RTP port.
    pub port: u16,
    /// The RTCP port: `a=rtcp`, the RTP port with `a=rtcp-mux`, else the next port up.
    pub rtcp_port: u16,
    /// The payload type the codec is carried on.
    pub pt: Pt,
    /// The codec and its parameters.
    pub codec: Codec,
}

/// A session description.
#[derive(Debug, Clone, PartialEq)]
pub struct Sdp {
    /// `s=`, the session's name.
    pub name: String,
    /// The media this crate can carry, in the order given.
    pub media: Vec<Media>,
    /// Media sections left out: another format, transport or codec.
    pub unsupported: usize,
}

/// What a media section says, as it is read.
struct Section {
    kind: Option<MediaKind>,
    port: u16,
    rtp: bool,
    formats: Vec<u8>,
    addr: Option<IpAddr>,
    rtpmap: Vec<(u8, String, u32)>,
    fmtp: Vec<(u8, String)>,
    rtcp_port: Option<u16>,
    rtcp_mux: bool,
    ptime_ms: Option<u32>,
    framerate: Option<f32>,
}

impl Sdp {
    /// Parses a description; what cannot be carried is skipped and counted, what breaks
    /// the grammar is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        if text.len() > MAX_LEN {
            return Err(SdpError::TooLarge(text.len()));
        }
        let mut name = String::new();
        let mut session_addr = None;
        let mut sections: Vec<Section> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let raw = raw.trim_end_matches('\r');
            if raw.trim().is_empty() {
                continue;
            }
            let err = |reason| SdpError::Line { line, reason };
            let (key, value) = match raw.as_bytes() {
                [key, b'=', ..] => (*key, &raw[2..]),
                _ => return Err(err("expected <type>=<value>")),
            };
            match (key, sections.last_mut()) {
                (b's', None) => name = value.chars().take(256).collect(),
                (b'c', None) => session_addr = Some(connection(value).ok_or(err("bad c= line"))?),
                (b'm', _) => {
                    if sections.len() == MAX_MEDIA {
                        return Err(SdpError::TooManyMedia);
                    }
                    sections.push(media_line(value).ok_or(err("bad m= line"))?);
                }
                (b'c', Some(s)) => s.addr = Some(connection(value).ok_or(err("bad c= line"))?),
                (b'a', Some(s)) => attribute(s, value).ok_or(err("bad attribute"))?,
                _ => {}
            }
        }
        let mut media = Vec::new();
        let mut unsupported = 0;
        for s in sections {
            match s.into_media(session_addr)? {
                Some(m) => media.push(m),
                None => unsupported += 1,
            }
        }
        if media.is_empty() {
            return Err(SdpError::NothingPlayable);
        }
        Ok(Self {
            name,
            media,
            unsupported,
        })
    }

    /// The first audio section, if any.
    pub fn audio(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == MediaKind::Audio)
    }

    /// The first video section, if any.
    pub fn video(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.kind == MediaKind::Video)
    }
}

impl Section {
    /// The section as media this crate carries, `None` when it carries something else.
    fn into_media(self, session_addr: Option<IpAddr>) -> Result<Option<Media>, SdpError> {
        let Some(kind) = self.kind.filter(|_| self.rtp && self.port != 0) else {
            return Ok(None);
        };
        let fmtp = |pt: u8| {
            self.fmtp
                .iter()
                .find(|(p, _)| *p == pt)
                .map_or("", |(_, v)| v.as_str())
        };
        // The first format in the m= line's order that we carry.
        let found = self.formats.iter().find_map(|&pt| {
            let (_, encoding, rate) = self.rtpmap.iter().find(|(p, ..)| *p == pt)?;
            let params = fmtp(pt);
            let codec = match (kind, encoding.to_ascii_lowercase().as_str(), *rate) {
                (MediaKind::Audio, "opus", 48_000) => Codec::Opus {
                    stereo: param(params, "sprop-stereo") == Some("1"),
                    ptime_ms: self.ptime_ms,
                },
                (MediaKind::Video, "h264", 90_000) => {
                    let mode = param(params, "packetization-mode").unwrap_or("0");
                    Codec::H264 {
                        packetization_mode: mode.parse().ok().filter(|m| *m <= 1)?,
                        parameter_sets: param(params, "sprop-parameter-sets")
                            .map(parameter_sets)
                            .unwrap_or_default(),
                        profile_level_id: param(params, "profile-level-id").map(str::to_owned),
                        framerate: self.framerate,
                    }
                }
                _ => return None,
            };
            Some((Pt(pt), codec))
        });
        let Some((pt, codec)) = found else {
            return Ok(None);
        };
        let addr = self
            .addr
            .or(session_addr)
            .ok_or(SdpError::NoConnection(kind))?;
        let rtcp_port = match (self.rtcp_mux, self.rtcp_port) {
            (true, _) => self.port,
            (false, Some(port)) => port,
            (false, None) => self.port.saturating_add(1),
        };
        Ok(Some(Media {
            kind,
            addr,
            port: self.port,
            rtcp_port,
            pt,
            codec,
        }))
    }
}

/// `IN IP4 ADDR[/TTL[/N]]` or `IN IP6 ADDR[/N]`.
fn connection(value: &str) -> Option<IpAddr> {
    let mut parts = value.split_ascii_whitespace();
    let (net, family, addr) = (parts.next()?, parts.next()?, parts.next()?);
    let addr: IpAddr = addr.split('/').next()?.parse().ok()?;
    let family_ok = match family {
        "IP4" => addr.is_ipv4(),
        "IP6" => addr.is_ipv6(),
        _ => false,
    };
    (net == "IN" && family_ok).then_some(addr)
}

/// `<media> <port>[/<count>] <proto> <fmt> ...`.
fn media_line(value: &str) -> Option<Section> {
    let mut parts = value.split_ascii_whitespace();
    let kind = match parts.next()? {
        "audio" => Some(MediaKind::Audio),
        "video" => Some(MediaKind::Video),
        _ => None,
    };
    let port = parts.next()?.split('/').next()?.parse().ok()?;
    let proto = parts.next()?;
    let formats = parts.filter_map(|f| f.parse().ok()).take(64).collect();
    Some(Section {
        kind,
        port,
        rtp: matches!(proto, "RTP/AVP" | "RTP/AVPF"),
        formats,
        addr: None,
        rtpmap: Vec::new(),
        fmtp: Vec::new(),
        rtcp_port: None,
        rtcp_mux: false,
        ptime_ms: None,
        framerate: None,
    })
}

/// One `a=` line of a media section; `None` when a known attribute is malformed.
fn attribute(s: &mut Section, value: &str) -> Option<()> {
    let (name, rest) = value.split_once(':').unwrap_or((value, ""));
    match name {
        "rtpmap" if s.rtpmap.len() < 64 => {
            let (pt, encoding) = rest.split_once(' ')?;
            let mut enc = encoding.trim().split('/');
            let codec = enc.next()?.chars().take(32).collect();
            let rate = enc.next()?.parse().ok()?;
            s.rtpmap.push((pt.parse().ok()?, codec, rate));
        }
        "fmtp" if s.fmtp.len() < 64 => {
            let (pt, params) = rest.split_once(' ')?;
            s.fmtp
                .push((pt.parse().ok()?, params.chars().take(4096).collect()));
        }
        "rtcp" => s.rtcp_port = Some(rest.split_ascii_whitespace().next()?.parse().ok()?),
        "rtcp-mux" => s.rtcp_mux = true,
        "ptime" => s.ptime_ms = rest.trim().parse().ok(),
        "framerate" => s.framerate = rest.trim().parse().ok().filter(|f: &f32| f.is_finite()),
        _ => {}
    }
    Some(())
}

/// The value of `key` in an fmtp parameter list (`a=1; b=2` or `a=1;b=2`).
fn param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case(key)).then_some(v.trim())
    })
}

/// `sprop-parameter-sets`: base64 NAL units separated by commas; bad ones are skipped.
fn parameter_sets(value: &str) -> Vec<Bytes> {
    value
        .split(',')
        .filter_map(|b64| STANDARD.decode(b64.trim()).ok())
        .filter(|nal| !nal.is_empty())
        .take(MAX_PARAMETER_SETS)
        .map(Bytes::from)
        .collect()
}

impl fmt::Display for Sdp {
    /// Writes the description (CRLF line ends, RFC 8866 §5): what ffplay and GStreamer's
    /// `sdpdemux` read. Each media section carries its own `c=` line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self
            .media
            .first()
            .map_or(IpAddr::from([127, 0, 0, 1]), |m| m.addr);
        write!(f, "v=0\r\n")?;
        write!(f, "o=- 0 0 IN {} {origin}\r\n", family(origin))?;
        write!(f, "s={}\r\n", self.name.replace(['\r', '\n'], " "))?;
        write!(f, "t=0 0\r\n")?;
        write!(f, "a=tool:magpie\r\n")?;
        for m in &self.media {
            let pt = m.pt.0;
            write!(f, "m={} {} RTP/AVP {pt}\r\n", m.kind, m.port)?;
            write!(f, "c=IN {} {}\r\n", family(m.addr), m.addr)?;
            if m.rtcp_port == m.port {
                write!(f, "a=rtcp-mux\r\n")?;
            } else if m.rtcp_port != m.port.wrapping_add(1) {
                write!(f, "a=rtcp:{}\r\n", m.rtcp_port)?;
            }
            match &m.codec {
                Codec::Opus { stereo, ptime_ms } => {
                    write!(f, "a=rtpmap:{pt} opus/48000/2\r\n")?;
                    let s = u8::from(*stereo);
                    write!(f, "a=fmtp:{pt} minptime=10;useinbandfec=1")?;
                    write!(f, ";stereo={s};sprop-stereo={s}\r\n")?;
                    if let Some(ms) = ptime_ms {
                        write!(f, "a=ptime:{ms}\r\n")?;
                    }
                }
                Codec::H264 {
                    packetization_mode,
                    parameter_sets,
                    profile_level_id,
                    framerate,
                } => {
                    write!(f, "a=rtpmap:{pt} H264/90000\r\n")?;
                    write!(f, "a=fmtp:{pt} packetization-mode={packetization_mode}")?;
                    if let Some(id) = profile_level_id {
                        write!(f, ";profile-level-id={id}")?;
                    }
                    if !parameter_sets.is_empty() {
                        let sets: Vec<String> =
                            parameter_sets.iter().map(|s| STANDARD.encode(s)).collect();
                        write!(f, ";sprop-parameter-sets={}", sets.join(","))?;
                    }
                    write!(f, "\r\n")?;
                    if let Some(fps) = framerate {
                        write!(f, "a=framerate:{fps}\r\n")?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn family(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() { "IP4" } else { "IP6" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ffmpeg -f rtp ... -sdp_file` wrote (ffmpeg 5.1): video then audio, the
    /// connection at media level, no parameter sets (they travel in band).
    const FFMPEG: &str = "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=No Name\nt=0 0\n\
        a=tool:libavformat LIBAVFORMAT_VERSION\nm=video 25004 RTP/AVP 96\n\
        c=IN IP4 127.0.0.1\na=rtpmap:96 H264/90000\na=fmtp:96 packetization-mode=1\n\
        m=audio 25006 RTP/AVP 97\nc=IN IP4 127.0.0.1\nb=AS:64\na=rtpmap:97 opus/48000/2\n";

    #[test]
    fn ffmpegs_description_parses() {
        let sdp = Sdp::parse(FFMPEG).unwrap();
        assert_eq!(sdp.name, "No Name");
        let video = sdp.video().unwrap();
        assert_eq!(
            (video.port, video.rtcp_port, video.pt),
            (25004, 25005, Pt(96))
        );
        assert_eq!(video.addr, IpAddr::from([127, 0, 0, 1]));
        assert!(matches!(
            &video.codec,
            Codec::H264 { packetization_mode: 1, parameter_sets, .. } if parameter_sets.is_empty()
        ));
        let audio = sdp.audio().unwrap();
        assert_eq!((audio.port, audio.pt), (25006, Pt(97)));
        assert_eq!(
            audio.codec,
            Codec::Opus {
                stereo: false,
                ptime_ms: None
            }
        );
        assert_eq!(sdp.unsupported, 0);
    }

    #[test]
    fn parameter_sets_and_session_level_connection_are_read() {
        let text = "v=0\r\nc=IN IP6 ::1\r\nm=video 5000 RTP/AVP 100 96\r\n\
            a=rtpmap:96 H264/90000\r\n\
            a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z0LAHtkA,aM4PyA==; profile-level-id=42C01E\r\n\
            a=rtcp:6000\r\na=framerate:25\r\nm=audio 5002 RTP/AVP 111\r\n\
            a=rtpmap:111 OPUS/48000/2\r\na=fmtp:111 sprop-stereo=1\r\na=rtcp-mux\r\n";
        let sdp = Sdp::parse(text).unwrap();
        let video = sdp.video().unwrap();
        assert_eq!(video.addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!((video.pt, video.rtcp_port), (Pt(96), 6000));
        let Codec::H264 {
            parameter_sets,
            profile_level_id,
            framerate,
            ..
        } = &video.codec
        else {
            panic!("not H.264");
        };
        assert_eq!(parameter_sets.len(), 2);
        assert_eq!(parameter_sets[0][0] & 0x1f, 7, "an SPS first");
        assert_eq!(parameter_sets[1][0] & 0x1f, 8, "then a PPS");
        assert_eq!(profile_level_id.as_deref(), Some("42C01E"));
        assert_eq!(*framerate, Some(25.0));
        let audio = sdp.audio().unwrap();
        assert_eq!(audio.rtcp_port, audio.port);
        assert!(matches!(audio.codec, Codec::Opus { stereo: true, .. }));
    }

    #[test]
    fn what_we_write_reads_back_the_same() {
        let sdp = Sdp {
            name: "magpie stream".into(),
            media: vec![
                Media {
                    kind: MediaKind::Audio,
                    addr: IpAddr::from([192, 0, 2, 7]),
                    port: 5004,
                    rtcp_port: 5005,
                    pt: Pt(111),
                    codec: Codec::Opus {
                        stereo: false,
                        ptime_ms: Some(20),
                    },
                },
                Media {
                    kind: MediaKind::Video,
                    addr: IpAddr::from([192, 0, 2, 7]),
                    port: 5006,
                    rtcp_port: 5007,
                    pt: Pt(96),
                    codec: Codec::H264 {
                        packetization_mode: 1,
                        parameter_sets: vec![
                            Bytes::from_static(&[0x67, 0x42]),
                            Bytes::from_static(&[0x68, 0xce]),
                        ],
                        profile_level_id: Some("42e01f".into()),
                        framerate: Some(30.0),
                    },
                },
            ],
            unsupported: 0,
        };
        let text = sdp.to_string();
        assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
        assert!(text.contains("packetization-mode=1"), "{text}");
        assert!(
            text.contains("m=video 5006 RTP/AVP 96\r\nc=IN IP4 192.0.2.7\r\n"),
            "{text}"
        );
        assert_eq!(Sdp::parse(&text).unwrap(), sdp);
    }

    #[test]
    fn other_media_are_counted_and_left_out() {
        let text = "v=0\nc=IN IP4 10.0.0.1\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\n\
            m=audio 4000 RTP/AVP 0\nm=audio 0 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n\
            m=video 4002 RTP/AVP 96\na=rtpmap:96 VP8/90000\nm=audio 4004 RTP/AVP 111\n\
            a=rtpmap:111 opus/48000/2\n";
        let sdp = Sdp::parse(text).unwrap();
        assert_eq!(sdp.media.len(), 1);
        assert_eq!(sdp.unsupported, 4);
        assert!(Sdp::parse("v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\n").is_err());
    }

    #[test]
    fn broken_descriptions_say_which_line() {
        assert_eq!(
            Sdp::parse("v=0\nm=audio x RTP/AVP 111\n"),
            Err(SdpError::Line {
                line: 2,
                reason: "bad m= line"
            })
        );
        assert!(matches!(
            Sdp::parse("v=0\nc=IN IP4 999.1.1.1\n"),
            Err(SdpError::Line { line: 2, .. })
        ));
        assert!(matches!(
            Sdp::parse("garbage"),
            Err(SdpError::Line { line: 1, .. })
        ));
        assert_eq!(
            Sdp::parse("m=audio 4000 RTP/AVP 111\na=rtpmap:111 opus/48000/2\n"),
            Err(SdpError::NoConnection(MediaKind::Audio))
        );
        let long = "a".repeat(MAX_LEN + 1);
        assert_eq!(Sdp::parse(&long), Err(SdpError::TooLarge(MAX_LEN + 1)));
        let many = "m=audio 1 RTP/AVP 1\n".repeat(MAX_MEDIA + 1);
        assert_eq!(Sdp::parse(&many), Err(SdpError::TooManyMedia));
        // Multi-byte characters where ASCII is expected are an error, not a panic.
        assert!(Sdp::parse("é=1\n").is_err());
        assert!(Sdp::parse("v=0\nm=audio 4000 RTP/AVP 111\na=rtpmap:111 é/é\n").is_err());
    }
}

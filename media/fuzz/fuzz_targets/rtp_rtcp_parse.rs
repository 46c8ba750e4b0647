//! Every datagram shape through the RFC 5761 demultiplexer and the RTP/RTCP parsers;
//! whatever parses must survive a build/parse round trip, and take a send time and a
//! transport-wide sequence number; transport-cc feedback that parses round-trips exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_media::wire::{self, Kind};

fuzz_target!(|data: &[u8]| {
    let _ = wire::classify(data);
    if let Ok(packet) = wire::parse_rtp(data, 3) {
        let bytes = wire::build_rtp(&packet.header, &packet.payload, 3)
            .expect("a parsed header serializes");
        let again = wire::parse_rtp(&bytes, 3).expect("our own RTP parses");
        assert_eq!(again.header, packet.header);
        assert_eq!(again.payload, packet.payload);
        let mut stamped = bytes::BytesMut::new();
        wire::add_send_time(&bytes, 4, wire::AbsSendTime(0x12_3456), &mut stamped)
            .expect("our own RTP takes a send time");
        let timed = wire::parse_rtp_with(&stamped, 3, Some(4)).expect("a stamped packet parses");
        assert_eq!(timed.header, packet.header);
        assert_eq!(timed.payload, packet.payload);
        assert_eq!(timed.send_time, Some(wire::AbsSendTime(0x12_3456)));
        let mut both = bytes::BytesMut::new();
        let time = wire::AbsSendTime(0x12_3456).to_bytes();
        wire::add_extensions(&bytes, &[(4, &time), (5, &[0xab, 0xcd])], &mut both)
            .expect("our own RTP takes two elements");
        let ids = wire::ExtIds {
            capture: 3,
            send_time: Some(4),
            transport_seq: Some(5),
        };
        let numbered = wire::parse_rtp_ext(&both, ids).expect("a numbered packet parses");
        assert_eq!(numbered.header, packet.header);
        assert_eq!(numbered.payload, packet.payload);
        assert_eq!(numbered.transport_seq, Some(0xabcd));
    }
    // Whatever a peer puts in the send-time element parses or is refused, never panics.
    let _ = wire::parse_rtp_with(data, 3, Some(4));
    let ids = wire::ExtIds {
        capture: 3,
        send_time: Some(4),
        transport_seq: Some(5),
    };
    let _ = wire::parse_rtp_ext(data, ids);
    if let Ok(packets) = wire::parse_rtcp(data) {
        for p in &packets {
            if let wire::Rtcp::TransportFeedback(fb) = p {
                let bytes = fb.marshal().expect("parsed feedback serializes");
                let again = wire::TransportFeedback::parse(&bytes).expect("our own parses");
                assert_eq!(&again, fb);
            }
        }
        if let Ok(bytes) = wire::build_rtcp(&packets) {
            assert_eq!(
                wire::classify(&bytes) == Kind::Rtcp,
                !bytes.is_empty() && bytes[1] >= 192
            );
            let _ = wire::parse_rtcp(&bytes);
        }
    }
});

//! Every datagram shape through the RFC 5761 demultiplexer and the RTP/RTCP parsers;
//! whatever parses must survive a build/parse round trip.
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
    }
    if let Ok(packets) = wire::parse_rtcp(data) {
        if let Ok(bytes) = wire::build_rtcp(&packets) {
            assert_eq!(wire::classify(&bytes) == Kind::Rtcp, !bytes.is_empty() && bytes[1] >= 192);
            let _ = wire::parse_rtcp(&bytes);
        }
    }
});

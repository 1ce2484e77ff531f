//! Control-packet decoder, data-header peek and TCP stream framing on arbitrary bytes.
#![no_main]
use bulwark_worker::proto::packet::{classify, peek_data_header, ControlPacket, TcpDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    let _ = peek_data_header(data);
    if let Ok(p) = ControlPacket::decode_plain(data) {
        // whatever decodes must re-encode to the same bytes
        let mut out = Vec::new();
        if p.encode_plain(&mut out).is_ok() {
            assert_eq!(out, data);
        }
    }
    let mut dec = TcpDecoder::new(2048);
    for chunk in data.chunks(7) {
        if dec.push(chunk).is_err() {
            break;
        }
        while let Ok(Some(_)) = dec.next_packet() {}
    }
});

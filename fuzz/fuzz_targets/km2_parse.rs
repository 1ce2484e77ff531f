//! Key-method-2 client message and peer-info parsing.
#![no_main]
use bulwark_worker::proto::km2::{ClientKeyMessage, Km2Limits, PeerInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ClientKeyMessage::parse(data, &Km2Limits::default()) {
        let _ = m.occ_cipher();
        let _ = m.uses_compression();
        let _ = m.peer_info.proto();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let p = PeerInfo::parse(s);
        let _ = (p.ciphers(), p.ncp(), p.mtu(), p.proto());
    }
});

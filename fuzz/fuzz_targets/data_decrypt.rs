//! Data-channel decryption (AEAD and CBC+HMAC), then compression framing and magic classification.
#![no_main]
use bulwark_worker::proto::data::{Cipher, DataKey, DataKeyConfig, Digest};
use bulwark_worker::proto::keys::{Key2, Role};
use bulwark_worker::proto::magic::{classify, CompressionFraming};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pkt)) = data.split_first() else {
        return;
    };
    let cipher = match sel % 4 {
        0 => Cipher::Aes256Gcm,
        1 => Cipher::Aes128Gcm,
        2 => Cipher::ChaCha20Poly1305,
        _ => Cipher::Aes256Cbc,
    };
    let mut k = [0u8; 256];
    k.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i as u8) ^ 0x5a);
    let Ok(key2) = Key2::from_bytes(&k) else {
        return;
    };
    let cfg = DataKeyConfig {
        cipher,
        auth: Digest::parse("SHA256").unwrap(),
        key_id: 0,
        peer_id: Some(0),
        replay_window: 64,
        replay_seconds: 15,
    };
    let Ok(mut dk) = DataKey::from_key2(&cfg, &key2, Role::Server) else {
        return;
    };
    let mut buf = pkt.to_vec();
    if let Ok(range) = dk.decrypt(&mut buf, 1_800_000_000) {
        for f in [
            CompressionFraming::None,
            CompressionFraming::StubV1,
            CompressionFraming::StubV1Swap,
            CompressionFraming::StubV2,
        ] {
            let mut b = buf.clone();
            if let Ok(r) = f.decode(&mut b, range.clone()) {
                let _ = classify(&b[r]);
            }
        }
    }
    // framing and classification also see arbitrary plaintext
    for f in [
        CompressionFraming::StubV1,
        CompressionFraming::StubV1Swap,
        CompressionFraming::StubV2,
    ] {
        let mut b = pkt.to_vec();
        let len = b.len();
        if let Ok(r) = f.decode(&mut b, 0..len) {
            let _ = classify(&b[r]);
        }
    }
});

//! Control-channel unwrapping with every wrapping mode: tls-auth, tls-crypt, tls-crypt-v2 (WKc unwrap
//! with a server key) and the stateless first-packet path.
#![no_main]
use bulwark_worker::proto::wrap::{
    AuthDigest, ControlWrapper, GroupWrap, KeyDirection, ReplayParams, ServerWrap, StaticKey,
    TlsCryptV2ServerKey,
};
use libfuzzer_sys::fuzz_target;

fn key(seed: u8) -> StaticKey {
    let mut b = [0u8; 256];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(13).wrapping_add(seed);
    }
    StaticKey::from_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000u64;
    let r = ReplayParams::default();
    let _ = ControlWrapper::tls_crypt(&key(1), true, r).unwrap(data, now);
    let _ = ControlWrapper::tls_auth(
        &key(2),
        KeyDirection::Normal,
        AuthDigest::from_name("SHA256").unwrap(),
        r,
    )
    .unwrap(data, now);
    let _ = ControlWrapper::none().unwrap(data, now);
    let mut v2 = [0u8; 128];
    v2.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
    let sw = ServerWrap::new(
        GroupWrap::TlsCrypt(key(3)),
        Some(TlsCryptV2ServerKey::generate(v2)),
        r,
    );
    let _ = sw.unwrap_initial(data);
    let sw2 = ServerWrap::new(GroupWrap::None, None, r);
    let _ = sw2.unwrap_initial(data);
});

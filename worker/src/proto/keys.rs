//! Data-channel key material: EKM and legacy-PRF derivation, `key2` slicing, dynamic tls-crypt keys.
//!
//! Digest §6. Everything here works on caller-supplied bytes; the TLS exporter call itself is done by
//! the caller (rustls `export_keying_material` with **no context**) and the 256 output bytes are passed in.
//!
//! ```text
//! Key2::from_ekm(&ekm_256_bytes)?                 // label EKM_LABEL_DATA_KEYS, 256 bytes, no context
//! Key2::from_legacy_prf(&LegacyKeySource { .. })? // TLS 1.0 PRF (MD5 ^ SHA1), pre-2.6 clients only
//! key2.data_channel_keys(Role::Server)            // -> DirectionalKeys { encrypt, decrypt }
//! key2.keys(0) / key2.keys(1)                     // raw KeySlice { cipher: [u8; 64], hmac: [u8; 64] }
//! dyn_tls_crypt_key(&ekm_dyn_256, Some(&static_wrap_key_256))?  // §6.5
//! tls1_prf(secret, seed, &mut out)?               // the raw PRF
//! ```
//!
//! `key2` layout (§6.4): `keys[0]` = `key2[0..128)` is what the **client** encrypts with (client→server),
//! `keys[1]` = `key2[128..256)` is what the **server** encrypts with. Each `keys[i]` is `cipher[64] ||
//! hmac[64]`; a cipher uses the first `key_len` bytes of `cipher`, CBC modes use the first digest-size
//! bytes of `hmac` as HMAC key, AEAD modes use the first 8 bytes of `hmac` as implicit IV.
//!
//! Dynamic tls-crypt (§6.5): the returned [`Key2`] is a tls-crypt key used with the tls-crypt key
//! direction (server encrypts with `keys[0]`, i.e. the opposite labelling of the data channel).
//!
//! Invariants: key material is overwritten with zeros when a [`Key2`] is dropped; nothing allocates.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha1::Sha1;
use thiserror::Error;

/// RFC 5705 exporter label for data-channel keys (256 bytes, no context).
pub const EKM_LABEL_DATA_KEYS: &str = "EXPORTER-OpenVPN-datakeys";
/// RFC 5705 exporter label for the dynamic tls-crypt key (256 bytes, no context).
pub const EKM_LABEL_DYN_TLS_CRYPT: &str = "EXPORTER-OpenVPN-dynamic-tls-crypt";
/// Size of an OpenVPN `key2` (two `struct key` of 64 + 64 bytes).
pub const KEY2_LEN: usize = 256;
/// Size of the cipher part of one direction's key.
pub const CIPHER_SLICE_LEN: usize = 64;
/// Size of the HMAC part of one direction's key.
pub const HMAC_SLICE_LEN: usize = 64;
/// Legacy PRF label for the master secret.
pub const PRF_LABEL_MASTER: &[u8] = b"OpenVPN master secret";
/// Legacy PRF label for the key expansion.
pub const PRF_LABEL_EXPANSION: &[u8] = b"OpenVPN key expansion";
/// Size of the key-method-2 pre-master secret.
pub const PRE_MASTER_LEN: usize = 48;
/// Size of each key-method-2 random.
pub const RANDOM_LEN: usize = 32;
/// Size of a control-channel session id.
pub const SESSION_ID_LEN: usize = 8;

/// Errors of key derivation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeysError {
    /// EKM (or other key2 input) of the wrong length.
    #[error("key material has {got} bytes, expected {expected}")]
    BadLength {
        /// Bytes supplied.
        got: usize,
        /// Bytes required.
        expected: usize,
    },
    /// The original wrap key for dynamic tls-crypt has the wrong length.
    #[error("original wrap key has {got} bytes, expected 256")]
    BadWrapKeyLength {
        /// Bytes supplied.
        got: usize,
    },
    /// The PRF could not be keyed (never happens for HMAC, reported instead of producing weak keys).
    #[error("TLS 1.0 PRF computation failed")]
    Prf,
}

/// Which end of the connection we are (selects the key direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The OpenVPN server (data channel: `KEY_DIRECTION_INVERSE`).
    Server,
    /// The OpenVPN client (data channel: `KEY_DIRECTION_NORMAL`).
    Client,
}

/// One direction's key (`struct key`): 64 cipher bytes and 64 HMAC bytes.
#[derive(Debug, Clone, Copy)]
pub struct KeySlice<'a> {
    /// Cipher key bytes; a cipher uses the first `key_len` bytes.
    pub cipher: &'a [u8; CIPHER_SLICE_LEN],
    /// HMAC key bytes (CBC: first digest-size bytes) or implicit IV (AEAD: first 8 bytes).
    pub hmac: &'a [u8; HMAC_SLICE_LEN],
}

impl KeySlice<'_> {
    /// The 8-byte AEAD implicit IV (first 8 bytes of the HMAC part).
    pub fn implicit_iv(&self) -> [u8; 8] {
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&self.hmac[..8]);
        iv
    }
}

/// The pair of keys one side uses.
#[derive(Debug, Clone, Copy)]
pub struct DirectionalKeys<'a> {
    /// Key for packets we send.
    pub encrypt: KeySlice<'a>,
    /// Key for packets we receive.
    pub decrypt: KeySlice<'a>,
}

/// 256 bytes of OpenVPN `key2` material. Zeroed on drop.
pub struct Key2 {
    /// `[keys[0].cipher, keys[0].hmac, keys[1].cipher, keys[1].hmac]`.
    bytes: [[u8; CIPHER_SLICE_LEN]; 4],
}

impl std::fmt::Debug for Key2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key2([redacted])")
    }
}

impl Drop for Key2 {
    fn drop(&mut self) {
        self.bytes.as_flattened_mut().fill(0);
        std::hint::black_box(&mut self.bytes);
    }
}

impl Clone for Key2 {
    fn clone(&self) -> Self {
        Self { bytes: self.bytes }
    }
}

/// Inputs of the legacy (pre-EKM) key derivation, taken from both key-method-2 messages.
#[derive(Debug, Clone, Copy)]
pub struct LegacyKeySource<'a> {
    /// The client's 48-byte pre-master secret.
    pub client_pre_master: &'a [u8; PRE_MASTER_LEN],
    /// The client's random1.
    pub client_random1: &'a [u8; RANDOM_LEN],
    /// The client's random2.
    pub client_random2: &'a [u8; RANDOM_LEN],
    /// The server's random1.
    pub server_random1: &'a [u8; RANDOM_LEN],
    /// The server's random2.
    pub server_random2: &'a [u8; RANDOM_LEN],
    /// The client's control-channel session id.
    pub client_session_id: &'a [u8; SESSION_ID_LEN],
    /// The server's control-channel session id.
    pub server_session_id: &'a [u8; SESSION_ID_LEN],
}

impl Key2 {
    /// Wraps exactly 256 bytes (e.g. a static tls-crypt key file's content).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeysError> {
        if bytes.len() != KEY2_LEN {
            return Err(KeysError::BadLength {
                got: bytes.len(),
                expected: KEY2_LEN,
            });
        }
        let mut key = Self::zeroed();
        key.bytes.as_flattened_mut().copy_from_slice(bytes);
        Ok(key)
    }

    /// Key material from the TLS exporter (label [`EKM_LABEL_DATA_KEYS`], no context, 256 bytes).
    pub fn from_ekm(ekm: &[u8]) -> Result<Self, KeysError> {
        Self::from_bytes(ekm)
    }

    fn zeroed() -> Self {
        Self {
            bytes: [[0u8; CIPHER_SLICE_LEN]; 4],
        }
    }

    /// Key material from OpenVPN's legacy PRF (§6.3).
    pub fn from_legacy_prf(src: &LegacyKeySource<'_>) -> Result<Self, KeysError> {
        let mut master = [0u8; 48];
        let mut seed = [0u8; PRF_LABEL_EXPANSION.len() + 2 * RANDOM_LEN + 2 * SESSION_ID_LEN];
        // master secret: label || client.random1 || server.random1 (no session ids)
        let mseed_len = PRF_LABEL_MASTER.len() + 2 * RANDOM_LEN;
        {
            let (a, rest) = seed.split_at_mut(PRF_LABEL_MASTER.len());
            a.copy_from_slice(PRF_LABEL_MASTER);
            rest[..RANDOM_LEN].copy_from_slice(src.client_random1);
            rest[RANDOM_LEN..2 * RANDOM_LEN].copy_from_slice(src.server_random1);
        }
        tls1_prf(src.client_pre_master, &seed[..mseed_len], &mut master)?;

        // key expansion: label || client.random2 || server.random2 || client sid || server sid
        let mut off = 0;
        for part in [
            PRF_LABEL_EXPANSION,
            &src.client_random2[..],
            &src.server_random2[..],
            &src.client_session_id[..],
            &src.server_session_id[..],
        ] {
            seed[off..off + part.len()].copy_from_slice(part);
            off += part.len();
        }
        let mut key2 = Self::zeroed();
        let res = tls1_prf(&master, &seed[..off], key2.bytes.as_flattened_mut());
        master.fill(0);
        std::hint::black_box(&mut master);
        res.map(|()| key2)
    }

    /// The raw 256 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.as_flattened()
    }

    /// `keys[index]` (index 0: client→server, index 1: server→client for the data channel).
    /// `index` is taken modulo 2.
    pub fn keys(&self, index: usize) -> KeySlice<'_> {
        let base = (index % 2) * 2;
        KeySlice {
            cipher: &self.bytes[base],
            hmac: &self.bytes[base + 1],
        }
    }

    /// Data-channel keys for `role` (`ssl.c:init_key_contexts`): the client encrypts with `keys[0]`,
    /// the server with `keys[1]`.
    pub fn data_channel_keys(&self, role: Role) -> DirectionalKeys<'_> {
        let (enc, dec) = match role {
            Role::Server => (1, 0),
            Role::Client => (0, 1),
        };
        DirectionalKeys {
            encrypt: self.keys(enc),
            decrypt: self.keys(dec),
        }
    }

    /// tls-crypt style keys for `role` (§3.1 and §6.5): the server encrypts with `keys[0]`, the client
    /// with `keys[1]`.
    pub fn tls_crypt_keys(&self, role: Role) -> DirectionalKeys<'_> {
        let (enc, dec) = match role {
            Role::Server => (0, 1),
            Role::Client => (1, 0),
        };
        DirectionalKeys {
            encrypt: self.keys(enc),
            decrypt: self.keys(dec),
        }
    }
}

/// Derives the dynamic tls-crypt key (§6.5) from the exporter output for
/// [`EKM_LABEL_DYN_TLS_CRYPT`] of the key_id-0 TLS session, XORed with the session's original wrap key
/// (tls-auth / tls-crypt static key, or the tls-crypt-v2 client key Kc) when one is in use.
pub fn dyn_tls_crypt_key(ekm: &[u8], original_wrap_key: Option<&[u8]>) -> Result<Key2, KeysError> {
    let mut key = Key2::from_bytes(ekm)?;
    if let Some(orig) = original_wrap_key {
        if orig.len() != KEY2_LEN {
            return Err(KeysError::BadWrapKeyLength { got: orig.len() });
        }
        for (k, o) in key.bytes.as_flattened_mut().iter_mut().zip(orig) {
            *k ^= o;
        }
    }
    Ok(key)
}

/// TLS 1.0/1.1 PRF (RFC 2246 §5): `P_MD5(S1, seed) XOR P_SHA1(S2, seed)`, halves overlapping by one byte
/// when the secret length is odd. Fills all of `out`.
pub fn tls1_prf(secret: &[u8], seed: &[u8], out: &mut [u8]) -> Result<(), KeysError> {
    let half = secret.len().div_ceil(2);
    let s1 = &secret[..half];
    let s2 = &secret[secret.len() - half..];
    out.fill(0);
    p_hash::<Hmac<Md5>>(s1, seed, out)?;
    p_hash::<Hmac<Sha1>>(s2, seed, out)
}

/// XORs `P_hash(secret, seed)` into `out`.
fn p_hash<M: Mac + hmac::digest::KeyInit + Clone>(
    secret: &[u8],
    seed: &[u8],
    out: &mut [u8],
) -> Result<(), KeysError> {
    // HMAC accepts keys of any length; the error path exists only because the trait is fallible.
    let base = <M as hmac::digest::KeyInit>::new_from_slice(secret).map_err(|_| KeysError::Prf)?;
    // A(1) = HMAC(secret, seed)
    let mut mac = base.clone();
    mac.update(seed);
    let mut a = mac.finalize().into_bytes();
    let mut pos = 0;
    while pos < out.len() {
        let mut mac = base.clone();
        mac.update(&a);
        mac.update(seed);
        let block = mac.finalize().into_bytes();
        for (o, b) in out[pos..].iter_mut().zip(block.iter()) {
            *o ^= b;
        }
        pos += block.len();
        let mut mac = base.clone();
        mac.update(&a);
        a = mac.finalize().into_bytes();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const EKM_A2: &str = "c682fd4f819cd3bbd79196c5df2c3268539b984a1882864c28289876205760a44ae337f67ff6aa02aa4ff655f2ccf913\
b0c68e57f16ad82e5b1393f4b8470b7f76a1b4ef4e1ee1ede0b4b702b9e37e72cc5ce0c8f9afdbea5da342da327c8cf3\
44322c950984a6ad196c6e5d2f7570cbc11611048131999980cac7499eaf3438cdf5f4b4a44c1b8864c7e98274034f23\
7bf3eafff86d56626c9768a5769895381d6853fa1234472c5a890138b39d89878e8bf9c0bf8a8260686e967b69284101\
d07d6068ee7a6a01c0a0eef2d0ddbf2c4430b2016ecc1c0633744a5ecfb2be156b4f70571fcff8a577ba005d1ce7bbbc\
cb4416f0784ddf1f149312df6d9bc595";

    #[test]
    fn appendix_a2_slicing() {
        let ekm = hex::decode(EKM_A2).unwrap();
        let k = Key2::from_ekm(&ekm).unwrap();
        let server = k.data_channel_keys(Role::Server);
        // server decrypts client->server with keys[0]
        assert_eq!(hex::encode(&server.decrypt.cipher[..4]), "c682fd4f");
        assert_eq!(hex::encode(&server.decrypt.cipher[28..32]), "205760a4");
        assert_eq!(
            hex::encode(server.decrypt.implicit_iv()),
            "76a1b4ef4e1ee1ed"
        );
        // server encrypts with keys[1]
        assert_eq!(hex::encode(&server.encrypt.cipher[..4]), "cdf5f4b4");
        assert_eq!(hex::encode(&server.encrypt.cipher[28..32]), "76989538");
        assert_eq!(
            hex::encode(server.encrypt.implicit_iv()),
            "d07d6068ee7a6a01"
        );
        let client = k.data_channel_keys(Role::Client);
        assert_eq!(client.encrypt.cipher, server.decrypt.cipher);
        assert_eq!(client.decrypt.hmac, server.encrypt.hmac);
    }

    #[test]
    fn tls_crypt_direction_matches_appendix_a1() {
        let key = hex::decode(
            "88f9e2b64d2a1e4256c3aa5b225b9576d465a961147f6fa4ed87e8abd59bc306cd17670f4b9dc6c2ebaacd9094567122\
cb52a815075e34eb85f6a51752a29b2e543bb25271afbd28b704f73c71f7fa2b95aa85b028eda4e000626b1c1837c3ef\
80a87aa350b21fce2070870c53e80b5a7d9312cfff6d4f268fe3ceb565bfe870341b9d9da89bdfbcdaac0993f12359f8\
fa9605f63bd290a614cc3b075b9b642a9d8dd159f06cf064cc210d4a35becee2b52d7c0f2efd9058085cccb1ce3704fd\
9df7eb0bcc19de0468f185d2bff8a805c9e1041857902214f8c7e6169dc3ce8bbd39527305c9984fec792ca4a282fc17\
aa68e634b60c13611fbfcb6905722423",
        )
        .unwrap();
        let k = Key2::from_bytes(&key).unwrap();
        let s = k.tls_crypt_keys(Role::Server);
        assert_eq!(hex::encode(&s.encrypt.cipher[..4]), "88f9e2b6");
        assert_eq!(hex::encode(&s.encrypt.hmac[..4]), "543bb252");
        assert_eq!(hex::encode(&s.decrypt.cipher[..4]), "341b9d9d");
        assert_eq!(hex::encode(&s.decrypt.hmac[..4]), "9df7eb0b");
    }

    #[test]
    fn rejects_wrong_lengths() {
        assert_eq!(
            Key2::from_ekm(&[0u8; 255]).unwrap_err(),
            KeysError::BadLength {
                got: 255,
                expected: 256
            }
        );
        assert!(dyn_tls_crypt_key(&[0u8; 256], Some(&[0u8; 128])).is_err());
        assert!(dyn_tls_crypt_key(&[0u8; 200], None).is_err());
    }

    #[test]
    fn dyn_tls_crypt_xor() {
        let ekm: Vec<u8> = (0..=255u8).collect();
        let orig = [0xffu8; 256];
        let plain = dyn_tls_crypt_key(&ekm, None).unwrap();
        assert_eq!(plain.as_bytes()[..], ekm[..]);
        let mixed = dyn_tls_crypt_key(&ekm, Some(&orig)).unwrap();
        assert_eq!(mixed.as_bytes()[0], 0xff);
        assert_eq!(mixed.as_bytes()[255], 0x00);
        assert_eq!(mixed.as_bytes()[1], 0xfe);
    }

    /// Reference values computed with `openssl kdf -kdfopt digest:MD5-SHA1 ... TLS1-PRF` (OpenSSL 3.0),
    /// which is what OpenVPN's `ssl_tls1_PRF` uses.
    #[test]
    fn tls1_prf_matches_openssl() {
        let mut out = [0u8; 20];
        tls1_prf(&hex::decode("0102030405").unwrap(), b"abc", &mut out).unwrap();
        assert_eq!(hex::encode(out), "1e18dc67a1c5cb6f825781ee519e40b7c94e00b8");
    }

    #[test]
    fn legacy_prf_matches_openssl() {
        let pre: [u8; 48] = core::array::from_fn(|i| i as u8);
        let cr1 = [0xaa; 32];
        let sr1 = [0xbb; 32];
        let cr2 = [0xcc; 32];
        let sr2 = [0xdd; 32];
        let csid = [1, 2, 3, 4, 5, 6, 7, 8];
        let ssid = [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18];
        // master = 830752096e2f397131f3fbef753ed734d9b3cd816c42517c6b4c7b1f6736115e7b833e04bdd2ef595a3cb809bb7c8c58
        let k = Key2::from_legacy_prf(&LegacyKeySource {
            client_pre_master: &pre,
            client_random1: &cr1,
            client_random2: &cr2,
            server_random1: &sr1,
            server_random2: &sr2,
            client_session_id: &csid,
            server_session_id: &ssid,
        })
        .unwrap();
        assert_eq!(
            hex::encode(k.as_bytes()),
            "356ca46f864c77f005cc58c1903dde5760986d44a538b4228640a01e64e159f20c5336a80151cc6e9ad87330f73804fd\
9b04e726765ef53ad2e7faf4ae5fe419aa43fd73e168a73a57c406a0cbf50a661b023e637ebdf89c8569b1dea2067d9bd8\
22415e680e500182ce8677d914d952daaf65820592f473e0f4d303e0691eedf58f3ef1cfc543937a7cf090b3e79eb34b95\
61fc0a72088e65ffe5803832ce9899be340db531ef54a63f2f16503cc4358f8d780ca9ccbccfa744e1cf31c8f01c8dc158\
964ace0be09216ec7e352db90891d5bfd70f430e67ebea72cfde5c88bc97b7202069c862e5fbaca4c14aa6bf9bbac452e6\
d1d7102f576a4ef83e0c58e0"
        );
    }

    #[test]
    fn prf_master_matches_openssl() {
        let pre: [u8; 48] = core::array::from_fn(|i| i as u8);
        let mut seed = Vec::from(PRF_LABEL_MASTER);
        seed.extend_from_slice(&[0xaa; 32]);
        seed.extend_from_slice(&[0xbb; 32]);
        let mut out = [0u8; 48];
        tls1_prf(&pre, &seed, &mut out).unwrap();
        assert_eq!(
            hex::encode(out),
            "830752096e2f397131f3fbef753ed734d9b3cd816c42517c6b4c7b1f6736115e7b833e04bdd2ef595a3cb809bb7c8c58"
        );
    }
}

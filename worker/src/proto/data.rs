//! Data channel: cipher names and negotiation, per-key encryption/decryption of P_DATA_V1/V2 packets.
//!
//! Digest §7.1–§7.4, OpenVPN `crypto.c` (`openvpn_encrypt_aead`, `openvpn_decrypt_aead`,
//! `openvpn_encrypt_v1`, `openvpn_decrypt_v1`) and `ssl_ncp.c`.
//!
//! # API
//!
//! ```text
//! Cipher::parse("aes-256-gcm")? -> Cipher::Aes256Gcm        Cipher::name() -> "AES-256-GCM"
//! Digest::parse("SHA256")?                                   (CBC HMAC, the client's --auth)
//! parse_data_ciphers("AES-256-GCM:AES-128-GCM:?CHACHA20-POLY1305")? -> Vec<Cipher>
//! negotiate(&server_ciphers, iv_ciphers, iv_ncp, occ_cipher, fallback)? -> Negotiated { cipher, push_cipher }
//!
//! let mut key = DataKey::new(&DataKeyConfig { .. }, &key2.data_channel_keys(Role::Server))?;
//! // encrypt: plaintext at buf[payload]; needs payload.start >= key.headroom() and
//! //          buf.len() >= payload.end + key.tailroom(); returns the wire packet's range in buf
//! key.encrypt(&mut buf, payload, &mut rng)? -> Range<usize>
//! // decrypt in place; returns the plaintext's range inside `packet` (replay window updated)
//! key.decrypt(&mut packet, now_unix)? -> Range<usize>
//! key.usage() -> Usage      key.send_near_wrap() -> bool
//! parse_data_header(&packet)? -> DataHeader { opcode, key_id, peer_id }
//! ```
//!
//! # Wire formats produced/accepted
//!
//! * AEAD (AES-128/256-GCM, CHACHA20-POLY1305), P_DATA_V2: `op|peer_id(3) | pid(4) | tag(16) | ct`,
//!   AAD = the first 8 bytes, nonce = pid || implicit IV(8). P_DATA_V1: `op | pid | tag | ct`,
//!   AAD = pid only. Empty ciphertext is rejected ("missing payload").
//! * CBC (AES-128/256-CBC + HMAC-SHA1/256/512): `op[|peer_id] | HMAC(IV||ct) | IV(16) | ct`,
//!   ct = CBC(pid(4) || payload, PKCS#7). Encrypt-then-MAC; the HMAC is verified before decrypting.
//! * Short-form packet ids in both cases (TLS mode). Packets are sent as P_DATA_V2 when the key was
//!   configured with a peer-id, else as P_DATA_V1; both opcodes are accepted on receive.
//!
//! Invariants: no heap allocation per packet; the replay window is only updated after a packet
//! authenticated; every malformed input is an `Err`. The usage counters count wire bytes of sent
//! packets and of *authenticated* received packets (OpenVPN counts received bytes before
//! authentication; counting only authenticated ones keeps forged packets from forcing renegotiations).

use std::ops::Range;

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::hmac;
use thiserror::Error;

use super::keys::{DirectionalKeys, Key2, KeySlice, Role};
use super::replay::{PacketIdForm, PacketIdSend, ReplayError, ReplayWindow};

/// Opcode of P_DATA_V1.
pub const P_DATA_V1: u8 = 6;
/// Opcode of P_DATA_V2.
pub const P_DATA_V2: u8 = 9;
/// AEAD tag length.
pub const AEAD_TAG_LEN: usize = 16;
/// AEAD implicit IV length (the nonce is 4 bytes of packet id + these 8 bytes).
pub const IMPLICIT_IV_LEN: usize = 8;
/// Largest header any data key writes in front of the payload (V2 opcode + SHA512 HMAC + IV + pid).
pub const MAX_HEADROOM: usize = 4 + 64 + 16 + 4;
/// Largest number of bytes any data key appends after the payload (CBC padding).
pub const MAX_TAILROOM: usize = 16;
/// peer-id value meaning "no peer-id" (`MAX_PEER_ID`).
pub const PEER_ID_NONE: u32 = 0x00FF_FFFF;
/// Maximum length of a canonical `data-ciphers` list (`MAX_NCP_CIPHERS_LENGTH - 1`).
pub const MAX_DATA_CIPHERS_LEN: usize = 127;
/// Reason text OpenVPN gives the client when negotiation fails.
pub const NEGOTIATION_FAILED_REASON: &str =
    "Data channel cipher negotiation failed (no shared cipher)";

const CBC_BLOCK: usize = 16;
const PID_LEN: usize = 4;

/// Errors of the data channel module.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DataError {
    /// Cipher name not known at all.
    #[error("unknown cipher {0:?}")]
    UnknownCipher(String),
    /// Cipher exists in OpenVPN but is not implemented here (e.g. BF-CBC, AES-192-*, none).
    #[error("cipher {0:?} is not supported")]
    UnsupportedCipher(String),
    /// HMAC digest name not supported.
    #[error("unsupported auth digest {0:?}")]
    UnsupportedDigest(String),
    /// `data-ciphers` list contained no usable cipher.
    #[error("data-ciphers list is empty")]
    EmptyCipherList,
    /// `data-ciphers` list is longer than OpenVPN allows.
    #[error("data-ciphers list is longer than {MAX_DATA_CIPHERS_LEN} characters")]
    CipherListTooLong,
    /// The client announced ciphers but none matches the server's list.
    #[error("no shared cipher: server {server:?}, client {client:?}")]
    NoSharedCipher {
        /// Server list (canonical, colon separated).
        server: String,
        /// What the client supports (IV_CIPHERS, the IV_NCP implied list or its OCC cipher).
        client: String,
    },
    /// The client sent no cipher information at all and no fallback is configured.
    #[error("client sent no NCP or OCC cipher information and no data-ciphers-fallback is set")]
    NoCipherInfo,
    /// The derived cipher key is all zeros (`check_key`).
    #[error("derived data channel key is all zeros")]
    ZeroKey,
    /// key_id outside 0..=7.
    #[error("key id {0} out of range")]
    BadKeyId(u8),
    /// peer-id does not fit in 24 bits.
    #[error("peer id {0} out of range")]
    BadPeerId(u32),
    /// The crypto library rejected the key.
    #[error("cipher key setup failed")]
    KeySetup,
    /// Caller's buffer has too little room in front of the payload.
    #[error("encrypt buffer needs {need} bytes of headroom, has {have}")]
    Headroom {
        /// Required headroom.
        need: usize,
        /// Available headroom.
        have: usize,
    },
    /// Caller's buffer has too little room after the payload or the payload range is invalid.
    #[error("encrypt buffer needs {need} bytes after the payload, has {have}")]
    Tailroom {
        /// Required tailroom.
        need: usize,
        /// Available tailroom.
        have: usize,
    },
    /// The send packet-id space is exhausted; renegotiate.
    #[error("packet id roll over; key must be renegotiated")]
    PacketIdExhausted,
    /// Packet too short for its format.
    #[error("data packet too short: {got} bytes, need at least {need}")]
    Truncated {
        /// Packet length.
        got: usize,
        /// Minimum length.
        need: usize,
    },
    /// Opcode is not P_DATA_V1/V2.
    #[error("opcode {0} is not a data opcode")]
    NotData(u8),
    /// Packet's key_id is not this key's.
    #[error("packet key id {got} does not match key id {expected}")]
    KeyIdMismatch {
        /// This key's id.
        expected: u8,
        /// Packet's key id.
        got: u8,
    },
    /// AEAD tag or HMAC verification failed.
    #[error("packet authentication failed")]
    AuthFailed,
    /// CBC ciphertext length is not a positive multiple of the block size.
    #[error("CBC ciphertext length {0} is not a positive multiple of 16")]
    BadCiphertextLength(usize),
    /// CBC padding invalid.
    #[error("bad CBC padding")]
    BadPadding,
    /// Replay protection rejected the packet.
    #[error("replay check failed: {0}")]
    Replay(#[from] ReplayError),
}

/// Data-channel ciphers implemented by Bulwark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-128-GCM (AEAD).
    Aes128Gcm,
    /// AES-256-GCM (AEAD).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (AEAD).
    ChaCha20Poly1305,
    /// AES-128-CBC with HMAC.
    Aes128Cbc,
    /// AES-256-CBC with HMAC.
    Aes256Cbc,
}

impl Cipher {
    /// All supported ciphers.
    pub const ALL: [Cipher; 5] = [
        Cipher::Aes256Gcm,
        Cipher::Aes128Gcm,
        Cipher::ChaCha20Poly1305,
        Cipher::Aes256Cbc,
        Cipher::Aes128Cbc,
    ];

    /// Parses an OpenVPN/OpenSSL cipher name, case-insensitively. Known but unimplemented ciphers
    /// (BF-CBC, AES-192-*, none, ...) give [`DataError::UnsupportedCipher`].
    pub fn parse(name: &str) -> Result<Cipher, DataError> {
        let upper = name.trim().to_ascii_uppercase();
        match upper.as_str() {
            "AES-128-GCM" | "ID-AES128-GCM" => Ok(Cipher::Aes128Gcm),
            "AES-256-GCM" | "ID-AES256-GCM" => Ok(Cipher::Aes256Gcm),
            "CHACHA20-POLY1305" => Ok(Cipher::ChaCha20Poly1305),
            "AES-128-CBC" | "AES128" => Ok(Cipher::Aes128Cbc),
            "AES-256-CBC" | "AES256" => Ok(Cipher::Aes256Cbc),
            "BF-CBC" | "BF" | "NONE" | "[NULL-CIPHER]" | "AES-192-GCM" | "ID-AES192-GCM"
            | "AES-192-CBC" | "AES192" | "DES-CBC" | "DES-EDE3-CBC" | "DES-EDE-CBC"
            | "DES-EDE3" | "CAST5-CBC" | "RC2-CBC" | "SEED-CBC" | "DESX-CBC"
            | "CAMELLIA-128-CBC" | "CAMELLIA-192-CBC" | "CAMELLIA-256-CBC" | "ARIA-128-CBC"
            | "ARIA-192-CBC" | "ARIA-256-CBC" | "SM4-CBC" | "AES-128-CFB" | "AES-192-CFB"
            | "AES-256-CFB" | "AES-128-OFB" | "AES-192-OFB" | "AES-256-OFB" | "AES-128-CTR"
            | "AES-256-CTR" => Err(DataError::UnsupportedCipher(name.to_string())),
            _ => Err(DataError::UnknownCipher(name.to_string())),
        }
    }

    /// Canonical OpenVPN name (as pushed and as in IV_CIPHERS).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::ChaCha20Poly1305 => "CHACHA20-POLY1305",
            Cipher::Aes128Cbc => "AES-128-CBC",
            Cipher::Aes256Cbc => "AES-256-CBC",
        }
    }

    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes128Cbc => 16,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 | Cipher::Aes256Cbc => 32,
        }
    }

    /// True for the AEAD ciphers.
    pub fn is_aead(self) -> bool {
        matches!(
            self,
            Cipher::Aes128Gcm | Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305
        )
    }

    /// Cipher block size as OpenSSL reports it (1 for GCM/ChaCha, 16 for CBC); used in OCC link-mtu.
    pub fn block_size(self) -> usize {
        if self.is_aead() {
            1
        } else {
            CBC_BLOCK
        }
    }

    /// IV size as OpenSSL reports it (12 for AEAD, 16 for CBC); used in OCC link-mtu.
    pub fn iv_size(self) -> usize {
        if self.is_aead() {
            12
        } else {
            CBC_BLOCK
        }
    }

    /// True if DCO clients can use the cipher.
    pub fn dco_capable(self) -> bool {
        self.is_aead()
    }
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// HMAC digest for the CBC modes (`--auth`; never negotiated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    /// HMAC-SHA1 (OpenVPN's default `--auth`).
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Digest {
    /// Parses an OpenVPN/OpenSSL digest name, case-insensitively.
    pub fn parse(name: &str) -> Result<Digest, DataError> {
        match name.trim().to_ascii_uppercase().as_str() {
            "SHA1" | "SHA-1" => Ok(Digest::Sha1),
            "SHA256" | "SHA-256" | "SHA2-256" => Ok(Digest::Sha256),
            "SHA512" | "SHA-512" | "SHA2-512" => Ok(Digest::Sha512),
            _ => Err(DataError::UnsupportedDigest(name.to_string())),
        }
    }

    /// Canonical OpenVPN name (as in the OCC string).
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "SHA1",
            Digest::Sha256 => "SHA256",
            Digest::Sha512 => "SHA512",
        }
    }

    /// HMAC output length in bytes.
    pub fn len(self) -> usize {
        match self {
            Digest::Sha1 => 20,
            Digest::Sha256 => 32,
            Digest::Sha512 => 64,
        }
    }

    /// Always false (a digest has a non-zero length); present for API symmetry with `len`.
    pub fn is_empty(self) -> bool {
        false
    }

    fn ring_algorithm(self) -> hmac::Algorithm {
        match self {
            Digest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => hmac::HMAC_SHA256,
            Digest::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// Parses a `data-ciphers` list (`mutate_ncp_cipher_list`): colon separated, case-insensitive,
/// entries prefixed with `?` are optional (skipped if unsupported). Returns the canonical list.
pub fn parse_data_ciphers(list: &str) -> Result<Vec<Cipher>, DataError> {
    let mut out = Vec::new();
    let mut canon_len = 0usize;
    for token in list.split(':').filter(|t| !t.is_empty()) {
        let (optional, name) = match token.strip_prefix('?') {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        match Cipher::parse(name) {
            Ok(c) => {
                if !out.contains(&c) {
                    canon_len += c.name().len() + usize::from(!out.is_empty());
                    out.push(c);
                }
            }
            Err(_) if optional => continue,
            Err(e) => return Err(e),
        }
    }
    if canon_len > MAX_DATA_CIPHERS_LEN {
        return Err(DataError::CipherListTooLong);
    }
    if out.is_empty() {
        return Err(DataError::EmptyCipherList);
    }
    Ok(out)
}

/// Canonical colon-separated form of a cipher list.
pub fn format_cipher_list(list: &[Cipher]) -> String {
    list.iter().map(|c| c.name()).collect::<Vec<_>>().join(":")
}

/// Result of [`negotiate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Cipher to use for this client's data channel.
    pub cipher: Cipher,
    /// Whether to push `cipher <name>` (OpenVPN pushes it only to NCP-capable clients:
    /// IV_CIPHERS present or IV_NCP >= 2).
    pub push_cipher: bool,
}

/// Server-side cipher selection as a 2.6 server does it (`ssl_ncp.c:ncp_get_best_cipher`,
/// `multi.c:multi_client_set_protocol_options`).
///
/// * `server` — the server's `data-ciphers`, in preference order.
/// * `iv_ciphers` — the client's IV_CIPHERS value if present (even if empty).
/// * `iv_ncp` — the client's IV_NCP value if present.
/// * `occ_cipher` — the `cipher` item of the client's OCC options string, if any ("poor man's NCP";
///   ignored when IV_CIPHERS is present).
/// * `fallback` — `data-ciphers-fallback`, used only if the client sent no cipher information at all.
///
/// The server's first cipher that appears in the client's list (IV_CIPHERS, else
/// `AES-256-GCM:AES-128-GCM` if IV_NCP >= 2) or equals its OCC cipher wins.
pub fn negotiate(
    server: &[Cipher],
    iv_ciphers: Option<&str>,
    iv_ncp: Option<i32>,
    occ_cipher: Option<&str>,
    fallback: Option<Cipher>,
) -> Result<Negotiated, DataError> {
    let ncp2 = iv_ncp.is_some_and(|n| n >= 2);
    let peer_list: &str = match iv_ciphers {
        Some(l) => l,
        None if ncp2 => "AES-256-GCM:AES-128-GCM",
        None => "",
    };
    let remote: &str = if iv_ciphers.is_some() {
        ""
    } else {
        match occ_cipher {
            Some("[null-cipher]") => "none",
            Some(c) => c,
            None => "",
        }
    };
    let push_cipher = iv_ciphers.is_some() || ncp2;
    for &c in server {
        let in_peer = peer_list
            .split(':')
            .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(c.name()));
        if in_peer || (!remote.is_empty() && remote.eq_ignore_ascii_case(c.name())) {
            return Ok(Negotiated {
                cipher: c,
                push_cipher,
            });
        }
    }
    if !peer_list.is_empty() || !remote.is_empty() {
        return Err(DataError::NoSharedCipher {
            server: format_cipher_list(server),
            client: if peer_list.is_empty() {
                remote.to_string()
            } else {
                peer_list.to_string()
            },
        });
    }
    match fallback {
        Some(cipher) => Ok(Negotiated {
            cipher,
            push_cipher: false,
        }),
        None => Err(DataError::NoCipherInfo),
    }
}

/// Which data opcode a packet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataOpcode {
    /// P_DATA_V1: 1-byte header.
    V1,
    /// P_DATA_V2: 1-byte opcode + 3-byte peer-id.
    V2,
}

/// Parsed data-packet header (for dispatching to the right peer/key before decryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Opcode.
    pub opcode: DataOpcode,
    /// key_id (0..=7).
    pub key_id: u8,
    /// peer-id (P_DATA_V2 only).
    pub peer_id: Option<u32>,
}

impl DataHeader {
    /// Header length on the wire (1 or 4).
    pub fn len(&self) -> usize {
        match self.opcode {
            DataOpcode::V1 => 1,
            DataOpcode::V2 => 4,
        }
    }

    /// Always false; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses the opcode/key_id byte and, for P_DATA_V2, the peer-id.
pub fn parse_data_header(packet: &[u8]) -> Result<DataHeader, DataError> {
    let first = *packet
        .first()
        .ok_or(DataError::Truncated { got: 0, need: 1 })?;
    let opcode = first >> 3;
    let key_id = first & 7;
    match opcode {
        P_DATA_V1 => Ok(DataHeader {
            opcode: DataOpcode::V1,
            key_id,
            peer_id: None,
        }),
        P_DATA_V2 => {
            if packet.len() < 4 {
                return Err(DataError::Truncated {
                    got: packet.len(),
                    need: 4,
                });
            }
            let peer_id = u32::from_be_bytes([0, packet[1], packet[2], packet[3]]);
            Ok(DataHeader {
                opcode: DataOpcode::V2,
                key_id,
                peer_id: Some(peer_id),
            })
        }
        other => Err(DataError::NotData(other)),
    }
}

/// Traffic counters of one key (for `reneg-bytes` / `reneg-pkts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Wire bytes of packets encrypted with this key.
    pub bytes_sent: u64,
    /// Packets encrypted with this key.
    pub packets_sent: u64,
    /// Wire bytes of authenticated packets decrypted with this key.
    pub bytes_received: u64,
    /// Authenticated packets decrypted with this key.
    pub packets_received: u64,
}

impl Usage {
    /// Bytes in both directions (what `reneg-bytes` compares against).
    pub fn total_bytes(&self) -> u64 {
        self.bytes_sent.saturating_add(self.bytes_received)
    }

    /// Packets in both directions (what `reneg-pkts` compares against).
    pub fn total_packets(&self) -> u64 {
        self.packets_sent.saturating_add(self.packets_received)
    }

    /// True if `reneg-bytes` / `reneg-pkts` (0 or `None` = disabled) demand a renegotiation.
    pub fn renegotiation_due(&self, reneg_bytes: Option<u64>, reneg_packets: Option<u64>) -> bool {
        reneg_bytes.is_some_and(|b| b > 0 && self.total_bytes() >= b)
            || reneg_packets.is_some_and(|p| p > 0 && self.total_packets() >= p)
    }
}

/// Parameters of one data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataKeyConfig {
    /// Negotiated cipher.
    pub cipher: Cipher,
    /// HMAC digest for CBC ciphers (ignored for AEAD).
    pub auth: Digest,
    /// key_id of the key_state (0..=7).
    pub key_id: u8,
    /// Our peer-id for this client if P_DATA_V2 is used (the pushed `peer-id`); `None` sends P_DATA_V1.
    pub peer_id: Option<u32>,
    /// `replay-window` packets (default 64).
    pub replay_window: u32,
    /// `replay-window` seconds (default 15).
    pub replay_seconds: u32,
}

enum AesCbc {
    A128(Box<aes::Aes128>),
    A256(Box<aes::Aes256>),
}

impl AesCbc {
    fn new(cipher: Cipher, key: &[u8]) -> Result<Self, DataError> {
        match cipher {
            Cipher::Aes128Cbc => aes::Aes128::new_from_slice(key)
                .map(|k| AesCbc::A128(Box::new(k)))
                .map_err(|_| DataError::KeySetup),
            Cipher::Aes256Cbc => aes::Aes256::new_from_slice(key)
                .map(|k| AesCbc::A256(Box::new(k)))
                .map_err(|_| DataError::KeySetup),
            _ => Err(DataError::KeySetup),
        }
    }

    fn encrypt_block(&self, block: &mut [u8]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            AesCbc::A128(k) => k.encrypt_block(b),
            AesCbc::A256(k) => k.encrypt_block(b),
        }
    }

    fn decrypt_block(&self, block: &mut [u8]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            AesCbc::A128(k) => k.decrypt_block(b),
            AesCbc::A256(k) => k.decrypt_block(b),
        }
    }

    /// CBC-encrypts `data` (length multiple of 16) in place.
    fn cbc_encrypt(&self, iv: &[u8; CBC_BLOCK], data: &mut [u8]) {
        let mut prev = *iv;
        for block in data.chunks_exact_mut(CBC_BLOCK) {
            for (b, p) in block.iter_mut().zip(prev.iter()) {
                *b ^= p;
            }
            self.encrypt_block(block);
            prev.copy_from_slice(block);
        }
    }

    /// CBC-decrypts `data` (length multiple of 16) in place.
    fn cbc_decrypt(&self, iv: &[u8; CBC_BLOCK], data: &mut [u8]) {
        let mut prev = *iv;
        let mut cur = [0u8; CBC_BLOCK];
        for block in data.chunks_exact_mut(CBC_BLOCK) {
            cur.copy_from_slice(block);
            self.decrypt_block(block);
            for (b, p) in block.iter_mut().zip(prev.iter()) {
                *b ^= p;
            }
            prev = cur;
        }
    }
}

// One engine per key, created at key setup: keeping the AEAD keys inline avoids an indirection on the
// data path, the size difference between the variants is irrelevant.
#[allow(clippy::large_enum_variant)]
enum Engine {
    Aead {
        seal: LessSafeKey,
        open: LessSafeKey,
        seal_iv: [u8; IMPLICIT_IV_LEN],
        open_iv: [u8; IMPLICIT_IV_LEN],
    },
    Cbc {
        enc: AesCbc,
        dec: AesCbc,
        hmac_enc: hmac::Key,
        hmac_dec: hmac::Key,
        hmac_len: usize,
    },
}

/// One data-channel key (one key_id): cipher state in both directions, send packet-id counter,
/// receive replay window and usage counters.
pub struct DataKey {
    cfg: DataKeyConfig,
    engine: Engine,
    send: PacketIdSend,
    replay: ReplayWindow,
    usage: Usage,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("cfg", &self.cfg)
            .field("send", &self.send)
            .field("usage", &self.usage)
            .finish_non_exhaustive()
    }
}

fn aead_algorithm(cipher: Cipher) -> Option<&'static aead::Algorithm> {
    match cipher {
        Cipher::Aes128Gcm => Some(&aead::AES_128_GCM),
        Cipher::Aes256Gcm => Some(&aead::AES_256_GCM),
        Cipher::ChaCha20Poly1305 => Some(&aead::CHACHA20_POLY1305),
        Cipher::Aes128Cbc | Cipher::Aes256Cbc => None,
    }
}

impl DataKey {
    /// Creates a key from the directional key slices (see [`Key2::data_channel_keys`]).
    pub fn new(cfg: &DataKeyConfig, keys: &DirectionalKeys<'_>) -> Result<Self, DataError> {
        if cfg.key_id > 7 {
            return Err(DataError::BadKeyId(cfg.key_id));
        }
        if let Some(p) = cfg.peer_id {
            if p > PEER_ID_NONE {
                return Err(DataError::BadPeerId(p));
            }
        }
        let klen = cfg.cipher.key_len();
        // INVARIANT: OpenVPN's check_key rejects all-zero cipher keys (both directions).
        for k in [&keys.encrypt, &keys.decrypt] {
            if k.cipher[..klen].iter().all(|&b| b == 0) {
                return Err(DataError::ZeroKey);
            }
        }
        let engine = match aead_algorithm(cfg.cipher) {
            Some(alg) => {
                let mk = |k: &KeySlice<'_>| -> Result<LessSafeKey, DataError> {
                    UnboundKey::new(alg, &k.cipher[..klen])
                        .map(LessSafeKey::new)
                        .map_err(|_| DataError::KeySetup)
                };
                Engine::Aead {
                    seal: mk(&keys.encrypt)?,
                    open: mk(&keys.decrypt)?,
                    seal_iv: keys.encrypt.implicit_iv(),
                    open_iv: keys.decrypt.implicit_iv(),
                }
            }
            None => {
                let hlen = cfg.auth.len();
                let alg = cfg.auth.ring_algorithm();
                Engine::Cbc {
                    enc: AesCbc::new(cfg.cipher, &keys.encrypt.cipher[..klen])?,
                    dec: AesCbc::new(cfg.cipher, &keys.decrypt.cipher[..klen])?,
                    hmac_enc: hmac::Key::new(alg, &keys.encrypt.hmac[..hlen]),
                    hmac_dec: hmac::Key::new(alg, &keys.decrypt.hmac[..hlen]),
                    hmac_len: hlen,
                }
            }
        };
        Ok(Self {
            cfg: *cfg,
            engine,
            send: PacketIdSend::new(PacketIdForm::Short),
            replay: ReplayWindow::new(cfg.replay_window, cfg.replay_seconds),
            usage: Usage::default(),
        })
    }

    /// Creates a key from `key2` for `role` (server: encrypt with `keys[1]`).
    pub fn from_key2(cfg: &DataKeyConfig, key2: &Key2, role: Role) -> Result<Self, DataError> {
        Self::new(cfg, &key2.data_channel_keys(role))
    }

    /// This key's configuration.
    pub fn config(&self) -> &DataKeyConfig {
        &self.cfg
    }

    /// key_id of this key.
    pub fn key_id(&self) -> u8 {
        self.cfg.key_id
    }

    /// Traffic counters.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// True once the send packet id reached 0xFF000000: renegotiate now.
    pub fn send_near_wrap(&self) -> bool {
        self.send.near_wrap()
    }

    /// Read access to the send packet-id counter.
    pub fn send_state(&self) -> &PacketIdSend {
        &self.send
    }

    /// Read access to the receive replay window.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    fn header_len(&self) -> usize {
        if self.cfg.peer_id.is_some() {
            4
        } else {
            1
        }
    }

    /// Bytes written in front of the payload by [`DataKey::encrypt`].
    pub fn headroom(&self) -> usize {
        self.header_len()
            + match &self.engine {
                Engine::Aead { .. } => PID_LEN + AEAD_TAG_LEN,
                Engine::Cbc { hmac_len, .. } => hmac_len + CBC_BLOCK + PID_LEN,
            }
    }

    /// Bytes that may be written after the payload by [`DataKey::encrypt`].
    pub fn tailroom(&self) -> usize {
        match &self.engine {
            Engine::Aead { .. } => 0,
            Engine::Cbc { .. } => CBC_BLOCK,
        }
    }

    /// Total per-packet overhead for a payload of `len` bytes.
    pub fn wire_len(&self, len: usize) -> usize {
        match &self.engine {
            Engine::Aead { .. } => self.headroom() + len,
            Engine::Cbc { .. } => {
                let ct = (PID_LEN + len) / CBC_BLOCK * CBC_BLOCK + CBC_BLOCK;
                self.headroom() - PID_LEN + ct
            }
        }
    }

    fn write_header(&self, out: &mut [u8]) {
        let op = match self.cfg.peer_id {
            Some(_) => P_DATA_V2,
            None => P_DATA_V1,
        };
        out[0] = (op << 3) | self.cfg.key_id;
        if let Some(p) = self.cfg.peer_id {
            let b = p.to_be_bytes();
            out[1..4].copy_from_slice(&b[1..4]);
        }
    }

    /// Encrypts the plaintext at `buf[payload]` into a complete data packet inside `buf` and returns
    /// the packet's range. `rng` supplies the CBC IV (unused for AEAD).
    pub fn encrypt(
        &mut self,
        buf: &mut [u8],
        payload: Range<usize>,
        rng: &mut dyn FnMut(&mut [u8]),
    ) -> Result<Range<usize>, DataError> {
        let need_head = self.headroom();
        if payload.start < need_head {
            return Err(DataError::Headroom {
                need: need_head,
                have: payload.start,
            });
        }
        let tail_have = buf.len().saturating_sub(payload.end);
        if payload.end > buf.len() || payload.start > payload.end || tail_have < self.tailroom() {
            return Err(DataError::Tailroom {
                need: self.tailroom(),
                have: tail_have,
            });
        }
        let start = payload.start - need_head;
        let hlen = self.header_len();
        let pid = self
            .send
            .next(0)
            .map_err(|_| DataError::PacketIdExhausted)?
            .id
            .to_be_bytes();
        self.write_header(&mut buf[start..start + hlen]);
        let end = match &self.engine {
            Engine::Aead { seal, seal_iv, .. } => {
                let pid_at = start + hlen;
                buf[pid_at..pid_at + PID_LEN].copy_from_slice(&pid);
                let nonce = make_nonce(&pid, seal_iv);
                // AAD: V2 = opcode + peer-id + pid (8 bytes), V1 = pid only.
                let (head, body) = buf.split_at_mut(payload.start);
                let aad_from = if hlen == 4 { start } else { pid_at };
                let aad = Aad::from(&head[aad_from..pid_at + PID_LEN]);
                let tag = seal
                    .seal_in_place_separate_tag(nonce, aad, &mut body[..payload.len()])
                    .map_err(|_| DataError::KeySetup)?;
                head[pid_at + PID_LEN..pid_at + PID_LEN + AEAD_TAG_LEN]
                    .copy_from_slice(tag.as_ref());
                payload.end
            }
            Engine::Cbc {
                enc,
                hmac_enc,
                hmac_len,
                ..
            } => {
                let hmac_at = start + hlen;
                let iv_at = hmac_at + hmac_len;
                let pt_at = iv_at + CBC_BLOCK;
                buf[pt_at..pt_at + PID_LEN].copy_from_slice(&pid);
                let pt_len = PID_LEN + payload.len();
                let pad = CBC_BLOCK - pt_len % CBC_BLOCK;
                let ct_end = pt_at + pt_len + pad;
                buf[pt_at + pt_len..ct_end].fill(pad as u8);
                let mut iv = [0u8; CBC_BLOCK];
                rng(&mut iv);
                buf[iv_at..pt_at].copy_from_slice(&iv);
                enc.cbc_encrypt(&iv, &mut buf[pt_at..ct_end]);
                let tag = hmac::sign(hmac_enc, &buf[iv_at..ct_end]);
                buf[hmac_at..iv_at].copy_from_slice(tag.as_ref());
                ct_end
            }
        };
        self.usage.packets_sent = self.usage.packets_sent.saturating_add(1);
        self.usage.bytes_sent = self.usage.bytes_sent.saturating_add((end - start) as u64);
        Ok(start..end)
    }

    /// Authenticates, decrypts (in place) and replay-checks a data packet (starting with its opcode
    /// byte). Returns the range of the plaintext inside `packet`.
    pub fn decrypt(&mut self, packet: &mut [u8], now_unix: u64) -> Result<Range<usize>, DataError> {
        let hdr = parse_data_header(packet)?;
        if hdr.key_id != self.cfg.key_id {
            return Err(DataError::KeyIdMismatch {
                expected: self.cfg.key_id,
                got: hdr.key_id,
            });
        }
        let hlen = hdr.len();
        let (pid, range) = match &self.engine {
            Engine::Aead { open, open_iv, .. } => {
                let need = hlen + PID_LEN + AEAD_TAG_LEN + 1;
                if packet.len() < need {
                    return Err(DataError::Truncated {
                        got: packet.len(),
                        need,
                    });
                }
                let pid_at = hlen;
                let mut pid = [0u8; PID_LEN];
                pid.copy_from_slice(&packet[pid_at..pid_at + PID_LEN]);
                let mut tag = [0u8; AEAD_TAG_LEN];
                let ct_at = pid_at + PID_LEN + AEAD_TAG_LEN;
                tag.copy_from_slice(&packet[pid_at + PID_LEN..ct_at]);
                let nonce = make_nonce(&pid, open_iv);
                let aad_from = if hdr.opcode == DataOpcode::V2 {
                    0
                } else {
                    pid_at
                };
                let (head, body) = packet.split_at_mut(ct_at);
                let aad = Aad::from(&head[aad_from..pid_at + PID_LEN]);
                open.open_in_place_separate_tag(nonce, aad, Tag::from(tag), body, 0..)
                    .map_err(|_| DataError::AuthFailed)?;
                (u32::from_be_bytes(pid), ct_at..packet.len())
            }
            Engine::Cbc {
                dec,
                hmac_dec,
                hmac_len,
                ..
            } => {
                let hmac_at = hlen;
                let iv_at = hmac_at + hmac_len;
                let ct_at = iv_at + CBC_BLOCK;
                let need = ct_at + CBC_BLOCK;
                if packet.len() < need {
                    return Err(DataError::Truncated {
                        got: packet.len(),
                        need,
                    });
                }
                let ct_len = packet.len() - ct_at;
                // INVARIANT: verify the HMAC before touching the ciphertext (encrypt-then-MAC).
                hmac::verify(hmac_dec, &packet[iv_at..], &packet[hmac_at..iv_at])
                    .map_err(|_| DataError::AuthFailed)?;
                if ct_len % CBC_BLOCK != 0 {
                    return Err(DataError::BadCiphertextLength(ct_len));
                }
                let mut iv = [0u8; CBC_BLOCK];
                iv.copy_from_slice(&packet[iv_at..ct_at]);
                dec.cbc_decrypt(&iv, &mut packet[ct_at..]);
                let pad = usize::from(packet[packet.len() - 1]);
                if pad == 0 || pad > CBC_BLOCK || pad > ct_len {
                    return Err(DataError::BadPadding);
                }
                if packet[packet.len() - pad..]
                    .iter()
                    .any(|&b| usize::from(b) != pad)
                {
                    return Err(DataError::BadPadding);
                }
                let pt_end = packet.len() - pad;
                if pt_end < ct_at + PID_LEN {
                    return Err(DataError::Truncated {
                        got: pt_end - ct_at,
                        need: PID_LEN,
                    });
                }
                let mut pid = [0u8; PID_LEN];
                pid.copy_from_slice(&packet[ct_at..ct_at + PID_LEN]);
                (u32::from_be_bytes(pid), ct_at + PID_LEN..pt_end)
            }
        };
        // INVARIANT: the replay window only moves for authenticated packets.
        self.replay.check_and_commit(pid, 0, now_unix)?;
        self.usage.packets_received = self.usage.packets_received.saturating_add(1);
        self.usage.bytes_received = self
            .usage
            .bytes_received
            .saturating_add(packet.len() as u64);
        Ok(range)
    }
}

fn make_nonce(pid: &[u8; PID_LEN], iv: &[u8; IMPLICIT_IV_LEN]) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..PID_LEN].copy_from_slice(pid);
    n[PID_LEN..].copy_from_slice(iv);
    Nonce::assume_unique_for_key(n)
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
    const PKT_A2: &str = "48000000000000017f337ffe2e4440e2c223c1feb1bfc4ac2e3074402f1a1acfab043fedb09acfca5203dab24b9beaf82efccc466e8ee50bdbcc441aff24db54df5ce696526f6ba5";
    const PT_A2: &str = "6000000000083afffe8000000000000013527b1998d2e15bff0200000000000000000000000000028500749d00000000";
    const NOW: u64 = 1_700_000_000;

    fn cfg(cipher: Cipher, auth: Digest, peer_id: Option<u32>) -> DataKeyConfig {
        DataKeyConfig {
            cipher,
            auth,
            key_id: 0,
            peer_id,
            replay_window: 64,
            replay_seconds: 15,
        }
    }

    fn key2() -> Key2 {
        Key2::from_ekm(&hex::decode(EKM_A2).unwrap()).unwrap()
    }

    fn pair(c: &DataKeyConfig) -> (DataKey, DataKey) {
        let k = key2();
        (
            DataKey::from_key2(c, &k, Role::Server).unwrap(),
            DataKey::from_key2(c, &k, Role::Client).unwrap(),
        )
    }

    fn no_rng() -> impl FnMut(&mut [u8]) {
        let mut ctr = 0u8;
        move |b: &mut [u8]| {
            for x in b.iter_mut() {
                ctr = ctr.wrapping_add(1);
                *x = ctr;
            }
        }
    }

    #[test]
    fn appendix_a2_packet_decrypts() {
        let mut server = DataKey::from_key2(
            &cfg(Cipher::Aes256Gcm, Digest::Sha1, Some(0)),
            &key2(),
            Role::Server,
        )
        .unwrap();
        let mut pkt = hex::decode(PKT_A2).unwrap();
        assert_eq!(pkt.len(), 72);
        let r = server.decrypt(&mut pkt, NOW).unwrap();
        assert_eq!(hex::encode(&pkt[r]), PT_A2);
        // replay of the same packet is rejected
        let mut again = hex::decode(PKT_A2).unwrap();
        assert_eq!(
            server.decrypt(&mut again, NOW),
            Err(DataError::Replay(ReplayError::Replay { id: 1 }))
        );
        assert_eq!(server.usage().packets_received, 1);
    }

    #[test]
    fn appendix_a2_packet_reencrypts_identically() {
        // The client side of the same key produces the captured packet byte for byte.
        let mut client = DataKey::from_key2(
            &cfg(Cipher::Aes256Gcm, Digest::Sha1, Some(0)),
            &key2(),
            Role::Client,
        )
        .unwrap();
        let pt = hex::decode(PT_A2).unwrap();
        let mut buf = vec![0u8; MAX_HEADROOM + pt.len()];
        buf[MAX_HEADROOM..MAX_HEADROOM + pt.len()].copy_from_slice(&pt);
        let r = client
            .encrypt(
                &mut buf,
                MAX_HEADROOM..MAX_HEADROOM + pt.len(),
                &mut no_rng(),
            )
            .unwrap();
        assert_eq!(hex::encode(&buf[r]), PKT_A2);
    }

    #[test]
    fn tamper_rejected_everywhere() {
        let pkt = hex::decode(PKT_A2).unwrap();
        for i in 0..pkt.len() {
            let mut server = DataKey::from_key2(
                &cfg(Cipher::Aes256Gcm, Digest::Sha1, Some(0)),
                &key2(),
                Role::Server,
            )
            .unwrap();
            let mut p = pkt.clone();
            p[i] ^= 0x01;
            let r = server.decrypt(&mut p, NOW);
            assert!(r.is_err(), "flip at byte {i} accepted");
            // a rejected packet must not consume the packet id
            let mut ok = pkt.clone();
            server.decrypt(&mut ok, NOW).unwrap();
        }
    }

    fn roundtrip(c: DataKeyConfig) {
        let (mut server, mut client) = pair(&c);
        let mut rng = no_rng();
        for len in [1usize, 15, 16, 17, 100, 1400] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            // server -> client
            let mut buf = vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM];
            buf[MAX_HEADROOM..MAX_HEADROOM + len].copy_from_slice(&payload);
            let r = server
                .encrypt(&mut buf, MAX_HEADROOM..MAX_HEADROOM + len, &mut rng)
                .unwrap();
            assert_eq!(r.len(), server.wire_len(len), "{c:?} len {len}");
            let mut wire = buf[r].to_vec();
            let pr = client.decrypt(&mut wire, NOW).unwrap();
            assert_eq!(&wire[pr], &payload[..], "{c:?} len {len}");
            // client -> server
            let mut buf = vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM];
            buf[MAX_HEADROOM..MAX_HEADROOM + len].copy_from_slice(&payload);
            let r = client
                .encrypt(&mut buf, MAX_HEADROOM..MAX_HEADROOM + len, &mut rng)
                .unwrap();
            let mut wire = buf[r].to_vec();
            let mut replay = wire.clone();
            let pr = server.decrypt(&mut wire, NOW).unwrap();
            assert_eq!(&wire[pr], &payload[..]);
            assert!(matches!(
                server.decrypt(&mut replay, NOW),
                Err(DataError::Replay(_))
            ));
            // tampering with the last byte is detected
            let mut buf = vec![0u8; MAX_HEADROOM + len + MAX_TAILROOM];
            let r = client
                .encrypt(&mut buf, MAX_HEADROOM..MAX_HEADROOM + len, &mut rng)
                .unwrap();
            let mut wire = buf[r].to_vec();
            let last = wire.len() - 1;
            wire[last] ^= 0x80;
            assert_eq!(server.decrypt(&mut wire, NOW), Err(DataError::AuthFailed));
        }
        assert_eq!(server.usage().packets_sent, 6);
        assert_eq!(server.usage().packets_received, 6);
        assert!(server.usage().renegotiation_due(None, Some(12)));
        assert!(!server.usage().renegotiation_due(None, Some(13)));
        assert!(!server.usage().renegotiation_due(Some(0), Some(0)));
        let bytes = server.usage().total_bytes();
        assert!(server.usage().renegotiation_due(Some(bytes), None));
        assert!(!server.usage().renegotiation_due(Some(bytes + 1), None));
    }

    #[test]
    fn roundtrip_all_ciphers() {
        for cipher in Cipher::ALL {
            for auth in [Digest::Sha1, Digest::Sha256, Digest::Sha512] {
                for peer in [None, Some(5), Some(0xABCDEF)] {
                    roundtrip(cfg(cipher, auth, peer));
                }
            }
        }
    }

    #[test]
    fn v1_aead_aad_is_pid_only() {
        let c = cfg(Cipher::Aes128Gcm, Digest::Sha1, None);
        let (mut server, mut client) = pair(&c);
        let mut buf = vec![0u8; 64];
        let r = server.encrypt(&mut buf, 32..40, &mut no_rng()).unwrap();
        assert_eq!(r, 11..40);
        assert_eq!(buf[11], P_DATA_V1 << 3);
        let mut wire = buf[r].to_vec();
        let pr = client.decrypt(&mut wire, NOW).unwrap();
        assert_eq!(pr, 21..29);
    }

    #[test]
    fn cbc_layout_and_hmac_digest_must_match() {
        let c = cfg(Cipher::Aes256Cbc, Digest::Sha256, Some(1));
        let (mut server, _) = pair(&c);
        let mut buf = vec![0u8; 200];
        let r = server.encrypt(&mut buf, 100..110, &mut no_rng()).unwrap();
        let wire = buf[r].to_vec();
        // 4 header + 32 hmac + 16 iv + 16 ct (4 pid + 10 payload + 2 pad)
        assert_eq!(wire.len(), 4 + 32 + 16 + 16);
        assert_eq!(&wire[..4], &[(P_DATA_V2 << 3), 0, 0, 1]);
        assert_eq!(&wire[36..52], &(1u8..=16).collect::<Vec<_>>()[..]);
        let k = key2();
        let mut wrong = DataKey::from_key2(
            &cfg(Cipher::Aes256Cbc, Digest::Sha1, Some(1)),
            &k,
            Role::Client,
        )
        .unwrap();
        let mut w = wire.clone();
        assert!(wrong.decrypt(&mut w, NOW).is_err());
    }

    /// Independent vector computed with Python `cryptography` (AES-256-CBC, HMAC-SHA256 over IV||ct,
    /// server keys of the Appendix A.2 key2, IV 01..10, pid 1, peer-id 1).
    #[test]
    fn cbc_matches_independent_implementation() {
        const CBC_PKT: &str =
            "48000001d3fbc2e74006952153a0149b1d381676920e55e591cb18708e01aa5e723e860d\
0102030405060708090a0b0c0d0e0f10d71abfa8b745baeebcc9dd0ea341d93ee065e846fb9e6055f0b9c25b26e0fe29";
        let c = cfg(Cipher::Aes256Cbc, Digest::Sha256, Some(1));
        let (mut server, mut client) = pair(&c);
        let payload = b"bulwark cbc test vector!";
        let mut buf = vec![0u8; MAX_HEADROOM + payload.len() + MAX_TAILROOM];
        buf[MAX_HEADROOM..MAX_HEADROOM + payload.len()].copy_from_slice(payload);
        let r = server
            .encrypt(
                &mut buf,
                MAX_HEADROOM..MAX_HEADROOM + payload.len(),
                &mut no_rng(),
            )
            .unwrap();
        assert_eq!(hex::encode(&buf[r]), CBC_PKT);
        let mut wire = hex::decode(CBC_PKT).unwrap();
        let pr = client.decrypt(&mut wire, NOW).unwrap();
        assert_eq!(&wire[pr], payload);
    }

    #[test]
    fn key_id_and_opcode_checks() {
        let c = cfg(Cipher::Aes256Gcm, Digest::Sha1, Some(0));
        let (_, mut client) = pair(&c);
        let mut pkt = hex::decode(PKT_A2).unwrap();
        pkt[0] = (P_DATA_V2 << 3) | 1;
        assert_eq!(
            client.decrypt(&mut pkt, NOW),
            Err(DataError::KeyIdMismatch {
                expected: 0,
                got: 1
            })
        );
        let mut ctl = vec![0x20u8; 40];
        assert_eq!(client.decrypt(&mut ctl, NOW), Err(DataError::NotData(4)));
        assert!(matches!(
            client.decrypt(&mut [], NOW),
            Err(DataError::Truncated { .. })
        ));
        assert!(matches!(
            client.decrypt(&mut [0x48, 0, 0], NOW),
            Err(DataError::Truncated { .. })
        ));
        // header + pid + tag but no payload
        let mut empty = vec![0u8; 24];
        empty[0] = 0x48;
        assert!(matches!(
            client.decrypt(&mut empty, NOW),
            Err(DataError::Truncated { .. })
        ));
    }

    #[test]
    fn buffer_room_errors() {
        let c = cfg(Cipher::Aes256Cbc, Digest::Sha512, Some(0));
        let (mut server, _) = pair(&c);
        assert_eq!(server.headroom(), MAX_HEADROOM);
        let mut buf = vec![0u8; 200];
        assert!(matches!(
            server.encrypt(&mut buf, 10..20, &mut no_rng()),
            Err(DataError::Headroom { .. })
        ));
        assert!(matches!(
            server.encrypt(&mut buf, 100..190, &mut no_rng()),
            Err(DataError::Tailroom { .. })
        ));
        assert!(matches!(
            server.encrypt(&mut buf, 100..300, &mut no_rng()),
            Err(DataError::Tailroom { .. })
        ));
    }

    #[test]
    fn zero_key_rejected() {
        let zero = Key2::from_bytes(&[0u8; 256]).unwrap();
        assert_eq!(
            DataKey::from_key2(
                &cfg(Cipher::Aes128Gcm, Digest::Sha1, None),
                &zero,
                Role::Server
            )
            .unwrap_err(),
            DataError::ZeroKey
        );
    }

    #[test]
    fn cipher_names() {
        assert_eq!(Cipher::parse("aes-256-gcm").unwrap(), Cipher::Aes256Gcm);
        assert_eq!(Cipher::parse("AES-128-GCM").unwrap(), Cipher::Aes128Gcm);
        assert_eq!(
            Cipher::parse("ChaCha20-Poly1305").unwrap(),
            Cipher::ChaCha20Poly1305
        );
        assert_eq!(Cipher::parse("AES-256-CBC").unwrap().name(), "AES-256-CBC");
        assert!(matches!(
            Cipher::parse("BF-CBC"),
            Err(DataError::UnsupportedCipher(_))
        ));
        assert!(matches!(
            Cipher::parse("AES-192-GCM"),
            Err(DataError::UnsupportedCipher(_))
        ));
        assert!(matches!(
            Cipher::parse("FOO"),
            Err(DataError::UnknownCipher(_))
        ));
        assert_eq!(Digest::parse("sha256").unwrap(), Digest::Sha256);
        assert!(Digest::parse("MD5").is_err());
    }

    #[test]
    fn data_ciphers_list() {
        let l =
            parse_data_ciphers("aes-256-gcm:AES-128-GCM:?AES-192-GCM:CHACHA20-POLY1305").unwrap();
        assert_eq!(
            format_cipher_list(&l),
            "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"
        );
        assert!(parse_data_ciphers("AES-256-GCM:BF-CBC").is_err());
        assert_eq!(
            parse_data_ciphers("?BF-CBC"),
            Err(DataError::EmptyCipherList)
        );
        assert_eq!(parse_data_ciphers(""), Err(DataError::EmptyCipherList));
    }

    #[test]
    fn negotiation_like_openvpn() {
        let server = parse_data_ciphers("AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305").unwrap();
        // default 2.6 client
        let n = negotiate(
            &server,
            Some("AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305"),
            Some(2),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            n,
            Negotiated {
                cipher: Cipher::Aes256Gcm,
                push_cipher: true
            }
        );
        // server preference wins
        let n = negotiate(
            &server,
            Some("CHACHA20-POLY1305:AES-128-GCM"),
            None,
            None,
            None,
        )
        .unwrap();
        assert_eq!(n.cipher, Cipher::Aes128Gcm);
        // IV_NCP=2 only (2.4 client)
        let n = negotiate(&server, None, Some(2), Some("BF-CBC"), None).unwrap();
        assert_eq!(
            n,
            Negotiated {
                cipher: Cipher::Aes256Gcm,
                push_cipher: true
            }
        );
        // poor man's NCP via OCC cipher, no push
        let cbc = parse_data_ciphers("AES-256-GCM:AES-256-CBC").unwrap();
        let n = negotiate(&cbc, None, None, Some("AES-256-CBC"), None).unwrap();
        assert_eq!(
            n,
            Negotiated {
                cipher: Cipher::Aes256Cbc,
                push_cipher: false
            }
        );
        // IV_CIPHERS present: OCC cipher ignored
        assert!(matches!(
            negotiate(
                &cbc,
                Some("CHACHA20-POLY1305"),
                None,
                Some("AES-256-CBC"),
                None
            ),
            Err(DataError::NoSharedCipher { .. })
        ));
        // no info at all
        assert_eq!(
            negotiate(&server, None, None, None, None),
            Err(DataError::NoCipherInfo)
        );
        let n = negotiate(&server, None, None, None, Some(Cipher::Aes256Cbc)).unwrap();
        assert_eq!(
            n,
            Negotiated {
                cipher: Cipher::Aes256Cbc,
                push_cipher: false
            }
        );
        // known OCC cipher that doesn't match: no fallback
        assert!(matches!(
            negotiate(&server, None, None, Some("BF-CBC"), Some(Cipher::Aes256Cbc)),
            Err(DataError::NoSharedCipher { .. })
        ));
    }

    #[test]
    fn send_counter_exhaustion() {
        let c = cfg(Cipher::Aes128Gcm, Digest::Sha1, Some(0));
        let (mut server, _) = pair(&c);
        let mut buf = vec![0u8; 64];
        server.encrypt(&mut buf, 32..40, &mut no_rng()).unwrap();
        assert!(!server.send_near_wrap());
        server.send =
            PacketIdSend::with_last_id(PacketIdForm::Short, super::super::replay::WRAP_TRIGGER, 0);
        assert!(server.send_near_wrap());
        server.send = PacketIdSend::with_last_id(PacketIdForm::Short, u32::MAX - 1, 0);
        let r = server.encrypt(&mut buf, 32..40, &mut no_rng()).unwrap();
        assert_eq!(&buf[r.start + 4..r.start + 8], &[0xff; 4]);
        assert_eq!(
            server.encrypt(&mut buf, 32..40, &mut no_rng()),
            Err(DataError::PacketIdExhausted)
        );
    }

    #[test]
    fn header_parse() {
        assert_eq!(
            parse_data_header(&[0x4b, 0x12, 0x34, 0x56]).unwrap(),
            DataHeader {
                opcode: DataOpcode::V2,
                key_id: 3,
                peer_id: Some(0x123456)
            }
        );
        assert_eq!(parse_data_header(&[0x31]).unwrap().opcode, DataOpcode::V1);
        assert_eq!(parse_data_header(&[0x38]), Err(DataError::NotData(7)));
    }

    proptest::proptest! {
        #[test]
        fn decrypt_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), first in 0u8..=255) {
            for cipher in Cipher::ALL {
                let c = cfg(cipher, Digest::Sha256, Some(0));
                let (mut server, _) = pair(&c);
                let mut p = bytes.clone();
                if !p.is_empty() { p[0] = first; }
                let _ = server.decrypt(&mut p, NOW);
            }
        }
    }
}

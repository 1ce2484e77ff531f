//! RSA key generation (ring, the crypto backend rcgen uses here, cannot generate RSA keys).
//!
//! API: [`generate_pkcs8`] returns an unencrypted PKCS#8 DER `PrivateKeyInfo` holding a fresh RSA key
//! of 2048 or 3072 bits with public exponent 65537.
//!
//! Invariants:
//! - Primes are drawn from the operating system CSPRNG (ring's `SystemRandom`), have their two top bits
//!   set (so `n` has exactly the requested length), survive trial division by the small primes below
//!   [`SIEVE_LIMIT`] and 40 Miller-Rabin rounds with random bases (FIPS 186-4 C.3 asks for 5 at this
//!   size), satisfy `gcd(e, p-1) = gcd(e, q-1) = 1` and `|p - q| > 2^(bits/2 - 100)`.
//! - `d = e^-1 mod lcm(p-1, q-1)` and `d > 2^(bits/2)` (FIPS 186-4 B.3.1).
//! - Every produced key is re-parsed and consistency-checked by `ring::signature::RsaKeyPair` before
//!   it is returned; a key ring rejects is an error, never returned.
//! - Key generation uses num-bigint, which is not constant-time. That is acceptable for a one-shot
//!   generator run by the operator on their own machine (no attacker-observable timing), and is why
//!   this module must never be used on a network-facing path.

use num_bigint::BigUint;
use ring::rand::{SecureRandom, SystemRandom};

/// Trial-division bound for prime candidates.
const SIEVE_LIMIT: u32 = 17_863;
/// Miller-Rabin rounds per accepted prime.
const MR_ROUNDS: usize = 40;
/// The public exponent.
const PUBLIC_EXPONENT: u32 = 65_537;
/// Upper bound on candidate draws per prime; a CSPRNG never gets near it (expected: a few hundred).
const MAX_CANDIDATES: usize = 200_000;

/// Errors of RSA key generation.
#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    /// The requested modulus size is not supported.
    #[error("unsupported RSA modulus size {0} bits (supported: 2048, 3072)")]
    UnsupportedSize(usize),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// No prime was found within the candidate budget (indicates a broken RNG).
    #[error("no {bits}-bit prime found after {MAX_CANDIDATES} candidates (broken random source?)")]
    PrimeSearchExhausted {
        /// Requested prime size.
        bits: usize,
    },
    /// ring rejected the generated key (an internal consistency failure).
    #[error("generated RSA key rejected by ring: {0}")]
    Rejected(String),
}

/// Generates an RSA key of `bits` (2048 or 3072) and returns it as PKCS#8 DER.
pub fn generate_pkcs8(bits: usize) -> Result<Vec<u8>, RsaError> {
    if bits != 2048 && bits != 3072 {
        return Err(RsaError::UnsupportedSize(bits));
    }
    let rng = SystemRandom::new();
    let small = small_primes();
    let e = BigUint::from(PUBLIC_EXPONENT);
    let one = BigUint::from(1u32);
    let half = bits / 2;
    let min_distance = BigUint::from(1u32) << (half - 100);
    let min_d = BigUint::from(1u32) << half;
    loop {
        let a = random_prime(half, &rng, &small)?;
        let b = random_prime(half, &rng, &small)?;
        let (p, q) = if a > b { (a, b) } else { (b, a) };
        if &p - &q <= min_distance {
            continue;
        }
        let n = &p * &q;
        if n.bits() != bits as u64 {
            continue;
        }
        let p1 = &p - &one;
        let q1 = &q - &one;
        let lambda = (&p1 * &q1) / gcd(&p1, &q1);
        let Some(d) = e.modinv(&lambda) else {
            continue;
        };
        if d <= min_d {
            continue;
        }
        let dp = &d % &p1;
        let dq = &d % &q1;
        let Some(qinv) = q.modinv(&p) else {
            continue;
        };
        let rsa_private_key = der_sequence(&[
            der_uint(&BigUint::from(0u32)),
            der_uint(&n),
            der_uint(&e),
            der_uint(&d),
            der_uint(&p),
            der_uint(&q),
            der_uint(&dp),
            der_uint(&dq),
            der_uint(&qinv),
        ]);
        // rsaEncryption OID 1.2.840.113549.1.1.1 followed by NULL parameters.
        let algorithm = der_sequence(&[
            vec![
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
            ],
            vec![0x05, 0x00],
        ]);
        let pkcs8 = der_sequence(&[
            der_uint(&BigUint::from(0u32)),
            algorithm,
            der_tlv(0x04, &rsa_private_key),
        ]);
        ring::signature::RsaKeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| RsaError::Rejected(e.to_string()))?;
        return Ok(pkcs8);
    }
}

fn gcd(a: &BigUint, b: &BigUint) -> BigUint {
    let mut a = a.clone();
    let mut b = b.clone();
    let zero = BigUint::from(0u32);
    while b != zero {
        let r = &a % &b;
        a = b;
        b = r;
    }
    a
}

/// All primes in `[3, SIEVE_LIMIT)`.
fn small_primes() -> Vec<u32> {
    let limit = SIEVE_LIMIT as usize;
    let mut composite = vec![false; limit];
    let mut out = Vec::new();
    for i in 2..limit {
        if !composite[i] {
            if i > 2 {
                out.push(i as u32);
            }
            let mut j = i * i;
            while j < limit {
                composite[j] = true;
                j += i;
            }
        }
    }
    out
}

fn random_biguint(bytes: usize, rng: &SystemRandom) -> Result<BigUint, RsaError> {
    let mut buf = vec![0u8; bytes];
    rng.fill(&mut buf).map_err(|_| RsaError::Random)?;
    Ok(BigUint::from_bytes_be(&buf))
}

fn random_prime(bits: usize, rng: &SystemRandom, small: &[u32]) -> Result<BigUint, RsaError> {
    let bytes = bits.div_ceil(8);
    let e = BigUint::from(PUBLIC_EXPONENT);
    let one = BigUint::from(1u32);
    'candidates: for _ in 0..MAX_CANDIDATES {
        let mut buf = vec![0u8; bytes];
        rng.fill(&mut buf).map_err(|_| RsaError::Random)?;
        // bits is a multiple of 8 for the supported sizes: set the two top bits and the low bit.
        buf[0] |= 0xc0;
        if let Some(last) = buf.last_mut() {
            *last |= 1;
        }
        let candidate = BigUint::from_bytes_be(&buf);
        for &sp in small {
            if (&candidate % sp) == BigUint::from(0u32) {
                continue 'candidates;
            }
        }
        // gcd(e, candidate - 1) = 1 since e is prime.
        if &candidate % &e == one {
            continue;
        }
        if miller_rabin(&candidate, rng)? {
            return Ok(candidate);
        }
    }
    Err(RsaError::PrimeSearchExhausted { bits })
}

fn miller_rabin(n: &BigUint, rng: &SystemRandom) -> Result<bool, RsaError> {
    let one = BigUint::from(1u32);
    let two = BigUint::from(2u32);
    let n1 = n - &one;
    let s = n1.trailing_zeros().unwrap_or(0);
    let d = &n1 >> s;
    let bytes = (n.bits() as usize).div_ceil(8);
    let span = n - 3u32; // bases in [2, n-2]
    for _ in 0..MR_ROUNDS {
        let a = random_biguint(bytes + 8, rng)? % &span + &two;
        let mut x = a.modpow(&d, n);
        if x == one || x == n1 {
            continue;
        }
        let mut witness = true;
        for _ in 1..s {
            x = x.modpow(&two, n);
            if x == n1 {
                witness = false;
                break;
            }
        }
        if witness {
            return Ok(false);
        }
    }
    Ok(true)
}

fn der_len(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend_from_slice(&bytes);
        out
    }
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(v: &BigUint) -> Vec<u8> {
    let mut bytes = v.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    der_tlv(0x02, &bytes)
}

fn der_sequence(parts: &[Vec<u8>]) -> Vec<u8> {
    der_tlv(0x30, &parts.concat())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unsupported_sizes() {
        assert!(matches!(
            generate_pkcs8(1024),
            Err(RsaError::UnsupportedSize(1024))
        ));
    }

    #[test]
    fn miller_rabin_separates_primes_and_composites() {
        let rng = SystemRandom::new();
        // 2^127 - 1 is a Mersenne prime; 2^128 + 1 = 59649589127497217 * 5704689200685129054721.
        let m127 = (BigUint::from(1u32) << 127) - 1u32;
        assert!(miller_rabin(&m127, &rng).unwrap());
        let f7 = (BigUint::from(1u32) << 128) + 1u32;
        assert!(!miller_rabin(&f7, &rng).unwrap());
        // A Carmichael number fools Fermat but not Miller-Rabin.
        assert!(!miller_rabin(&BigUint::from(561u32), &rng).unwrap());
    }

    #[test]
    fn der_integer_encoding() {
        assert_eq!(der_uint(&BigUint::from(0u32)), vec![0x02, 0x01, 0x00]);
        assert_eq!(
            der_uint(&BigUint::from(0x80u32)),
            vec![0x02, 0x02, 0x00, 0x80]
        );
        assert_eq!(der_len(0x1234), vec![0x82, 0x12, 0x34]);
    }

    #[test]
    fn generates_a_key_ring_accepts() {
        let der = generate_pkcs8(2048).unwrap();
        let kp = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        assert_eq!(kp.public().modulus_len(), 256);
        let der = generate_pkcs8(3072).unwrap();
        let kp = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        assert_eq!(kp.public().modulus_len(), 384);
    }
}

//! TUN offload: virtio-net header parsing, TSO/USO super-packet segmentation, and the userspace GRO
//! (coalescing) with a round-trip check: a coalesced group, segmented again as the kernel would,
//! gives back exactly the merged payloads.
#![no_main]
use bulwark_worker::offload::{coalesce, segment, VnetHdr, GSO_NONE, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // a read from the TUN device: header + (super-)packet
        let Ok(h) = VnetHdr::parse(rest) else {
            return;
        };
        let pkt = &rest[VNET_HDR_LEN..];
        let mut scratch = Vec::new();
        let mut emitted = 0usize;
        if let Ok(n) = segment(pkt, &h, &mut scratch, |p| {
            emitted += 1;
            assert!(
                p.len() <= pkt.len(),
                "a segment is never larger than its super-packet"
            );
        }) {
            assert_eq!(n, emitted);
        }
        return;
    }
    // decrypted packets to write: [len_hi, len_lo, bytes] repeated
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    let mut r = rest;
    while r.len() >= 2 && pkts.len() < 80 {
        let len = usize::from(u16::from_be_bytes([r[0], r[1]])).min(r.len() - 2);
        pkts.push(r[2..2 + len].to_vec());
        r = &r[2 + len..];
    }
    let orig = pkts.clone();
    let c = coalesce(&mut pkts);
    assert!(c.count <= pkts.len().max(1));
    if c.count < 2 {
        assert_eq!(c.hdr.gso_type, GSO_NONE);
        assert_eq!(pkts, orig, "a packet written alone is not modified");
        return;
    }
    let mut sup = pkts[0].clone();
    let mut payload = pkts[0][c.payload_at..].to_vec();
    for p in &pkts[1..c.count] {
        sup.extend_from_slice(&p[c.payload_at..]);
        payload.extend_from_slice(&p[c.payload_at..]);
    }
    assert!(sup.len() <= 65535);
    let mut back = Vec::new();
    let n = segment(&sup, &c.hdr, &mut Vec::new(), |p| back.push(p.to_vec()))
        .expect("a coalesced super-packet segments again");
    assert_eq!(n, c.count, "as many segments as packets were merged");
    let again: Vec<u8> = back
        .iter()
        .flat_map(|p| p[c.payload_at..].to_vec())
        .collect();
    assert_eq!(again, payload, "payloads survive the round trip in order");
});

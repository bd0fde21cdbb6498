//! The source hash's keys (see `SrcHashKey`), built exactly as the XDP program builds them
//! from a packet: the address as it lies in the header, read as native words, masked by the
//! generation's netmask for the family.

use nodewall_common::xdp::{src_hash_tag, SrcHashKey, FAMILY_IPV4, FAMILY_IPV6};

use super::flat::host_mask;

/// Network-order bytes as the program reads them: native-endian words.
fn words(bytes: &[u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| u32::from_ne_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4")))
}

fn v4_bytes(a: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a.to_be_bytes());
    b
}

pub fn key4(gen: u32, &(addr, len): &(u32, u8)) -> SrcHashKey {
    SrcHashKey {
        tag: src_hash_tag(gen, FAMILY_IPV4, len.into()),
        addr: words(&v4_bytes(addr)),
    }
}

pub fn key6(gen: u32, &(addr, len): &(u128, u8)) -> SrcHashKey {
    SrcHashKey {
        tag: src_hash_tag(gen, FAMILY_IPV6, len.into()),
        addr: words(&addr.to_be_bytes()),
    }
}

/// `GenConfig::hash_mask` of a family whose hashed prefixes are `len` long.
pub fn mask(family: u32, len: u8) -> [u32; 4] {
    if family == FAMILY_IPV4 {
        words(&v4_bytes(!(host_mask(len, 32) as u32)))
    } else {
        words(&(!host_mask(len, 128)).to_be_bytes())
    }
}

/// A key read back from the kernel: (generation, family, prefix length, address bytes).
pub fn parse(k: &SrcHashKey) -> (u32, u32, u8, [u8; 16]) {
    let mut bytes = [0u8; 16];
    for (i, w) in k.addr.iter().enumerate() {
        bytes[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
    }
    (
        k.tag & 0xff,
        (k.tag >> 8) & 0xff,
        (k.tag >> 16) as u8,
        bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the program computes: the packet's address words, masked word by word, must
    /// give the key the agent stored for the prefix containing it.
    #[test]
    fn a_masked_address_is_its_prefix_key() {
        let net: u128 = 0xfd12_3456_789a_bcde << 64;
        let addr = net | 0x1122_3344_5566_7788;
        let m = mask(FAMILY_IPV6, 64);
        let w = words(&addr.to_be_bytes());
        let masked: [u32; 4] = std::array::from_fn(|i| w[i] & m[i]);
        assert_eq!(masked, key6(1, &(net, 64)).addr);
        let net4 = u32::from_be_bytes([198, 18, 7, 0]);
        let m = mask(FAMILY_IPV4, 23);
        let w = words(&v4_bytes(net4 | 0x1ff));
        let masked: [u32; 4] = std::array::from_fn(|i| w[i] & m[i]);
        assert_eq!(
            masked,
            key4(0, &(u32::from_be_bytes([198, 18, 6, 0]), 23)).addr
        );
        assert_eq!(
            parse(&key6(1, &(net, 64))),
            (1, FAMILY_IPV6, 64, net.to_be_bytes())
        );
    }
}

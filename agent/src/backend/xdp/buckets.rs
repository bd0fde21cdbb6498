//! The source hash (see `SrcBucket`): prefixes that overflow the flat tables, each in one of
//! two buckets of a generation, placed by cuckoo displacement. Keys and masks are built here
//! exactly as the XDP program builds them from a packet.

use nodewall_common::xdp::{
    bucket_of, SrcBucket, BUCKET_CLASS, BUCKET_USED, BUCKET_V6, SRC_BUCKETS_PER_GEN,
    SRC_BUCKET_SLOTS,
};

use super::flat::host_mask;

/// The key of an IPv4 address (network order, as a `u32`): its 4 bytes as they lie in the
/// packet, then zeros, read as a native word.
pub fn key4(addr: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&addr.to_be_bytes());
    u64::from_ne_bytes(b)
}

/// The key of an IPv6 address: its first 8 bytes, read as a native word.
pub fn key6(addr: u128) -> u64 {
    key6_bits((addr >> 64) as u64)
}

fn key6_bits(top: u64) -> u64 {
    u64::from_ne_bytes(top.to_be_bytes())
}

/// The key of an address given as its bytes in network order (4 or 16), as the program
/// reads it before masking.
pub fn key_of(addr: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    let n = addr.len().min(8);
    first[..n].copy_from_slice(&addr[..n]);
    u64::from_ne_bytes(first)
}

pub fn addr4(key: u64) -> u32 {
    u32::from_be_bytes(key.to_ne_bytes()[..4].try_into().expect("4 bytes"))
}

pub fn addr6(key: u64) -> u128 {
    u128::from(u64::from_be_bytes(key.to_ne_bytes())) << 64
}

/// `GenConfig::hash_mask` of a family (0: IPv4) whose hashed prefixes are `len` long (IPv6:
/// at most 64).
pub fn mask(family: usize, len: u8) -> u64 {
    if family == 0 {
        key4(!(host_mask(len, 32) as u32))
    } else {
        key6_bits(!(host_mask(len, 64) as u64))
    }
}

pub fn tag(family: usize, class: u16) -> u16 {
    BUCKET_USED | if family == 0 { 0 } else { BUCKET_V6 } | class
}

/// The multipliers a build tries, in turn: fixed, so that a policy always gets the same
/// table (an unchanged policy compares equal to what the kernel holds).
pub fn seeds(attempt: u64) -> [u64; 2] {
    let mix = |x: u64| {
        let x = (x ^ (x >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
        (x ^ (x >> 27)).wrapping_mul(0x81da_def4_bc2d_d44d) | 1
    };
    [mix(2 * attempt + 1), mix(2 * attempt + 2)]
}

/// Displacements one insertion may make before the build gives up on these seeds.
const MAX_KICKS: usize = 500;

/// One generation's buckets holding `entries` (key, tag), or `None` when they do not fit
/// with these seeds.
pub fn build(entries: &[(u64, u16)], seeds: [u64; 2]) -> Option<Vec<SrcBucket>> {
    let mut t = vec![SrcBucket::EMPTY; SRC_BUCKETS_PER_GEN as usize];
    let choices = |key: u64| seeds.map(|s| bucket_of(key, s) as usize);
    // A fixed xorshift picks the slots to displace: the same entries give the same table.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for &(key, tag) in entries {
        let (mut key, mut tag) = (key, tag);
        let mut at = choices(key)[0];
        for kick in 0..=MAX_KICKS {
            let [b1, b2] = choices(key);
            if let Some(b) = [b1, b2].into_iter().find(|&b| free_slot(&t[b]).is_some()) {
                let slot = free_slot(&t[b]).expect("found");
                t[b].keys[slot] = key;
                t[b].tags[slot] = tag;
                if b != b1 {
                    t[b1].spilled = 1;
                }
                break;
            }
            if kick == MAX_KICKS {
                return None;
            }
            // Both full: evict a slot of the bucket not evicted from last, into its other
            // bucket, and carry on with the evicted entry.
            let b = if at == b1 { b2 } else { b1 };
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let slot = (rng % SRC_BUCKET_SLOTS as u64) as usize;
            std::mem::swap(&mut t[b].keys[slot], &mut key);
            std::mem::swap(&mut t[b].tags[slot], &mut tag);
            if b != b1 {
                t[b1].spilled = 1;
            }
            at = b;
        }
    }
    Some(t)
}

fn free_slot(b: &SrcBucket) -> Option<usize> {
    b.tags.iter().position(|&t| t & BUCKET_USED == 0)
}

/// The class the program finds for `key` of `family`, as it looks it up.
pub fn find(t: &[SrcBucket], seeds: [u64; 2], family: usize, key: u64) -> Option<u16> {
    let want = tag(family, 0);
    let in_bucket = |b: &SrcBucket| {
        (0..SRC_BUCKET_SLOTS)
            .find(|&i| b.keys[i] == key && b.tags[i] & !BUCKET_CLASS == want)
            .map(|i| b.tags[i] & BUCKET_CLASS)
    };
    let first = &t[bucket_of(key, seeds[0]) as usize];
    in_bucket(first).or_else(|| {
        (first.spilled != 0)
            .then(|| in_bucket(&t[bucket_of(key, seeds[1]) as usize]))
            .flatten()
    })
}

/// Every (family, key, class) a generation's buckets hold.
pub fn entries(t: &[SrcBucket]) -> impl Iterator<Item = (usize, u64, u16)> + '_ {
    t.iter().flat_map(|b| {
        (0..SRC_BUCKET_SLOTS)
            .filter(|&i| b.tags[i] & BUCKET_USED != 0)
            .map(|i| {
                let family = usize::from(b.tags[i] & BUCKET_V6 != 0);
                (family, b.keys[i], b.tags[i] & BUCKET_CLASS)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the program computes: the first word of the packet's address, masked, must be
    /// the key the agent stored for the prefix containing it.
    #[test]
    fn a_masked_address_is_its_prefix_key() {
        let net: u128 = 0xfd12_3456_789a_bcde << 64;
        let addr = net | 0x1122_3344_5566_7788;
        let word = u64::from_ne_bytes(addr.to_be_bytes()[..8].try_into().unwrap());
        assert_eq!(word & mask(1, 64), key6(net));
        assert_eq!(word & mask(1, 48), key6(net >> 80 << 80));
        assert_eq!(addr6(key6(net)), net);
        let net4 = u32::from_be_bytes([198, 18, 6, 0]);
        let word = u64::from_ne_bytes([198, 18, 7, 255, 0, 0, 0, 0]);
        assert_eq!(word & mask(0, 23), key4(net4));
        assert_eq!(addr4(key4(net4)), net4);
    }

    /// A million keys at the load the table is sized for fit, and every one is found where
    /// the program looks, with its family; keys not inserted are not.
    #[test]
    fn a_million_keys_are_found() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut entries = Vec::new();
        for i in 0..1_000_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let family = (i % 7 == 0) as usize;
            entries.push((x, tag(family, (i % 4096) as u16)));
        }
        let seeds = seeds(0);
        let t = build(&entries, seeds).expect("fits");
        for &(key, tag) in &entries {
            let family = usize::from(tag & BUCKET_V6 != 0);
            assert_eq!(find(&t, seeds, family, key), Some(tag & BUCKET_CLASS));
            assert_eq!(find(&t, seeds, 1 - family, key), None);
            assert_eq!(find(&t, seeds, family, key ^ 1 << 40), None);
        }
        assert_eq!(entries.len(), super::entries(&t).count());
    }
}

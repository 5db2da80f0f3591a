//! Template payloads: deterministic bytes per file name, and the checksums Proxmox can ask for.
//!
//! The simulator never stores template bytes. The mirror generates them on the fly from the file name
//! (and a corruption flag), and a stored volume keeps only its size and digests, which is all the
//! Proxmox API ever exposes or re-checks.

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// Checksum algorithms accepted by download-url (`checksum-algorithm`).
pub(crate) const ALGORITHMS: &[&str] = &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"];

/// The hex digests of one payload under every algorithm Proxmox supports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Digests {
    pub md5: String,
    pub sha1: String,
    pub sha224: String,
    pub sha256: String,
    pub sha384: String,
    pub sha512: String,
}

impl Digests {
    /// The digest for an algorithm name (`sha512`, ...), if it is one Proxmox knows.
    pub(crate) fn get(&self, algorithm: &str) -> Option<&str> {
        Some(match algorithm {
            "md5" => &self.md5,
            "sha1" => &self.sha1,
            "sha224" => &self.sha224,
            "sha256" => &self.sha256,
            "sha384" => &self.sha384,
            "sha512" => &self.sha512,
            _ => return None,
        })
    }

    /// Only the index's two checksums (md5, sha512): a third of the cost of all six, which matters at start-up
    /// when every index entry is hashed.
    pub(crate) fn index_pair(file: &str, size: u64) -> (String, String) {
        let (mut md5, mut sha512) = (Md5::default(), Sha512::default());
        let mut generator = Payload::new(file, size, false);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = generator.fill(&mut buf);
            if n == 0 {
                break;
            }
            md5.update(&buf[..n]);
            sha512.update(&buf[..n]);
        }
        (hex::encode(md5.finalize()), hex::encode(sha512.finalize()))
    }

    /// Digests of a payload generated in full (used for pre-existing volumes and `/_sim/mirror`).
    pub(crate) fn of_payload(file: &str, size: u64, corrupt: bool) -> Self {
        let mut hasher = MultiHasher::default();
        let mut generator = Payload::new(file, size, corrupt);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = generator.fill(&mut buf);
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hasher.finish()
    }
}

/// Feeds one stream of bytes to every supported hash at once.
#[derive(Default)]
pub(crate) struct MultiHasher {
    md5: Md5,
    sha1: Sha1,
    sha224: Sha224,
    sha256: Sha256,
    sha384: Sha384,
    sha512: Sha512,
}

impl MultiHasher {
    /// Adds bytes to every digest.
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.sha1.update(data);
        self.sha224.update(data);
        self.sha256.update(data);
        self.sha384.update(data);
        self.sha512.update(data);
    }

    /// Finishes every digest as lower-case hex (as Perl's Digest modules print them).
    pub(crate) fn finish(self) -> Digests {
        Digests {
            md5: hex::encode(self.md5.finalize()),
            sha1: hex::encode(self.sha1.finalize()),
            sha224: hex::encode(self.sha224.finalize()),
            sha256: hex::encode(self.sha256.finalize()),
            sha384: hex::encode(self.sha384.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        }
    }
}

/// A deterministic byte stream for one file: same name and size, same bytes, on every run.
pub(crate) struct Payload {
    state: u64,
    remaining: u64,
    corrupt: bool,
    position: u64,
}

impl Payload {
    /// The payload of `file`, `size` bytes long; `corrupt` flips one byte so checksums fail.
    pub(crate) fn new(file: &str, size: u64, corrupt: bool) -> Self {
        // FNV-1a of the name seeds a xorshift generator: cheap, stable across platforms.
        let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
        for b in file.bytes() {
            seed ^= u64::from(b);
            seed = seed.wrapping_mul(0x0100_0000_01b3);
        }
        Self { state: seed | 1, remaining: size, corrupt, position: 0 }
    }

    /// Fills `buf` with the next bytes; returns how many were written (0 at the end).
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = usize::try_from(self.remaining.min(buf.len() as u64)).unwrap_or(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let word = self.state.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        if self.corrupt && self.position == 0 && n > 0 {
            buf[0] ^= 0xff;
        }
        self.position += n as u64;
        self.remaining -= n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_sized() {
        let mut a = Payload::new("x.tar.xz", 100_003, false);
        let mut b = Payload::new("x.tar.xz", 100_003, false);
        let (mut va, mut vb) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 4096];
        loop {
            let n = a.fill(&mut buf);
            if n == 0 {
                break;
            }
            va.extend_from_slice(&buf[..n]);
        }
        loop {
            let n = b.fill(&mut buf);
            if n == 0 {
                break;
            }
            vb.extend_from_slice(&buf[..n]);
        }
        assert_eq!(va.len(), 100_003);
        assert_eq!(va, vb);
    }

    #[test]
    fn corruption_changes_digests_but_not_size() {
        let good = Digests::of_payload("a.tar.zst", 5000, false);
        let bad = Digests::of_payload("a.tar.zst", 5000, true);
        assert_ne!(good.sha512, bad.sha512);
        assert_eq!(good.sha512.len(), 128);
        assert_eq!(good.get("md5").map(str::len), Some(32));
        assert_eq!(good.get("crc32"), None);
    }

    #[test]
    fn index_pair_agrees_with_the_full_digests() {
        let full = Digests::of_payload("x_1_amd64.tar.zst", 70_000, false);
        assert_eq!(Digests::index_pair("x_1_amd64.tar.zst", 70_000), (full.md5, full.sha512));
    }

    #[test]
    fn different_names_give_different_bytes() {
        assert_ne!(
            Digests::of_payload("a.tar.zst", 64, false).sha256,
            Digests::of_payload("b.tar.zst", 64, false).sha256
        );
    }
}

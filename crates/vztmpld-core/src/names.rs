//! Proxmox's formats for node names, storage IDs and token IDs (shared by the config and the simulator).

/// Proxmox's node-name format: `^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`.
pub fn valid_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Proxmox's storage-ID format: `^[a-z][a-z0-9\-\_\.]*[a-z0-9]$`.
pub fn valid_storage_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
}

/// `user@realm!name`, the name matching `[A-Za-z][A-Za-z0-9.\-_]+`.
pub fn valid_token_id(id: &str) -> bool {
    let Some((user, name)) = id.rsplit_once('!') else { return false };
    let Some((u, realm)) = user.split_once('@') else { return false };
    let mut chars = name.chars();
    !u.is_empty()
        && !realm.is_empty()
        && name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
}

/// `AA:BB:...` (32 pairs, any case, colons optional) → bytes.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || text.contains("::") {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

//! The identifier formats Proxmox's JSON schema enforces, written from its format definitions
//! (`pve-node`, `pve-storage-id`, `pve-tokenid`) on their own, so the simulator does not inherit a
//! mistake from the client's validators.

/// `pve-node`: letters, digits and inner hyphens.
pub fn valid_node_name(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
        && name.chars().all(|c| c == '-' || c.is_ascii_alphanumeric())
}

/// `pve-storage-id`: a lowercase letter, then lowercase letters, digits, `-`, `_`, `.`; ends in a letter or digit.
pub fn valid_storage_id(id: &str) -> bool {
    let lower_or_digit = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut chars = id.chars();
    match (chars.next(), chars.next_back()) {
        (Some(first), Some(last)) => {
            first.is_ascii_lowercase()
                && lower_or_digit(last)
                && chars.all(|c| lower_or_digit(c) || matches!(c, '-' | '_' | '.'))
        }
        _ => false,
    }
}

/// `pve-tokenid`: `USER@REALM!NAME`, NAME a letter followed by one or more of `[A-Za-z0-9._-]`.
pub fn valid_token_id(id: &str) -> bool {
    let Some((userid, token)) = id.rsplit_once('!') else { return false };
    let realm_ok = userid.split_once('@').is_some_and(|(user, realm)| !user.is_empty() && !realm.is_empty());
    let mut name = token.chars();
    let first_ok = name.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest: Vec<char> = name.collect();
    realm_ok && first_ok && !rest.is_empty() && rest.iter().all(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
}

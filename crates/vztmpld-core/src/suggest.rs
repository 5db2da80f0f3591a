//! "Did you mean …?" for names a person typed: template specs, node names, storage IDs.

/// The candidate closest to `typed` by edit distance (a swap of two neighbours counts once), if it is close enough to be a likely typo (at most a
/// third of the typed length, and never an exact match).
pub fn closest<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (typed.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != typed)
        .map(|c| (strsim::osa_distance(&typed.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// ` (did you mean 'x'?)`, or nothing.
pub fn hint<'a>(typed: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(typed, candidates).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_word_and_strangers_find_nothing() {
        let specs = ["alpine-3.22", "debian-13", "ubuntu-24.04"];
        assert_eq!(closest("alpne-3.22", specs), Some("alpine-3.22"));
        assert_eq!(closest("debain-13", specs), Some("debian-13"));
        assert_eq!(closest("centos-7", specs), None);
        assert_eq!(closest("PVE1", ["pve1", "pve2"]), Some("pve1"), "case is a typo too");
        assert_eq!(hint("lcoal", ["local", "nfs"]), " (did you mean 'local'?)");
    }
}

//! Wall-clock instants as the status document, the election record and the resolve API carry them: typed in
//! memory, RFC 3339 (to the second, UTC) on the wire.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A wall-clock instant, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        Self(SystemTime::now())
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Self(t)
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_rfc3339_seconds(self.0).fmt(f)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;

    /// RFC 3339, as written by [`Timestamp`]'s `Display` (any offset, fractions allowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_rfc3339_weak(s).map(Self)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        text.parse().map_err(|e| serde::de::Error::custom(format!("{text}: not an RFC 3339 time ({e})")))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn round_trips_as_rfc3339_seconds() {
        let t = Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(json, "\"2027-01-15T08:00:00Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).ok(), Some(t));
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }
}

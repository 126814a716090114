//! RFC 3339 timestamps as the API shows them (`modified`, `X-Modified-Time`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Nanoseconds since the Unix epoch, the unit stored on disk.
pub type UnixNanos = i64;

pub fn now_nanos() -> UnixNanos {
    let n = OffsetDateTime::now_utc().unix_timestamp_nanos();
    // Clamp instead of panicking: i64 nanoseconds reach the year 2262.
    n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

pub fn format_rfc3339(nanos: UnixNanos) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(nanos as i128)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

pub fn parse_rfc3339(s: &str) -> Option<UnixNanos> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Serde adapter for `UnixNanos` fields shown as RFC 3339 strings.
pub mod rfc3339_nanos {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &UnixNanos, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339(*v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UnixNanos, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom(format!("bad RFC 3339 time {s:?}")))
    }
}

/// Serde adapter for optional `UnixNanos` fields.
pub mod rfc3339_nanos_opt {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &Option<UnixNanos>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_some(&format_rfc3339(*n)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<UnixNanos>, D::Error> {
        let s = <Option<String> as serde::Deserialize>::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => parse_rfc3339(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("bad RFC 3339 time {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_nanoseconds() {
        let n = 1_700_000_000_123_456_789;
        let s = format_rfc3339(n);
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(n));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}

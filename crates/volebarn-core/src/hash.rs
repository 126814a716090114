//! Hash newtypes ([docs/design.md](docs/design.md) §3): `Xxh3` for end-to-end integrity, `ChunkId` (BLAKE3-256) for
//! content addressing. Never use a 64-bit hash as a storage key.

use std::fmt;
use std::str::FromStr;

/// xxh3-64 of a whole file, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Xxh3(pub u64);

impl Xxh3 {
    pub fn of(data: &[u8]) -> Self {
        Xxh3(xxhash_rust::xxh3::xxh3_64(data))
    }
}

/// Incremental xxh3-64 over a stream.
#[derive(Clone, Default)]
pub struct Xxh3Hasher(xxhash_rust::xxh3::Xxh3);

impl Xxh3Hasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(&self) -> Xxh3 {
        Xxh3(self.0.digest())
    }
}

impl fmt::Display for Xxh3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for Xxh3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xxh3({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {kind} hash: {value:?}")]
pub struct HashParseError {
    pub kind: &'static str,
    pub value: String,
}

impl FromStr for Xxh3 {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || HashParseError {
            kind: "xxh3",
            value: s.to_string(),
        };
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u64::from_str_radix(s, 16).map(Xxh3).map_err(|_| err())
    }
}

impl serde::Serialize for Xxh3 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Xxh3 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// BLAKE3-256 of one chunk's bytes: the key under which the chunk is stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl FromStr for ChunkId {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || HashParseError {
            kind: "BLAKE3",
            value: s.to_string(),
        };
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(ChunkId(out))
    }
}

impl serde::Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_round_trips_as_16_hex() {
        let h = Xxh3::of(b"hello");
        let s = h.to_string();
        assert_eq!(s.len(), 16);
        assert_eq!(s.parse::<Xxh3>().unwrap(), h);
        assert_eq!(Xxh3(1).to_string(), "0000000000000001");
        assert!("xyz".parse::<Xxh3>().is_err());
        assert!("+000000000000001".parse::<Xxh3>().is_err());
        let mut inc = Xxh3Hasher::new();
        inc.update(b"hel");
        inc.update(b"lo");
        assert_eq!(inc.finish(), h);
    }

    #[test]
    fn chunk_id_is_blake3_hex() {
        let id = ChunkId::of(b"");
        assert_eq!(
            id.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!(id.to_hex().to_uppercase().parse::<ChunkId>().is_err());
    }
}

#[cfg(feature = "openapi")]
mod schema {
    use super::{ChunkId, Xxh3};
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::openapi::RefOr;

    fn hex_string(digits: usize, what: &str) -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[0-9a-f]{{{digits}}}$")))
            .description(Some(what.to_string()))
            .into()
    }

    impl utoipa::PartialSchema for Xxh3 {
        fn schema() -> RefOr<Schema> {
            hex_string(16, "xxh3-64 of the content, 16 lowercase hex digits")
        }
    }
    impl utoipa::ToSchema for Xxh3 {}

    impl utoipa::PartialSchema for ChunkId {
        fn schema() -> RefOr<Schema> {
            hex_string(64, "BLAKE3-256 of one chunk, 64 lowercase hex digits")
        }
    }
    impl utoipa::ToSchema for ChunkId {}
}

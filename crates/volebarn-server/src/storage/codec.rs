//! Value encoding: bitcode, then snappy (the seed's measured fastest pipeline).

use super::{StorageError, StorageResult};

pub fn encode<T: bitcode::Encode + ?Sized>(value: &T) -> Vec<u8> {
    let raw = bitcode::encode(value);
    // Snappy only refuses inputs over ~4 GiB; no record comes near that.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_else(|_| unreachable!("record of {} bytes is too large for snappy", raw.len()))
}

pub fn decode<T: bitcode::DecodeOwned>(bytes: &[u8]) -> StorageResult<T> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(bytes)
        .map_err(|e| StorageError::Corrupt(format!("snappy: {e}")))?;
    bitcode::decode(&raw).map_err(|e| StorageError::Corrupt(format!("bitcode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::records::{ChunkRef, FileRecord};

    #[test]
    fn round_trip_and_corruption_is_an_error() {
        let rec = FileRecord {
            size: 3,
            xxh3: 9,
            mtime: -5,
            rev: 2,
            chunks: vec![ChunkRef { id: [7; 32], len: 3 }],
        };
        let bytes = encode(&rec);
        assert_eq!(decode::<FileRecord>(&bytes).unwrap(), rec);
        assert!(decode::<FileRecord>(b"garbage").is_err());
    }
}

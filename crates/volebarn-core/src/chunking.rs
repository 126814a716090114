//! Content-defined chunking ([docs/design.md](docs/design.md) §3): FastCDC v2020, min 256 KiB, avg 1 MiB, max 4 MiB.
//!
//! Server and client must cut identical chunks from identical bytes, so both use this module.
//! [`Chunker`] cuts a stream incrementally while holding at most `MAX_CHUNK` + one pushed
//! buffer in memory; it yields exactly the chunks [`chunk_boundaries`] finds in the whole input.

use fastcdc::v2020::FastCDC;

pub const MIN_CHUNK: u32 = 256 * 1024;
pub const AVG_CHUNK: u32 = 1024 * 1024;
pub const MAX_CHUNK: u32 = 4 * 1024 * 1024;

/// `(offset, length)` of every chunk of `data`. Empty input has no chunks.
pub fn chunk_boundaries(data: &[u8]) -> Vec<(usize, usize)> {
    FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// Incremental chunker for streamed input.
#[derive(Default)]
pub struct Chunker {
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`; returns every chunk whose end is now certain.
    ///
    /// A chunk's cut point depends only on the bytes up to `MAX_CHUNK` past its start, so once
    /// that many bytes are buffered the first chunk is final.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while self.buf.len() - start >= MAX_CHUNK as usize {
            let len = first_chunk_len(&self.buf[start..]);
            out.push(self.buf[start..start + len].to_vec());
            start += len;
        }
        if start > 0 {
            self.buf.drain(..start);
        }
        out
    }

    /// Ends the stream; returns the remaining chunks.
    pub fn finish(self) -> Vec<Vec<u8>> {
        chunk_boundaries(&self.buf)
            .into_iter()
            .map(|(o, l)| self.buf[o..o + l].to_vec())
            .collect()
    }

    /// Bytes held but not yet emitted.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn first_chunk_len(data: &[u8]) -> usize {
    FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .next()
        .map_or(data.len(), |c| c.length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn streaming_matches_whole_buffer_for_any_push_sizes() {
        let data = pseudo_random(13 * 1024 * 1024 + 777, 42);
        let expected: Vec<&[u8]> = chunk_boundaries(&data)
            .into_iter()
            .map(|(o, l)| &data[o..o + l])
            .collect();
        assert!(expected.len() > 3, "test data should span several chunks");
        for step in [1000usize, 65_536, 3 * 1024 * 1024, 9 * 1024 * 1024] {
            let mut c = Chunker::new();
            let mut got = Vec::new();
            for piece in data.chunks(step) {
                got.extend(c.push(piece));
                assert!(c.buffered() < MAX_CHUNK as usize + step);
            }
            got.extend(c.finish());
            let got: Vec<&[u8]> = got.iter().map(|v| v.as_slice()).collect();
            assert_eq!(got, expected, "push size {step}");
        }
    }

    #[test]
    fn small_and_empty_inputs() {
        assert!(chunk_boundaries(&[]).is_empty());
        let mut c = Chunker::new();
        assert!(c.push(b"tiny").is_empty());
        assert_eq!(c.finish(), vec![b"tiny".to_vec()]);
        assert!(Chunker::new().finish().is_empty());
    }

    #[test]
    fn chunks_respect_bounds() {
        let data = pseudo_random(20 * 1024 * 1024, 7);
        let b = chunk_boundaries(&data);
        for (i, (_, l)) in b.iter().enumerate() {
            assert!(*l <= MAX_CHUNK as usize);
            if i + 1 < b.len() {
                assert!(*l >= MIN_CHUNK as usize);
            }
        }
    }
}

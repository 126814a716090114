//! Content-defined chunking ([docs/design.md](docs/design.md) §3): FastCDC v2020, min 256 KiB, avg 1 MiB, max 4 MiB.
//!
//! Server and client must cut identical chunks from identical bytes, so both use this module.
//! [`chunk_boundaries`] cuts a whole buffer with the `fastcdc` crate; [`CutScanner`] finds the
//! same cut points in a stream, scanning every byte once however the stream is split, and
//! [`Chunker`] builds on it: it holds at most one chunk plus one pushed buffer and copies
//! (almost) nothing, so a reader can cut a file in one pass.

use fastcdc::v2020::FastCDC;
use std::sync::LazyLock;

pub const MIN_CHUNK: u32 = 256 * 1024;
pub const AVG_CHUNK: u32 = 1024 * 1024;
pub const MAX_CHUNK: u32 = 4 * 1024 * 1024;

const MIN: usize = MIN_CHUNK as usize;
const AVG: usize = AVG_CHUNK as usize;
const MAX: usize = MAX_CHUNK as usize;

/// `(offset, length)` of every chunk of `data`. Empty input has no chunks.
pub fn chunk_boundaries(data: &[u8]) -> Vec<(usize, usize)> {
    FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| (c.offset, c.length))
        .collect()
}

/// FastCDC v2020's gear tables and masks for our sizes, taken from the `fastcdc` crate (seed 0,
/// normalization level 1, as `FastCDC::new` uses) so that [`CutScanner`] cuts where it does.
struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    /// Harder to match: used before the average size, so chunks are rarely short.
    mask_s: u64,
    /// Easier to match: used after it, so chunks are rarely long.
    mask_l: u64,
}

static GEAR: LazyLock<Gear> = LazyLock::new(|| {
    let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
    let bits = fastcdc::v2020::logarithm2(AVG_CHUNK);
    Gear {
        gear,
        gear_ls,
        mask_s: fastcdc::v2020::MASKS[(bits + 1) as usize],
        mask_l: fastcdc::v2020::MASKS[(bits - 1) as usize],
    }
});

impl Gear {
    /// Scans the byte pairs of `chunk[from..to]` (`from` even) with `mask`, carrying the
    /// rolling `hash`; the chunk length at the first cut point, if any. The same steps as
    /// `fastcdc::v2020::cut_gear`, which hashes two bytes per round.
    fn scan(&self, chunk: &[u8], from: usize, to: usize, hash: &mut u64, mask: u64) -> Option<usize> {
        let mask_ls = mask << 1;
        let mut h = *hash;
        let mut at = from;
        for pair in chunk[from..to].chunks_exact(2) {
            h = (h << 2).wrapping_add(self.gear_ls[usize::from(pair[0])]);
            if h & mask_ls == 0 {
                return Some(at);
            }
            h = h.wrapping_add(self.gear[usize::from(pair[1])]);
            if h & mask == 0 {
                return Some(at + 1);
            }
            at += 2;
        }
        *hash = h;
        None
    }
}

/// Finds where the chunk that is being read ends, scanning each byte once across calls.
///
/// FastCDC decides a cut from the bytes between the chunk's start + `MIN_CHUNK` and the cut
/// itself, with a rolling hash that starts at zero there, a stricter mask before
/// `AVG_CHUNK` and a looser one after it, and a forced cut at `MAX_CHUNK`. So a cut found in
/// the bytes seen so far is final, and the scan can stop at the end of what has arrived and
/// go on from there when more comes. (The crate's own function rescans from the start on
/// every call, which makes cutting a stream in small pieces quadratic.)
#[derive(Debug, Default, Clone)]
pub struct CutScanner {
    hash: u64,
    /// Bytes of the current chunk already scanned (even; 0 before the first scan).
    scanned: usize,
}

impl CutScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// `chunk` is the current chunk's bytes so far, from its start (what earlier calls saw,
    /// then new bytes); `eof` says no more bytes follow. Returns the chunk's length once it
    /// is certain; the scanner is then ready for the next chunk, which starts right after.
    pub fn find_end(&mut self, chunk: &[u8], eof: bool) -> Option<usize> {
        let len = chunk.len();
        if len == 0 {
            return None;
        }
        // Whole pairs only, never past the forced cut: as `cut_gear` does.
        let end = len.min(MAX) & !1;
        let from = self.scanned.max(MIN);
        if from < end {
            let g = &*GEAR;
            let switch = AVG.clamp(from, end);
            let cut = g
                .scan(chunk, from, switch, &mut self.hash, g.mask_s)
                .or_else(|| g.scan(chunk, switch, end, &mut self.hash, g.mask_l));
            if cut.is_some() {
                *self = Self::default();
                return cut;
            }
            self.scanned = end;
        }
        if len >= MAX || eof {
            // No cut point: the chunk is as long as allowed, or the rest of the input.
            *self = Self::default();
            return Some(len.min(MAX));
        }
        None
    }
}

/// What a chunk buffer is allocated with: the longest chunk and a generous pushed piece, so
/// that filling it rarely reallocates.
const BUFFER: usize = MAX + 512 * 1024;

/// Incremental chunker for streamed input.
#[derive(Default)]
pub struct Chunker {
    buf: Vec<u8>,
    /// Where the current chunk starts in `buf` (past chunks copied out of a large push).
    start: usize,
    scanner: CutScanner,
}

impl Chunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `data`; returns every chunk whose end is now certain.
    ///
    /// A chunk usually leaves as the buffer it was collected in (shrunk to fit), so its bytes
    /// are copied once, from `data`; only what was pushed past its end moves to a new
    /// buffer. When one push holds several chunks, the ones before the last are copied out.
    pub fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BUFFER.max(data.len()));
        }
        self.buf.extend_from_slice(data);
        self.take_ready(false)
    }

    /// Ends the stream; returns the remaining chunks.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.take_ready(true)
    }

    /// Bytes held but not yet emitted.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn take_ready(&mut self, eof: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(len) = self.scanner.find_end(&self.buf[self.start..], eof) {
            let end = self.start + len;
            let rest = self.buf.len() - end;
            if self.start == 0 && rest <= len {
                let mut next = Vec::with_capacity(if eof { rest } else { BUFFER.max(rest) });
                next.extend_from_slice(&self.buf[end..]);
                let mut chunk = std::mem::replace(&mut self.buf, next);
                chunk.truncate(len);
                chunk.shrink_to_fit();
                out.push(chunk);
            } else {
                out.push(self.buf[self.start..end].to_vec());
                self.start = end;
            }
        }
        out
    }
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

    /// Cuts `data` through a [`Chunker`] fed `step` bytes at a time.
    fn stream_cut(data: &[u8], step: usize) -> Vec<usize> {
        let mut c = Chunker::new();
        let mut got = Vec::new();
        for piece in data.chunks(step) {
            got.extend(c.push(piece).iter().map(Vec::len));
        }
        got.extend(c.finish().iter().map(Vec::len));
        got
    }

    fn lengths(data: &[u8]) -> Vec<usize> {
        chunk_boundaries(data).into_iter().map(|(_, l)| l).collect()
    }

    #[test]
    fn scanner_agrees_with_fastcdc_at_every_size_limit() {
        let random = pseudo_random(3 * MAX + 5, 9);
        // Pairs of bytes are scanned together, so odd lengths and ends matter as well.
        for len in [
            1,
            MIN - 1,
            MIN,
            MIN + 1,
            MIN + 2,
            AVG - 1,
            AVG,
            AVG + 1,
            MAX - 1,
            MAX,
            MAX + 1,
            2 * MAX + 3,
            3 * MAX + 5,
        ] {
            for step in [4096, 65_537, MAX] {
                assert_eq!(
                    stream_cut(&random[..len], step),
                    lengths(&random[..len]),
                    "random, {len} bytes, pushed {step} at a time"
                );
            }
        }
        // No cut point anywhere: every chunk is forced at the maximum.
        let zeros = vec![0u8; 3 * MAX + 12_345];
        assert_eq!(stream_cut(&zeros, 100_000), lengths(&zeros));
        assert_eq!(lengths(&zeros)[..3], [MAX; 3]);
        // Cut points only in some stretches: short, long and forced chunks mixed.
        let mut mixed = pseudo_random(12 * AVG, 3);
        mixed[AVG..6 * AVG].fill(7);
        assert_eq!(stream_cut(&mixed, 200_003), lengths(&mixed));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn scanner_agrees_with_fastcdc_for_any_split(
            len in 0usize..(5 * MAX),
            seed in 1u64..1000,
            cuts in proptest::collection::vec(0usize..(5 * MAX), 0..12),
        ) {
            let data = pseudo_random(len, seed);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c < len).collect();
            cuts.push(len);
            cuts.sort_unstable();
            let mut c = Chunker::new();
            let mut got = Vec::new();
            let mut at = 0;
            for end in cuts {
                got.extend(c.push(&data[at..end]));
                at = end;
            }
            got.extend(c.finish());
            let expected: Vec<&[u8]> = chunk_boundaries(&data).into_iter().map(|(o, l)| &data[o..o + l]).collect();
            let got: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(got, expected);
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

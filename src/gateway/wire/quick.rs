//! Deflate for small pieces: one block of greedy LZ77 matches in fixed Huffman codes (RFC 1951
//! §3.2.6), then a sync flush, from an 8 KB table cleared per piece.
//!
//! Why by hand: a city's mayor race is about 1.2 KB and most versions of a count night are such
//! documents (or patches), each compressed once but sent to only a few subscribers in the long
//! tail. A general compressor spends most of its time on such a piece clearing and filling a
//! state sized for 32 KB windows: some 240 KB written per piece, 381,207 instructions for 1,146
//! bytes with zlib-rs at level 2 (callgrind). This encoder took 3.3 µs for that piece against
//! 16.5 µs for zlib-rs level 2 in the same loop, for 718 bytes against 587 (fixed codes, no
//! dynamic trees); with it, compressed streams cost 0.99× the gateway CPU per delivery of
//! identity ones at 19,000 subscribers, against 1.23× with zlib-rs for every piece
//! (BENCHMARKS.md, "Compression level"). Its output is checked against flate2's inflater in the
//! tests, 3,000 random pieces included.

/// Largest piece this encoder takes: every distance then fits one 32 KB window, and the table
/// is worth clearing.
pub const MAX: usize = 4 << 10;

const HASH_BITS: u32 = 12;
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;

/// `data` (at most [`MAX`] bytes) as raw deflate that ends in a sync flush: byte-aligned, not
/// final, decodable without any byte before it.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= MAX, "a small piece");
    let mut out = Bits::with_capacity(data.len() + 16);
    // BFINAL 0, BTYPE 01 (fixed codes).
    out.put(0b010, 3);
    // Position + 1 of the last 4-byte sequence with each hash; 0: none.
    let mut table = [0u16; 1 << HASH_BITS];
    let mut i = 0;
    while i < data.len() {
        let mut matched = 0;
        let mut distance = 0;
        if i + MIN_MATCH <= data.len() {
            let h = hash(&data[i..]);
            let candidate = table[h] as usize;
            table[h] = (i + 1) as u16;
            if candidate > 0 {
                let from = candidate - 1;
                let limit = (data.len() - i).min(MAX_MATCH);
                let length = common(&data[from..], &data[i..], limit);
                if length >= MIN_MATCH {
                    matched = length;
                    distance = i - from;
                }
            }
        }
        if matched == 0 {
            literal(&mut out, data[i]);
            i += 1;
            continue;
        }
        copy(&mut out, matched, distance);
        // Remember the sequences inside the match too, so that later repeats find them.
        let end = i + matched;
        i += 1;
        while i < end {
            if i + MIN_MATCH <= data.len() {
                table[hash(&data[i..])] = (i + 1) as u16;
            }
            i += 1;
        }
    }
    // End of block (code 256: seven zero bits), then an empty stored block: BFINAL 0, BTYPE
    // 00, padding to the byte, LEN 0, NLEN 0xffff.
    out.put(0, 7);
    out.put(0, 3);
    out.align();
    out.bytes.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    out.bytes
}

fn hash(at: &[u8]) -> usize {
    let v = u32::from_le_bytes([at[0], at[1], at[2], at[3]]);
    (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
}

/// How many bytes `a` and `b` have in common from their start, at most `limit`.
fn common(a: &[u8], b: &[u8], limit: usize) -> usize {
    a.iter()
        .zip(&b[..limit])
        .take_while(|(x, y)| x == y)
        .count()
}

fn literal(out: &mut Bits, byte: u8) {
    let (code, len) = fixed_code(u16::from(byte));
    out.put(code, len);
}

/// A match: its length code and extra bits, then its distance code and extra bits.
fn copy(out: &mut Bits, length: usize, distance: usize) {
    let l = LENGTH_BASE.partition_point(|&base| usize::from(base) <= length) - 1;
    let (code, len) = fixed_code(257 + l as u16);
    out.put(code, len);
    out.put(
        (length - usize::from(LENGTH_BASE[l])) as u32,
        LENGTH_EXTRA[l],
    );
    let d = DISTANCE_BASE.partition_point(|&base| usize::from(base) <= distance) - 1;
    // Distance codes are five bits, sent most significant bit first.
    out.put(reverse(d as u32, 5), 5);
    out.put(
        (distance - usize::from(DISTANCE_BASE[d])) as u32,
        DISTANCE_EXTRA[d],
    );
}

/// The fixed Huffman code of a literal/length symbol (§3.2.6), bit-reversed for sending least
/// significant bit first, and its length.
fn fixed_code(symbol: u16) -> (u32, u32) {
    let (code, len) = FIXED[usize::from(symbol)];
    (u32::from(code), u32::from(len))
}

/// [`fixed_code`] of every symbol, computed at compile time.
const FIXED: [(u16, u8); 288] = {
    let mut table = [(0u16, 0u8); 288];
    let mut s = 0;
    while s < 288 {
        let (code, len) = match s {
            0..=143 => (0x30 + s, 8),
            144..=255 => (0x190 + s - 144, 9),
            256..=279 => (s - 256, 7),
            _ => (0xc0 + s - 280, 8),
        };
        table[s as usize] = (reverse(code, len) as u16, len as u8);
        s += 1;
    }
    table
};

const fn reverse(code: u32, len: u32) -> u32 {
    code.reverse_bits() >> (32 - len)
}

const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u32; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Bits written least significant first, as deflate packs them.
struct Bits {
    bytes: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn with_capacity(capacity: usize) -> Self {
        Bits {
            bytes: Vec::with_capacity(capacity),
            acc: 0,
            n: 0,
        }
    }

    /// The low `len` bits of `value` (at most 16 at a time).
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.bytes
                .extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// Pad with zero bits to the next byte.
    fn align(&mut self) {
        while self.n > 0 {
            self.bytes.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inflate(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX * 2);
        let mut inflater = flate2::Decompress::new(false);
        inflater
            .decompress_vec(raw, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        assert_eq!(inflater.total_in() as usize, raw.len(), "every byte read");
        out
    }

    #[test]
    fn pieces_inflate_back_exactly_and_end_in_a_sync_flush() {
        let city = br#"{"topic":"mayors-ac-campo-da-mata","version":12,"candidates":[{"number":15,"name":"Ana","votes":1200,"percent":51.2},{"number":45,"name":"Bruno","votes":1144,"percent":48.8}],"counted":52.4}"#;
        let mut pieces: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            b"abc".to_vec(),
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            city.to_vec(),
            city.repeat(MAX / city.len()),
            vec![0u8; MAX],
            // Every byte value, and a run longer than one match (258).
            (0..=255u8).chain(std::iter::repeat_n(b'x', 600)).collect(),
        ];
        // Pseudo-random bytes: nothing to match.
        let mut x = 0x1234_5678u32;
        pieces.push(
            (0..MAX)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect(),
        );
        for piece in &pieces {
            let packed = deflate(piece);
            assert!(packed.ends_with(&[0, 0, 0xff, 0xff]));
            assert_eq!(&inflate(&packed), piece, "{} bytes", piece.len());
        }
        // Repeats are found: a piece made of one repeated document is a few matches long.
        let repeated = city.repeat(MAX / city.len());
        assert!(deflate(&repeated).len() < repeated.len() / 10);
    }

    /// Many pieces of random length over small alphabets (many matches of every length and
    /// distance, overlapping ones included) and over every byte: each inflates back exactly.
    #[test]
    fn random_pieces_inflate_back_exactly() {
        let mut x = 0x9e37_79b9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..3_000 {
            let len = next() as usize % (MAX + 1);
            let alphabet = [2, 4, 16, 256][round % 4];
            let piece: Vec<u8> = (0..len).map(|_| (next() % alphabet) as u8).collect();
            assert_eq!(
                inflate(&deflate(&piece)),
                piece,
                "round {round}, {len} bytes"
            );
        }
    }
}

//! Inflating compressed streams: a gzip SSE body (the 10-byte gzip header, then raw deflate
//! segments each ending in a sync flush) and permessage-deflate WebSocket messages (RFC 7692,
//! no context takeover: every message inflates on its own).

use anyhow::{Context, bail};
use flate2::{Decompress, FlushDecompress, Status};

/// Length of the gzip header apura writes (no name, comment or extra field).
const GZIP_HEADER: usize = 10;
/// What RFC 7692 removes from the end of a compressed message.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Inflate as much of `input` as the inflater takes, appending to `out`; how many bytes of
/// `input` were used and whether the deflate stream ended.
fn inflate_into(
    z: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
) -> anyhow::Result<(usize, bool)> {
    let mut used = 0;
    loop {
        out.reserve((input.len() - used).saturating_mul(4).max(4 << 10));
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            .decompress_vec(&input[used..], out, FlushDecompress::Sync)
            .context("inflating")?;
        used += (z.total_in() - in0) as usize;
        let produced = z.total_out() - out0;
        match status {
            Status::StreamEnd => return Ok((used, true)),
            // Everything taken and room left over: all the output there is for now.
            _ if used == input.len() && out.len() < out.capacity() => return Ok((used, false)),
            _ if z.total_in() == in0 && produced == 0 && out.len() < out.capacity() => {
                bail!("inflater made no progress")
            }
            _ => {}
        }
    }
}

/// The body of a `Content-Encoding: gzip` SSE response, inflated as it arrives: one streaming
/// raw inflater per connection, after the gzip header.
pub struct Gunzip {
    header: Vec<u8>,
    z: Decompress,
    ended: bool,
}

impl Default for Gunzip {
    fn default() -> Self {
        Gunzip {
            header: Vec::with_capacity(GZIP_HEADER),
            z: Decompress::new(false),
            ended: false,
        }
    }
}

impl Gunzip {
    /// Inflate `input` (body bytes, de-chunked) onto `out`. Bytes after the end of the deflate
    /// stream (the gzip trailer: CRC-32 and length) are ignored.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        if self.header.len() < GZIP_HEADER {
            let take = (GZIP_HEADER - self.header.len()).min(input.len());
            self.header.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.header.len() == GZIP_HEADER {
                if self.header[..3] != [0x1f, 0x8b, 8] {
                    bail!("not a gzip stream");
                }
                if self.header[3] != 0 {
                    bail!(
                        "gzip header flags {:#x}: not written by apura",
                        self.header[3]
                    );
                }
            }
        }
        if self.ended || input.is_empty() {
            return Ok(());
        }
        let (_, ended) = inflate_into(&mut self.z, input, out)?;
        self.ended = ended;
        Ok(())
    }
}

/// Inflate one permessage-deflate message (its payload without the `00 00 ff ff` tail) with a
/// fresh state, as the server compressed it (`server_no_context_takeover`). `z` is reused
/// between messages and reset first.
pub fn inflate_message(z: &mut Decompress, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    z.reset(false);
    let mut out = Vec::with_capacity(payload.len() * 4);
    let (used, ended) = inflate_into(z, payload, &mut out)?;
    if !ended {
        inflate_into(z, &SYNC_TAIL, &mut out)?;
    } else if used < payload.len() {
        bail!("bytes after the end of a compressed message");
    }
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    /// A frame compressed as apura's gateway does: raw deflate, fresh state, sync flush.
    pub fn segment(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        loop {
            let used = c.total_in() as usize;
            c.compress_vec(&data[used..], &mut out, FlushCompress::Sync)
                .unwrap();
            if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(4 << 10);
        }
        assert!(out.ends_with(&SYNC_TAIL));
        out
    }

    #[test]
    fn gzip_stream_of_segments_in_any_pieces() {
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                format!(
                    "event: update\nid: {i}\ndata: {{\"version\":{i},\"published_at\":{},\"x\":\"{}\"}}\n\n",
                    1000 + i,
                    "ab".repeat(3000 * i)
                )
                .into_bytes()
            })
            .collect();
        let mut wire = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        for f in &frames {
            wire.extend(segment(f));
        }
        let heartbeat = segment(b":\n\n");
        wire.extend(&heartbeat);
        let want: Vec<u8> = frames.concat().into_iter().chain(*b":\n\n").collect();
        for piece in [1, 3, 7, 100, 4096, wire.len()] {
            let (mut g, mut out) = (Gunzip::default(), Vec::new());
            for chunk in wire.chunks(piece) {
                g.feed(chunk, &mut out).unwrap();
            }
            assert_eq!(out, want, "pieces of {piece}");
        }
        // Each frame inflates fully as soon as its last byte is in.
        let (mut g, mut out) = (Gunzip::default(), Vec::new());
        g.feed(&wire[..10 + segment(&frames[0]).len()], &mut out)
            .unwrap();
        assert_eq!(out, frames[0]);
    }

    #[test]
    fn gzip_header_is_checked() {
        let mut out = Vec::new();
        assert!(Gunzip::default().feed(b"event: x\n\n", &mut out).is_err());
    }

    #[test]
    fn messages_without_their_tail_inflate_one_by_one() {
        let mut z = Decompress::new(false);
        for doc in [
            br#"{"type":"update","version":3,"published_at":7}"#.to_vec(),
            "{\"v\":\""
                .bytes()
                .chain("é".repeat(50_000).bytes())
                .collect(),
        ] {
            let mut m = segment(&doc);
            m.truncate(m.len() - 4);
            assert_eq!(inflate_message(&mut z, &m).unwrap(), doc);
        }
        assert!(inflate_message(&mut z, b"\xff\xff\xff").is_err());
    }
}

//! The messages of the cycles channel, and documents read back from their keys: binary framing
//! that a gateway slices documents out of without parsing any JSON (the layout is on
//! [`super::RedisBus`]).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bus::{Cycle, Document};

/// Message kinds on the cycles channel: the first byte of every message.
pub(super) const KIND_CYCLE: u8 = 1;
pub(super) const KIND_CHANGED: u8 = 2;
pub(super) const KIND_RESYNC: u8 = 3;
/// Kind, version (u64) and publication time (i64), big-endian.
pub(super) const MESSAGE_HEADER: usize = 1 + 8 + 8;

/// A document read back from its key: version and time come from the stamped JSON itself.
pub(super) fn stamped(topic: &str, json: Bytes) -> Option<Document> {
    fn number(s: &[u8]) -> Option<(u64, &[u8])> {
        let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
        let n = std::str::from_utf8(&s[..digits]).ok()?.parse().ok()?;
        Some((n, &s[digits..]))
    }
    let rest = json.strip_prefix(b"{\"version\":")?;
    let (version, rest) = number(rest)?;
    let rest = rest.strip_prefix(b",\"published_at\":")?;
    let (negative, rest) = match rest.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (at, _) = number(rest)?;
    let at = i64::try_from(at).ok()?;
    let doc = Document {
        topic: Arc::from(topic),
        version,
        published_at: if negative { -at } else { at },
        json,
    };
    // The header must be exactly what `Document::stamp` writes.
    doc.content().is_some().then_some(doc)
}

/// What a message on the cycles channel says.
#[derive(Debug)]
pub(super) enum Message {
    /// The whole cycle.
    Cycle(Cycle),
    /// A cycle too big to send inline: its version and the topics it changed.
    Changed {
        version: u64,
        published_at: i64,
        topics: Vec<String>,
    },
    /// Something was published that this message does not describe: reload the snapshots.
    Resync,
}

/// The message announcing a cycle: the cycle itself if it fits in `limit`, else its topics,
/// else a bare resync notice.
pub(super) fn encode(
    version: u64,
    published_at: i64,
    documents: &[Document],
    limit: usize,
) -> Bytes {
    let inline = MESSAGE_HEADER
        + 4
        + documents
            .iter()
            .map(|d| 8 + d.topic.len() + d.json.len())
            .sum::<usize>();
    let listed = MESSAGE_HEADER + 4 + documents.iter().map(|d| 4 + d.topic.len()).sum::<usize>();
    let (kind, size) = if inline <= limit {
        (KIND_CYCLE, inline)
    } else if listed <= limit {
        (KIND_CHANGED, listed)
    } else {
        (KIND_RESYNC, MESSAGE_HEADER)
    };
    let mut b = BytesMut::with_capacity(size);
    b.put_u8(kind);
    b.put_u64(version);
    b.put_i64(published_at);
    if kind != KIND_RESYNC {
        b.put_u32(documents.len() as u32);
        for d in documents {
            b.put_u32(d.topic.len() as u32);
            b.put_slice(d.topic.as_bytes());
            if kind == KIND_CYCLE {
                b.put_u32(d.json.len() as u32);
                b.put_slice(&d.json);
            }
        }
    }
    b.freeze()
}

/// Read a message; documents are slices of `payload`, not copies.
pub(super) fn decode(mut payload: Bytes) -> Result<Message, String> {
    fn need(b: &Bytes, n: usize, what: &str) -> Result<(), String> {
        if b.remaining() < n {
            Err(format!("truncated at {what}"))
        } else {
            Ok(())
        }
    }
    fn field(b: &mut Bytes, what: &str) -> Result<Bytes, String> {
        need(b, 4, what)?;
        let len = b.get_u32() as usize;
        need(b, len, what)?;
        Ok(b.split_to(len))
    }
    fn text(b: Bytes) -> Result<String, String> {
        String::from_utf8(b.to_vec()).map_err(|_| "topic is not UTF-8".to_string())
    }
    need(&payload, MESSAGE_HEADER, "header")?;
    let kind = payload.get_u8();
    let version = payload.get_u64();
    let published_at = payload.get_i64();
    let message = match kind {
        KIND_RESYNC => Message::Resync,
        KIND_CYCLE | KIND_CHANGED => {
            need(&payload, 4, "count")?;
            let count = payload.get_u32() as usize;
            // Every entry takes at least 4 bytes: a count the payload cannot hold is corrupt,
            // and must not size an allocation.
            if count > payload.remaining() / 4 {
                return Err(format!("count {count} beyond the message"));
            }
            if kind == KIND_CYCLE {
                let mut documents = Vec::with_capacity(count);
                for _ in 0..count {
                    let topic = text(field(&mut payload, "topic")?)?;
                    let json = field(&mut payload, "document")?;
                    documents.push(Document {
                        topic: Arc::from(topic),
                        version,
                        published_at,
                        json,
                    });
                }
                Message::Cycle(Cycle {
                    version,
                    published_at,
                    documents,
                })
            } else {
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    topics.push(text(field(&mut payload, "topic")?)?);
                }
                Message::Changed {
                    version,
                    published_at,
                    topics,
                }
            }
        }
        other => return Err(format!("unknown message kind {other}")),
    };
    if payload.has_remaining() {
        return Err(format!("{} bytes after the message", payload.remaining()));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::redis::INLINE_CYCLE_LIMIT;
    use crate::documents::Draft;

    fn doc(topic: &str, body: &str, version: u64) -> Document {
        let draft = Draft {
            topic: topic.into(),
            body: Bytes::from(body.to_string()),
        };
        Document::stamp(&draft, version, 1_700_000_000_000 + version as i64)
    }

    #[test]
    fn a_small_cycle_travels_whole_and_its_documents_are_the_same_bytes() {
        let docs = vec![
            doc("brazil", r#"{"topic":"brazil","n":1}"#, 9),
            doc("state-sp", r#"{"topic":"state-sp","ç":"ã"}"#, 9),
        ];
        let bytes = encode(9, docs[0].published_at, &docs, INLINE_CYCLE_LIMIT);
        let Ok(Message::Cycle(cycle)) = decode(bytes) else {
            panic!("not a cycle")
        };
        assert_eq!(cycle.version, 9);
        assert_eq!(cycle.published_at, docs[0].published_at);
        assert_eq!(cycle.documents, docs);
    }

    #[test]
    fn a_cycle_over_the_limit_travels_as_its_topics_then_as_a_bare_resync() {
        let docs = vec![
            doc("a", &format!(r#"{{"pad":"{}"}}"#, "x".repeat(500)), 3),
            doc("b", r#"{}"#, 3),
        ];
        match decode(encode(3, 5, &docs, 100)).unwrap() {
            Message::Changed {
                version,
                published_at,
                topics,
            } => {
                assert_eq!((version, published_at), (3, 5));
                assert_eq!(topics, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(encode(3, 5, &docs, 20)).unwrap(),
            Message::Resync
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let docs = vec![doc("a", r#"{"n":1}"#, 1)];
        let good = encode(1, 2, &docs, INLINE_CYCLE_LIMIT);
        for cut in 0..good.len() {
            assert!(decode(good.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = BytesMut::from(&good[..]);
        extra.put_u8(0);
        assert!(decode(extra.freeze()).is_err());
        let mut huge = BytesMut::from(&good[..MESSAGE_HEADER]);
        huge.put_u32(u32::MAX);
        assert!(decode(huge.freeze()).is_err());
        assert!(decode(Bytes::from_static(b"\x09\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")).is_err());
        assert!(decode(Bytes::from_static(b"hello")).is_err());
    }

    #[test]
    fn stamped_json_reads_back_into_the_document() {
        let d = doc("brazil", r#"{"topic":"brazil","n":[1,2]}"#, 42);
        assert_eq!(stamped("brazil", d.json.clone()), Some(d));
        let empty = doc("t", "{}", 7);
        assert_eq!(stamped("t", empty.json.clone()), Some(empty));
        assert_eq!(stamped("t", Bytes::from_static(br#"{"topic":"t"}"#)), None);
        assert_eq!(
            stamped(
                "t",
                Bytes::from_static(br#"{"version":1,"published_at":x}"#)
            ),
            None
        );
    }
}

//! `apura-load publish`: the publisher side of the nginx + nchan baseline.
//!
//! Takes every topic's current document from an apura gateway once (so the messages have the
//! same bytes and sizes as apura's), then every `--interval` publishes all of them to nchan's
//! publisher location with `published_at` set to the cycle's start — the same clock apura's
//! ingest stamps — so `apura-load run` measures both servers the same way.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

use crate::http::{READ_CHUNK, read_body, read_head};
use crate::net::parse_target;
use crate::stats::now_us;

#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// nginx + nchan server (IPv4 loopback `IP:PORT`).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub target: String,
    /// Publisher location; `{topic}` is replaced by the channel (the topic name).
    #[arg(long, default_value = "/pub/{topic}")]
    pub pub_path: String,
    /// apura gateway the documents are taken from (`GET /cities.json`, `GET /cities/{topic}.json`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub docs_from: String,
    /// Take the documents from a folder written by `--save-docs` instead (no gateway needed).
    #[arg(long)]
    pub docs_dir: Option<std::path::PathBuf>,
    /// Write the documents fetched (`{topic}.json`) and the ranked topic list (`topics.txt`)
    /// to this folder.
    #[arg(long)]
    pub save_docs: Option<std::path::PathBuf>,
    /// Only topics starting with this.
    #[arg(long, default_value = "mayors-")]
    pub topic_prefix: String,
    /// A publication cycle every …
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop publishing after … (the command always ends by itself).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Wait this long before the first cycle (let subscribers connect).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Keep-alive connections the messages of a cycle are spread over.
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Stamp `published_at` when each message is sent (`message`: measures nchan's own fan-out,
    /// its best case) or once at the start of the cycle (`cycle`: like apura's ingest, so the
    /// time to POST a whole cycle one channel at a time counts too).
    #[arg(long, value_enum, default_value_t = Stamp::Message)]
    pub stamp: Stamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stamp {
    Message,
    Cycle,
}

/// A document split around its `version` and `published_at` numbers (in either order).
struct Template {
    topic: String,
    /// Literal pieces; between piece i and i+1 goes number i.
    pieces: Vec<Vec<u8>>,
    /// Which number goes in each gap.
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Version,
    PublishedAt,
}

/// The span of the number after the first `key` of `doc`.
fn number_span(doc: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    let at = memchr::memmem::find(doc, key)? + key.len();
    let end = at
        + doc[at..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(doc.len() - at);
    Some((at, end))
}

impl Template {
    fn new(topic: String, doc: &[u8]) -> anyhow::Result<Self> {
        let p = number_span(doc, b"\"published_at\":").context("document without published_at")?;
        let mut spans = vec![(p, Slot::PublishedAt)];
        if let Some(v) = number_span(doc, b"\"version\":") {
            spans.push((v, Slot::Version));
        }
        spans.sort_by_key(|s| s.0.0);
        let mut pieces = Vec::new();
        let mut pos = 0;
        for ((start, end), _) in &spans {
            pieces.push(doc[pos..*start].to_vec());
            pos = *end;
        }
        pieces.push(doc[pos..].to_vec());
        Ok(Template {
            topic,
            pieces,
            slots: spans.into_iter().map(|s| s.1).collect(),
        })
    }

    /// The document with this cycle's `version` and `published_at`.
    fn body(&self, version: u64, published_at: u64) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.pieces.iter().map(Vec::len).sum::<usize>() + 32);
        for (i, piece) in self.pieces.iter().enumerate() {
            b.extend_from_slice(piece);
            if let Some(slot) = self.slots.get(i) {
                let n = match slot {
                    Slot::Version => version,
                    Slot::PublishedAt => published_at,
                };
                b.extend_from_slice(n.to_string().as_bytes());
            }
        }
        b
    }
}

pub fn main(args: PublishArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let target = parse_target(&args.target)?;
    anyhow::ensure!(args.conns > 0, "--conns must be at least 1");
    let docs = load_docs(&args).await?;
    if let Some(dir) = &args.save_docs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let names: Vec<&str> = docs.iter().map(|(t, _)| t.as_str()).collect();
        std::fs::write(dir.join("topics.txt"), names.join("\n"))?;
        for (t, body) in &docs {
            std::fs::write(dir.join(format!("{t}.json")), body)?;
        }
        eprintln!(
            "publish: saved {} documents to {}",
            docs.len(),
            dir.display()
        );
    }
    let mut templates = Vec::with_capacity(docs.len());
    for (t, body) in docs {
        templates.push(Template::new(t, &body)?);
    }
    anyhow::ensure!(!templates.is_empty(), "no documents to publish");
    let bytes: usize = templates
        .iter()
        .map(|t| t.body(1, now_us() / 1_000).len())
        .sum();
    eprintln!(
        "publish: {} documents, {} bytes on average, every {:?} for {:?}, published_at stamped per {:?}",
        templates.len(),
        bytes / templates.len().max(1),
        args.interval,
        args.duration,
        args.stamp
    );
    let templates = Arc::new(templates);
    tokio::time::sleep(args.delay).await;
    let end = tokio::time::Instant::now() + args.duration;
    if args.duration.is_zero() {
        return Ok(());
    }
    let mut tick = tokio::time::interval(args.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cycle = 0u64;
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        cycle += 1;
        let published_at = now_us() / 1_000;
        let mut set = tokio::task::JoinSet::new();
        for c in 0..args.conns {
            let templates = templates.clone();
            let path = args.pub_path.clone();
            let step = args.conns;
            let stamp = args.stamp;
            set.spawn(async move {
                publish_slice(
                    target,
                    &path,
                    &templates,
                    c,
                    step,
                    cycle,
                    published_at,
                    stamp,
                )
                .await
            });
        }
        let mut errors = 0usize;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(e)) => errors += e,
                Ok(Err(e)) => {
                    eprintln!("publish: {e:#}");
                    errors += 1;
                }
                Err(e) => bail!("publisher task: {e}"),
            }
        }
        eprintln!(
            "publish: cycle {cycle} published_at {published_at}: {} messages in {} ms, {errors} errors",
            templates.len(),
            now_us() / 1_000 - published_at
        );
    }
    Ok(())
}

/// Every topic's document, in rank order (capitals first), from the gateway or a folder.
async fn load_docs(args: &PublishArgs) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    if let Some(dir) = &args.docs_dir {
        let list = std::fs::read_to_string(dir.join("topics.txt"))
            .with_context(|| format!("reading {}/topics.txt", dir.display()))?;
        let mut docs = Vec::new();
        for t in list.lines().filter(|t| t.starts_with(&args.topic_prefix)) {
            let body = std::fs::read(dir.join(format!("{t}.json")))
                .with_context(|| format!("reading the document of {t}"))?;
            docs.push((t.to_string(), body));
        }
        return Ok(docs);
    }
    let from = parse_target(&args.docs_from)?;
    let (topics, _capitals) =
        crate::topics::from_index(from, "/cities.json", &args.topic_prefix).await?;
    let mut docs = Vec::with_capacity(topics.len());
    for t in topics {
        let (status, body) = crate::http::fetch(from, &format!("/cities/{t}.json")).await?;
        anyhow::ensure!(status == 200, "GET /cities/{t}.json: status {status}");
        docs.push((t, body));
    }
    Ok(docs)
}

/// POST every `step`-th message starting at `first` over one keep-alive connection; returns
/// the number of non-2xx answers.
#[allow(clippy::too_many_arguments)]
async fn publish_slice(
    target: std::net::SocketAddr,
    path: &str,
    templates: &[Template],
    first: usize,
    step: usize,
    version: u64,
    published_at: u64,
    stamp: Stamp,
) -> anyhow::Result<usize> {
    let mut s = tokio::net::TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    s.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut errors = 0;
    for t in templates.iter().skip(first).step_by(step) {
        let body = match stamp {
            Stamp::Cycle => t.body(version, published_at),
            Stamp::Message => t.body(version, now_us() / 1_000),
        };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {target}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            path.replace("{topic}", &t.topic),
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(&body).await?;
        let h = read_head(&mut s, &mut buf).await?;
        read_body(&mut s, &mut buf, &h).await?;
        if !(200..300).contains(&h.status) {
            errors += 1;
        }
        if h.close {
            bail!("the publisher location closed the connection");
        }
    }
    Ok(errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_replaces_published_at() {
        let t = Template::new(
            "t".into(),
            br#"{"version":3,"published_at":1795629793012,"x":1}"#,
        )
        .unwrap();
        assert_eq!(t.body(9, 42), br#"{"version":9,"published_at":42,"x":1}"#);
        let t = Template::new("t".into(), br#"{"published_at":1,"a":{"version":3}}"#).unwrap();
        assert_eq!(t.body(12, 7), br#"{"published_at":7,"a":{"version":12}}"#);
    }
}

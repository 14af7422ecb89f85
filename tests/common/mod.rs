//! Shared test helpers: feed fixtures written by hand, servers on port 0 stopped on `Drop`,
//! and small SSE and WebSocket clients over real sockets.
#![allow(dead_code)]

pub mod net;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apura::bus::Bus;
use apura::bus::embedded::EmbeddedBus;
use apura::gateway::{self, GatewayArgs, hub::Hub};
use apura::ingest::FeedArgs;
use apura::metrics::Metrics;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A city of a hand-written feed.
#[derive(Clone, Debug)]
pub struct City {
    pub ibge: u32,
    pub name: &'static str,
    pub uf: &'static str,
    /// (ballot name, party, votes)
    pub candidates: Vec<(&'static str, &'static str, u64)>,
    pub blank: u64,
    pub null: u64,
    pub percent: f64,
    pub finished: bool,
}

impl City {
    pub fn new(ibge: u32, name: &'static str, uf: &'static str) -> Self {
        City {
            ibge,
            name,
            uf,
            candidates: vec![("ANA LIMA", "AAA", 0), ("BRUNO REIS", "BBB", 0)],
            blank: 0,
            null: 0,
            percent: 0.0,
            finished: false,
        }
    }

    pub fn votes(mut self, votes: &[u64], percent: f64) -> Self {
        for (c, v) in self.candidates.iter_mut().zip(votes) {
            c.2 = *v;
        }
        self.percent = percent;
        self
    }
}

/// Brazilian thousands format: 1234567 → "1.234.567".
pub fn br(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(c);
    }
    out
}

pub fn municipalities_json(cities: &[City]) -> String {
    let entries: Vec<String> = cities
        .iter()
        .map(|c| format!(r#""{}": {{"n": "{}", "e": "{}"}}"#, c.ibge, c.name, c.uf))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

pub fn feed_json(cities: &[City]) -> String {
    let all_final = cities.iter().all(|c| c.finished);
    let entries: Vec<String> = cities
        .iter()
        .map(|c| {
            let valid: u64 = c.candidates.iter().map(|x| x.2).sum();
            let cands: Vec<String> = c
                .candidates
                .iter()
                .enumerate()
                .map(|(i, (n, p, v))| {
                    let pct = if valid == 0 { 0.0 } else { *v as f64 * 100.0 / valid as f64 };
                    format!(
                        r#"{{"nc": "{n}", "sp": "{p}", "v": "{}", "tp": "{}%", "e": {}, "st": false}}"#,
                        br(*v),
                        format!("{pct:.2}").replace('.', ","),
                        c.finished && i == 0
                    )
                })
                .collect();
            format!(
                r#""{}": {{"nm": "{}", "a": "0", "b": "{}", "n": "{}", "t": "{}", "pst": "{}%", "f": {}, "c": [{}]}}"#,
                c.ibge,
                c.name.to_uppercase(),
                br(c.blank),
                br(c.null),
                br(valid + c.blank + c.null),
                format!("{:.2}", c.percent).replace('.', ","),
                c.finished,
                cands.join(", ")
            )
        })
        .collect();
    format!(
        r#"{{"last_updated": {{"date": "06/10/2024", "time": "19:00:00", "turno": 1, "apuracao_total": "50,00%", "encerrado": {all_final}}}, "municipios": {{{}}}}}"#,
        entries.join(", ")
    )
}

/// The three cities most tests use: a capital, a small town with an apostrophe, another state.
pub fn cities() -> Vec<City> {
    vec![
        City::new(3550308, "São Paulo", "SP").votes(&[600, 400], 10.0),
        City::new(2705903, "Olho d'Água Grande", "AL").votes(&[30, 20], 50.0),
        City::new(3304557, "Rio de Janeiro", "RJ").votes(&[100, 300], 5.0),
    ]
}

/// Write atomically (temp file + rename) so the ingest never reads half a file.
pub fn write_atomic(path: &std::path::Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn gateway_args() -> GatewayArgs {
    GatewayArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        web_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-demo"),
        heartbeat: Duration::from_secs(15),
        max_topics: 64,
        sse_retry: Duration::from_secs(3),
        disable_streams: false,
        reuse_port: false,
        max_connections: 0,
        max_connect_rate: 100_000,
        // Tests connect from one address: no per-address share unless a test sets one.
        address_share: 100,
        proxy_protocol: false,
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        drain: Duration::from_millis(200),
        write_timeout: Duration::from_secs(30),
        send_buffer: 0,
        ws_snapshot_rate: gateway::DEFAULT_WS_SNAPSHOT_RATE,
        ws_message_rate: gateway::DEFAULT_WS_MESSAGE_RATE,
        admin_listen: None,
        publish_threads: 0,
    }
}

/// Ingest + gateway on an embedded bus, fed from files in a temporary folder.
pub struct Stack {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
    pub feed: PathBuf,
}

impl Stack {
    pub async fn start(cities: &[City]) -> Stack {
        Self::start_with(cities, gateway_args()).await
    }

    pub async fn start_with(cities: &[City], args: GatewayArgs) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("mayors.json");
        let list = dir.path().join("municipalities.json");
        write_atomic(&list, municipalities_json(cities).as_bytes());
        write_atomic(&feed, feed_json(cities).as_bytes());
        let feed_args = FeedArgs {
            interval: Duration::from_millis(50),
            zones_interval: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(5),
            ..FeedArgs::consolidated(feed.display().to_string(), list.display().to_string())
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(apura::run::serve_embedded(
            feed_args,
            args,
            listener,
            shutdown.clone(),
        ));
        let stack = Stack {
            addr,
            shutdown,
            task: Some(task),
            dir,
            feed,
        };
        wait_ready(addr).await;
        stack
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn write_feed(&self, cities: &[City]) {
        write_atomic(&self.feed, feed_json(cities).as_bytes());
    }

    pub fn write_raw_feed(&self, bytes: &[u8]) {
        write_atomic(&self.feed, bytes);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gateway following a bus the test publishes to directly.
pub struct Gateway {
    pub addr: SocketAddr,
    pub bus: Arc<EmbeddedBus>,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    pub async fn start(args: GatewayArgs) -> Gateway {
        let bus = Arc::new(EmbeddedBus::new());
        let hub =
            Arc::new(Hub::new(Arc::new(Metrics::default())).with_publishers(args.publishers()));
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        tokio::spawn(gateway::follow(dyn_bus, hub.clone(), shutdown.clone()));
        let (h, s) = (hub.clone(), shutdown.clone());
        let task = tokio::spawn(async move { gateway::serve(&args, h, listener, s).await });
        Gateway {
            addr,
            bus,
            hub,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Publish one cycle of `{"topic": t, "n": n}` documents and wait until the hub has it.
    pub async fn publish(&self, docs: &[(&str, u64)]) -> u64 {
        self.publish_padded(docs, 0).await
    }

    /// Like `publish`, with documents padded to about `pad` bytes.
    pub async fn publish_padded(&self, docs: &[(&str, u64)], pad: usize) -> u64 {
        let padding = "x".repeat(pad);
        self.publish_with(docs, |_| padding.clone()).await
    }

    /// Publish version `n` of `topic`, padded with `pad` random letters (which gzip cannot
    /// shrink much).
    pub async fn publish_noise(&self, topic: &str, n: u64, pad: usize) -> u64 {
        use rand::RngExt;
        let noise = |_: &str| {
            (0..pad)
                .map(|_| rand::rng().sample(rand::distr::Alphanumeric) as char)
                .collect()
        };
        self.publish_with(&[(topic, n)], noise).await
    }

    /// Publish one cycle of `{"topic": t, "n": n, "pad": padding(t)}` documents and wait until
    /// the hub has it.
    async fn publish_with(&self, docs: &[(&str, u64)], padding: impl Fn(&str) -> String) -> u64 {
        let drafts = docs
            .iter()
            .map(|(t, n)| apura::documents::Draft {
                topic: t.to_string(),
                body: bytes::Bytes::from(format!(
                    r#"{{"topic":"{t}","n":{n},"pad":"{}"}}"#,
                    padding(t)
                )),
            })
            .collect();
        let cycle = self.bus.publish(drafts).await.unwrap();
        for (t, _) in docs {
            eventually(|| self.hub.get(t).is_some_and(|e| e.version >= cycle.version)).await;
        }
        cycle.version
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Wait (up to 10 s) for a condition the system reaches asynchronously.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_ready(addr: SocketAddr) {
    assert!(ready_within(addr).await, "server not ready in 30 s");
}

/// Whether the server at `addr` answers `/readyz` with 200 within 30 s.
pub async fn ready_within(addr: SocketAddr) -> bool {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status() == 200
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: String,
    pub id: Option<u64>,
    pub data: serde_json::Value,
}

/// What reading an SSE stream gave.
#[derive(Debug)]
pub enum SseRead {
    Event(Event),
    /// Nothing but comments, or nothing at all, within the wait.
    Idle,
    /// The server closed the stream, or the connection failed.
    Ended,
}

/// A minimal SSE client over a real HTTP connection.
pub struct Sse {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    /// Bytes read and not yet parsed: a chunk may end inside an event, even inside a
    /// multi-byte character, so only whole events are decoded.
    buf: Vec<u8>,
    pub comments: usize,
    pub retry: Option<u64>,
}

impl Sse {
    pub async fn connect(url: &str, last_event_id: Option<u64>) -> Sse {
        match Sse::try_connect(url, last_event_id).await {
            Ok(sse) => sse,
            Err(e) => panic!("SSE connect to {url}: {e}"),
        }
    }

    /// Connect, or say why not (refused, or a status other than 200), as a browser would see it.
    pub async fn try_connect(url: &str, last_event_id: Option<u64>) -> Result<Sse, String> {
        Sse::try_connect_with(&reqwest::Client::new(), url, last_event_id).await
    }

    /// [`Sse::try_connect`] with a client of the caller's (bound to a source address, say).
    pub async fn try_connect_with(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
    ) -> Result<Sse, String> {
        let mut req = client.get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("status {}", resp.status()));
        }
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Ok(Sse {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            comments: 0,
            retry: None,
        })
    }

    /// The next event, or `None` if the stream ends or nothing comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Event> {
        match self.read(wait).await {
            SseRead::Event(ev) => Some(ev),
            SseRead::Idle | SseRead::Ended => None,
        }
    }

    /// The next event, telling a quiet stream (comments only, or nothing, for `wait`) from one
    /// the server ended.
    pub async fn read(&mut self, wait: Duration) -> SseRead {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("an SSE event is UTF-8");
                let mut ev = Event {
                    event: "message".into(),
                    id: None,
                    data: serde_json::Value::Null,
                };
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("retry: ") {
                        self.retry = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).unwrap();
                        has_data = true;
                    }
                }
                if has_data {
                    return SseRead::Event(ev);
                }
            }
            let chunk = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return SseRead::Idle,
                Ok(Some(Ok(chunk))) => chunk,
                Ok(None) | Ok(Some(Err(_))) => return SseRead::Ended,
            };
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Whether the server closed the stream within `wait`.
    pub async fn ended(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket handshake on a plain socket, for tests that write frames by hand: the socket
/// once the server's 101 is read, nothing after it.
pub async fn raw_ws_handshake(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "the handshake broke"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

pub async fn ws_connect(addr: SocketAddr) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

pub async fn ws_send(ws: &mut Ws, v: serde_json::Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .unwrap();
}

/// The next JSON text message within `wait` (pings and pongs skipped).
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> Option<serde_json::Value> {
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            _ => return None,
        }
    }
}

/// An HTTP client whose connections leave from `source` (127.0.0.2, …: another client
/// address on loopback), a new connection for every request.
pub fn client_from(source: std::net::Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::V4(source))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// The status code of a plain GET.
pub async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

/// The JSON body of a plain GET.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// The status and JSON body of a plain GET (an error's body is JSON too).
pub async fn get_status_json(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The body of a plain GET, as text (a scrape of `/metrics`, say).
pub async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A refusal for load: 503, a `Retry-After` of 1 to 5 seconds and the JSON error `overloaded`.
pub async fn assert_overloaded(r: reqwest::Response) {
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry), "retry-after: {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "overloaded");
}

/// Serve `app` on a free loopback port until the token is cancelled.
pub async fn serve_app(app: axum::Router) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    (addr, shutdown)
}

/// Whether a WebSocket handshake to `addr` is refused.
pub async fn ws_refused(addr: SocketAddr) -> bool {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .is_err()
}

/// The JSON body of a GET made with `client` (its timeouts, its connection pool).
pub async fn get_json_with(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The gateway's GET path of a topic: `/brazil.json`, `/states/<uf>.json`, or
/// `/cities/<topic>.json`.
pub fn topic_path(topic: &str) -> String {
    if topic == "brazil" {
        "/brazil.json".to_string()
    } else if let Some(uf) = topic.strip_prefix("state-") {
        format!("/states/{uf}.json")
    } else {
        format!("/cities/{topic}.json")
    }
}

/// `apura run` in this process (the ingest of `feed` and a gateway on an embedded bus) on a
/// free port, once it is ready; stopped when the guard is dropped.
pub async fn serve_embedded(feed: FeedArgs) -> (SocketAddr, tokio_util::sync::DropGuard) {
    let (addr, stop) = start_embedded(feed).await;
    wait_ready(addr).await;
    (addr, stop)
}

/// The same, answered at once: the gateway serves (not ready) while the ingest starts.
pub async fn start_embedded(feed: FeedArgs) -> (SocketAddr, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(apura::run::serve_embedded(
        feed,
        gateway_args(),
        listener,
        shutdown.clone(),
    ));
    (addr, shutdown.drop_guard())
}

/// The JSON body of `url` once it answers 200 (a document not published yet answers 404),
/// asking every `every`; `None` if it has not after `patience`.
pub async fn get_json_once_served(
    client: &reqwest::Client,
    url: &str,
    every: Duration,
    patience: Duration,
) -> Option<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let r = client.get(url).send().await.unwrap();
        if r.status() == 200 {
            return Some(r.json().await.unwrap());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

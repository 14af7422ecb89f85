//! A private redis-server per test on a free port, and ingest and gateway processes on it (in
//! this process, or the gateway as a child process of the built binary), all stopped on `Drop`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use apura::bus::Bus;
use apura::bus::redis::RedisBus;
use apura::fetch::{DEFAULT_MAX_BYTES, Fetcher};
use apura::gateway::{self, hub::Hub};
use apura::ingest::{self, FeedArgs, Ingest};
use apura::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::process::{Process, args};
use super::{City, feed_json, gateway_args, municipalities_json, write_atomic};

/// A redis-server child process without persistence, on a port of its own.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill the server (no shutdown, no save), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the server and start a fresh, empty one on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Start a server (if stopped) and wait until it answers PING.
    pub async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found on the PATH (Debian: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.pong().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server did not answer PING on port {} in 10 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn pong(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RedisBus of its own, as a separate process would have.
pub async fn bus(server: &RedisServer) -> Arc<RedisBus> {
    Arc::new(
        RedisBus::connect(&server.url(), "apura", Arc::new(Metrics::default()))
            .await
            .unwrap(),
    )
}

/// A RedisBus holding the leader lock for `ttl`, to publish through as the ingest would.
pub async fn publisher(server: &RedisServer, ttl: Duration) -> Arc<RedisBus> {
    let publisher = bus(server).await;
    assert!(
        publisher.acquire_leadership(ttl).await.unwrap(),
        "the leader lock is free"
    );
    publisher
}

/// Feed files in a temporary folder, polled every 50 ms.
pub struct Feed {
    pub dir: tempfile::TempDir,
    pub args: FeedArgs,
    path: PathBuf,
}

impl Feed {
    pub fn new(cities: &[City]) -> Feed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mayors.json");
        let list = dir.path().join("municipalities.json");
        write_atomic(&list, municipalities_json(cities).as_bytes());
        write_atomic(&path, feed_json(cities).as_bytes());
        let args = FeedArgs {
            interval: Duration::from_millis(50),
            zones_interval: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(5),
            ..FeedArgs::consolidated(path.display().to_string(), list.display().to_string())
        };
        Feed { dir, args, path }
    }

    pub fn write(&self, cities: &[City]) {
        write_atomic(&self.path, feed_json(cities).as_bytes());
    }
}

/// One ingest process: leader or standby on its own RedisBus.
pub struct IngestProcess {
    pub bus: Arc<RedisBus>,
    pub metrics: Arc<Metrics>,
    pub leading: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl IngestProcess {
    pub async fn start(server: &RedisServer, feed: &Feed, ttl: Duration) -> IngestProcess {
        let metrics = Arc::new(Metrics::default());
        let bus = Arc::new(
            RedisBus::connect(&server.url(), "apura", metrics.clone())
                .await
                .unwrap(),
        );
        let fetcher = Fetcher::new(feed.args.fetch_timeout, DEFAULT_MAX_BYTES).unwrap();
        let list =
            ingest::load_municipalities(feed.args.municipalities.as_deref().unwrap(), &fetcher)
                .await
                .unwrap();
        let dyn_bus: Arc<dyn Bus> = bus.clone();
        let ing = Ingest::new(
            Arc::new(list),
            &feed.args,
            fetcher,
            dyn_bus,
            metrics.clone(),
        );
        let leading = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ingest::leader::elect(
            bus.clone(),
            ing,
            feed.args.clone(),
            ttl,
            leading.clone(),
            shutdown.clone(),
        ));
        IngestProcess {
            bus,
            metrics,
            leading,
            shutdown,
            task,
        }
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Relaxed)
    }

    pub fn cycles_published(&self) -> u64 {
        self.metrics.cycles_published.load(Relaxed)
    }

    /// Die without releasing the lock, as a killed process would.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway following the Redis bus, served on port 0.
pub struct RedisGateway {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    pub shutdown: CancellationToken,
}

impl RedisGateway {
    pub async fn start(server: &RedisServer) -> RedisGateway {
        let metrics = Arc::new(Metrics::default());
        let bus: Arc<dyn Bus> = Arc::new(
            RedisBus::connect(&server.url(), "apura", metrics.clone())
                .await
                .unwrap(),
        );
        let hub = Arc::new(Hub::new(metrics));
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(gateway::follow(bus, hub.clone(), shutdown.clone()));
        let (h, s) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move { gateway::serve(&gateway_args(), h, listener, s).await });
        RedisGateway {
            addr,
            hub,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for RedisGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `apura gateway --redis` as a child process of the built binary, killed when dropped.
pub struct GatewayProcess {
    pub name: String,
    pub process: Process,
    pub addr: SocketAddr,
}

/// `apura gateway` following `server`, serving on `addr`, with the options in `extra`.
pub fn gateway_command(server: &RedisServer, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut command = args(&[
        "gateway",
        "--redis",
        &server.url(),
        "--listen",
        &addr.to_string(),
    ]);
    command.extend(args(extra));
    command
}

impl GatewayProcess {
    /// Follow `server` and serve on `addr`, with the options in `extra`; the log goes to
    /// `dir/<name>.log`.
    pub fn spawn(
        server: &RedisServer,
        dir: &Path,
        name: &str,
        addr: SocketAddr,
        extra: &[&str],
    ) -> GatewayProcess {
        GatewayProcess {
            name: name.to_string(),
            process: Process::spawn(dir, name, &gateway_command(server, addr, extra)),
            addr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

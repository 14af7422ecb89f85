//! A private redis-server per test on a free port (plain, TLS only, or a replica, with a
//! redis-sentinel watching it if asked), and ingest and gateway processes on it (in this process,
//! or as child processes of the built binary), all stopped on `Drop`.

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

/// What apura's `--redis` can name: one redis-server, or the sentinels watching a primary.
pub trait RedisUrl {
    fn redis_url(&self) -> String;
}

impl RedisUrl for RedisServer {
    fn redis_url(&self) -> String {
        self.url()
    }
}

/// A redis-server child process without persistence, on a port of its own.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// More options: a replica's `--replicaof`.
    options: Vec<String>,
    /// When it speaks TLS only: the certificates it uses.
    tls: Option<Certificates>,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        RedisServer::start_with(Vec::new(), None).await
    }

    /// A server that speaks TLS only (`--port 0 --tls-port`), its certificate signed by a CA
    /// made for it: [`RedisServer::ca_file`].
    pub async fn start_tls() -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        RedisServer::start_with(Vec::new(), Some(Certificates::make(dir))).await
    }

    /// A replica of `primary`, once it has synced.
    pub async fn start_replica_of(primary: &RedisServer) -> RedisServer {
        let options = args(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
        let replica = RedisServer::start_with(options, None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !replica
            .info("replication")
            .await
            .contains("master_link_status:up")
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica did not sync in 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    async fn start_with(options: Vec<String>, tls: Option<Certificates>) -> RedisServer {
        let mut server = RedisServer {
            port: super::process::free_addr().port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            options,
            tls,
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub fn ca_file(&self) -> String {
        let certs = self.tls.as_ref().expect("a TLS server");
        certs.dir.path().join("ca.pem").display().to_string()
    }

    /// A client of this server, trusting its CA if it speaks TLS.
    pub fn client(&self) -> ::redis::Client {
        match &self.tls {
            None => ::redis::Client::open(self.url()).unwrap(),
            Some(_) => {
                let ca = std::fs::read(self.ca_file()).unwrap();
                let certs = ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca),
                };
                ::redis::Client::build_with_tls(self.url(), certs).unwrap()
            }
        }
    }

    /// The answer of one command, or `None` if the server does not give one within 2 s.
    pub async fn query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Option<T> {
        query(&self.client(), cmd).await
    }

    /// `INFO section`, empty if the server does not answer.
    pub async fn info(&self, section: &str) -> String {
        self.query(::redis::cmd("INFO").arg(section))
            .await
            .unwrap_or_default()
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
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some(certs) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(certs.dir.path().join("server.pem"))
                .arg("--tls-key-file")
                .arg(certs.dir.path().join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.dir.path().join("ca.pem")),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.options)
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
        if self.tls.is_some() {
            return self
                .query::<String>(&::redis::cmd("PING"))
                .await
                .is_some_and(|p| p == "PONG");
        }
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

/// The answer of one command on a new connection of `client`, or `None` within 2 s.
async fn query<T: ::redis::FromRedisValue>(
    client: &::redis::Client,
    cmd: &::redis::Cmd,
) -> Option<T> {
    let ask = async {
        let mut con = client.get_multiplexed_async_connection().await?;
        cmd.query_async::<T>(&mut con).await
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()?
        .ok()
}

/// A CA and a certificate it signed for 127.0.0.1, made with the `openssl` command, in `dir`:
/// `ca.pem`, `server.pem`, `server.key`.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make(dir: tempfile::TempDir) -> Certificates {
        super::process::require("openssl");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=apura test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat());
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Certificates { dir }
    }
}

/// A redis-sentinel watching `primary` under the name [`Sentinel::NAME`], alone (quorum 1), quick
/// to act: the primary is down after 1 s without an answer.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisUrl for Sentinel {
    fn redis_url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{}",
            self.port,
            Sentinel::NAME
        )
    }
}

impl Sentinel {
    pub const NAME: &str = "apura";

    /// Start it, and wait until it knows `primary` and `replicas` replicas of it.
    pub async fn start(primary: &RedisServer, replicas: usize) -> Sentinel {
        super::process::require("redis-sentinel");
        let dir = tempfile::tempdir().unwrap();
        let port = super::process::free_addr().port();
        let name = Sentinel::NAME;
        // Sentinel rewrites its configuration file: it must be its own, and writable.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n",
                dir.path().display(),
                primary.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel not found (Debian: apt-get install redis-sentinel)");
        let sentinel = Sentinel {
            port,
            child,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let known: Option<Vec<::redis::Value>> = sentinel
                .query(::redis::cmd("SENTINEL").arg("REPLICAS").arg(name))
                .await;
            if sentinel.primary_port().await == Some(primary.port)
                && known.is_some_and(|r| r.len() == replicas)
            {
                return sentinel;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-sentinel on port {port} did not see the primary and {replicas} replicas in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port of the primary, as the sentinel names it now.
    pub async fn primary_port(&self) -> Option<u16> {
        let addr: Vec<String> = self
            .query(
                ::redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(Sentinel::NAME),
            )
            .await?;
        addr.get(1)?.parse().ok()
    }

    async fn query<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Option<T> {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        query(&client, cmd).await
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// `apura ingest` publishing to `server` what it reads from `feed` and `municipalities` (paths
/// or URLs), with the options in `extra`.
pub fn ingest_command(
    server: &impl RedisUrl,
    feed: &str,
    municipalities: &str,
    extra: &[&str],
) -> Vec<String> {
    let mut command = args(&[
        "ingest",
        "--redis",
        &server.redis_url(),
        "--feed",
        feed,
        "--municipalities",
        municipalities,
    ]);
    command.extend(args(extra));
    command
}

/// `apura gateway` following `server`, serving on `addr`, with the options in `extra`.
pub fn gateway_command(server: &impl RedisUrl, addr: SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut command = args(&[
        "gateway",
        "--redis",
        &server.redis_url(),
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
        server: &impl RedisUrl,
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

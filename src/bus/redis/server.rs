//! Where Redis is: one server (`redis://`, `rediss://` for TLS), or the primary the sentinels of
//! a Redis Sentinel deployment name (`redis+sentinel://`, `rediss+sentinel://`); and the command
//! connection, which follows the primary when Sentinel fails over to another server.
//!
//! A Sentinel URL lists the sentinels and names the primary they watch:
//! `redis+sentinel://[user:password@]host[:port][,host[:port]…]/name[/db]` (the port defaults to
//! 26379). The credentials and the database are those of the Redis servers; the sentinels are
//! asked without them. With `rediss+sentinel://`, both the sentinels and the servers are reached
//! over TLS.
//!
//! How a failover is followed: a command that fails on the connection (refused, dropped, timed
//! out) or is refused by a server that is no longer the primary (`READONLY`) marks the primary
//! as unknown; the next command asks the sentinels again (the crate's `SentinelClient`, which
//! also checks with `ROLE` that the server it names is a primary) and, if they name another
//! server, connects there. The subscription asks them each time it (re)connects; Sentinel closes
//! the clients of a server it demotes, so a subscription never stays on a replica.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use anyhow::Context;
use redis::aio::ConnectionManager;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, IntoConnectionInfo, RedisResult, TlsCertificates, TlsMode};

use super::{COMMAND_TIMEOUT, CONNECT_TIMEOUT, manager_config};

/// The port of a sentinel when the URL gives none.
const SENTINEL_PORT: u16 = 26379;

/// A Redis deployment: what `--redis` and `--redis-ca-file` name.
pub struct Server {
    kind: Kind,
    /// The URL without its password, for logs and errors.
    shown: String,
}

enum Kind {
    /// One server, TLS or not.
    Direct(Client),
    /// The primary named `name` by these sentinels: asked one at a time (it needs `&mut`).
    Sentinel {
        sentinels: tokio::sync::Mutex<SentinelClient>,
        name: String,
    },
}

impl Server {
    /// Parse `url`; `ca_file` (PEM) is then the only authority trusted for TLS, instead of the
    /// system's roots.
    pub fn open(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Server> {
        let ca = match ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading --redis-ca-file {}", path.display()))?,
            ),
            None => None,
        };
        let shown = super::redacted(url);
        let kind = if let Some((tls, rest)) = sentinel_url(url) {
            sentinel(tls, rest, ca).with_context(|| format!("Redis Sentinel URL {shown:?}"))?
        } else {
            let client = match ca {
                Some(pem) => {
                    anyhow::ensure!(
                        url.starts_with("rediss://"),
                        "--redis-ca-file needs a rediss:// or rediss+sentinel:// URL"
                    );
                    Client::build_with_tls(url, certificates(pem))
                }
                None => Client::open(url),
            };
            Kind::Direct(client.with_context(|| format!("Redis URL {shown:?}"))?)
        };
        Ok(Server { kind, shown })
    }

    /// The URL, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A client of the primary as of now: the one server, or the one the sentinels name.
    async fn primary(&self) -> RedisResult<Client> {
        match &self.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Sentinel { sentinels, name } => {
                let ask = async { sentinels.lock().await.async_get_client().await };
                // The crate bounds neither the sentinels' answers nor its check of the primary.
                match tokio::time::timeout(CONNECT_TIMEOUT + COMMAND_TIMEOUT, ask).await {
                    Ok(found) => found,
                    Err(_) => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the sentinels did not name a primary in time",
                        name.clone(),
                    ))),
                }
            }
        }
    }
}

/// `Some((tls, after the scheme))` for a Sentinel URL.
fn sentinel_url(url: &str) -> Option<(bool, &str)> {
    if let Some(rest) = url.strip_prefix("redis+sentinel://") {
        Some((false, rest))
    } else {
        url.strip_prefix("rediss+sentinel://")
            .map(|rest| (true, rest))
    }
}

fn certificates(pem: Vec<u8>) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    }
}

/// `[user:password@]host[:port][,host[:port]…]/name[/db]`.
fn sentinel(tls: bool, rest: &str, ca: Option<Vec<u8>>) -> anyhow::Result<Kind> {
    let (credentials, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .context("no primary name: …/name after the sentinels")?;
    let mut path = path.trim_end_matches('/').split('/');
    let name = path
        .next()
        .filter(|n| !n.is_empty())
        .context("no primary name")?;
    let db: Option<i64> = match path.next() {
        Some(db) => Some(db.parse().context("the database is not a number")?),
        None => None,
    };
    anyhow::ensure!(
        path.next().is_none(),
        "only …/name[/db] after the sentinels"
    );
    let scheme = if tls { "rediss" } else { "redis" };
    let mut nodes = Vec::new();
    for host in hosts.split(',') {
        anyhow::ensure!(!host.is_empty(), "an empty sentinel address");
        // A port unless the address ends with one (`[::1]` is a host without a port).
        let with_port = match host.rsplit_once(':') {
            Some((_, port)) if !port.ends_with(']') => host.to_string(),
            _ => format!("{host}:{SENTINEL_PORT}"),
        };
        let info = format!("{scheme}://{with_port}")
            .into_connection_info()
            .with_context(|| format!("sentinel address {host:?}"))?;
        nodes.push(info.addr().clone());
    }
    let mut builder = SentinelClientBuilder::new(nodes, name, SentinelServerType::Master)?;
    if tls {
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(pem) = ca {
            builder = builder
                .set_client_to_sentinel_certificates(certificates(pem.clone()))
                .set_client_to_redis_certificates(certificates(pem));
        }
    } else {
        anyhow::ensure!(
            ca.is_none(),
            "--redis-ca-file needs a rediss:// or rediss+sentinel:// URL"
        );
    }
    if let Some(credentials) = credentials {
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (credentials, None),
        };
        if !user.is_empty() {
            builder = builder.set_client_to_redis_username(user);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_redis_password(password);
        }
    }
    if let Some(db) = db {
        builder = builder.set_client_to_redis_db(db);
    }
    Ok(Kind::Sentinel {
        sentinels: tokio::sync::Mutex::new(builder.build()?),
        name: name.to_string(),
    })
}

/// The command connection: one [`ConnectionManager`] (which reconnects by itself) to the
/// primary, replaced when the sentinels name another one.
pub(super) struct Commands {
    server: Server,
    current: Mutex<Option<Current>>,
    /// Set when a command failed in a way that may mean the primary moved.
    stale: AtomicBool,
    /// One question to the sentinels at a time.
    asking: tokio::sync::Mutex<()>,
    /// How many times the primary changed under this process.
    failovers: AtomicU64,
}

#[derive(Clone)]
struct Current {
    /// `host:port` of the primary.
    addr: String,
    client: Client,
    manager: ConnectionManager,
}

impl Commands {
    /// Connect now: fails if Redis (or, under Sentinel, a primary) cannot be reached.
    pub(super) async fn connect(server: Server) -> anyhow::Result<Commands> {
        let commands = Commands::lazy(server)?;
        if let Kind::Direct(client) = &commands.server.kind {
            let manager = client
                .get_connection_manager_with_config(manager_config())
                .await
                .with_context(|| format!("connecting to Redis at {}", commands.server.shown))?;
            commands.set(client.clone(), manager);
        } else {
            let mut con = commands.connection().await.with_context(|| {
                format!("finding the Redis primary at {}", commands.server.shown)
            })?;
            let _: String = commands
                .check(redis::cmd("PING").query_async(&mut con).await)
                .with_context(|| format!("connecting to Redis at {}", commands.server.shown))?;
        }
        Ok(commands)
    }

    /// Connect on first use.
    pub(super) fn lazy(server: Server) -> anyhow::Result<Commands> {
        let commands = Commands {
            server,
            current: Mutex::new(None),
            stale: AtomicBool::new(false),
            asking: tokio::sync::Mutex::new(()),
            failovers: AtomicU64::new(0),
        };
        if let Kind::Direct(client) = &commands.server.kind {
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config())
                .with_context(|| format!("Redis at {}", commands.server.shown))?;
            commands.set(client.clone(), manager);
        }
        Ok(commands)
    }

    pub(super) fn server(&self) -> &Server {
        &self.server
    }

    /// How many times the primary changed since this process connected.
    pub(super) fn failovers(&self) -> u64 {
        self.failovers.load(Relaxed)
    }

    fn set(&self, client: Client, manager: ConnectionManager) {
        let addr = client.get_connection_info().addr().to_string();
        *self.current.lock().unwrap() = Some(Current {
            addr,
            client,
            manager,
        });
    }

    fn fresh(&self) -> Option<Current> {
        if self.stale.load(Relaxed) {
            return None;
        }
        self.current.lock().unwrap().clone()
    }

    /// A connection to the primary, for commands; run the answer through [`Commands::check`].
    pub(super) async fn connection(&self) -> RedisResult<ConnectionManager> {
        Ok(self.current().await?.manager)
    }

    /// A client of the primary, asking the sentinels again (under Sentinel): for the
    /// subscription, which connects rarely and must not stay on a server that was demoted.
    pub(super) async fn primary(&self) -> RedisResult<Client> {
        if matches!(self.server.kind, Kind::Sentinel { .. }) {
            self.stale.store(true, Relaxed);
        }
        Ok(self.current().await?.client)
    }

    async fn current(&self) -> RedisResult<Current> {
        if let Some(current) = self.fresh() {
            return Ok(current);
        }
        let _asking = self.asking.lock().await;
        if let Some(current) = self.fresh() {
            return Ok(current);
        }
        let client = self.server.primary().await?;
        let addr = client.get_connection_info().addr().to_string();
        let previous = self.current.lock().unwrap().clone();
        let current = match previous {
            Some(previous) if previous.addr == addr => previous,
            previous => {
                if let Some(previous) = previous {
                    self.failovers.fetch_add(1, Relaxed);
                    tracing::warn!(from = %previous.addr, to = %addr, "the Redis primary changed");
                } else {
                    tracing::info!(primary = %addr, "Redis primary found through Sentinel");
                }
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), manager_config())?;
                self.set(client, manager);
                self.current.lock().unwrap().clone().expect("just set")
            }
        };
        self.stale.store(false, Relaxed);
        Ok(current)
    }

    /// Run a script on the primary.
    pub(super) async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        let mut con = self.connection().await?;
        self.check(call.invoke_async(&mut con).await)
    }

    /// Pass `result` on; under Sentinel, a failure that may mean the primary moved makes the
    /// next command ask the sentinels.
    pub(super) fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let (Err(e), Kind::Sentinel { .. }) = (&result, &self.server.kind)
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.code() == Some("READONLY"))
        {
            self.stale.store(true, Relaxed);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(url: &str) -> anyhow::Result<&'static str> {
        Ok(match Server::open(url, None)?.kind {
            Kind::Direct(_) => "direct",
            Kind::Sentinel { .. } => "sentinel",
        })
    }

    #[test]
    fn urls_name_one_server_or_the_sentinels_of_a_primary() {
        assert_eq!(kind("redis://127.0.0.1:6379/0").unwrap(), "direct");
        assert_eq!(kind("rediss://cache.example:6380").unwrap(), "direct");
        assert_eq!(
            kind("redis+sentinel://10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster").unwrap(),
            "sentinel"
        );
        assert_eq!(
            kind("rediss+sentinel://user:secret@s1,s2/mymaster/2").unwrap(),
            "sentinel"
        );
        for bad in [
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/",
            "redis+sentinel://s1,,s2/mymaster",
            "redis+sentinel://s1/mymaster/zero",
            "redis+sentinel://s1:port/mymaster",
            "http://nope",
        ] {
            assert!(kind(bad).is_err(), "{bad}");
        }
        let ca = std::env::temp_dir().join(format!("apura-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = Server::open("redis://127.0.0.1:6379", Some(&ca))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("rediss://"), "{err:#}");
        std::fs::remove_file(&ca).unwrap();
        assert!(Server::open("rediss://127.0.0.1", Some(&ca)).is_err());
    }
}

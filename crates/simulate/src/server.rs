//! The HTTP side of the consolidated layout: the endpoints, each tick's files rendered once and
//! shared; and serving either layout until shutdown.
//!
//! A tick's files are rendered lazily, by the first request that asks for them, on a blocking
//! thread; requests that arrive meanwhile wait for the same render. A file is published only
//! once whole, so no request sees a half-built one, and its gzip form is made once too, when a
//! client first asks for it (`http`).

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::count::zone_key;
use super::http::{ApiError, FeedFile, detached, no_store, not_found};
use super::{Layout, SimConfig, Simulator, files};
use apura_formats::model::Office;

/// How long in-flight responses may take to finish once shutdown is asked for: a 60 MB
/// councillor file to a slow client on a LAN is a matter of seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The files of one tick, each rendered on first demand.
#[derive(Debug)]
pub struct TickFiles {
    tick: u64,
    mayors: OnceCell<Arc<FeedFile>>,
    councillors: OnceCell<Arc<FeedFile>>,
    zones: OnceCell<Arc<ZoneFiles>>,
}

/// Every zone file of a tick, by `"{uf}-{slug}"`.
type ZoneFiles = HashMap<String, Arc<FeedFile>>;

impl TickFiles {
    pub fn new(tick: u64) -> Self {
        TickFiles {
            tick,
            mayors: OnceCell::new(),
            councillors: OnceCell::new(),
            zones: OnceCell::new(),
        }
    }

    fn office(&self, office: Office) -> &OnceCell<Arc<FeedFile>> {
        match office {
            Office::Mayor => &self.mayors,
            Office::Councillor => &self.councillors,
        }
    }
}

impl Simulator {
    /// The files of the current tick, replacing the cached set when the clock has moved on.
    fn tick_files(&self) -> Arc<TickFiles> {
        let tick = self.current_tick();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.tick < tick {
            *cache = Arc::new(TickFiles::new(tick));
        }
        cache.clone()
    }

    fn etag_tag(&self, tick: u64, what: &str) -> String {
        format!("{:016x}-{tick}-{what}", self.fingerprint)
    }
}

/// The consolidated file of `office` for the current tick.
async fn office_file(sim: &Arc<Simulator>, office: Office) -> Result<Arc<FeedFile>, ApiError> {
    let files = sim.tick_files();
    if let Some(file) = files.office(office).get() {
        return Ok(file.clone());
    }
    let sim = sim.clone();
    detached(async move {
        let tick = files.tick;
        files
            .office(office)
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let body = sim.render_tick(tick, office);
                    debug!(tick, ?office, bytes = body.len(), elapsed = ?started.elapsed(), "rendered");
                    let tag = sim.etag_tag(tick, office_name(office));
                    Arc::new(FeedFile::new(body, tag, sim.published_at(tick)))
                })
                .await
                .map_err(|e| ApiError::Internal(format!("rendering tick {tick}: {e}")))
            })
            .await
            .cloned()
    })
    .await
}

fn office_name(office: Office) -> &'static str {
    match office {
        Office::Mayor => "mayors",
        Office::Councillor => "councillors",
    }
}

/// Every zone file of the current tick.
async fn zone_files(sim: &Arc<Simulator>) -> Result<Arc<ZoneFiles>, ApiError> {
    let files = sim.tick_files();
    if let Some(zones) = files.zones.get() {
        return Ok(zones.clone());
    }
    let sim = sim.clone();
    detached(async move {
        let tick = files.tick;
        files
            .zones
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || Arc::new(render_zones(&sim, tick)))
                    .await
                    .map_err(|e| ApiError::Internal(format!("rendering zones of tick {tick}: {e}")))
            })
            .await
            .cloned()
    })
    .await
}

fn render_zones(sim: &Simulator, tick: u64) -> ZoneFiles {
    let stamp = sim.stamp(tick);
    let modified = sim.published_at(tick);
    sim.election
        .zone_cities()
        .map(|city| {
            let m = &city.municipality;
            let tag = sim.etag_tag(tick, &format!("zone-{}", m.ibge));
            let body = files::zone_file(city, &stamp);
            let file = Arc::new(FeedFile::new(body, tag, modified));
            (zone_key(&m.uf, &m.slug), file)
        })
        .collect()
}

/// The simulator's endpoints:
///
/// - `GET /municipalities.json`: the municipality list, `{"<IBGE>": {"n": name, "e": UF}}`.
/// - `GET /mayors.json`, `GET /councillors.json`: the consolidated file of the current tick.
/// - `GET /zones/zone-{uf}-{slug}.json`: the zone file of a capital or a city of more than
///   200,000 voters; 404 for any other.
/// - `GET /status`: `{"tick", "ticks", "percent", "finished", "seed", ..}`.
/// - `GET /ticks`: every tick out so far (the last 10,000 at most), `{"interval_ms", "ticks":
///   [{"tick", "source_time", "published_at", "ambiguous"}]}`: the `source_time` the documents
///   built from its files carry, and when they came out (Unix ms, their `Last-Modified`), for
///   measuring freshness.
///
/// Files carry a strong `ETag` and `Last-Modified`, answer `If-None-Match` and
/// `If-Modified-Since` with 304, and come gzipped when the client accepts it.
pub fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/municipalities.json", get(municipalities))
        .route(
            "/mayors.json",
            get(|State(sim), headers| office(sim, Office::Mayor, headers)),
        )
        .route(
            "/councillors.json",
            get(|State(sim), headers| office(sim, Office::Councillor, headers)),
        )
        .route("/zones/{file}", get(zone))
        .route("/status", get(status))
        .route("/ticks", get(ticks))
        .fallback(not_found)
        .with_state(sim)
}

async fn municipalities(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    sim.municipalities_file.respond(&headers).await
}

/// `GET /mayors.json` or `GET /councillors.json`.
async fn office(
    sim: Arc<Simulator>,
    office: Office,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    office_file(&sim, office).await?.respond(&headers).await
}

async fn zone(
    State(sim): State<Arc<Simulator>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let no_such = || ApiError::NotFound(format!("no zone file {file}"));
    let (uf, slug) = file
        .strip_prefix("zone-")
        .and_then(|f| f.strip_suffix(".json"))
        .and_then(|f| f.split_once('-'))
        .ok_or_else(no_such)?;
    if sim.election.zone_city(uf, slug).is_none() {
        return Err(no_such());
    }
    let zones = zone_files(&sim).await?;
    let file = zones.get(&zone_key(uf, slug)).ok_or_else(no_such)?;
    file.respond(&headers).await
}

async fn status(State(sim): State<Arc<Simulator>>) -> Response {
    let tick = sim.current_tick();
    let body = json!({
        "tick": tick,
        "ticks": sim.last_tick(),
        "percent": sim.national_percent(tick),
        "finished": tick >= sim.last_tick(),
        "seed": sim.seed(),
        "interval_ms": sim.interval.as_millis() as u64,
        "duration_ms": sim.duration.as_millis() as u64,
    });
    no_store(body)
}

async fn ticks(State(sim): State<Arc<Simulator>>) -> Response {
    ticks_response(&sim, None)
}

/// `GET /ticks` of either layout: [`Simulator::ticks`] as JSON, `published_at` in Unix ms, and
/// the TSE layout's `changes` (topic → ticks its file was written at).
pub(crate) fn ticks_response(
    sim: &Simulator,
    changes: Option<Vec<(String, Vec<u64>)>>,
) -> Response {
    let ticks: Vec<serde_json::Value> = sim
        .ticks()
        .into_iter()
        .map(|t| {
            let published_at = t
                .published_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            json!({
                "tick": t.tick,
                "source_time": t.source_time,
                "published_at": published_at,
                "ambiguous": t.ambiguous,
            })
        })
        .collect();
    let mut body = json!({
        "interval_ms": sim.interval.as_millis() as u64,
        "ticks": ticks,
    });
    if let Some(changes) = changes {
        body["changes"] = changes
            .into_iter()
            .map(|(topic, ticks)| (topic, json!(ticks)))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    no_store(body)
}

/// Build the night from `config` (the count starts once it is built), then serve it on
/// `listener` until `shutdown` is cancelled; in-flight responses get `SHUTDOWN_GRACE` (10 s) to
/// finish.
pub async fn run(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let sim = tokio::task::spawn_blocking(move || Simulator::new(config))
        .await
        .context("building the simulated election")?;
    info!(built_in = ?started.elapsed(), "simulated election built");
    serve_simulator(Arc::new(sim), listener, shutdown).await
}

/// Serve an already built night on `listener` until `shutdown`, in its layout: the TSE layout
/// with each client's address known, for its rate limit. Tests build the [`Simulator`]
/// themselves to read its truth ([`Simulator::tse_final`]).
pub async fn serve_simulator(
    sim: Arc<Simulator>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    info!(
        %addr,
        seed = sim.seed(),
        municipalities = sim.municipalities().len(),
        ticks = sim.final_tick(),
        interval = ?sim.interval,
        layout = ?sim.layout(),
        "simulated count night started"
    );
    let graceful = shutdown.clone().cancelled_owned();
    let serve: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
        match sim.layout() {
            Layout::Consolidated => Box::pin(
                axum::serve(listener, router(sim))
                    .with_graceful_shutdown(graceful)
                    .into_future(),
            ),
            Layout::Tse => Box::pin(
                axum::serve(
                    listener,
                    super::tse::server::router(sim)
                        .into_make_service_with_connect_info::<std::net::SocketAddr>(),
                )
                .with_graceful_shutdown(graceful)
                .into_future(),
            ),
        };
    tokio::select! {
        result = serve => result.context("serving the simulated feed"),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            warn!(grace = ?SHUTDOWN_GRACE, "simulator connections still open after the grace period; closing");
            Ok(())
        }
    }
}

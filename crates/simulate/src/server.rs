//! The HTTP side: the endpoints, each tick's files rendered once and shared, conditional GET,
//! gzip.
//!
//! A tick's files are rendered lazily, by the first request that asks for them, on a blocking
//! thread; requests that arrive meanwhile wait for the same render. A file is published only
//! once whole, so no request sees a half-built one, and its gzip form is made once too, when a
//! client first asks for it.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::count::zone_key;
use super::{Layout, SimConfig, Simulator, files};
use apura_formats::model::Office;

/// How long in-flight responses may take to finish once shutdown is asked for: a 60 MB
/// councillor file to a slow client on a LAN is a matter of seconds.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Feed files change every tick and pollers revalidate them every time (the ingest's
/// conditional GET); `no-cache` lets a cache keep them but makes it ask first.
const FILE_CACHE_CONTROL: &str = "no-cache";

/// One file as served: body, validators, and its gzip form once someone asked for it.
#[derive(Debug)]
pub struct FeedFile {
    pub body: Bytes,
    etag: HeaderValue,
    etag_gzip: HeaderValue,
    last_modified: HeaderValue,
    modified_secs: u64,
    gzip: OnceCell<Bytes>,
}

impl FeedFile {
    /// A file whose strong `ETag` is `"<tag>"` (and `"<tag>-gzip"` for its gzip form).
    pub fn new(body: Bytes, tag: String, modified: SystemTime) -> Self {
        let gzip_tag = format!("{tag}-gzip");
        Self::tagged(body, &tag, &gzip_tag, modified)
    }

    /// A file whose `ETag` is `"<tag>"` in both forms, as the authority's files carry their
    /// generation id (`idg`) whatever the encoding.
    pub fn same_tag(body: Bytes, tag: &str, modified: SystemTime) -> Self {
        Self::tagged(body, tag, tag, modified)
    }

    fn tagged(body: Bytes, tag: &str, gzip_tag: &str, modified: SystemTime) -> Self {
        let header = |s: String| HeaderValue::from_str(&s).expect("ETags are ASCII");
        FeedFile {
            body,
            etag: header(format!("\"{tag}\"")),
            etag_gzip: header(format!("\"{gzip_tag}\"")),
            last_modified: header(httpdate::fmt_http_date(modified)),
            modified_secs: modified
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            gzip: OnceCell::new(),
        }
    }

    async fn gzipped(self: &Arc<Self>) -> Result<Bytes, ApiError> {
        if let Some(zipped) = self.gzip.get() {
            return Ok(zipped.clone());
        }
        let file = self.clone();
        detached(async move {
            file.gzip
                .get_or_try_init(|| {
                    let body = file.body.clone();
                    async move {
                        tokio::task::spawn_blocking(move || gzip(&body))
                            .await
                            .map_err(|e| ApiError::Internal(format!("gzip task: {e}")))?
                    }
                })
                .await
                .cloned()
        })
        .await
    }

    /// Whether the client's copy is current: `If-None-Match` (either form's tag, weak or
    /// strong), or else `If-Modified-Since`.
    fn not_modified(&self, headers: &HeaderMap) -> bool {
        let mut tags = headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .peekable();
        if tags.peek().is_some() {
            return tags.any(|t| {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t == "*" || t == self.etag || t == self.etag_gzip
            });
        }
        headers
            .get(IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
            .is_some_and(|since| self.modified_secs <= since.as_secs())
    }

    /// The response to a GET with `headers`: 304, or the body, gzipped if the client accepts it.
    pub(super) async fn respond(
        self: &Arc<Self>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let gzip = accepts_gzip(headers);
        let etag = if gzip { &self.etag_gzip } else { &self.etag };
        let mut response = if self.not_modified(headers) {
            StatusCode::NOT_MODIFIED.into_response()
        } else if gzip {
            let mut r = self.gzipped().await?.into_response();
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            self.body.clone().into_response()
        };
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(ETAG, etag.clone());
        h.insert(LAST_MODIFIED, self.last_modified.clone());
        h.insert(CACHE_CONTROL, HeaderValue::from_static(FILE_CACHE_CONTROL));
        h.insert(VARY, HeaderValue::from_static("accept-encoding"));
        Ok(response)
    }
}

/// Compress at the fastest level: the 25 MB councillor file takes ~0.1 s (release) and still
/// shrinks about fourfold; the default level would take several times longer for a few
/// percent less.
fn gzip(body: &[u8]) -> Result<Bytes, ApiError> {
    use std::io::Write;
    let started = Instant::now();
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map(|out| {
            debug!(bytes = body.len(), gzip = out.len(), elapsed = ?started.elapsed(), "gzipped");
            Bytes::from(out)
        })
        .map_err(|e| ApiError::Internal(format!("gzip: {e}")))
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, `gzip;q=0.5`, `*`; not `gzip;q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// Run `work` in its own task: a render or a compression that other requests wait for must
/// finish even if the client that started it hangs up (dropping its request future).
pub(super) async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::Internal(format!("task: {e}")))?
}

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

/// An error as the client sees it: a status and a short JSON body; details go to the log.
#[derive(Debug)]
pub(super) enum ApiError {
    NotFound(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::Internal(detail) => {
                error!(%detail, "simulator request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error".to_string(),
                )
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// The simulator's endpoints:
///
/// - `GET /municipalities.json`: the municipality list, `{"<IBGE>": {"n": name, "e": UF}}`.
/// - `GET /mayors.json`, `GET /councillors.json`: the consolidated file of the current tick.
/// - `GET /zones/zone-{uf}-{slug}.json`: the zone file of a capital or a city of more than
///   200,000 voters; 404 for any other.
/// - `GET /status`: `{"tick", "ticks", "percent", "finished", "seed", ..}`.
///
/// Files carry a strong `ETag` and `Last-Modified`, answer `If-None-Match` and
/// `If-Modified-Since` with 304, and come gzipped when the client accepts it.
pub fn router(sim: Arc<Simulator>) -> Router {
    Router::new()
        .route("/municipalities.json", get(municipalities))
        .route("/mayors.json", get(mayors))
        .route("/councillors.json", get(councillors))
        .route("/zones/{file}", get(zone))
        .route("/status", get(status))
        .fallback(not_found)
        .with_state(sim)
}

async fn municipalities(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    sim.municipalities_file.respond(&headers).await
}

async fn mayors(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    office_file(&sim, Office::Mayor)
        .await?
        .respond(&headers)
        .await
}

async fn councillors(
    State(sim): State<Arc<Simulator>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    office_file(&sim, Office::Councillor)
        .await?
        .respond(&headers)
        .await
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
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound("not found".to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    /// Build and gzip times; informative (run with `--release --nocapture`).
    #[test]
    fn build_and_gzip_time() {
        let started = Instant::now();
        let sim = Simulator::new(SimConfig::default());
        eprintln!("simulator built in {:?}", started.elapsed());
        for office in [Office::Mayor, Office::Councillor] {
            let body = sim.render_tick(30, office);
            let started = Instant::now();
            let zipped = gzip(&body).unwrap();
            eprintln!(
                "{office:?}: {} bytes gzipped to {} in {:?}",
                body.len(),
                zipped.len(),
                started.elapsed()
            );
        }
    }

    #[test]
    fn gzip_is_negotiated() {
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "gzip, deflate, br"
        )])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1.0, gzip;q=0.8"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "identity")])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn validators_are_checked() {
        let modified = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let file = FeedFile::new(Bytes::from_static(b"{}"), "abc-1-mayors".into(), modified);
        assert!(file.not_modified(&headers(&[("if-none-match", "\"abc-1-mayors\"")])));
        assert!(file.not_modified(&headers(&[(
            "if-none-match",
            "\"x\", W/\"abc-1-mayors-gzip\""
        )])));
        assert!(file.not_modified(&headers(&[("if-none-match", "*")])));
        assert!(!file.not_modified(&headers(&[("if-none-match", "\"abc-0-mayors\"")])));
        let date = httpdate::fmt_http_date(modified);
        let mut h = HeaderMap::new();
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&date).unwrap());
        assert!(file.not_modified(&h));
        let earlier = httpdate::fmt_http_date(modified - Duration::from_secs(1));
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&earlier).unwrap());
        assert!(!file.not_modified(&h));
        // If-None-Match wins over If-Modified-Since.
        h.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        h.insert(IF_MODIFIED_SINCE, HeaderValue::from_str(&date).unwrap());
        assert!(!file.not_modified(&h));
    }
}

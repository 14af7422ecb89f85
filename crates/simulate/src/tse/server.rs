//! The HTTP side of the TSE layout: the authority's paths, `ETag` = `idg`, 404 before a city's
//! first publication, and the authority's rate limit emulated per client address.
//!
//! - `GET /oficial/comum/config/ele-c.json`: the catalogue.
//! - `GET /oficial/ele2028/{ele}/config/mun-e{ele6}-cm.json`: the municipality configuration.
//! - `GET /oficial/ele2028/{ele}/dados/{uf}/{uf}-e{ele6}-ab.json`: a state's progress file.
//! - `GET /oficial/ele2028/{ele}/dados/{uf}/{uf}{mun5}[-z{zona4}]-c{cargo4}-e{ele6}-u.json`: a
//!   unified result.
//! - `GET /tse/status` (also `/status`): the clock, and what every client did: requests by
//!   kind and answer, the highest rate seen in any one second, blocks. Not rate limited.
//!
//! The rate limit counts every request of a client in the last second (a sliding window, as
//! "100 requests per second" is strictest read). Above the limit the client is blocked for
//! `block_for` and every request gets 429; a request during the block starts it again, as the
//! authority does. The 429 carries `Retry-After` with the time left, which the authority may
//! not send; a client must not rely on it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::{BASE_PATH, CATALOGUE_PATH, ELECTION, ELECTION_ROUND2};
use crate::Simulator;
use crate::http::{ApiError, FeedFile, detached, no_store, not_found};
use apura_formats::feed::tse::paths::{DataFile, parse_config_file, parse_data_file};

/// The server's state: the night, the limiter, the counters.
pub struct TseServer {
    sim: Arc<Simulator>,
    limiter: Limiter,
    stats: Stats,
}

/// Requests by kind and answer.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    not_modified: AtomicU64,
    not_found: AtomicU64,
    refused: AtomicU64,
    conditional: AtomicU64,
    catalogue: AtomicU64,
    config: AtomicU64,
    progress: AtomicU64,
    unified: AtomicU64,
    zone: AtomicU64,
    other: AtomicU64,
}

/// Per-client sliding one-second windows and blocks.
struct Limiter {
    limit: usize,
    block_for: Duration,
    clients: Mutex<HashMap<IpAddr, Client>>,
}

#[derive(Default)]
struct Client {
    /// Arrival times of the last second.
    window: VecDeque<Instant>,
    blocked_until: Option<Instant>,
    /// Most requests seen in any one second.
    max_rate: usize,
    /// Times this client went over the limit.
    blocks: u64,
}

impl Stats {
    /// Requests by what they asked for, by name.
    fn kinds(&self) -> serde_json::Map<String, serde_json::Value> {
        [
            ("catalogue", &self.catalogue),
            ("config", &self.config),
            ("progress", &self.progress),
            ("unified", &self.unified),
            ("zone", &self.zone),
            ("other", &self.other),
        ]
        .into_iter()
        .map(|(name, n)| (name.to_string(), n.load(Relaxed).into()))
        .collect()
    }
}

impl Limiter {
    /// Count a request of `ip`; `Err(left)` if the client is (now) blocked.
    fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let c = clients.entry(ip).or_default();
        while c
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            c.window.pop_front();
        }
        c.window.push_back(now);
        c.max_rate = c.max_rate.max(c.window.len());
        if c.blocked_until.is_some_and(|until| until > now) {
            // Asking during the block starts it again.
            c.blocked_until = Some(now + self.block_for);
            return Err(self.block_for);
        }
        if c.window.len() > self.limit {
            c.blocked_until = Some(now + self.block_for);
            c.blocks += 1;
            tracing::warn!(%ip, rate = c.window.len(), block_for = ?self.block_for, "client over the rate limit: blocked");
            return Err(self.block_for);
        }
        Ok(())
    }
}

/// The TSE layout's router (serve it with `into_make_service_with_connect_info` so that each
/// client is limited on its own; without it every request counts as one client's).
pub fn router(sim: Arc<Simulator>) -> Router {
    let options = sim.tse_options.clone();
    let state = Arc::new(TseServer {
        sim,
        limiter: Limiter {
            limit: options.rate_limit as usize,
            block_for: options.block_for,
            clients: Mutex::new(HashMap::new()),
        },
        stats: Stats::default(),
    });
    let base = BASE_PATH.trim_end_matches('/');
    Router::new()
        .route(CATALOGUE_PATH, get(catalogue))
        .route(&format!("{base}/{{ele}}/config/{{file}}"), get(config))
        .route(&format!("{base}/{{ele}}/dados/{{uf}}/{{file}}"), get(data))
        .route("/tse/status", get(status))
        .route("/status", get(status))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        // Outside the limiter: a measuring client on the ingest's address must not take a
        // share of the ingest's budget, nor be blocked with it.
        .route("/ticks", get(ticks))
        .with_state(state)
}

/// `GET /ticks`: the first round's ticks, as the consolidated layout lists them, and `changes`:
/// per topic, the listed ticks its city's file was written at. A city file written at a tick
/// carries that tick's `source_time`; a city that did not change at a tick keeps the time of
/// the tick it last changed.
async fn ticks(State(srv): State<Arc<TseServer>>) -> Response {
    let sim = srv.sim.clone();
    let listed = sim.ticks();
    let (Some(first), Some(last)) = (listed.first(), listed.last()) else {
        return crate::server::ticks_response(&sim, None);
    };
    let (first, last) = (first.tick, last.tick);
    // A few million section counts for a full list of cities: off the async threads.
    match tokio::task::spawn_blocking(move || {
        let changes = sim.tse_changes(first, last);
        crate::server::ticks_response(&sim, Some(changes))
    })
    .await
    {
        Ok(response) => response,
        Err(e) => ApiError::Internal(format!("listing changes: {e}")).into_response(),
    }
}

/// What a path asks for, for the counters.
fn kind<'a>(stats: &'a Stats, path: &str) -> &'a AtomicU64 {
    let name = path.rsplit('/').next().unwrap_or("");
    if path == CATALOGUE_PATH {
        &stats.catalogue
    } else if parse_config_file(name).is_some() {
        &stats.config
    } else {
        match parse_data_file(name) {
            Some(DataFile::Progress { .. }) => &stats.progress,
            Some(DataFile::Unified { zone: None, .. }) => &stats.unified,
            Some(DataFile::Unified { zone: Some(_), .. }) => &stats.zone,
            None => &stats.other,
        }
    }
}

async fn limit(State(srv): State<Arc<TseServer>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/tse/status" || path == "/status" {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
    let stats = &srv.stats;
    stats.requests.fetch_add(1, Relaxed);
    kind(stats, &path).fetch_add(1, Relaxed);
    let headers = req.headers();
    if headers.contains_key(IF_NONE_MATCH) || headers.contains_key(IF_MODIFIED_SINCE) {
        stats.conditional.fetch_add(1, Relaxed);
    }
    if let Err(left) = srv.limiter.admit(ip) {
        stats.refused.fetch_add(1, Relaxed);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"error": "rate limit exceeded: blocked"})),
        )
            .into_response();
        r.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from(left.as_secs_f64().ceil() as u64),
        );
        return r;
    }
    let response = next.run(req).await;
    match response.status() {
        StatusCode::OK => &stats.ok,
        StatusCode::NOT_MODIFIED => &stats.not_modified,
        StatusCode::NOT_FOUND => &stats.not_found,
        _ => &stats.other,
    }
    .fetch_add(1, Relaxed);
    response
}

fn no_such(what: &str) -> ApiError {
    ApiError::NotFound(format!("no such file: {what}"))
}

async fn catalogue(
    State(srv): State<Arc<TseServer>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sim = &srv.sim;
    let file = Arc::new(FeedFile::same_tag(
        sim.render_catalogue(),
        &sim.idg(0),
        sim.tse_modified(0),
    ));
    file.respond(&headers).await
}

async fn config(
    State(srv): State<Arc<TseServer>>,
    Path((ele, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sim = &srv.sim;
    if parse_config_file(&file).as_deref() != Some(ele.as_str()) {
        return Err(no_such(&file));
    }
    let body = sim.render_config(&ele).ok_or_else(|| no_such(&file))?;
    Arc::new(FeedFile::same_tag(body, &sim.idg(0), sim.tse_modified(0)))
        .respond(&headers)
        .await
}

/// `If-None-Match` names `idg`.
fn matches(headers: &HeaderMap, idg: &str) -> bool {
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
        .any(|t| t == idg || t == "*")
}

async fn data(
    State(srv): State<Arc<TseServer>>,
    Path((ele, uf, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sim = srv.sim.clone();
    let tick = sim.current_tick();
    let parsed = parse_data_file(&file).ok_or_else(|| no_such(&file))?;
    let (file_uf, file_ele) = match &parsed {
        DataFile::Progress { uf, election } => (uf, election),
        DataFile::Unified { uf, election, .. } => (uf, election),
    };
    if *file_uf != uf || *file_ele != ele {
        return Err(no_such(&file));
    }
    if let DataFile::Unified {
        municipality,
        zone,
        cargo,
        ..
    } = &parsed
    {
        // A conditional request for the current file is answered without writing it.
        let idg = sim
            .unified_idg(&ele, municipality, *cargo, zone.as_deref(), tick)
            .ok_or_else(|| no_such(&file))?;
        if matches(&headers, &idg) {
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            r.headers_mut().insert(
                ETAG,
                HeaderValue::from_str(&format!("\"{idg}\"")).expect("digits"),
            );
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            return Ok(r);
        }
    }
    // SP's councillor file has a thousand candidates: written off the async threads.
    let rendered = detached(async move {
        tokio::task::spawn_blocking(move || match parsed {
            DataFile::Progress { uf, election } => sim.render_progress(&election, &uf, tick),
            DataFile::Unified {
                municipality,
                zone,
                cargo,
                election,
                ..
            } => sim.render_unified(&election, &municipality, cargo, zone.as_deref(), tick),
        })
        .await
        .map_err(|e| ApiError::Internal(format!("rendering: {e}")))
    })
    .await?;
    let (body, idg, modified) = rendered.ok_or_else(|| no_such(&file))?;
    Arc::new(FeedFile::same_tag(body, &idg, modified))
        .respond(&headers)
        .await
}

async fn status(State(srv): State<Arc<TseServer>>) -> Response {
    let sim = &srv.sim;
    let s = &srv.stats;
    let tick = sim.current_tick();
    let (max_rate, blocked_clients, blocks, blocked_now) = {
        let clients = srv
            .limiter
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        (
            clients.values().map(|c| c.max_rate).max().unwrap_or(0),
            clients.values().filter(|c| c.blocks > 0).count(),
            clients.values().map(|c| c.blocks).sum::<u64>(),
            clients
                .values()
                .filter(|c| c.blocked_until.is_some_and(|u| u > now))
                .count(),
        )
    };
    let n = |a: &AtomicU64| a.load(Relaxed);
    let body = json!({
        "layout": "tse",
        "tick": tick,
        "ticks": sim.final_tick(),
        "first_round_ticks": sim.last_tick(),
        "finished": tick >= sim.final_tick(),
        "seed": sim.seed(),
        "interval_ms": sim.interval.as_millis() as u64,
        "duration_ms": sim.duration.as_millis() as u64,
        "base_path": BASE_PATH,
        "election": ELECTION,
        "election_round2": if sim.tse_options.second_round { ELECTION_ROUND2 } else { "" },
        "rate_limit": srv.limiter.limit,
        "block_for_ms": srv.limiter.block_for.as_millis() as u64,
        "requests": n(&s.requests),
        "ok": n(&s.ok),
        "not_modified": n(&s.not_modified),
        "not_found": n(&s.not_found),
        "refused": n(&s.refused),
        "conditional": n(&s.conditional),
        "kinds": s.kinds(),
        "max_rate": max_rate,
        "over_limit": max_rate > srv.limiter.limit,
        "blocked": blocked_clients > 0,
        "blocked_clients": blocked_clients,
        "blocked_now": blocked_now,
        "blocks": blocks,
    });
    no_store(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_blocks_above_the_limit_and_a_retry_restarts_the_block() {
        let limiter = Limiter {
            limit: 5,
            block_for: Duration::from_millis(300),
            clients: Mutex::new(HashMap::new()),
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..5 {
            assert!(limiter.admit(ip).is_ok());
        }
        assert!(limiter.admit(ip).is_err(), "the sixth in one second");
        assert!(
            limiter.admit(other).is_ok(),
            "other clients are not affected"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            limiter.admit(ip).is_err(),
            "still blocked; the block restarts"
        );
        std::thread::sleep(Duration::from_millis(200));
        assert!(limiter.admit(ip).is_err(), "restarted 200 ms ago");
        std::thread::sleep(Duration::from_millis(1_100));
        assert!(limiter.admit(ip).is_ok());
        let clients = limiter.clients.lock().unwrap();
        assert_eq!(clients[&ip].blocks, 1);
        assert_eq!(clients[&ip].max_rate, 8, "refused requests count too");
    }
}

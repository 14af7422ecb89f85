//! A simulator of the authority's files for the TSE tests, and an ingest polled by hand.
#![allow(dead_code)]

use std::sync::Arc;

use apura::bus::embedded::EmbeddedBus;
use apura::feed::municipalities::MunicipalityList;
use apura::ingest::{FeedArgs, Ingest};
use apura::metrics::Metrics;
use apura::model::Municipality;
use apura::simulate::tse::{BASE_PATH, ELECTION};
use apura::simulate::{
    Layout, ManualClock, SimConfig, Simulator, serve_simulator, synthetic_municipalities,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A simulator serving the TSE layout on `127.0.0.1:0`, stopped when dropped.
pub struct TseSim {
    pub sim: Arc<Simulator>,
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl TseSim {
    pub async fn start(config: SimConfig) -> TseSim {
        let sim = Arc::new(
            tokio::task::spawn_blocking(move || Simulator::new(config))
                .await
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(serve_simulator(sim.clone(), listener, shutdown.clone()));
        TseSim {
            sim,
            addr,
            shutdown,
        }
    }

    pub fn feed(&self) -> FeedArgs {
        FeedArgs::tse(format!("http://{}{BASE_PATH}", self.addr), ELECTION)
    }

    pub async fn status(&self) -> Value {
        reqwest::get(format!("http://{}/tse/status", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for TseSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The synthetic list cut to the capitals and every `step`-th other town: every state, São
/// Paulo's thousand councillor candidates, small towns.
pub fn cut_list(step: usize, capitals: &[&str]) -> MunicipalityList {
    let all = synthetic_municipalities();
    let items: Vec<Municipality> =
        all.iter()
            .filter(|m| !m.capital)
            .step_by(step)
            .chain(all.iter().filter(|m| {
                m.capital && (capitals.is_empty() || capitals.contains(&m.uf.as_str()))
            }))
            .map(|m| (**m).clone())
            .collect();
    MunicipalityList::new(items, "cut").unwrap()
}

pub fn tse_config(list: MunicipalityList, clock: Option<ManualClock>) -> SimConfig {
    SimConfig {
        layout: Layout::Tse,
        municipalities: Some(list),
        clock,
        ..SimConfig::default()
    }
}

/// An ingest on an embedded bus, polled by hand.
pub async fn ingest(feed: &FeedArgs) -> Ingest {
    Ingest::connect(
        feed,
        Arc::new(EmbeddedBus::new()),
        Arc::new(Metrics::default()),
    )
    .await
    .unwrap()
}

/// What [`FaultyProxy`] does to an answer of the simulator.
pub enum Fault {
    /// Passed on as it is.
    None,
    /// Its body cut in half, under the whole file's validators.
    Cut,
    /// Passed on after this long.
    Stall(std::time::Duration),
}

/// A proxy in front of a simulator that passes on conditional requests and their validators,
/// and does to each answer what `fault(path, status)` says. Stopped when dropped.
pub struct FaultyProxy {
    pub addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl FaultyProxy {
    pub async fn start(
        upstream: std::net::SocketAddr,
        fault: impl Fn(&str, u16) -> Fault + Clone + Send + Sync + 'static,
    ) -> FaultyProxy {
        let client = reqwest::Client::new();
        let pass = move |req: axum::extract::Request| {
            let (client, fault) = (client.clone(), fault.clone());
            async move {
                use axum::response::IntoResponse;
                let path = req.uri().path().to_string();
                let mut ask = client.get(format!("http://{upstream}{path}"));
                for name in ["if-none-match", "if-modified-since"] {
                    if let Some(v) = req.headers().get(name) {
                        ask = ask.header(name, v);
                    }
                }
                let resp = ask.send().await.unwrap();
                let status = resp.status().as_u16();
                let etag = resp.headers().get("etag").cloned();
                let mut body = resp.bytes().await.unwrap();
                match fault(&path, status) {
                    Fault::None => {}
                    Fault::Cut => body = body.slice(..body.len() / 2),
                    Fault::Stall(wait) => tokio::time::sleep(wait).await,
                }
                let mut out =
                    (axum::http::StatusCode::from_u16(status).unwrap(), body).into_response();
                if let Some(etag) = etag {
                    out.headers_mut().insert("etag", etag);
                }
                out
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(pass))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        FaultyProxy { addr, shutdown }
    }

    /// The TSE feed through the proxy.
    pub fn feed(&self) -> FeedArgs {
        FeedArgs::tse(format!("http://{}{BASE_PATH}", self.addr), ELECTION)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

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

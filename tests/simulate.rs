//! `apura simulate` over real HTTP: a server on port 0, read with reqwest as the ingest would.

mod common;

use std::io::Read;
use std::time::Duration;

use apura::feed::municipalities::MunicipalityList;
use apura::feed::{consolidated, zones};
use apura::model::Office;
use apura::simulate::{SimConfig, run};
use common::get_json_with;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderName, HeaderValue,
    IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A simulator serving on `127.0.0.1:0`, stopped when dropped.
struct TestServer {
    base: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    async fn start(config: SimConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(config, listener, shutdown.clone()));
        TestServer {
            base,
            shutdown,
            task: Some(task),
        }
    }

    /// A night that does not move during a test: ten minutes, a file every ten seconds.
    async fn still() -> Self {
        Self::start(SimConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A GET of `path` with `client`, sending `headers`.
    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> reqwest::Response {
        let mut request = client.get(self.url(path));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send().await.unwrap()
    }

    /// Stop and wait for a clean exit.
    async fn stop(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        task.await.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client that leaves `Accept-Encoding` to the test.
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

async fn list(server: &TestServer) -> MunicipalityList {
    let body = reqwest::get(server.url("/municipalities.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    MunicipalityList::parse(&body, "municipalities.json").unwrap()
}

#[tokio::test]
async fn files_carry_validators_and_answer_304() {
    let server = TestServer::still().await;
    let client = plain_client();
    let list = list(&server).await;
    assert_eq!(list.len(), 5_570);

    let first = server.get(&client, "/mayors.json", &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()[CONTENT_TYPE], "application/json");
    let etag = first.headers()[ETAG].clone();
    let modified = first.headers()[LAST_MODIFIED].clone();
    assert!(
        etag.to_str().unwrap().starts_with('"'),
        "strong ETag {etag:?}"
    );
    let body = first.bytes().await.unwrap();
    let feed = consolidated::parse(&body, "mayors.json", Office::Mayor, &list).unwrap();
    assert_eq!(feed.races.len(), 5_568);
    assert!(!feed.finished);

    let again = server
        .get(&client, "/mayors.json", &[(IF_NONE_MATCH, etag.clone())])
        .await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()[ETAG], etag);
    assert!(again.bytes().await.unwrap().is_empty());

    let since = server
        .get(&client, "/mayors.json", &[(IF_MODIFIED_SINCE, modified)])
        .await;
    assert_eq!(since.status(), StatusCode::NOT_MODIFIED);

    let other = server
        .get(
            &client,
            "/mayors.json",
            &[(
                IF_NONE_MATCH,
                HeaderValue::from_static("\"something-else\""),
            )],
        )
        .await;
    assert_eq!(other.status(), StatusCode::OK);

    let councillors = server.get(&client, "/councillors.json", &[]).await;
    assert_eq!(councillors.status(), StatusCode::OK);
    assert_ne!(councillors.headers()[ETAG], etag);
    let body = councillors.bytes().await.unwrap();
    let feed = consolidated::parse(&body, "councillors.json", Office::Councillor, &list).unwrap();
    assert_eq!(feed.races.len(), 5_568);
    server.stop().await;
}

#[tokio::test]
async fn gzip_when_the_client_asks() {
    let server = TestServer::still().await;
    let client = plain_client();
    let identity = server.get(&client, "/mayors.json", &[]).await;
    assert!(identity.headers().get(CONTENT_ENCODING).is_none());
    let identity_etag = identity.headers()[ETAG].clone();
    let identity = identity.bytes().await.unwrap();

    let gzipped = server
        .get(
            &client,
            "/mayors.json",
            &[(ACCEPT_ENCODING, HeaderValue::from_static("gzip, deflate"))],
        )
        .await;
    assert_eq!(gzipped.headers()[CONTENT_ENCODING], "gzip");
    let gzip_etag = gzipped.headers()[ETAG].clone();
    assert_ne!(
        gzip_etag, identity_etag,
        "each representation has its own tag"
    );
    let compressed = gzipped.bytes().await.unwrap();
    assert!(compressed.len() * 2 < identity.len());
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, identity);

    // Either tag revalidates either form: they are the same content.
    let revalidated = server
        .get(
            &client,
            "/mayors.json",
            &[
                (ACCEPT_ENCODING, HeaderValue::from_static("gzip")),
                (IF_NONE_MATCH, identity_etag),
            ],
        )
        .await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()[ETAG], gzip_etag);

    // A client that decompresses on its own sees plain JSON.
    let auto = reqwest::get(server.url("/municipalities.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    MunicipalityList::parse(&auto, "municipalities.json").unwrap();
    server.stop().await;
}

#[tokio::test]
async fn zone_files_and_unknown_paths() {
    let server = TestServer::still().await;
    let client = plain_client();

    let sp = server
        .get(&client, "/zones/zone-sp-sao-paulo.json", &[])
        .await;
    assert_eq!(sp.status(), StatusCode::OK);
    assert!(sp.headers().contains_key(ETAG));
    let z = zones::parse(&sp.bytes().await.unwrap(), "zone-sp-sao-paulo.json").unwrap();
    assert!(z.zones.len() >= 50);
    let sum: u64 = z.zones.iter().map(|zone| zone.turnout).sum();
    assert_eq!(sum, z.total.turnout);

    for path in [
        "/zones/zone-sp-nowhere-at-all.json",
        "/zones/zone-df-brasilia.json",
        "/zones/sao-paulo.json",
        "/no/such/file.json",
    ] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json", "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_night_moves_on_to_the_final_files() {
    let server = TestServer::start(SimConfig {
        duration: Duration::from_secs(2),
        interval: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await;
    let client = plain_client();
    let list = list(&server).await;

    let first = server.get(&client, "/mayors.json", &[]).await;
    let first_etag = first.headers()[ETAG].clone();
    let first_percent = consolidated::parse(
        &first.bytes().await.unwrap(),
        "mayors.json",
        Office::Mayor,
        &list,
    )
    .unwrap()
    .percent;

    // Poll as the ingest does, until the final file is out (or give up well after the end).
    let mut etags = vec![first_etag];
    let mut last_percent = first_percent;
    let mut finished = None;
    for _ in 0..200 {
        let r = server
            .get(
                &client,
                "/mayors.json",
                &[(IF_NONE_MATCH, etags.last().unwrap().clone())],
            )
            .await;
        if r.status() == StatusCode::OK {
            let etag = r.headers()[ETAG].clone();
            assert!(!etags.contains(&etag), "a new tick has a new ETag");
            etags.push(etag);
            let feed =
                consolidated::parse(&r.bytes().await.unwrap(), "m", Office::Mayor, &list).unwrap();
            assert!(feed.percent >= last_percent);
            last_percent = feed.percent;
            if feed.finished {
                finished = Some(feed);
                break;
            }
        } else {
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let feed = finished.expect("the count finished");
    assert!(etags.len() >= 2);
    assert_eq!(feed.percent, 100.0);
    assert!(feed.races.iter().all(|r| r.finished));

    let status = get_json_with(&client, server.url("/status")).await;
    assert_eq!(status["finished"], true);
    assert_eq!(status["tick"], 10);
    assert_eq!(status["ticks"], 10);
    assert_eq!(status["percent"], 100.0);
    assert_eq!(status["seed"], 2026);
    server.stop().await;
}

/// The real municipality lists of `../shared/data` (the consolidated JSON and the TSE CSV) play
/// too: 5,568 races, Brasília and Fernando de Noronha left out. Reads the reference data only
/// where it is; skipped with a message when the folder is absent.
#[test]
fn real_municipality_lists_play() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    for file in ["seed-cities.json", "municipios_brasileiros_tse.csv"] {
        let path = data.join(file);
        if !path.exists() {
            eprintln!("skipped: {} is absent", path.display());
            continue;
        }
        let args = apura::simulate::SimulateArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            seed: 1,
            duration: Duration::from_secs(60).into(),
            interval: Duration::from_secs(1).into(),
            municipalities: Some(path),
            layout: apura::simulate::Layout::Consolidated,
            rate_limit: 100,
            block_for: Duration::from_secs(600).into(),
            second_round: false,
            missing_office: None,
            write: None,
            at: 100.0,
        };
        let sim = apura::simulate::Simulator::new(SimConfig::from_args(&args).unwrap());
        assert_eq!(sim.municipalities().len(), 5_570, "{file}");
        let bytes = sim.render_tick(sim.last_tick(), Office::Mayor);
        let feed = consolidated::parse(&bytes, file, Office::Mayor, sim.municipalities()).unwrap();
        assert_eq!(feed.races.len(), 5_568, "{file}");
        assert!(feed.finished);
        let sp = sim
            .render_zone(30, "sp", "sao-paulo")
            .expect("São Paulo has zones");
        zones::parse(&sp, file).unwrap();
    }
}

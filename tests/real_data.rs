//! The real reference files of `../shared/data` (read in place, never copied): skipped with a
//! message when the folder is absent.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;

fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("APURA_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if dir.join("seed-mayors-2020-excerpt.json").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: no reference data at {} (set APURA_SHARED_DATA)",
            dir.display()
        );
        None
    }
}

/// "8.441.886" → 8441886, read independently of apura's parser.
fn int(s: &serde_json::Value) -> u64 {
    s.as_str().unwrap().replace('.', "").parse().unwrap()
}

/// Serve a folder over HTTP on port 0 (a plain static file server).
async fn static_server(dir: PathBuf) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Run the real `apura run` binary against the reference files served over HTTP, and check
/// every mayor document against the source numbers, and the São Paulo zone document.
#[tokio::test]
async fn apura_run_serves_the_real_excerpt_with_the_source_numbers() {
    let Some(dir) = shared_data() else { return };
    let files = static_server(dir.clone()).await;
    let port = common::process::free_addr().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_apura"))
        .args([
            "run",
            "--feed",
            &format!("http://{files}/seed-mayors-2020-excerpt.json"),
            "--municipalities",
            &format!("http://{files}/seed-cities.json"),
            "--zones-url-template",
            &format!("http://{files}/seed-zone-{{uf}}-{{slug}}.json"),
            "--zones-interval",
            "200ms",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_ready(addr).await;

    let source: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("seed-mayors-2020-excerpt.json")).unwrap())
            .unwrap();
    let names: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("seed-cities.json")).unwrap()).unwrap();
    let municipios = source["municipios"].as_object().unwrap();
    assert_eq!(municipios.len(), 15);
    let client = reqwest::Client::new();
    for (ibge, city) in municipios {
        let entry = &names[ibge];
        let name = entry["n"].as_str().unwrap();
        let uf = entry["e"].as_str().unwrap().to_lowercase();
        let topic = format!("mayors-{uf}-{}", apura::model::slug(name));
        let resp = client
            .get(format!("http://{addr}/cities/{topic}.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{topic}");
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            doc["city"]["name"], name,
            "names come from the list, not the results file"
        );
        assert_eq!(doc["totals"]["turnout"], int(&city["t"]), "{topic}");
        assert_eq!(doc["totals"]["blank"], int(&city["b"]), "{topic}");
        assert_eq!(doc["totals"]["null"], int(&city["n"]), "{topic}");
        assert_eq!(doc["totals"]["abstentions"], int(&city["a"]), "{topic}");
        let mut want: Vec<(String, u64)> = city["c"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["nc"].as_str().unwrap().to_string(), int(&c["v"])))
            .collect();
        let mut got: Vec<(String, u64)> = doc["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["votes"].as_u64().unwrap(),
                )
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{topic}");
        let sum: u64 = got.iter().map(|c| c.1).sum();
        assert_eq!(
            doc["totals"]["valid"], sum,
            "{topic}: candidate votes add up to the valid total"
        );
    }
    let olho = get_json_with(
        &client,
        format!("http://{addr}/cities/mayors-al-olho-d-agua-grande.json"),
    )
    .await;
    assert_eq!(olho["city"]["name"], "Olho d'Água Grande");

    // The zone file of São Paulo, the only one there is; the other 14 cities have none.
    let zone_src: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("seed-zone-sp-sao-paulo.json")).unwrap())
            .unwrap();
    let zones = get_json_once_served(
        &client,
        &format!("http://{addr}/cities/zones-sp-sao-paulo.json"),
        Duration::from_millis(50),
        Duration::from_secs(10),
    )
    .await;
    let zones = zones.expect("zones-sp-sao-paulo is published");
    let src_zones = zone_src["zonas"].as_object().unwrap();
    assert_eq!(zones["zones"].as_array().unwrap().len(), src_zones.len());
    for z in zones["zones"].as_array().unwrap() {
        let src = &src_zones[z["zone"].as_str().unwrap()];
        assert_eq!(z["turnout"], int(&src["total"]));
        assert_eq!(z["blank"], int(&src["brancos"]));
        let src_sum: u64 = src["candidatos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| int(&c["total_votos_validos"]))
            .sum();
        assert_eq!(z["valid"], src_sum);
    }
    assert_eq!(zones["total"]["turnout"], int(&zone_src["total"]["total"]));
    let r = client
        .get(format!(
            "http://{addr}/cities/zones-al-olho-d-agua-grande.json"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("ERROR"),
        "no error was logged (cities without a zone file are skipped quietly):\n{log}"
    );
}

/// The TSE CSV list gives the same slugs for the 15 cities.
#[test]
fn the_tse_csv_list_gives_the_contract_slugs() {
    let Some(dir) = shared_data() else { return };
    let csv = std::fs::read(dir.join("municipios_brasileiros_tse.csv")).unwrap();
    let list = apura::feed::municipalities::MunicipalityList::parse(&csv, "csv").unwrap();
    assert_eq!(list.len(), 5570);
    let json = std::fs::read(dir.join("seed-cities.json")).unwrap();
    let from_json = apura::feed::municipalities::MunicipalityList::parse(&json, "json").unwrap();
    assert_eq!(from_json.len(), 5570);
    assert_eq!(list.iter().filter(|m| m.capital).count(), 27);
    assert_eq!(from_json.iter().filter(|m| m.capital).count(), 27);
    let olho = list.get(2705903).unwrap();
    assert_eq!(olho.slug, "olho-d-agua-grande");
    assert_eq!(list.get(3550308).unwrap().tse.as_deref(), Some("71072"));
    let differ: Vec<String> = from_json
        .iter()
        .filter(|m| list.get(m.ibge).map(|c| &c.slug) != Some(&m.slug))
        .map(|m| format!("{} {}", m.ibge, m.name))
        .collect();
    assert!(
        differ.len() < 60,
        "the two lists mostly agree on slugs: {differ:?}"
    );
}

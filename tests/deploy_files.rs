//! `compose.yaml`, `deploy/nginx.conf` and the `Dockerfile` against the command line: every
//! flag and variable they use is one `apura <command> --help` lists.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use common::process::BIN;

#[test]
fn compose_and_dockerfile_use_only_options_the_command_line_has() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    let services = compose_services(&compose);
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "gateway-a",
            "gateway-b",
            "ingest-a",
            "ingest-b",
            "lb",
            "redis",
            "simulate"
        ]
    );
    let mut helps: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut checked = 0;
    for (name, service) in &services {
        if !service.build {
            continue;
        }
        assert_eq!(service.image.as_deref(), Some("apura:latest"), "{name}");
        let (command, flags) = service
            .command
            .split_first()
            .unwrap_or_else(|| panic!("{name}: no command"));
        let help = helps
            .entry(command.clone())
            .or_insert_with(|| help_words(command));
        for flag in flags {
            let flag = flag.split('=').next().unwrap();
            if flag.starts_with("--") {
                assert!(help.contains(flag), "{name}: apura {command} has no {flag}");
                checked += 1;
            }
        }
        for (key, value) in &service.environment {
            assert!(key.starts_with("APURA_"), "{name}: {key} is not apura's");
            assert!(help.contains(key), "{name}: apura {command} reads no {key}");
            checked += 1;
            // Hosts named in URLs are services of this file.
            if let Some((_, rest)) = value.split_once("://") {
                let host = rest.split([':', '/']).next().unwrap();
                assert!(
                    services.contains_key(host),
                    "{name}: {key} names {host}, not a service"
                );
            }
        }
        // The health check asks the port the command listens on.
        let listen = ["APURA_LISTEN", "APURA_SIM_LISTEN", "APURA_METRICS_LISTEN"]
            .iter()
            .find_map(|k| service.environment.get(*k))
            .unwrap_or_else(|| panic!("{name}: listens nowhere"));
        let port = listen.rsplit(':').next().unwrap();
        let probe = service.healthcheck.join(" ");
        assert!(
            probe.contains(&format!("127.0.0.1:{port}/")),
            "{name}: health check {probe:?} is not on port {port}"
        );
    }
    assert!(checked >= 30, "only {checked} options checked");
    assert_eq!(services["ingest-a"].command, services["ingest-b"].command);
    assert_eq!(
        services["ingest-a"].environment,
        services["ingest-b"].environment
    );
    assert_eq!(
        services["gateway-a"].environment,
        services["gateway-b"].environment
    );
    assert_eq!(services["ingest-a"].command, ["ingest"]);
    assert_eq!(services["gateway-a"].command, ["gateway"]);

    // nginx sends traffic to both gateways, on the port they listen on.
    let nginx = std::fs::read_to_string(root.join("deploy/nginx.conf")).unwrap();
    for gw in ["gateway-a", "gateway-b"] {
        let port = services[gw].environment["APURA_LISTEN"]
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        assert!(
            nginx.contains(&format!("server {gw}:{port} ")),
            "nginx.conf has no upstream {gw}:{port}"
        );
    }
    assert!(compose.contains("file: ./deploy/nginx.conf"));

    // The image's defaults: its ENV and its health check speak to the default command.
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let cmd = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).expect("CMD in exec form");
    let help = help_words(&cmd[0]);
    let words = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("APURA_"))
            .map(str::to_string)
            .collect()
    };
    let env_names = words(&dockerfile);
    assert!(env_names.len() >= 3, "{env_names:?}");
    for name in &env_names {
        assert!(
            help.contains(name),
            "Dockerfile: apura {} reads no {name}",
            cmd[0]
        );
    }
    for flag in &cmd[1..] {
        assert!(help.contains(flag.split('=').next().unwrap()), "{flag}");
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"apura\"]"));
    assert!(dockerfile.contains("USER apura"));
    assert!(dockerfile.contains("HEALTHCHECK"));
}

/// What the test reads of a compose service.
#[derive(Debug, Default)]
struct Service {
    image: Option<String>,
    build: bool,
    command: Vec<String>,
    environment: BTreeMap<String, String>,
    healthcheck: Vec<String>,
}

/// The services of compose.yaml, read line by line: this file's layout (two-space indents,
/// `command:` and `test:` as flow sequences, `environment:` as a map or a list).
fn compose_services(yaml: &str) -> BTreeMap<String, Service> {
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    let mut section = String::new();
    for line in yaml.lines() {
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            in_services = text == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if indent == 2 {
            let name = text.strip_suffix(':').expect("a service name").to_string();
            services.insert(name.clone(), Service::default());
            current = Some(name);
            continue;
        }
        let service = services.get_mut(current.as_ref().unwrap()).unwrap();
        let (key, value) = match text.split_once(':') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (text, ""),
        };
        if indent == 4 {
            section = key.to_string();
            match key {
                "image" => service.image = Some(value.to_string()),
                "build" => service.build = true,
                "command" => {
                    service.command = serde_json::from_str(value).expect("command: [..]");
                }
                _ => {}
            }
        } else if indent == 6 && section == "environment" {
            let (key, value) = match text.strip_prefix("- ") {
                Some(item) => item.split_once('=').unwrap_or((item, "")),
                None => (key, value),
            };
            service
                .environment
                .insert(key.to_string(), value.trim_matches('"').to_string());
        } else if indent == 6 && section == "healthcheck" && key == "test" {
            service.healthcheck = serde_json::from_str(value).expect("test: [..]");
        }
    }
    services
}

/// The flags (`--feed`) and environment variables (`APURA_FEED`) `apura <command> --help` lists.
fn help_words(command: &str) -> BTreeSet<String> {
    let out = std::process::Command::new(BIN)
        .args([command, "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "apura {command} --help");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| w.starts_with("--") || w.starts_with("APURA_"))
        .map(str::to_string)
        .collect()
}

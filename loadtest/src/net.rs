//! Loopback plumbing: source address lists, connecting from a chosen source, target checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use tokio::net::{TcpSocket, TcpStream};

/// Parse `127.0.0.2-127.0.0.17` (a range) or `127.0.0.2,127.0.0.3` (a list), or a mix.
///
/// Each source address gives the kernel its own ~28,000 ephemeral ports (the default
/// `ip_local_port_range` 32768–60999), so 200,000 client sockets need at least 8 of them.
pub fn parse_sources(spec: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().with_context(|| format!("source {a:?}"))?;
            let b: Ipv4Addr = b.trim().parse().with_context(|| format!("source {b:?}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_536 {
                bail!("source range {part:?} is empty or too large");
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().with_context(|| format!("source {part:?}"))?);
        }
    }
    if out.is_empty() {
        bail!("no source addresses in {spec:?}");
    }
    Ok(out)
}

/// Every address must be on loopback: this tool only ever loads servers on this machine.
pub fn ensure_loopback(what: &str, ip: IpAddr) -> anyhow::Result<()> {
    if !ip.is_loopback() {
        bail!("{what} {ip} is not a loopback address (127.0.0.0/8 or ::1); refusing");
    }
    Ok(())
}

/// Connect to `target` from `source` (port chosen by the kernel).
/// Open a stream: connect from `source`, send `request`, read the response head. The stream,
/// the bytes read after the head, and the head; the failure as a subscriber counts it.
pub async fn open_stream(
    source: Ipv4Addr,
    target: SocketAddr,
    request: &str,
) -> Result<(TcpStream, Vec<u8>, crate::http::Head), crate::delivery::Failure> {
    use crate::delivery::Failure;
    use tokio::io::AsyncWriteExt;
    let mut s = connect_from(source, target)
        .await
        .map_err(|_| Failure::Connect)?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|_| Failure::Handshake)?;
    let mut raw = Vec::with_capacity(crate::http::READ_CHUNK);
    let head = crate::http::read_head(&mut s, &mut raw)
        .await
        .map_err(|_| Failure::Handshake)?;
    Ok((s, raw, head))
}

pub async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Lets a new run reuse ports whose previous sockets still sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Resolve `host:port` (IPv4 loopback only).
pub fn parse_target(s: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = s
        .parse()
        .with_context(|| format!("target {s:?}: give IP:PORT, e.g. 127.0.0.1:8080"))?;
    ensure_loopback("target", addr.ip())?;
    if !addr.is_ipv4() {
        bail!("target {addr}: IPv4 loopback only (source addresses are 127.x)");
    }
    Ok(addr)
}

/// Split `total` into `parts` shares that differ by at most one; share `i`.
pub fn share(total: usize, parts: usize, i: usize) -> usize {
    total / parts + usize::from(i < total % parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_ranges_and_lists() {
        let v = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[3], Ipv4Addr::new(127, 0, 0, 9));
        assert!(parse_sources("").is_err());
        assert!(parse_sources("127.0.0.5-127.0.0.4").is_err());
    }

    #[test]
    fn targets_must_be_loopback() {
        assert!(parse_target("127.0.0.1:8080").is_ok());
        assert!(parse_target("10.0.0.1:80").is_err());
    }

    #[test]
    fn shares_add_up() {
        let s: usize = (0..7).map(|i| share(100_003, 7, i)).sum();
        assert_eq!(s, 100_003);
    }
}

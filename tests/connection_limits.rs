//! Connection limits within one gateway: every request head within one deadline and idle
//! kept-alive connections closed; every connection counted against the cap, with room made by
//! closing the oldest waiting ones; per-address shares, also behind a PROXY protocol balancer.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use common::net::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head must arrive whole within `--head-timeout` (from the accept for the first
/// request, from its first byte for a later one), and a kept-alive connection may wait idle
/// `--idle-timeout`; trickling one byte at a time does not extend either.
#[tokio::test]
async fn request_heads_and_idle_connections_have_one_deadline_each() {
    let mut args = gateway_args();
    args.head_timeout = Duration::from_secs(2);
    args.idle_timeout = Duration::from_secs(3);
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let head = b"GET /events?topics=brazil HTTP/1.1\r\nHost: g\r\n\r\n";

    // One byte every 300 ms: the deadline counts from the accept, not from the last byte.
    let t = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    for b in head.iter().take(20) {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let lived = closed.expect("closed") - t;
    assert!(got.is_empty(), "{got}");
    assert!(
        lived >= Duration::from_millis(1_900) && lived <= Duration::from_secs(2) + SLACK,
        "a trickling head lived {lived:?}"
    );

    // A lone byte, and a head without its final CRLF.
    for partial in [&b"X"[..], b"GET /brazil.json HTTP/1.1\r\nHost: g\r\n"] {
        let t = Instant::now();
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
        let lived = closed.expect("closed") - t;
        assert!(
            lived <= Duration::from_secs(2) + SLACK,
            "{partial:?} lived {lived:?}"
        );
    }

    // A kept-alive connection: idle for up to 3 s, then closed.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /brazil.json HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let idle = closed.expect("closed") - t;
    assert!(
        idle >= Duration::from_millis(2_900) && idle <= Duration::from_secs(3) + SLACK,
        "idle for {idle:?}"
    );

    // A second request trickled on a kept-alive connection: 2 s from its first byte.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /brazil.json HTTP/1.1\r\nHost: g\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 8192];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    let mut lived = None;
    for b in head.iter() {
        if s.write_all(&[*b]).await.is_err() {
            lived = Some(t.elapsed());
            break;
        }
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                lived = Some(t.elapsed());
                break;
            }
            _ => {}
        }
    }
    let lived = lived.expect("the trickled second head was cut");
    assert!(
        lived <= Duration::from_secs(2) + SLACK,
        "second head lived {lived:?}"
    );

    let metrics = &gw.hub.metrics;
    assert!(metrics.head_timeouts.load(Relaxed) >= 4);
    assert!(metrics.idle_timeouts.load(Relaxed) >= 1);
}

/// At the connection cap, a new connection closes the oldest one still waiting for its
/// request (silent, or idle after a response); when every connection carries a stream, the new
/// one gets 503 at the door.
#[tokio::test]
async fn at_the_cap_the_oldest_waiting_connection_makes_room_else_503() {
    let mut args = gateway_args();
    // Four connections, of which three streams (the cap less a twentieth, at least one).
    args.max_connections = 4;
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let metrics = gw.hub.metrics.clone();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(gw.addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually(|| metrics.open_connections.load(Relaxed) == 4).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut sse = Sse::connect(&gw.url("/events?topics=brazil"), None).await;
        sse.next(Duration::from_secs(5)).await.unwrap();
        streams.push(sse);
    }
    // Each stream took the place of the oldest silent connection, in order.
    let last = silent.pop().unwrap();
    for mut s in silent {
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(2)).await;
        assert!(closed.is_some(), "an older silent connection was kept");
    }
    let mut last = last;
    let (_, closed) = read_until_closed(&mut last, Duration::from_millis(300)).await;
    assert!(
        closed.is_none(),
        "the newest silent connection was closed first"
    );
    assert_eq!(metrics.connections_evicted.load(Relaxed), 3);

    // A GET takes the last silent one's place; once answered, its kept-alive connection waits
    // and is the one the next newcomer replaces.
    let get = b"GET /brazil.json HTTP/1.1\r\nHost: g\r\n\r\n";
    let mut held = TcpStream::connect(gw.addr).await.unwrap();
    held.write_all(get).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = held.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let (_, closed) = read_until_closed(&mut last, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the silent connection was kept");
    let mut newcomer = TcpStream::connect(gw.addr).await.unwrap();
    newcomer.write_all(get).await.unwrap();
    let n = newcomer.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let (_, closed) = read_until_closed(&mut held, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the idle connection was kept");
    assert_eq!(metrics.connections_evicted.load(Relaxed), 5);
    // Streams never make room.
    for mut sse in streams {
        assert!(!sse.ended(Duration::from_millis(10)).await);
    }

    // One connection, one stream: nothing waits, a newcomer gets 503 at the door.
    let mut args = gateway_args();
    args.max_connections = 1;
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let mut sse = Sse::connect(&gw.url("/events?topics=brazil"), None).await;
    sse.next(Duration::from_secs(5)).await.unwrap();
    assert_overloaded(reqwest::get(gw.url("/brazil.json")).await.unwrap()).await;
    assert_eq!(gw.hub.metrics.connections_refused.load(Relaxed), 1);
    assert!(!sse.ended(Duration::from_millis(10)).await);
}

/// One address holds at most its share of the connections and takes at most its share of the
/// stream rate; other addresses are not affected. Behind a PROXY protocol balancer, the share
/// is counted by the address the header names; a connection without the header is closed.
#[tokio::test]
async fn one_address_gets_its_share_also_behind_a_proxy_protocol_balancer() {
    let mut args = gateway_args();
    args.max_connections = 100;
    args.max_connect_rate = 100;
    args.address_share = 10;
    let gw = Gateway::start(args.clone()).await;
    gw.publish(&[("brazil", 1)]).await;
    let events = gw.url("/events?topics=brazil");

    // Connections: 10 from 127.0.0.2, the 11th refused; 127.0.0.4 still gets in.
    let from2 = client_from(source(2));
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(Sse::try_connect_with(&from2, &events, None).await.unwrap());
    }
    let refused = Sse::try_connect_with(&from2, &events, None).await;
    assert_eq!(
        refused.err().as_deref(),
        Some("status 503 Service Unavailable")
    );
    Sse::try_connect_with(&client_from(source(4)), &events, None)
        .await
        .unwrap();
    drop(held);

    // Rate: 127.0.0.5 opening and closing streams as fast as it can gets ~10 a second (its
    // share of 100) even with its connections closed in between; 127.0.0.6 is unaffected.
    let from5 = client_from(source(5));
    let mut admitted = 0;
    for _ in 0..40 {
        if Sse::try_connect_with(&from5, &events, None).await.is_ok() {
            admitted += 1;
        }
    }
    assert!(
        (10..=13).contains(&admitted),
        "{admitted} admitted from one address"
    );
    let from6 = client_from(source(6));
    for _ in 0..10 {
        Sse::try_connect_with(&from6, &events, None).await.unwrap();
    }

    // Behind a balancer speaking the PROXY protocol: the header names the client.
    drop(gw);
    args.proxy_protocol = true;
    let gw = Gateway::start(args).await;
    gw.publish(&[("brazil", 1)]).await;
    let request = b"GET /events?topics=brazil HTTP/1.1\r\nHost: g\r\n\r\n";
    let v1 = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 8080\r\n").into_bytes();
    let v2 = |client: [u8; 4]| {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        h.extend_from_slice(&client);
        h.extend_from_slice(&[127, 0, 0, 1, 0x9c, 0x40, 0x1f, 0x90]);
        h
    };
    let open = |header: Vec<u8>| async move {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(&[header, request.to_vec()].concat())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        (String::from_utf8_lossy(&buf[..n]).into_owned(), s)
    };
    let mut held = Vec::new();
    for i in 0..10 {
        let header = if i % 2 == 0 {
            v1("203.0.113.7")
        } else {
            v2([203, 0, 113, 7])
        };
        let (got, s) = open(header).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        held.push(s);
    }
    // The same client through either version is over its share; another client is not,
    // though every connection comes from the balancer's one address.
    let (got, _) = open(v2([203, 0, 113, 7])).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("from your address"), "{got}");
    let (got, _) = open(v1("198.51.100.9")).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // No header, or a malformed one: closed without an answer, and counted.
    for bad in [&b""[..], b"PROXY TCP4 not-an-address 127.0.0.1 1 2\r\n"] {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(&[bad, request].concat()).await.unwrap();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(got.is_empty() && closed.is_some(), "{got}");
    }
    assert_eq!(gw.hub.metrics.proxy_header_errors.load(Relaxed), 2);
}

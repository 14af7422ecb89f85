//! Raw TCP for the connection tests: sockets from chosen loopback addresses, reads until the
//! server closes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Slack for timings on a shared machine.
pub const SLACK: Duration = Duration::from_millis(1_500);

pub fn source(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// A TCP connection to `addr` leaving from `from`.
pub async fn connect_from(addr: SocketAddr, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes the connection (or `wait` passes), and when
/// it closed (None: still open).
pub async fn read_until_closed(s: &mut TcpStream, wait: Duration) -> (String, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(_) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(Instant::now()),
                );
            }
        }
    }
}

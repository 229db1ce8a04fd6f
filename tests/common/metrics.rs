//! Reading the daemon's metrics endpoint in tests: a free loopback port to configure
//! `[metrics] address` with, a plain `GET /metrics`, and one series' value.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A loopback address with a port nothing listens on right now.
#[allow(dead_code)] // each test binary compiles this module; not all call it
pub fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `GET /metrics` with a plain HTTP/1.0 request; the body.
#[allow(dead_code)]
pub fn scrape(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_owned()
}

/// The value of `series` (name with labels, exactly as exposed); 0 when absent.
#[allow(dead_code)]
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

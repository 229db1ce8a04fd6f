//! A TCP proxy that adds latency, for benchmarks over a slow link (the kernel's netem
//! qdisc is not always available).
//!
//! ```text
//! delay-proxy LISTEN TARGET DELAY_MS      # e.g. 127.0.0.1:5001 10.231.7.2:5000 10
//! ```
//!
//! Accepts connections on LISTEN and forwards each to TARGET, in both directions, every byte
//! `DELAY_MS` after it arrived: a round trip through the proxy takes `2 * DELAY_MS` longer.
//! Data keeps flowing while earlier data waits, so bandwidth is not reduced. The connection
//! to TARGET is opened one round trip (`2 * DELAY_MS`) after accepting, as a TCP handshake
//! over the slow link would take. Prints `listening on ADDR` once ready.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};

/// Largest piece read at once.
const READ_BYTES: usize = 64 * 1024;
/// Pieces waiting out their delay per direction (at most 16 MiB).
const QUEUE: usize = 256;

#[tokio::main]
async fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, target, delay_ms] = args.as_slice() else {
        eprintln!("usage: delay-proxy LISTEN TARGET DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay_ms.parse().map_err(io::Error::other)?);
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (client, peer) = listener.accept().await?;
        let target = target.clone();
        tokio::spawn(async move {
            if let Err(error) = serve(client, &target, delay).await {
                eprintln!("delay-proxy: {peer} -> {target}: {error}");
            }
        });
    }
}

/// Forwards one connection until both directions are closed.
async fn serve(client: TcpStream, target: &str, delay: Duration) -> io::Result<()> {
    sleep(2 * delay).await;
    let upstream = TcpStream::connect(target).await?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::try_join!(
        forward(client_read, upstream_write, delay),
        forward(upstream_read, client_write, delay),
    )?;
    Ok(())
}

/// Copies `from` to `to`, writing each piece `delay` after it was read; passes the
/// end of the stream on as a write shutdown.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
) -> io::Result<()> {
    let (queue, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let read = async move {
        let mut buf = vec![0; READ_BYTES];
        loop {
            let n = from.read(&mut buf).await?;
            // A closed queue means the writer failed; its error is the one reported.
            if n == 0
                || queue
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .await
                    .is_err()
            {
                return Ok::<_, io::Error>(());
            }
        }
    };
    let write = async move {
        while let Some((at, piece)) = due.recv().await {
            sleep_until(at).await;
            to.write_all(&piece).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}

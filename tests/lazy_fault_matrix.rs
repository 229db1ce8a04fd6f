//! The fault matrix (issue 7): a fault-injecting proxy ([`testkit::FaultProxy`]) between
//! the daemon and a real docker-registry breaks blob reads (registry killed, a stall past
//! the read timeout, a slow answer within it, 500s, truncated bodies, wrong bytes) during
//! on-demand reads of a mounted file and during the prefetch at Prepare. Every case checks
//! that no reader gets a wrong byte (each read returns the exact bytes or EIO), that reads
//! and Prepare finish within bounds derived from the timeouts below, and that reads are
//! right once the proxy passes again. Each case prints its row of the README's table.

mod common;
use common::remote::{cri_labels, expect_remote, DaemonStack, RemoteLayer};

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use testkit::{FaultMode, FaultProxy, Registry};

const NS: &str = "matrix";
const REPO: &str = "faults/matrix";
const FIRST: &str = "data/first.bin";
const SECOND: &str = "data/second.bin";
/// `layer.read_timeout`: the longest a read (or one chunk fetch) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// `prefetch.timeout`: the longest Prepare waits for the prefetch.
const PREFETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Allowed on top of a timeout for scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(3);
/// Small chunks, so each file spans several and one fault hits several fetches.
const CHUNK: u64 = 256 << 10;
const FILE_LEN: usize = 1 << 20;
/// One `pread` per block, all at once: blocks of a chunk share its fetch.
const BLOCK: usize = 128 << 10;
/// Longer than the read timeout: only the timeout ends the wait.
const STALL: Duration = Duration::from_secs(10);
/// Shorter than the read timeout: the answer must be waited for and served.
const SLOW: Duration = Duration::from_secs(1);
const EIO: i32 = 5;

/// Only the test's reads fetch: no readahead, no background fetch.
fn config() -> String {
    format!(
        "[layer]\nread_timeout = {}\nreadahead = false\n[prefetch]\ntimeout = {}\n\
         [background_fetch]\nenable = false\n",
        READ_TIMEOUT.as_secs_f64(),
        PREFETCH_TIMEOUT.as_secs_f64()
    )
}

/// One fault and what readers must see while it lasts.
struct Case {
    name: &'static str,
    mode: FaultMode,
    /// The bytes arrive (slowly) within the timeouts.
    served: bool,
    /// The daemon's log message for the prefetch at Prepare.
    prefetch: &'static str,
}

const FAILED: &str = "prefetch failed";
const PENDING: &str = "prefetch not done in time";
const DONE: &str = "prefetched";

fn cases() -> [Case; 6] {
    let case = |name, mode, served, prefetch| Case {
        name,
        mode,
        served,
        prefetch,
    };
    [
        case("registry killed", FaultMode::Killed, false, FAILED),
        case("stalled 10 s", FaultMode::Slow(STALL), false, PENDING),
        case("slow 1 s", FaultMode::Slow(SLOW), true, DONE),
        case("500s", FaultMode::Status500, false, FAILED),
        case("truncated bodies", FaultMode::Truncate, false, FAILED),
        case("wrong bytes", FaultMode::WrongBytes, false, FAILED),
    ]
}

/// A registry, the proxy in front of it and the daemon, which reaches blobs through the
/// proxy only. Fields drop in order: the daemon before the proxy.
struct Matrix {
    stack: DaemonStack,
    proxy: FaultProxy,
    rt: tokio::runtime::Runtime,
}

impl Matrix {
    fn start(prefix: &str) -> Matrix {
        let registry = Registry::start().unwrap();
        let proxy = FaultProxy::start(&registry.host()).unwrap();
        let stack = DaemonStack::with_registry(prefix, registry, &[proxy.host()], &config());
        let rt = tokio::runtime::Runtime::new().unwrap();
        Matrix { stack, proxy, rt }
    }

    /// Pushes a layer of two files seeded by `seed` (a distinct blob per case, so no case
    /// reads another's cached chunks), with `prioritized` files first. Its labels name
    /// the proxy.
    fn push_layer(&self, seed: u64, prioritized: &[&str]) -> RemoteLayer {
        let (first, second) = (content(seed), content(seed + 1));
        // Equal files would share chunks (the cache is keyed by chunk digest), and a read
        // of one would be served by the other's cached chunks instead of a fetch.
        assert!(
            first != second,
            "seeds {seed} and {} give equal files",
            seed + 1
        );
        let mut layer = testkit::LayerBuilder::new();
        layer.dir("data", 0o755).unwrap();
        layer.file(FIRST, &first, 0o644).unwrap();
        layer.file(SECOND, &second, 0o644).unwrap();
        let tar = layer.finish().unwrap();
        let options = estargz::writer::WriterOptions {
            chunk_size: CHUNK,
            prioritized_files: prioritized.iter().map(|&p| p.to_owned()).collect(),
            threads: 1,
            ..Default::default()
        };
        let mut blob = Vec::new();
        let written = estargz::writer::build(tar.as_slice(), &mut blob, &options).unwrap();
        let digest = written.blob_digest;
        let client = self.stack.registry.client();
        client.push_blob(REPO, &digest, &blob).unwrap();
        RemoteLayer {
            reference: format!("{}/{REPO}:v1", self.proxy.host()),
            manifest_digest: digest.to_string(),
            digest: digest.to_string(),
            toc_digest: written.toc_digest.to_string(),
        }
    }

    /// Prepares `layer` as snapshot `name`; returns its mount and how long Prepare took.
    fn mount(&self, layer: &RemoteLayer, name: &str) -> (PathBuf, Duration) {
        let before = self.stack.fuse_mounts();
        let mut c = self
            .rt
            .block_on(common::grpc::connect(&self.stack.daemon.socket));
        let labels = cri_labels(layer, name, &layer.toc_digest);
        let started = Instant::now();
        expect_remote(&self.rt, &mut c, NS, &format!("extract-{name}"), labels);
        let took = started.elapsed();
        let mut added = self.stack.fuse_mounts();
        added.retain(|m| !before.contains(m));
        assert_eq!(added.len(), 1, "{name}: {}", self.stack.daemon.log_text());
        (added.remove(0), took)
    }
}

fn content(seed: u64) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(seed, FILE_LEN)
}

/// What reading every block of a file at once gave.
struct Reads {
    served: usize,
    failed: usize,
    slowest: Duration,
}

/// Reads each block of `path` on its own thread. Panics when a read returns a byte that
/// differs from `want`, fails otherwise than with EIO, or takes longer than `bound`.
fn read_blocks(case: &str, path: &Path, want: &[u8], bound: Duration) -> Reads {
    let (tx, rx) = std::sync::mpsc::channel();
    let blocks = want.len().div_ceil(BLOCK);
    for i in 0..blocks {
        let (tx, path) = (tx.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            let started = Instant::now();
            let read = read_at(&path, i * BLOCK, BLOCK);
            let _ = tx.send((i, read, started.elapsed()));
        });
    }
    let deadline = Instant::now() + bound;
    let mut reads = Reads {
        served: 0,
        failed: 0,
        slowest: Duration::ZERO,
    };
    for _ in 0..blocks {
        let left = deadline.saturating_duration_since(Instant::now());
        let (i, (bytes, error), took) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{case}: a read of {path:?} hung past {bound:?}"));
        let start = i * BLOCK;
        let expected = &want[start..(start + BLOCK).min(want.len())];
        assert!(
            expected.starts_with(&bytes),
            "{case}: WRONG BYTES served at offset {start} of {path:?}"
        );
        match error {
            None if bytes.len() == expected.len() => reads.served += 1,
            None => panic!("{case}: short read without an error at {start}"),
            Some(e) => {
                assert_eq!(e.raw_os_error(), Some(EIO), "{case}: {e}");
                reads.failed += 1;
            }
        }
        reads.slowest = reads.slowest.max(took);
    }
    reads
}

/// Up to `len` bytes at `offset`: what was read, and the error that ended it early.
fn read_at(path: &Path, offset: usize, len: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut buf = vec![0; len];
    let mut got = 0;
    while got < len {
        let at = u64::try_from(offset + got).unwrap();
        match file.read_at(&mut buf[got..], at) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                buf.truncate(got);
                return (buf, Some(e));
            }
        }
    }
    buf.truncate(got);
    (buf, None)
}

/// Seconds with one decimal, for the printed table.
fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What [`check_faulted_then_recovered`] saw.
struct Checked {
    /// The table row's text.
    summary: String,
    /// Blob reads the proxy faulted while the case's reads ran.
    faults: u64,
}

/// Checks the case's outcome while the fault lasts, then recovery.
fn check_faulted_then_recovered(matrix: &Matrix, case: &Case, path: &Path, want: &[u8]) -> Checked {
    let bound = READ_TIMEOUT + SLACK;
    let faulted_before = matrix.proxy.faulted();
    let reads = read_blocks(case.name, path, want, bound);
    let during = if case.served {
        assert_eq!(reads.failed, 0, "{}: reads failed", case.name);
        format!("served, slowest read {}", secs(reads.slowest))
    } else {
        assert!(reads.failed > 0, "{}: the fault was not felt", case.name);
        format!(
            "{}/{} reads EIO, slowest {}",
            reads.failed,
            reads.failed + reads.served,
            secs(reads.slowest)
        )
    };
    let faults = matrix.proxy.faulted() - faulted_before;
    matrix.proxy.set_mode(FaultMode::Pass);
    let recovered = recover(case.name, path, want);
    let whole = std::fs::read(path).unwrap();
    assert!(whole == want, "{}: file differs after recovery", case.name);
    let summary = format!(
        "{during} ({faults} faulted requests); correct {} after recovery",
        secs(recovered)
    );
    Checked { summary, faults }
}

/// Reads until every block is served; returns how long that took. A fetch started
/// during the fault may still be under way, and fail within the read timeout.
fn recover(case: &str, path: &Path, want: &[u8]) -> Duration {
    let started = Instant::now();
    let limit = READ_TIMEOUT + SLACK;
    loop {
        let reads = read_blocks(case, path, want, READ_TIMEOUT + SLACK);
        if reads.failed == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{case}: no recovery in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn faults_during_on_demand_reads() {
    testkit::require!(testkit::Prereq::Root, testkit::Prereq::DevFuse);
    let started = Instant::now();
    let matrix = Matrix::start("fmr-");
    for (i, case) in cases().iter().enumerate() {
        let seed = 100 + 10 * u64::try_from(i).unwrap();
        let layer = matrix.push_layer(seed, &[]);
        matrix.proxy.set_mode(FaultMode::Pass);
        let (mounted, _) = matrix.mount(&layer, &format!("read-{i}"));
        matrix.proxy.set_mode(case.mode);
        let path = mounted.join(SECOND);
        let checked = check_faulted_then_recovered(&matrix, case, &path, &content(seed + 1));
        // Nothing of the layer was read before: every read is a fetch through the proxy,
        // which faults it (also in the cases where the slow answer is still served).
        assert!(
            checked.faults > 0,
            "{}: the on-demand reads were not fetched through the proxy",
            case.name
        );
        eprintln!("| {} | reads: {} |", case.name, checked.summary);
    }
    eprintln!("on-demand read matrix took {}", secs(started.elapsed()));
}

#[test]
fn faults_during_prefetch_at_prepare() {
    testkit::require!(testkit::Prereq::Root, testkit::Prereq::DevFuse);
    let started = Instant::now();
    let matrix = Matrix::start("fmp-");
    for (i, case) in cases().iter().enumerate() {
        let seed = 500 + 10 * u64::try_from(i).unwrap();
        let layer = matrix.push_layer(seed, &[FIRST]);
        matrix.proxy.set_mode(case.mode);
        let log_mark = matrix.stack.daemon.log_text().len();
        let (mounted, prepare) = matrix.mount(&layer, &format!("prefetch-{i}"));
        assert!(
            prepare < PREFETCH_TIMEOUT + SLACK,
            "{}: Prepare took {prepare:?}",
            case.name
        );
        let log = matrix.stack.daemon.log_text();
        let outcome = prefetch_outcome(&log[log_mark..], &layer.digest);
        assert_eq!(outcome, Some(case.prefetch), "{}: {log}", case.name);
        let listed = std::fs::read_dir(mounted.join("data")).unwrap().count();
        assert_eq!(listed, 2, "{}: the tree is served", case.name);
        let reads_before = matrix.proxy.blob_reads();
        let path = mounted.join(FIRST);
        let checked = check_faulted_then_recovered(&matrix, case, &path, &content(seed));
        if case.prefetch == DONE {
            let reads = matrix.proxy.blob_reads() - reads_before;
            assert_eq!(reads, 0, "{}: the prefetched file was fetched", case.name);
        }
        // SECOND is not prioritized: nothing fetched it yet, so reading it must reach the
        // registry. Served without a blob read, it came out of chunks cached for FIRST.
        let reads_before = matrix.proxy.blob_reads();
        let second = std::fs::read(mounted.join(SECOND)).unwrap();
        assert!(second == content(seed + 1), "{}: on-demand file", case.name);
        let second_reads = matrix.proxy.blob_reads() - reads_before;
        assert!(
            second_reads > 0,
            "{}: the on-demand file was served without a fetch",
            case.name
        );
        eprintln!(
            "| {} | prefetch: Prepare {} ({}); prioritized file {}; \
             on-demand file {second_reads} blob reads |",
            case.name,
            secs(prepare),
            case.prefetch,
            checked.summary
        );
    }
    eprintln!("prefetch matrix took {}", secs(started.elapsed()));
}

/// Which of the prefetch messages the daemon logged for blob `digest` in `log`.
fn prefetch_outcome(log: &str, digest: &str) -> Option<&'static str> {
    let line = log
        .lines()
        .find(|l| l.contains(digest) && [FAILED, PENDING, DONE].iter().any(|m| l.contains(m)))?;
    [FAILED, PENDING, DONE]
        .into_iter()
        .find(|m| line.contains(m))
}

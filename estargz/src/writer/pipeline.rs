//! Parallel member compression with ordered output.
//!
//! Members are compressed on rayon's global pool (shared by all conversions in the
//! process). In flight per layer: at most `2 * threads * chunk_size` uncompressed bytes
//! (always at least one member) and `64 * threads` members, so memory stays bounded
//! whatever the layer size while many small members still run in parallel. Results are written strictly in
//! submission order, which fixes each member's blob offset.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::time::Duration;

use crate::digest::{Digest, Hasher};

use super::{Compression, WriteError};

/// A compressed member coming back from a worker.
struct Done {
    seq: u64,
    input_len: u64,
    compressed: io::Result<Vec<u8>>,
    /// sha256 of the member's first `digest_len` uncompressed bytes (the chunk).
    chunk_digest: Option<Digest>,
}

/// What the pipeline wrote, once finished.
pub struct Written {
    pub size: u64,
    pub blob_digest: Digest,
}

/// Compresses members in parallel and writes them in order.
pub struct Pipeline<W: Write> {
    out: BufWriter<W>,
    written: u64,
    blob_hasher: Hasher,
    compression: Compression,
    max_in_flight: u64,
    max_in_flight_bytes: u64,
    in_flight_bytes: u64,
    submitted: u64,
    next_to_write: u64,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    ready: BTreeMap<u64, Done>,
    offsets: Vec<u64>,
    chunk_digests: Vec<Option<Digest>>,
}

impl<W: Write> Pipeline<W> {
    /// `threads` members of this layer are compressed at once (0 = available parallelism).
    pub fn new(out: W, compression: Compression, threads: usize, chunk_size: u64) -> Self {
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        let (tx, rx) = channel();
        Self {
            out: BufWriter::with_capacity(1 << 20, out),
            written: 0,
            blob_hasher: Hasher::new(),
            compression,
            max_in_flight: 64 * threads as u64,
            max_in_flight_bytes: (2 * threads as u64).saturating_mul(chunk_size),
            in_flight_bytes: 0,
            submitted: 0,
            next_to_write: 0,
            tx,
            rx,
            ready: BTreeMap::new(),
            offsets: Vec::new(),
            chunk_digests: Vec::new(),
        }
    }

    /// Sequence number the next submitted member will get.
    pub fn next_seq(&self) -> u64 {
        self.submitted
    }

    /// Queues a member for compression; `digest_len` > 0 asks for the sha256 of its
    /// first `digest_len` bytes. Blocks while too many members are in flight.
    pub fn submit(&mut self, data: Vec<u8>, digest_len: usize) -> Result<u64, WriteError> {
        let input_len = data.len() as u64;
        while self.submitted > self.next_to_write
            && (self.submitted - self.next_to_write >= self.max_in_flight
                || self.in_flight_bytes.saturating_add(input_len) > self.max_in_flight_bytes)
        {
            self.wait_one()?;
        }
        let seq = self.submitted;
        self.submitted += 1;
        self.in_flight_bytes += input_len;
        let tx = self.tx.clone();
        let compression = self.compression;
        rayon::spawn(move || {
            let chunk_digest = (digest_len > 0).then(|| Digest::sha256(&data[..digest_len]));
            let compressed = compress(compression, &data);
            // The receiver only disappears when the writer gave up; nothing to report then.
            let _ = tx.send(Done {
                seq,
                input_len,
                compressed,
                chunk_digest,
            });
        });
        Ok(seq)
    }

    /// Writes every submitted member; afterwards `position()` is the end of the blob.
    pub fn drain(&mut self) -> Result<(), WriteError> {
        while self.next_to_write < self.submitted {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Writes uncompressed bytes (TOC frames, footer) after draining all members.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<u64, WriteError> {
        self.drain()?;
        let offset = self.written;
        self.write_out(bytes)?;
        Ok(offset)
    }

    /// Blob offset of a written member.
    pub fn offset(&self, seq: u64) -> Option<u64> {
        self.offsets.get(usize::try_from(seq).ok()?).copied()
    }

    /// Chunk digest computed for a written member.
    pub fn chunk_digest(&self, seq: u64) -> Option<Digest> {
        *self.chunk_digests.get(usize::try_from(seq).ok()?)?
    }

    pub fn finish(mut self) -> Result<Written, WriteError> {
        self.drain()?;
        self.out.flush().map_err(WriteError::Output)?;
        Ok(Written {
            size: self.written,
            blob_digest: self.blob_hasher.finish(),
        })
    }

    /// Waits for one compressed member and writes whatever is now in order.
    fn wait_one(&mut self) -> Result<(), WriteError> {
        let done = self.receive()?;
        self.ready.insert(done.seq, done);
        while let Some(done) = self.ready.remove(&self.next_to_write) {
            let compressed = done.compressed.map_err(WriteError::Compress)?;
            self.offsets.push(self.written);
            self.chunk_digests.push(done.chunk_digest);
            self.write_out(&compressed)?;
            self.next_to_write += 1;
            self.in_flight_bytes -= done.input_len;
        }
        Ok(())
    }

    /// Blocks for a result. Inside a rayon worker, runs other pool jobs while waiting so
    /// that a conversion started from the pool cannot starve its own members.
    fn receive(&mut self) -> Result<Done, WriteError> {
        if rayon::current_thread_index().is_none() {
            return self.rx.recv().map_err(|_| disconnected());
        }
        loop {
            match self.rx.try_recv() {
                Ok(done) => return Ok(done),
                Err(TryRecvError::Disconnected) => return Err(disconnected()),
                Err(TryRecvError::Empty) => {
                    if let Some(rayon::Yield::Idle) = rayon::yield_now() {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            }
        }
    }

    fn write_out(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.out.write_all(bytes).map_err(WriteError::Output)?;
        self.blob_hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn disconnected() -> WriteError {
    WriteError::Compress(io::Error::other("compression worker vanished"))
}

thread_local! {
    static GZIP: RefCell<Option<(i32, libdeflater::Compressor)>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Compresses one member into a gzip member or a zstd frame, reusing per-thread state.
pub fn compress(compression: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip { level } => gzip(level, data),
        Compression::Zstd { level } => ZSTD.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.as_ref().map(|(l, _)| *l) != Some(level) {
                *cell = Some((level, zstd::bulk::Compressor::new(level)?));
            }
            let (_, compressor) = cell.as_mut().ok_or_else(|| io::Error::other("no zstd"))?;
            compressor.compress(data)
        }),
    }
}

fn gzip(level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
    GZIP.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().map(|(l, _)| *l) != Some(level) {
            let lvl = libdeflater::CompressionLvl::new(level)
                .map_err(|_| io::Error::other(format!("invalid gzip level {level}")))?;
            *cell = Some((level, libdeflater::Compressor::new(lvl)));
        }
        let (_, compressor) = cell.as_mut().ok_or_else(|| io::Error::other("no gzip"))?;
        let mut out = vec![0u8; compressor.gzip_compress_bound(data.len())];
        let len = compressor
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
        out.truncate(len);
        Ok(out)
    })
}

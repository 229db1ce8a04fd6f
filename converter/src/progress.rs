//! Progress display: live bars per layer on a terminal, plain log lines otherwise.
//!
//! Log lines go through `tracing`; in bar mode [`Progress::log_writer`] routes them above
//! the bars so the two never overwrite each other.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live bars on stderr (a terminal).
    Bars,
    /// One log line per layer event.
    Log,
}

/// The display shared by all layers of a run.
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    pub fn new(mode: Mode) -> Self {
        let bars = (mode == Mode::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { bars }
    }

    /// A progress handle for one layer, named e.g. `layer 2/5 sha256:0123456789ab`.
    pub fn layer(&self, label: String) -> LayerProgress {
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(bar_style());
            bar.set_prefix(label.clone());
            bar.set_message("waiting");
            bar
        });
        LayerProgress {
            inner: Arc::new(Inner {
                label,
                bar,
                started: Instant::now(),
            }),
        }
    }

    /// A writer for log output that does not tear the bars.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            bars: self.bars.clone(),
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix} {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

struct Inner {
    label: String,
    bar: Option<ProgressBar>,
    started: Instant,
}

/// Progress of one layer; cheap to clone into blocking tasks.
#[derive(Clone)]
pub struct LayerProgress {
    inner: Arc<Inner>,
}

impl LayerProgress {
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Starts a phase ("download", "convert", "verify", "push") over `total` bytes.
    pub fn phase(&self, phase: &str, total: u64) {
        tracing::debug!("{} {phase} ({})", self.inner.label, human_bytes(total));
        if let Some(bar) = &self.inner.bar {
            bar.set_message(phase.to_owned());
            bar.set_length(total);
            bar.set_position(0);
        }
    }

    /// Counts `bytes` more of the current phase.
    pub fn advance(&self, bytes: u64) {
        if let Some(bar) = &self.inner.bar {
            bar.inc(bytes);
        }
    }

    /// The layer was rewritten: `from` source bytes became `to` output bytes.
    pub fn converted(&self, from: u64, to: u64) {
        let elapsed = self.inner.started.elapsed();
        self.clear();
        tracing::info!(
            "{} converted: {} -> {} in {}",
            self.inner.label,
            human_bytes(from),
            human_bytes(to),
            seconds(elapsed)
        );
    }

    /// The layer already was in the target format and is kept as is.
    pub fn reused(&self, size: u64) {
        self.clear();
        tracing::info!(
            "{} reused: already in the target format ({})",
            self.inner.label,
            human_bytes(size)
        );
    }

    /// The layer got a seekable index (`estargz-convert index`): `size` layer bytes,
    /// a zTOC of `ztoc` bytes with `spans` spans.
    pub fn indexed(&self, size: u64, ztoc: u64, spans: u32) {
        let elapsed = self.inner.started.elapsed();
        self.clear();
        tracing::info!(
            "{} indexed: {} layer, {} zTOC and span blocks, {spans} spans in {}",
            self.inner.label,
            human_bytes(size),
            human_bytes(ztoc),
            seconds(elapsed)
        );
    }

    /// The layer is carried over without conversion (foreign or not a layer).
    pub fn kept(&self, why: &str) {
        self.clear();
        tracing::info!("{} kept unchanged: {why}", self.inner.label);
    }

    fn clear(&self) {
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A failed or cancelled layer must not leave a frozen bar behind.
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `tracing` writer that prints above the bars when there are any.
#[derive(Clone)]
pub struct LogWriter {
    bars: Option<MultiProgress>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.bars {
            Some(bars) => bars.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// `12.3 MiB`-style sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1}s", elapsed.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_table() {
        let cases = [
            ("bytes", 512, "512 B"),
            ("kibibytes", 2048, "2.0 KiB"),
            ("mebibytes", 12_897_485, "12.3 MiB"),
            ("gibibytes", 3 << 30, "3.0 GiB"),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(human_bytes(bytes), expected, "{name}");
        }
    }
}

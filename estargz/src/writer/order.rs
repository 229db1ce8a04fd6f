//! Output order: prioritized files (with their parent directories and hardlink targets),
//! then `.prefetch.landmark`, then the rest in input order; or `.no.prefetch.landmark`
//! first when no prioritized file is in the layer. Reordering spools the input to a
//! temporary file; without prioritized files the input is streamed.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

use crate::index::clean_path;
use crate::toc::{EntryType, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};

use super::emit::Emitter;
use super::tarsplit::{RawEntry, TarError, TarSplitter};
use super::{WriteError, WriteResult, WriterOptions};

pub(super) fn write_layer(
    tar: impl Read,
    out: impl Write,
    opts: &WriterOptions,
) -> Result<WriteResult, WriteError> {
    let emitter = Emitter::new(out, opts);
    if opts.prioritized_files.is_empty() {
        stream(tar, emitter)
    } else {
        spooled(tar, emitter, opts)
    }
}

/// Entries the writer re-creates itself.
fn is_reserved(path: &str) -> bool {
    [TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK].contains(&path)
}

fn stream<W: Write>(tar: impl Read, mut emitter: Emitter<W>) -> Result<WriteResult, WriteError> {
    emitter.add_landmark(NO_PREFETCH_LANDMARK)?;
    let mut split = TarSplitter::new(tar);
    while let Some(entry) = split.next_entry()? {
        if is_reserved(&entry.meta.path) {
            continue;
        }
        emitter.add_entry(&entry.meta, &entry.header, &mut |buf| split.read_data(buf))?;
    }
    emitter.finish()
}

fn spooled<W: Write>(
    tar: impl Read,
    mut emitter: Emitter<W>,
    opts: &WriterOptions,
) -> Result<WriteResult, WriteError> {
    let prioritized = &opts.prioritized_files;
    let spool = match &opts.spool_dir {
        Some(dir) => tempfile::tempfile_in(dir),
        None => tempfile::tempfile(),
    }
    .map_err(WriteError::Spool)?;
    let entries = split_into_spool(tar, &spool)?;
    let plan = plan_order(&entries, prioritized);
    if plan.prioritized == 0 {
        emitter.add_landmark(NO_PREFETCH_LANDMARK)?;
    }
    for (position, &index) in plan.order.iter().enumerate() {
        if position == plan.prioritized && plan.prioritized > 0 {
            emitter.add_landmark(PREFETCH_LANDMARK)?;
        }
        let entry = &entries[index];
        let mut cursor = entry.data_offset;
        emitter.add_entry(&entry.meta, &entry.header, &mut |buf| {
            read_spool(&spool, cursor, buf)?;
            cursor += buf.len() as u64;
            Ok(())
        })?;
    }
    if plan.prioritized > 0 && plan.prioritized == plan.order.len() {
        emitter.add_landmark(PREFETCH_LANDMARK)?;
    }
    emitter.finish()
}

/// Splits the input while copying every byte read into `spool`; returns the kept entries.
fn split_into_spool(tar: impl Read, spool: &File) -> Result<Vec<RawEntry>, WriteError> {
    let mut tee = Tee {
        input: tar,
        spool: BufWriter::with_capacity(1 << 20, spool),
    };
    let mut entries = Vec::new();
    {
        let mut split = TarSplitter::new(&mut tee);
        while let Some(entry) = split.next_entry()? {
            if !is_reserved(&entry.meta.path) {
                entries.push(entry);
            }
        }
    }
    tee.spool.flush().map_err(WriteError::Spool)?;
    Ok(entries)
}

fn read_spool(spool: &File, offset: u64, buf: &mut [u8]) -> Result<(), TarError> {
    spool
        .read_exact_at(buf, offset)
        .map_err(|source| TarError::Io { offset, source })
}

/// Copies what is read from `input` into `spool`.
struct Tee<R, S: Write> {
    input: R,
    spool: BufWriter<S>,
}

impl<R: Read, S: Write> Read for Tee<R, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.spool.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Output order as indices into the entry list; the first `prioritized` are moved ahead.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    order: Vec<usize>,
    prioritized: usize,
}

fn plan_order(entries: &[RawEntry], prioritized: &[String]) -> Plan {
    let mut occurrences: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, entry) in entries.iter().enumerate() {
        occurrences.entry(&entry.meta.path).or_default().push(index);
    }
    let mut planner = Planner {
        entries,
        occurrences,
        emitted: vec![false; entries.len()],
        order: Vec::new(),
    };
    let mut found_file = false;
    for path in prioritized {
        let Ok(path) = clean_path(path) else { continue };
        if let Some(index) = planner.last_occurrence(&path, entries.len()) {
            found_file = true;
            planner.emit_with_dependencies(index);
        }
    }
    if !found_file {
        return Plan {
            order: (0..entries.len()).collect(),
            prioritized: 0,
        };
    }
    let prioritized = planner.order.len();
    let mut order = planner.order;
    order.extend((0..entries.len()).filter(|&i| !planner.emitted[i]));
    Plan { order, prioritized }
}

struct Planner<'a> {
    entries: &'a [RawEntry],
    occurrences: HashMap<&'a str, Vec<usize>>,
    emitted: Vec<bool>,
    order: Vec<usize>,
}

impl Planner<'_> {
    /// Index of the last entry named `path` before entry `before`.
    fn last_occurrence(&self, path: &str, before: usize) -> Option<usize> {
        let list = self.occurrences.get(path)?;
        list.iter().rev().copied().find(|&i| i < before)
    }

    /// Emits `index` after its not-yet-emitted parent directories and hardlink target.
    fn emit_with_dependencies(&mut self, index: usize) {
        if self.emitted[index] {
            return;
        }
        let meta = &self.entries[index].meta;
        let mut ancestor = String::new();
        let components: Vec<&str> = meta.path.split('/').collect();
        for part in &components[..components.len().saturating_sub(1)] {
            if !ancestor.is_empty() {
                ancestor.push('/');
            }
            ancestor.push_str(part);
            if let Some(dir) = self.last_occurrence(&ancestor, index) {
                if !self.emitted[dir] {
                    self.emit_only(dir);
                }
            }
        }
        if meta.kind == EntryType::Hardlink {
            if let Ok(target) = clean_path(&meta.link_name) {
                if let Some(target_index) = self.last_occurrence(&target, index) {
                    self.emit_with_dependencies(target_index);
                }
            }
        }
        self.emit_only(index);
    }

    /// Emits `index` and drops every other entry of the same path (later wins, so the
    /// earlier ones are shadowed anyway and must not come after it).
    fn emit_only(&mut self, index: usize) {
        let path = self.entries[index].meta.path.as_str();
        if let Some(list) = self.occurrences.get(path) {
            for &other in list {
                self.emitted[other] = true;
            }
        }
        self.emitted[index] = true;
        self.order.push(index);
    }
}

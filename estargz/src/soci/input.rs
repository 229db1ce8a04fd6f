//! The indexing pass's input: a buffered reader that knows the absolute offset of what it
//! holds, so the builder can step the inflater over exactly the bytes it has.

use std::io::Read;

const READ_BUF: usize = 256 * 1024;

/// Buffered input that knows its absolute offset.
pub(super) struct Input<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Absolute offset of `buf[start]`.
    offset: u64,
    pub eof: bool,
}

impl<R: Read> Input<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
    }

    /// Reads more after what is buffered; false at end of input.
    pub fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

//! A minimal FlatBuffers encoder and bounds-checked decoder, enough for the zTOC schema.
//!
//! The `flatbuffers` crate reads through `unsafe` accessors and generated code; the zTOC
//! schema is small (tables of scalars, strings, byte vectors and table vectors), so a
//! checked reader that returns errors instead of trusting offsets is simpler and safe on
//! bytes from a registry. The writer builds back to front as the reference builder does,
//! so every offset points forward and scalars are aligned to their size.

/// Errors from decoding a FlatBuffers buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlatbufError {
    #[error("flatbuffer read of {len} bytes at {pos} past its end ({size} bytes)")]
    OutOfBounds { pos: usize, len: usize, size: usize },
    #[error("flatbuffer vtable at {pos} is malformed")]
    BadVtable { pos: usize },
}

type Result<T> = std::result::Result<T, FlatbufError>;

fn slice(buf: &[u8], pos: usize, len: usize) -> Result<&[u8]> {
    pos.checked_add(len)
        .and_then(|end| buf.get(pos..end))
        .ok_or(FlatbufError::OutOfBounds {
            pos,
            len,
            size: buf.len(),
        })
}

fn read<const N: usize>(buf: &[u8], pos: usize) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    out.copy_from_slice(slice(buf, pos, N)?);
    Ok(out)
}

fn u16_at(buf: &[u8], pos: usize) -> Result<u16> {
    Ok(u16::from_le_bytes(read(buf, pos)?))
}

fn u32_at(buf: &[u8], pos: usize) -> Result<usize> {
    let v = u32::from_le_bytes(read(buf, pos)?);
    usize::try_from(v).map_err(|_| FlatbufError::OutOfBounds {
        pos,
        len: 4,
        size: buf.len(),
    })
}

/// Follows the unsigned offset stored at `pos` (offsets are relative to their own slot).
fn follow(buf: &[u8], pos: usize) -> Result<usize> {
    let off = u32_at(buf, pos)?;
    pos.checked_add(off).ok_or(FlatbufError::OutOfBounds {
        pos,
        len: off,
        size: buf.len(),
    })
}

/// A table inside a buffer: its position and its vtable.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    /// The root table of a finished buffer.
    pub fn root(buf: &'a [u8]) -> Result<Self> {
        let pos = follow(buf, 0)?;
        Self::at(buf, pos)
    }

    fn at(buf: &'a [u8], pos: usize) -> Result<Self> {
        let soffset = i32::from_le_bytes(read(buf, pos)?);
        let vtable = i64::try_from(pos)
            .ok()
            .and_then(|p| p.checked_sub(i64::from(soffset)))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(FlatbufError::BadVtable { pos })?;
        let vtable_len = usize::from(u16_at(buf, vtable)?);
        if vtable_len < 4 || vtable_len % 2 != 0 {
            return Err(FlatbufError::BadVtable { pos: vtable });
        }
        slice(buf, vtable, vtable_len)?;
        Ok(Self {
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// The absolute position of field `slot`, or `None` when the field is absent.
    fn field(&self, slot: usize) -> Result<Option<usize>> {
        let entry = 4 + 2 * slot;
        if entry + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = usize::from(u16_at(self.buf, self.vtable + entry)?);
        Ok((off != 0).then_some(self.pos + off))
    }

    pub fn i64(&self, slot: usize, default: i64) -> Result<i64> {
        match self.field(slot)? {
            Some(p) => Ok(i64::from_le_bytes(read(self.buf, p)?)),
            None => Ok(default),
        }
    }

    pub fn i32(&self, slot: usize, default: i32) -> Result<i32> {
        match self.field(slot)? {
            Some(p) => Ok(i32::from_le_bytes(read(self.buf, p)?)),
            None => Ok(default),
        }
    }

    pub fn u32(&self, slot: usize, default: u32) -> Result<u32> {
        match self.field(slot)? {
            Some(p) => Ok(u32::from_le_bytes(read(self.buf, p)?)),
            None => Ok(default),
        }
    }

    pub fn i8(&self, slot: usize, default: i8) -> Result<i8> {
        match self.field(slot)? {
            Some(p) => Ok(i8::from_le_bytes(read(self.buf, p)?)),
            None => Ok(default),
        }
    }

    /// A string or `[ubyte]` field as raw bytes (absent: empty).
    pub fn bytes(&self, slot: usize) -> Result<&'a [u8]> {
        match self.field(slot)? {
            Some(p) => vector_bytes(self.buf, follow(self.buf, p)?),
            None => Ok(&[]),
        }
    }

    pub fn table(&self, slot: usize) -> Result<Option<Table<'a>>> {
        match self.field(slot)? {
            Some(p) => Ok(Some(Table::at(self.buf, follow(self.buf, p)?)?)),
            None => Ok(None),
        }
    }

    /// A vector of offsets (tables or strings); absent: empty.
    pub fn vector(&self, slot: usize) -> Result<Vector<'a>> {
        match self.field(slot)? {
            Some(p) => {
                let start = follow(self.buf, p)?;
                let len = u32_at(self.buf, start)?;
                // Each element is a 4-byte offset: reject lengths the buffer cannot hold.
                slice(self.buf, start + 4, len.saturating_mul(4))?;
                Ok(Vector {
                    buf: self.buf,
                    start: start + 4,
                    len,
                })
            }
            None => Ok(Vector {
                buf: self.buf,
                start: 0,
                len: 0,
            }),
        }
    }
}

fn vector_bytes(buf: &[u8], pos: usize) -> Result<&[u8]> {
    let len = u32_at(buf, pos)?;
    slice(buf, pos + 4, len)
}

/// A vector of offsets to tables or strings.
#[derive(Clone, Copy)]
pub struct Vector<'a> {
    buf: &'a [u8],
    start: usize,
    len: usize,
}

impl<'a> Vector<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn table(&self, i: usize) -> Result<Table<'a>> {
        Table::at(self.buf, follow(self.buf, self.start + 4 * i)?)
    }

    pub fn bytes(&self, i: usize) -> Result<&'a [u8]> {
        vector_bytes(self.buf, follow(self.buf, self.start + 4 * i)?)
    }
}

/// Where an object sits, counted in bytes from the end of the finished buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(usize);

/// A back-to-front FlatBuffers builder. `rev` holds the buffer reversed, so prepending is a
/// push; an object's identity is its distance from the end.
#[derive(Default)]
pub struct Builder {
    rev: Vec<u8>,
    fields: Vec<(usize, usize)>,
    table_start: usize,
    /// Vtables written so far: tables of one shape share one (as the reference builder does).
    vtables: std::collections::HashMap<Vec<u8>, usize>,
    /// Strings written with [`Builder::shared_string`].
    strings: std::collections::HashMap<Vec<u8>, Offset>,
}

impl Builder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pads so that after `extra` more bytes the next `size`-byte write is aligned.
    fn align(&mut self, size: usize, extra: usize) {
        while !(self.rev.len() + extra + size).is_multiple_of(size) {
            self.rev.push(0);
        }
    }

    fn push_bytes_le(&mut self, le: &[u8]) {
        self.rev.extend(le.iter().rev());
    }

    fn push_u32(&mut self, v: u32) {
        self.align(4, 0);
        self.push_bytes_le(&v.to_le_bytes());
    }

    fn uoffset_to(&self, target: Offset) -> u32 {
        // The slot about to be written sits at distance len + 4 from the end.
        u32::try_from(self.rev.len() + 4 - target.0).expect("flatbuffer under 4 GiB")
    }

    /// A string (with its NUL terminator) or a `[ubyte]` vector.
    fn byte_vector(&mut self, bytes: &[u8], nul: bool) -> Offset {
        let tail = bytes.len() + usize::from(nul);
        self.align(4, tail);
        if nul {
            self.rev.push(0);
        }
        self.rev.extend(bytes.iter().rev());
        self.push_u32(u32::try_from(bytes.len()).expect("flatbuffer under 4 GiB"));
        Offset(self.rev.len())
    }

    pub fn string(&mut self, s: &[u8]) -> Offset {
        self.byte_vector(s, true)
    }

    /// A string written once however often it is asked for (owner names, types, times).
    pub fn shared_string(&mut self, s: &[u8]) -> Offset {
        if let Some(&at) = self.strings.get(s) {
            return at;
        }
        let at = self.string(s);
        self.strings.insert(s.to_vec(), at);
        at
    }

    pub fn bytes(&mut self, b: &[u8]) -> Offset {
        self.byte_vector(b, false)
    }

    /// A vector of offsets, in the given order.
    pub fn offsets(&mut self, items: &[Offset]) -> Offset {
        self.align(4, 0);
        for &item in items.iter().rev() {
            let v = self.uoffset_to(item);
            self.push_u32(v);
        }
        self.push_u32(u32::try_from(items.len()).expect("flatbuffer under 4 GiB"));
        Offset(self.rev.len())
    }

    pub fn start_table(&mut self) {
        self.fields.clear();
        self.table_start = self.rev.len();
    }

    pub fn add_i64(&mut self, slot: usize, v: i64) {
        self.align(8, 0);
        self.push_bytes_le(&v.to_le_bytes());
        self.fields.push((slot, self.rev.len()));
    }

    pub fn add_i32(&mut self, slot: usize, v: i32) {
        self.align(4, 0);
        self.push_bytes_le(&v.to_le_bytes());
        self.fields.push((slot, self.rev.len()));
    }

    pub fn add_u32(&mut self, slot: usize, v: u32) {
        self.align(4, 0);
        self.push_bytes_le(&v.to_le_bytes());
        self.fields.push((slot, self.rev.len()));
    }

    pub fn add_i8(&mut self, slot: usize, v: i8) {
        self.push_bytes_le(&v.to_le_bytes());
        self.fields.push((slot, self.rev.len()));
    }

    pub fn add_offset(&mut self, slot: usize, target: Offset) {
        self.align(4, 0);
        let v = self.uoffset_to(target);
        self.push_bytes_le(&v.to_le_bytes());
        self.fields.push((slot, self.rev.len()));
    }

    /// Closes the table: writes its soffset, then its vtable just before it.
    pub fn end_table(&mut self) -> Offset {
        self.push_u32(0);
        let table = self.rev.len();
        let slots = self.fields.iter().map(|&(s, _)| s + 1).max().unwrap_or(0);
        let mut entries = vec![0u16; slots];
        for &(slot, at) in &self.fields {
            entries[slot] = u16::try_from(table - at).expect("table under 64 KiB");
        }
        let object_size = u16::try_from(table - self.table_start).expect("table under 64 KiB");
        let vtable_size = u16::try_from(4 + 2 * slots).expect("vtable under 64 KiB");
        let mut shape = Vec::with_capacity(4 + 2 * slots);
        for v in [vtable_size, object_size].iter().chain(&entries) {
            shape.extend_from_slice(&v.to_le_bytes());
        }
        let vtable = match self.vtables.get(&shape) {
            Some(&earlier) => earlier,
            None => {
                self.rev.extend(shape.iter().rev());
                self.vtables.insert(shape, self.rev.len());
                self.rev.len()
            }
        };
        // soffset = table position - vtable position: positive for a vtable just before
        // the table, negative for a shared one written earlier (at a higher address).
        let distance =
            i64::try_from(vtable).unwrap_or(i64::MAX) - i64::try_from(table).unwrap_or(0);
        let soffset = i32::try_from(distance).expect("vtable within 2 GiB");
        for (k, b) in soffset.to_le_bytes().iter().enumerate() {
            self.rev[table - 1 - k] = *b;
        }
        self.fields.clear();
        Offset(table)
    }

    /// The finished buffer with `root` as its root table.
    pub fn finish(mut self, root: Offset) -> Vec<u8> {
        self.align(8, 4);
        let v = self.uoffset_to(root);
        self.push_bytes_le(&v.to_le_bytes());
        self.rev.reverse();
        self.rev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let s1 = b.string(b"first");
        b.start_table();
        b.add_offset(0, s1);
        b.add_i64(1, -7);
        let child = b.end_table();
        let kids = b.offsets(&[child, child]);
        let blob = b.bytes(&[1, 2, 3]);
        b.start_table();
        b.add_i8(3, 2);
        b.add_offset(0, kids);
        b.add_u32(2, 42);
        b.add_offset(4, blob);
        let root = b.end_table();
        b.finish(root)
    }

    #[test]
    fn round_trip_of_nested_tables() {
        let buf = sample();
        let root = Table::root(&buf).unwrap();
        assert_eq!(root.u32(2, 0).unwrap(), 42);
        assert_eq!(root.i8(3, 1).unwrap(), 2);
        assert_eq!(root.i64(1, 9).unwrap(), 9, "absent field gives the default");
        assert_eq!(root.bytes(4).unwrap(), &[1, 2, 3]);
        let kids = root.vector(0).unwrap();
        assert_eq!(kids.len(), 2);
        let kid = kids.table(1).unwrap();
        assert_eq!(kid.bytes(0).unwrap(), b"first");
        assert_eq!(kid.i64(1, 0).unwrap(), -7);
    }

    #[test]
    fn scalars_are_aligned_and_strings_terminated() {
        let buf = sample();
        assert_eq!(buf.len() % 8, 0);
        let root = Table::root(&buf).unwrap();
        let kid = root.vector(0).unwrap().table(0).unwrap();
        let at = kid.field(1).unwrap().unwrap();
        assert_eq!(at % 8, 0, "i64 field aligned");
    }

    #[test]
    fn truncated_or_garbage_buffers_are_errors_not_panics() {
        let buf = sample();
        for cut in 0..buf.len() {
            let short = &buf[..cut];
            if let Ok(t) = Table::root(short) {
                let _ = t
                    .vector(0)
                    .and_then(|v| v.table(0))
                    .and_then(|k| k.bytes(0));
                let _ = t.bytes(4);
            }
        }
        let mut junk = buf.clone();
        for i in 0..junk.len() {
            junk[i] ^= 0xa5;
            if let Ok(t) = Table::root(&junk) {
                let _ = t
                    .vector(0)
                    .and_then(|v| v.table(1))
                    .and_then(|k| k.i64(1, 0));
            }
            junk[i] ^= 0xa5;
        }
    }
}

//! A chunked reader that hands out borrowed slices of a large buffer, so
//! capture records are parsed in place with one read syscall per half megabyte,
//! not one per record.

use std::io::{self, Read, Seek, SeekFrom};

pub struct ChunkReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

/// Half a megabyte: a read(2) per ~4,000 packets of a header-only capture
/// is already no cost, and all of it is resident at the peak, which is at
/// its 64 MiB bar on a 4 M-packet replay.
const CHUNK: usize = 1 << 19;

impl<R: Read> ChunkReader<R> {
    pub fn new(inner: R) -> Self {
        ChunkReader {
            inner,
            buf: vec![0; CHUNK],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
        }
    }

    /// Forgets that the input ended, so the next `fill` reads again (a file
    /// that is still being written).
    pub fn resume(&mut self) {
        self.eof = false;
    }

    /// File offset of the next unread byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes buffered and not yet consumed.
    pub fn available(&self) -> usize {
        self.end - self.pos
    }

    /// Makes `n` bytes available; false if the input ends first.
    #[inline]
    pub fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.end - self.pos >= n {
            return Ok(true);
        }
        self.fill_slow(n)
    }

    #[cold]
    fn fill_slow(&mut self, n: usize) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() < n {
            self.buf.resize(n.next_power_of_two(), 0);
        }
        while self.end < n {
            if self.eof {
                return Ok(false);
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Every buffered byte not yet consumed.
    #[inline]
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// The next `n` buffered bytes; call `fill(n)` first.
    #[inline]
    pub fn peek(&self, n: usize) -> &[u8] {
        &self.buf[self.pos..self.pos + n]
    }

    #[inline]
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.end);
    }

    /// Consumes `n` bytes and returns them.
    #[inline]
    pub fn take(&mut self, n: usize) -> &[u8] {
        let start = self.pos;
        self.consume(n);
        &self.buf[start..self.pos]
    }

    /// Skips `n` bytes, reading through them if they are not buffered.
    pub fn skip(&mut self, mut n: u64) -> io::Result<bool> {
        loop {
            let here = (self.available() as u64).min(n);
            self.consume(here as usize);
            n -= here;
            if n == 0 {
                return Ok(true);
            }
            if !self.fill(1)? {
                return Ok(false);
            }
        }
    }
}

impl<R: Read + Seek> ChunkReader<R> {
    /// Moves to an absolute offset, reusing the buffer when it covers it.
    pub fn seek_to(&mut self, off: u64) -> io::Result<()> {
        if off >= self.base && off <= self.base + self.end as u64 {
            self.pos = (off - self.base) as usize;
            return Ok(());
        }
        self.inner.seek(SeekFrom::Start(off))?;
        self.base = off;
        self.pos = 0;
        self.end = 0;
        self.eof = false;
        Ok(())
    }

    pub fn len(&mut self) -> io::Result<u64> {
        let here = self.inner.stream_position()?;
        let len = self.inner.seek(SeekFrom::End(0))?;
        self.inner.seek(SeekFrom::Start(here))?;
        Ok(len)
    }
}

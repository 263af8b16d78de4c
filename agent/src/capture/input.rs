//! The bytes of one capture: a file, or standard input (`-`), either of them
//! possibly gzip or zstd compressed. Compression is told by the magic bytes,
//! never the file name, like the capture format itself.
//!
//! A decompressor's error (a truncated or damaged stream) is held back and
//! shows as the end of the input, so the capture reader hands out every
//! complete record before the damage first; the reader's owner then takes
//! the error with [`DamageSlot::take`] and reports it with the file's name.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::progress::ReadProgress;

/// The file name that means standard input.
pub const STDIN: &str = "-";

pub fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN
}

pub struct Input {
    inner: Inner,
    /// Which decompressor, for the error message.
    compression: Option<&'static str>,
    /// Decompressed bytes handed out so far.
    delivered: u64,
    damage: DamageSlot,
}

enum Inner {
    File(Counted<File>),
    Stream(Box<dyn Read + Send>),
}

/// Where a held-back decompression error waits for the reader's owner.
#[derive(Clone, Default)]
pub struct DamageSlot(Arc<Mutex<Option<Damage>>>);

pub struct Damage {
    pub compression: &'static str,
    /// Decompressed bytes read before the damage.
    pub offset: u64,
    pub error: io::Error,
}

impl DamageSlot {
    pub fn take(&self) -> Option<Damage> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

const GZIP: [u8; 2] = [0x1f, 0x8b];
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Input {
    /// Opens `path` (`-`: standard input) and puts a decompressor in front
    /// of it if its first bytes say it is compressed.
    /// The bytes it reads from the file or standard input (before any
    /// decompression) are added to `progress`.
    pub fn open(
        path: &Path,
        progress: Option<&Arc<ReadProgress>>,
    ) -> io::Result<(Input, DamageSlot)> {
        let progress = progress.cloned();
        let (raw, prefix): (Inner, Vec<u8>) = if is_stdin(path) {
            let mut stdin = io::stdin();
            let prefix = read_prefix(&mut stdin)?;
            if let Some(p) = &progress {
                p.add_bytes(prefix.len() as u64);
            }
            // What was read to look at the magic goes in front again.
            let stdin = Counted {
                inner: stdin,
                progress,
            };
            let chained = io::Cursor::new(prefix.clone()).chain(stdin);
            (Inner::Stream(Box::new(chained)), prefix)
        } else {
            let mut file = File::open(path)?;
            let prefix = read_prefix(&mut file)?;
            file.seek(SeekFrom::Start(0))?;
            (
                Inner::File(Counted {
                    inner: file,
                    progress,
                }),
                prefix,
            )
        };
        let boxed = |inner: Inner| -> Box<dyn Read + Send> {
            match inner {
                Inner::File(f) => Box::new(f),
                Inner::Stream(s) => s,
            }
        };
        let (inner, compression) = if prefix.starts_with(&GZIP) {
            // Multi-member: `cat a.gz b.gz` and pigz output are one stream.
            let d = flate2::read::MultiGzDecoder::new(boxed(raw));
            (Inner::Stream(Box::new(d)), Some("gzip"))
        } else if prefix.starts_with(&ZSTD) {
            // Concatenated frames (`cat a.zst b.zst`, zstd -T) are one stream.
            let d = zstd::stream::read::Decoder::new(boxed(raw))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}")))?;
            (Inner::Stream(Box::new(d)), Some("zstd"))
        } else {
            (raw, None)
        };
        let damage = DamageSlot::default();
        Ok((
            Input {
                inner,
                compression,
                delivered: 0,
                damage: damage.clone(),
            },
            damage,
        ))
    }
}

/// A reader that adds what it reads to the progress counters: one atomic
/// add per read call (the capture reader asks for large buffers).
struct Counted<R> {
    inner: R,
    progress: Option<Arc<ReadProgress>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.add_bytes(n as u64);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Up to four bytes, fewer only if the input ends first (a pipe may hand
/// them out one at a time).
fn read_prefix(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; 4];
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf[..n].to_vec())
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::File(f) => return f.read(buf),
            Inner::Stream(s) => s.read(buf),
        };
        match (n, self.compression) {
            (Ok(k), _) => {
                self.delivered += k as u64;
                Ok(k)
            }
            (Err(e), Some(compression)) if e.kind() != io::ErrorKind::Interrupted => {
                *self.damage.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Damage {
                    compression,
                    offset: self.delivered,
                    error: e,
                });
                Ok(0)
            }
            (Err(e), _) => Err(e),
        }
    }
}

impl Seek for Input {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match &mut self.inner {
            Inner::File(f) => f.seek(pos),
            Inner::Stream(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this capture format needs a seekable file (NetMon keeps its frame table at the end); \
                 decompress it to a file first",
            )),
        }
    }
}

//! Following a capture file that is still being written: every complete
//! record now, a cut last record later, once the writer has finished it.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::capture::{CaptureReader, RawPacket, SourceError};

pub struct GrowingFile {
    path: PathBuf,
    reader: Option<CaptureReader<File>>,
    /// Packets still to pass over (resuming inside the file).
    skip: u64,
    /// Packets read from the start of the file, skipped ones included.
    read: u64,
}

/// What one look at the file found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Packets read (skipped ones included).
    pub packets: u64,
    /// The file ends inside a record (or its header): the writer is busy.
    pub partial: bool,
    /// A NetMon file whose frame table is not written yet: NetMon writers
    /// append the table last, so a growing file is read once it is whole.
    pub unfinished: bool,
}

impl GrowingFile {
    pub fn new(path: &Path) -> Self {
        Self::resume_at(path, 0)
    }

    /// Follows `path`, passing over its first `skip` packets (already handled
    /// by an earlier run).
    pub fn resume_at(path: &Path, skip: u64) -> Self {
        GrowingFile {
            path: path.to_path_buf(),
            reader: None,
            skip,
            read: 0,
        }
    }

    /// Packets from the start of the file handled so far (a resume point).
    pub fn position(&self) -> u64 {
        self.read
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands every complete record available now to `f` (after the skipped
    /// ones). Call again when the file may have grown.
    pub fn poll(&mut self, f: &mut impl FnMut(RawPacket<'_>)) -> Result<Poll, SourceError> {
        self.poll_with(false, f)
    }

    /// As [`Self::poll`]; with `whole_or_not` a NetMon file without its frame
    /// table is read sequentially anyway (its writer is gone).
    pub fn poll_with(
        &mut self,
        whole_or_not: bool,
        f: &mut impl FnMut(RawPacket<'_>),
    ) -> Result<Poll, SourceError> {
        let cap = |source| SourceError::Capture {
            path: self.path.clone(),
            source,
        };
        let mut poll = Poll::default();
        if matches!(self.reader, None | Some(CaptureReader::Empty(_))) {
            // Not even a whole file header yet: open again next time.
            let file = File::open(&self.path).map_err(|e| SourceError::io(&self.path, e))?;
            let reader = CaptureReader::open(file).map_err(cap)?;
            if !whole_or_not && reader.is_unfinished_netmon() {
                poll.unfinished = true;
                return Ok(poll);
            }
            self.reader = Some(reader);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(poll);
        };
        if matches!(reader, CaptureReader::Empty(_)) {
            poll.partial = true;
            return Ok(poll);
        }
        while let Some(p) = reader.next_packet().map_err(cap)? {
            poll.packets += 1;
            self.read += 1;
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            f(p);
        }
        // Whatever is cut at the end is not an error here: the writer is
        // still busy with it.
        poll.partial = reader.truncation().is_some();
        reader.resume();
        Ok(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::synth::{self, Rng, SynthParams};
    use std::io::Write;

    fn packets_of(bytes: &[u8]) -> Vec<(u64, u32, Vec<u8>)> {
        let mut r = CaptureReader::open(std::io::Cursor::new(bytes)).unwrap();
        let mut v = Vec::new();
        while let Some(p) = r.next_packet().unwrap() {
            v.push((p.ts_ns, p.orig_len, p.data.to_vec()));
        }
        v
    }

    #[test]
    fn a_growing_file_yields_each_record_once_and_whole() {
        let mut pcap = Vec::new();
        let params = SynthParams::new(2_000, 50).seed(4);
        synth::generate(&params, &Config::default(), &mut pcap, false).unwrap();
        // libpcap and pcapng (NetMon's frame table comes last: a growing
        // NetMon file is read sequentially, and following it is issue 4's).
        let pcapng = crate::capture::fuzz::seeds().swap_remove(1);
        for (name, bytes) in [("pcap", pcap), ("pcapng", pcapng)] {
            let want = packets_of(&bytes);
            assert!(want.len() >= 300, "{name}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("growing.cap");
            let mut file = File::create(&path).unwrap();
            let mut follower = GrowingFile::new(&path);
            let mut got = Vec::new();
            let mut rng = Rng::new(8);
            let mut written = 0;
            let mut checked = false;
            // Pieces of 1..700 bytes: headers and records are split
            // everywhere, the file header itself included.
            while written < bytes.len() {
                let n = (1 + rng.below(700) as usize).min(bytes.len() - written);
                file.write_all(&bytes[written..written + n]).unwrap();
                file.flush().unwrap();
                written += n;
                follower
                    .poll(&mut |p| got.push((p.ts_ns, p.orig_len, p.data.to_vec())))
                    .unwrap();
                // Resuming mid-file passes over exactly what was handled.
                if !checked && got.len() >= want.len() / 2 {
                    checked = true;
                    let mut again = GrowingFile::resume_at(&path, got.len() as u64);
                    let mut rest = Vec::new();
                    again
                        .poll(&mut |p| rest.push((p.ts_ns, p.orig_len, p.data.to_vec())))
                        .unwrap();
                    assert!(rest.len() <= want.len() - got.len());
                    assert!(
                        rest[..] == want[got.len()..got.len() + rest.len()],
                        "{name}"
                    );
                }
            }
            assert!(checked, "{name}");
            assert_eq!(got.len(), want.len(), "{name}");
            assert!(got == want, "{name}");
        }
    }
}

//! Following a capture file that is still being written: every complete
//! record now, a cut last record later, once the writer has finished it.
//! The groundwork for the capture-folder source (issue 4): it does not yet
//! pick files, notice rotation or checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{CaptureReader, RawPacket};
use crate::error::Error;

pub struct Follower {
    path: PathBuf,
    reader: Option<CaptureReader<File>>,
}

impl Follower {
    pub fn new(path: &Path) -> Self {
        Follower {
            path: path.to_path_buf(),
            reader: None,
        }
    }

    /// Hands every complete record available now to `f`; returns how many.
    /// Call again when the file may have grown.
    pub fn poll(&mut self, f: &mut impl FnMut(RawPacket<'_>)) -> Result<usize, Error> {
        let cap = |source| Error::Capture {
            path: self.path.clone(),
            source,
        };
        if matches!(self.reader, None | Some(CaptureReader::Empty(_))) {
            // Not even a whole file header yet: open again next time.
            let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
            self.reader = Some(CaptureReader::open(file).map_err(cap)?);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(0);
        };
        let mut n = 0;
        while let Some(p) = reader.next_packet().map_err(cap)? {
            f(p);
            n += 1;
        }
        // Whatever is cut at the end is not an error here: the writer is
        // still busy with it.
        reader.resume();
        Ok(n)
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
        let params = SynthParams {
            packets: 2_000,
            concurrent: 50,
            snaplen: 128,
            seed: 4,
        };
        synth::generate(&params, &Config::default(), &mut pcap, false).unwrap();
        // libpcap and pcapng (NetMon's frame table comes last: a growing
        // NetMon file is read sequentially, and following it is issue 4's).
        let pcapng = crate::source::fuzz::seeds().swap_remove(1);
        for (name, bytes) in [("pcap", pcap), ("pcapng", pcapng)] {
            let want = packets_of(&bytes);
            assert!(want.len() >= 300, "{name}");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("growing.cap");
            let mut file = File::create(&path).unwrap();
            let mut follower = Follower::new(&path);
            let mut got = Vec::new();
            let mut rng = Rng::new(8);
            let mut written = 0;
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
            }
            assert_eq!(got.len(), want.len(), "{name}");
            assert!(got == want, "{name}");
        }
    }
}

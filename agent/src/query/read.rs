//! Finding and reading record files: the collector's output directory
//! (per-agent directories, named streams under `streams/`, hourly NDJSON
//! or blocks files), any NDJSON or blocks file, or standard input (`-`,
//! either); and the one record shape the query needs, parsed with borrowed
//! fields from each line (a blocks file's records are formatted as the
//! lines NDJSON would hold, so both kinds go through one parser).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vmflow_proto::FlowRecord;

use crate::export::blocks::{self, BlockReader};
use crate::export::NdjsonLines;

use super::QueryError;

/// The fields a query looks at. Strings borrow from the line (addresses
/// and directions never hold escapes); every other field of the record is
/// skipped unparsed.
#[derive(Deserialize, Debug)]
pub struct Rec<'a> {
    pub flow_id: u64,
    pub segment: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub proto: u8,
    pub src_addr: &'a str,
    pub src_port: u16,
    pub dst_addr: &'a str,
    pub dst_port: u16,
    pub direction: &'a str,
    pub first_ns: u64,
    pub last_ns: u64,
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
    #[serde(default)]
    pub gap: bool,
}

impl Rec<'_> {
    /// The only record of its flow: it counts one flow without being
    /// remembered.
    pub fn whole_flow(&self) -> bool {
        self.segment == 0 && self.is_final
    }
}

/// One file (or standard input) to read.
#[derive(Clone, Debug)]
pub struct Input {
    /// `None`: standard input.
    pub path: Option<PathBuf>,
    /// Index into `Inputs::agents`; `None` when the file is not in a
    /// collector's output directory.
    pub agent: Option<u32>,
    /// Which record stream the file belongs to: the records of one flow
    /// share a `flow_id` within a stream (its directory), not across.
    pub stream: u32,
}

impl Input {
    pub fn name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "-".into(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Inputs {
    pub files: Vec<Input>,
    /// Agent names (decoded from their directory names).
    pub agents: Vec<String>,
}

impl Inputs {
    pub fn agent_name(&self, i: Option<u32>) -> Option<&str> {
        i.and_then(|i| self.agents.get(i as usize))
            .map(String::as_str)
    }
}

/// Every file under `paths`: a directory is walked recursively (its
/// `*.ndjson` and `*.blocks` files, in name order; not a collector stream's
/// `observations/`), a file is taken whatever its name, `-` is standard
/// input (once).
pub fn inputs(paths: &[String]) -> Result<Inputs, QueryError> {
    let mut found = Vec::new();
    let mut stdin = false;
    for p in paths {
        if p == "-" {
            stdin = true;
            continue;
        }
        let path = PathBuf::from(p);
        let meta = std::fs::metadata(&path).map_err(QueryError::io(&path))?;
        if meta.is_dir() {
            walk(&path, &mut found)?;
        } else {
            found.push(path);
        }
    }
    let mut out = Inputs::default();
    let mut streams: Vec<PathBuf> = Vec::new();
    for path in found {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let agent =
            collector_agent(&dir).map(|name| match out.agents.iter().position(|a| *a == name) {
                Some(i) => i as u32,
                None => {
                    out.agents.push(name);
                    (out.agents.len() - 1) as u32
                }
            });
        let stream = match streams.iter().position(|s| *s == dir) {
            Some(i) => i,
            None => {
                streams.push(dir);
                streams.len() - 1
            }
        } as u32;
        out.files.push(Input {
            path: Some(path),
            agent,
            stream,
        });
    }
    if stdin {
        out.files.push(Input {
            path: None,
            agent: None,
            stream: streams.len() as u32,
        });
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), QueryError> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(QueryError::io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(QueryError::io(dir))?;
    entries.sort();
    // A collector's stream directory keeps the observations shipped with
    // its records apart, in `observations/`: they are not records.
    let stream_dir = dir.join("state").is_file();
    for p in entries {
        let ft = std::fs::metadata(&p).map_err(QueryError::io(&p))?;
        if ft.is_dir() {
            if stream_dir && p.file_name().is_some_and(|n| n == "observations") {
                continue;
            }
            walk(&p, out)?;
        } else if p
            .extension()
            .is_some_and(|x| x == "ndjson" || x == "blocks")
        {
            out.push(p);
        }
    }
    Ok(())
}

/// The agent whose records a directory holds, when it is one of the
/// collector's stream directories (it has a `state` file): the directory
/// itself for an agent's default stream, its agent's for a named stream
/// (`<agent>/streams/<stream>`, or an earlier version's `<agent>/<stream>`).
pub fn collector_agent(dir: &Path) -> Option<String> {
    if !dir.join("state").is_file() {
        return None;
    }
    let parent = dir.parent()?;
    let agent_dir = if parent.file_name().is_some_and(|n| n == "streams") {
        parent.parent()?
    } else if parent.join("state").is_file() {
        parent
    } else {
        dir
    };
    let name = agent_dir.file_name()?.to_str()?;
    Some(crate::collect::names::decode(name))
}

/// Lines of one input, handed out one at a time from a reused buffer.
pub struct Lines {
    src: Source,
    buf: Vec<u8>,
    name: String,
    pub line_no: u64,
}

enum Source {
    Text(Box<dyn BufRead + Send>),
    /// A record file or spool segment: its records as NDJSON lines.
    Blocks {
        reader: BlockReader<File>,
        block: Vec<FlowRecord>,
        next: usize,
        text: Box<NdjsonLines>,
    },
}

/// Standard input, NDJSON or blocks (sniffed, as files are). Blocks are
/// copied to an unnamed temporary file first: the reader searches forward
/// past damage and reads back, which a pipe cannot (~17 bytes a record).
fn stdin_source() -> Result<Source, QueryError> {
    let name = Path::new("-");
    let mut stdin = io::stdin();
    let head = head(&mut stdin).map_err(QueryError::io(name))?;
    if !blocks::looks_like_blocks(&head) {
        let text = io::Cursor::new(head).chain(stdin);
        return Ok(Source::Text(Box::new(BufReader::with_capacity(
            1 << 20,
            text,
        ))));
    }
    let mut f = tempfile::tempfile().map_err(QueryError::io(name))?;
    f.write_all(&head).map_err(QueryError::io(name))?;
    let len = head.len() as u64 + io::copy(&mut stdin, &mut f).map_err(QueryError::io(name))?;
    f.rewind().map_err(QueryError::io(name))?;
    Source::blocks(f, len, name)
}

/// The first bytes of a file or stream, enough to tell blocks from text.
fn head(r: impl Read) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(4);
    r.take(4).read_to_end(&mut head)?;
    Ok(head)
}

impl Source {
    /// A blocks file of `len` bytes, read from its start (`path` names it).
    fn blocks(f: File, len: u64, path: &Path) -> Result<Source, QueryError> {
        let name = path.display().to_string();
        Ok(Source::Blocks {
            reader: BlockReader::new(f, len, path).map_err(QueryError::blocks(&name))?,
            block: Vec::new(),
            next: 0,
            text: Box::default(),
        })
    }
}

impl Lines {
    pub fn open(input: &Input) -> Result<Lines, QueryError> {
        let src = match &input.path {
            Some(p) => {
                let mut f = File::open(p).map_err(QueryError::io(p))?;
                let head = head(&mut f).map_err(QueryError::io(p))?;
                f.rewind().map_err(QueryError::io(p))?;
                if blocks::looks_like_blocks(&head) {
                    let len = f.metadata().map_err(QueryError::io(p))?.len();
                    Source::blocks(f, len, p)?
                } else {
                    Source::Text(Box::new(BufReader::with_capacity(1 << 20, f)))
                }
            }
            None => stdin_source()?,
        };
        Ok(Lines {
            src,
            buf: Vec::with_capacity(1024),
            name: input.name(),
            line_no: 0,
        })
    }

    /// The next line without its newline; `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<&[u8]>, QueryError> {
        self.buf.clear();
        match &mut self.src {
            Source::Text(reader) => {
                let n =
                    reader
                        .read_until(b'\n', &mut self.buf)
                        .map_err(|source| QueryError::Io {
                            path: self.name.clone(),
                            source,
                        })?;
                if n == 0 {
                    return Ok(None);
                }
            }
            Source::Blocks {
                reader,
                block,
                next,
                text,
            } => {
                while *next == block.len() {
                    match reader
                        .next_block()
                        .map_err(QueryError::blocks(&self.name))?
                    {
                        Some(b) => (*block, *next) = (b, 0),
                        None => {
                            reader.stats.warn_if_damaged(&self.name);
                            // Said once.
                            reader.stats = Default::default();
                            return Ok(None);
                        }
                    }
                }
                text.append(&block[*next], &mut self.buf);
                *next += 1;
            }
        }
        self.line_no += 1;
        let mut line = &self.buf[..];
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        Ok(Some(line))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

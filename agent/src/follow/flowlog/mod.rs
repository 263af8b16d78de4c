//! Azure NSG and VNet flow logs in a Blob container, read as the service
//! writes them: each hourly `PT1H.json` is a block blob that grows by
//! committed blocks, so the source asks for the committed block list and
//! fetches only the blocks added since (one ranged GET), parses each block
//! (`flowlog::parse`) and stitches the tuples into records
//! (`flowlog::stitch`).
//!
//! One read covers the new blocks of one blob, and is bracketed by two
//! checkpoints (see [`runner`]): the first names the blocks about to be read
//! ([`Pending`]), the second (after the records are durable in the spool)
//! the blocks read. A resumed run reads a pending read's blocks again first,
//! so its records come out exactly as before and the spool skips the ones
//! it already holds.
//!
//! A block list whose first blocks are no longer those read (rewritten) or
//! that got shorter is read again from its first block: counted and logged.
//! The closing block, which the service keeps last as it appends before
//! it, is never read (see [`without_closing`]).

pub mod live;
pub mod names;
pub mod position;
pub mod runner;

use std::collections::VecDeque;
use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use vmflow_proto::FlowRecord;

use super::FollowError;
use crate::azure::blob::{bare_etag, BlobClient, Block, Get};
use crate::azure::AzureError;
use crate::config::FlowlogConfig;
use crate::flowlog::{parse_block, FlowlogError, Stitcher};
use names::Hourly;
use position::{digest, BlobMark, FlowlogPosition, Pending};

/// What a checkpoint of this source belongs to: the account (never a SAS),
/// the container and the prefix.
pub fn checkpoint_key(cfg: &FlowlogConfig) -> String {
    let account = cfg.account_url.split('?').next().unwrap_or("");
    format!("flowlog:{account}/{}/{}", cfg.container, cfg.prefix)
}

/// What the source did, for the summary and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowlogStats {
    pub listings: u64,
    pub block_lists: u64,
    /// Ranged GETs of new blocks, and the bytes and blocks they brought.
    pub downloads: u64,
    pub bytes: u64,
    pub blocks: u64,
    /// JSON records (each holds many tuples) and tuples read.
    pub records: u64,
    pub tuples: u64,
    /// Blocks that were not JSON records, records without the fields their
    /// kind needs, tuples that did not parse: each counted and logged.
    pub bad_blocks: u64,
    pub bad_records: u64,
    pub bad_tuples: u64,
    /// Blobs whose first blocks changed, or whose block list got shorter,
    /// since they were read: read again from their first block.
    pub rewritten: u64,
    pub shrunk: u64,
    /// Blobs that changed between their block list and the GET of its
    /// blocks: looked at again.
    pub raced: u64,
    /// Pending reads that could not be done again (the blob went away or
    /// was rewritten while the agent was down).
    pub abandoned: u64,
    pub pruned: u64,
    /// Failed calls to the service.
    pub errors: u64,
}

/// The new blocks of one blob, about to be read.
pub struct Work {
    pub blob: String,
    hour: i64,
    from: BlobMark,
    blocks: Vec<Block>,
    /// The block list's ETag: the GET of the blocks is conditional on it.
    etag: Option<String>,
    /// The ETag the listing showed ("" when not listed): older than or the
    /// same as the block list's, so remembering it can cost a block list
    /// too many, never a change missed.
    listed: String,
    /// Done again after a restart: its intent is already on disk.
    pub resumed: bool,
}

impl Work {
    pub fn pending(&self) -> Pending {
        Pending {
            blob: self.blob.clone(),
            from: self.from.clone(),
            blocks: self.blocks.len() as u32,
            digest: digest(&self.blocks),
        }
    }
}

pub struct FlowlogSource {
    cfg: FlowlogConfig,
    client: BlobClient,
    pub pos: FlowlogPosition,
    pub stitcher: Stitcher,
    macs: Vec<String>,
    /// Blobs of the last listing still to look at, oldest hour first.
    queue: VecDeque<(String, Hourly, String)>,
    listed: Option<Instant>,
    /// A pending read could not be done again: the runner accounts for it.
    abandoned: bool,
    pub stats: FlowlogStats,
}

/// Errors logged per read at most; the rest are counted.
const LOGGED_PER_READ: usize = 5;

impl FlowlogSource {
    pub fn new(
        cfg: FlowlogConfig,
        client: BlobClient,
        pos: FlowlogPosition,
        stitcher: Stitcher,
    ) -> Self {
        let macs = cfg
            .macs
            .iter()
            .map(|m| crate::flowlog::parse::normalize_mac(m))
            .collect();
        FlowlogSource {
            cfg,
            client,
            pos,
            stitcher,
            macs,
            queue: VecDeque::new(),
            listed: None,
            abandoned: false,
            stats: FlowlogStats::default(),
        }
    }

    /// A pending read was dropped since the last call.
    pub fn take_abandoned(&mut self) -> bool {
        std::mem::take(&mut self.abandoned)
    }

    /// The next blob with new blocks; `None` when there is nothing to read
    /// until the next listing is due.
    pub fn prepare(&mut self) -> Result<Option<Work>, FollowError> {
        if let Some(p) = self.pos.pending.clone() {
            return self.redo(p);
        }
        if self.queue.is_empty() {
            let due = self
                .listed
                .is_none_or(|t| t.elapsed() >= self.cfg.poll_interval.duration());
            if !due {
                return Ok(None);
            }
            self.list()?;
        }
        while let Some((name, hourly, etag)) = self.queue.pop_front() {
            let mark = self.pos.blobs.get(&name).cloned();
            if mark
                .as_ref()
                .is_some_and(|m| !etag.is_empty() && m.etag == etag)
            {
                continue;
            }
            let Some(mut list) = self.block_list(&name)? else {
                continue;
            };
            without_closing(&mut list.blocks);
            let mut from = mark.unwrap_or(BlobMark {
                hour: hourly.hour,
                ..BlobMark::default()
            });
            let n = list.blocks.len();
            let c = from.blocks as usize;
            if c > n || digest(&list.blocks[..c]) != from.digest {
                if c > n {
                    self.stats.shrunk += 1;
                    tracing::warn!(
                        "{name}: its block list got shorter ({c} blocks read, {n} now): reading it again from its first block"
                    );
                } else {
                    self.stats.rewritten += 1;
                    tracing::warn!(
                        "{name}: rewritten (its first {c} blocks are not those read): reading it again from its first block"
                    );
                }
                from = BlobMark {
                    hour: hourly.hour,
                    ..BlobMark::default()
                };
            }
            if from.blocks as usize == n {
                // Nothing new; remember the ETag so the next listing says so.
                if let Some(m) = self.pos.blobs.get_mut(&name) {
                    m.etag = etag;
                }
                continue;
            }
            return Ok(Some(Work {
                blob: name,
                hour: hourly.hour,
                from,
                blocks: list.blocks,
                etag: list.etag,
                listed: etag,
                resumed: false,
            }));
        }
        Ok(None)
    }

    /// The pending read again, if the blob still has those blocks.
    fn redo(&mut self, p: Pending) -> Result<Option<Work>, FollowError> {
        let mut list = self.block_list(&p.blob)?;
        if let Some(l) = list.as_mut() {
            without_closing(&mut l.blocks);
        }
        let blocks = list.as_ref().map_or(0, |l| l.blocks.len());
        match list {
            Some(l)
                if blocks >= p.blocks as usize
                    && digest(&l.blocks[..p.blocks as usize]) == p.digest =>
            {
                let mut blocks = l.blocks;
                blocks.truncate(p.blocks as usize);
                // The ETag may have moved on with appended blocks: the
                // digest says the ones to read are still the same.
                Ok(Some(Work {
                    blob: p.blob,
                    hour: p.from.hour,
                    from: p.from,
                    blocks,
                    etag: None,
                    listed: String::new(),
                    resumed: true,
                }))
            }
            _ => {
                self.stats.abandoned += 1;
                tracing::warn!(
                    "{}: the blocks being read when the agent stopped are gone (the blob was removed or rewritten); \
                     records already spooled from them stay, the rest of that read is lost",
                    p.blob
                );
                self.pos.pending = None;
                self.abandoned = true;
                Ok(None)
            }
        }
    }

    fn block_list(
        &mut self,
        name: &str,
    ) -> Result<Option<crate::azure::blob::BlockList>, FollowError> {
        self.stats.block_lists += 1;
        self.client.block_list(name).map_err(|e| self.failed(e))
    }

    fn failed(&mut self, e: AzureError) -> FollowError {
        self.stats.errors += 1;
        e.into()
    }

    /// Lists the container, keeps flow-log blobs of the configured NICs
    /// within retention (oldest hour first), and forgets the marks of blobs
    /// past it.
    fn list(&mut self) -> Result<(), FollowError> {
        self.stats.listings += 1;
        let items = self
            .client
            .list(&self.cfg.prefix, self.cfg.page_size)
            .map_err(|e| self.failed(e))?;
        self.listed = Some(Instant::now());
        let oldest = oldest_hour(self.cfg.retention.duration());
        let mut found: Vec<(String, Hourly, String)> = items
            .into_iter()
            .filter_map(|b| {
                let h = names::hourly(&b.name)?;
                let wanted = self.macs.is_empty() || self.macs.contains(&h.mac);
                (wanted && h.hour >= oldest).then(|| (b.name, h, bare_etag(&b.etag)))
            })
            .collect();
        found.sort_by(|a, b| (a.1.hour, &a.0).cmp(&(b.1.hour, &b.0)));
        let pending = self.pos.pending.as_ref().map(|p| p.blob.clone());
        let before = self.pos.blobs.len();
        self.pos
            .blobs
            .retain(|name, m| m.hour >= oldest || Some(name) == pending.as_ref());
        self.stats.pruned += (before - self.pos.blobs.len()) as u64;
        self.queue = found.into();
        Ok(())
    }

    /// Reads the work's blocks and stitches them into `out`; `false` if the
    /// blob changed under the read (it is looked at again).
    pub fn read(&mut self, w: &Work, out: &mut Vec<FlowRecord>) -> Result<bool, FollowError> {
        let first = w.from.blocks as usize;
        let new = &w.blocks[first..];
        let start = w.from.bytes;
        let len: u64 = new.iter().map(|b| b.size).sum();
        let mut body = Vec::new();
        if len > 0 {
            self.stats.downloads += 1;
            let got = self
                .client
                .get_range(&w.blob, start, start + len - 1, w.etag.as_deref())
                .map_err(|e| self.failed(e))?;
            match got {
                Get::Body { reader, .. } => {
                    reader.take(len + 1).read_to_end(&mut body).map_err(|e| {
                        self.failed(AzureError::Transport {
                            op: format!("download {}", w.blob),
                            msg: e.to_string(),
                        })
                    })?;
                }
                Get::Gone | Get::Changed => {
                    self.stats.raced += 1;
                    return Ok(false);
                }
            }
            if body.len() as u64 != len {
                // Not the bytes the block list promised (a rewrite between
                // the two calls): look again.
                self.stats.raced += 1;
                tracing::warn!(
                    "{}: asked for {len} bytes of new blocks, got {}: looking again",
                    w.blob,
                    body.len()
                );
                return Ok(false);
            }
            self.stats.bytes += len;
        }
        let mut logged = 0;
        let mut at = 0usize;
        for (i, b) in new.iter().enumerate() {
            let index = (first + i) as u32;
            let end = at + b.size as usize;
            let parsed = parse_block(&w.blob, index, &body[at..end]);
            at = end;
            self.stats.blocks += 1;
            self.stats.records += parsed.records as u64;
            self.stats.tuples += parsed.entries.len() as u64;
            for e in &parsed.errors {
                match e {
                    FlowlogError::Block { .. } => self.stats.bad_blocks += 1,
                    FlowlogError::Record { .. } => self.stats.bad_records += 1,
                    FlowlogError::Tuple { .. } => self.stats.bad_tuples += 1,
                }
                if logged < LOGGED_PER_READ {
                    tracing::warn!("{e}; skipped");
                    logged += 1;
                }
            }
            for entry in &parsed.entries {
                self.stitcher.push(entry, out);
            }
        }
        let mark = BlobMark {
            blocks: w.blocks.len() as u32,
            bytes: start + len,
            digest: digest(&w.blocks),
            etag: w.listed.clone(),
            hour: w.hour,
        };
        tracing::debug!("read blocks {}..{} of {}", first, w.blocks.len(), w.blob);
        self.pos.blobs.insert(w.blob.clone(), mark);
        self.pos.pending = None;
        Ok(true)
    }
}

/// The service keeps the document's closing `]}` as the last committed
/// block and appends before it, so that block is never read: counted as
/// read, it would sit where the next appended block goes and make every
/// append look like a rewrite. It is 2 bytes; a block of flow-log records
/// is hundreds.
fn without_closing(blocks: &mut Vec<Block>) {
    if blocks.last().is_some_and(|b| b.size <= CLOSING_MAX) {
        blocks.pop();
    }
}

/// `]}`.
const CLOSING_MAX: u64 = 2;

/// The start of the oldest hour still within `retention` of now.
fn oldest_hour(retention: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let oldest = now.saturating_sub(retention.as_secs());
    i64::try_from(oldest - oldest % 3600).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(size: u64) -> Block {
        Block {
            id: format!("{size}"),
            size,
        }
    }

    /// The closing block is left out wherever the list ends, so the blocks
    /// read are always a prefix of the next, longer list.
    #[test]
    fn the_closing_block_is_never_read() {
        let mut before = vec![b(12), b(900), b(2)];
        without_closing(&mut before);
        assert_eq!(before, vec![b(12), b(900)]);
        let mut after = vec![b(12), b(900), b(870), b(2)];
        without_closing(&mut after);
        assert_eq!(digest(&after[..before.len()]), digest(&before));
        // A blob with only its opening, or nothing committed yet.
        let mut open = vec![b(12)];
        without_closing(&mut open);
        assert_eq!(open.len(), 1);
        let mut none: Vec<Block> = Vec::new();
        without_closing(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn retention_counts_whole_hours_back_from_now() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let h = oldest_hour(Duration::from_secs(2 * 3600));
        assert_eq!(h % 3600, 0);
        assert!(now - h >= 2 * 3600 && now - h < 3 * 3600 + 60, "{now} {h}");
        assert!(oldest_hour(Duration::from_secs(u64::MAX / 2)) <= 0);
    }
}

//! Capture filters: a tcpdump expression (`tcp port 443`, `not port 53`)
//! that decides which packets reach the engine, meaning the same on every
//! source. libpcap compiles it (its own compiler, so the language is exactly
//! tcpdump's); the program is attached to the live socket, where the kernel
//! runs it, and run here, in [`Program::run`], on packets read from files.
//!
//! A file's packets are filtered on their captured bytes before decoding:
//! what the filter leaves out is neither a packet nor a skip to the engine,
//! only `filtered` in the summary. Each link type gets its own compilation
//! (offsets differ between Ethernet, raw IP and Linux cooked frames).

#[cfg(target_os = "linux")]
mod libpcap;
#[cfg(not(target_os = "linux"))]
#[path = "libpcap_unsupported.rs"]
mod libpcap;
mod program;

pub use program::{Insn, Program, ProgramError};

use crate::packet::RawPacket;
use crate::pipeline::Feed;

/// LINKTYPE_ETHERNET: what an expression is checked against when a run
/// starts (Network Watcher captures and virtual NICs are Ethernet).
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The snap length files are filtered with: tcpdump's largest, so a
/// matching packet's return value never cuts anything.
pub const FILE_SNAPLEN: u32 = 262_144;

#[derive(Clone, Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "filter {expr:?}: capture filters are compiled by libpcap, which is not installed \
         (install libpcap0.8 on Debian and Ubuntu, libpcap elsewhere): {detail}"
    )]
    NoLibpcap { expr: String, detail: String },
    #[error("filter {expr:?} (link type {linktype}): {message}")]
    Compile {
        expr: String,
        linktype: u32,
        message: String,
    },
    #[error("filter {expr:?} (link type {linktype}): libpcap gave a program we refuse: {source}")]
    Program {
        expr: String,
        linktype: u32,
        #[source]
        source: ProgramError,
    },
    #[error(
        "filter {expr:?}: capture filters are not supported on this platform \
         (they need libpcap on Linux); remove --filter / filter ="
    )]
    Unsupported { expr: String },
}

/// Why the platform's compiler gave no program (see `libpcap.rs`). Each
/// platform makes only its own variants.
#[allow(dead_code)]
enum CompileFailure {
    /// No libpcap to load (the loader's messages).
    Missing(String),
    /// libpcap's own message (`pcap_geterr`): a syntax error, a keyword the
    /// link type has no meaning for.
    Refused(String),
    Unsupported,
}

/// Compiles `expr` for a live socket's frames of `linktype`; a match
/// returns `snaplen`, to which the kernel truncates the packet.
pub fn compile(expr: &str, linktype: u32, snaplen: u32) -> Result<Program, FilterError> {
    let dlt = dlt(linktype);
    compile_for(expr, linktype, libpcap::Target::Live { dlt }, snaplen)
}

/// Compiles `expr` for packets of `linktype` read from a file, as
/// `tcpdump -r` compiles it (the two differ for BSD loopback frames).
pub fn compile_for_file(expr: &str, linktype: u32) -> Result<Program, FilterError> {
    compile_for(
        expr,
        linktype,
        libpcap::Target::File { linktype },
        FILE_SNAPLEN,
    )
}

fn compile_for(
    expr: &str,
    linktype: u32,
    target: libpcap::Target,
    snaplen: u32,
) -> Result<Program, FilterError> {
    let insns = libpcap::compile(expr, target, snaplen).map_err(|f| match f {
        CompileFailure::Missing(detail) => FilterError::NoLibpcap {
            expr: expr.into(),
            detail,
        },
        CompileFailure::Refused(message) => FilterError::Compile {
            expr: expr.into(),
            linktype,
            message,
        },
        CompileFailure::Unsupported => FilterError::Unsupported { expr: expr.into() },
    })?;
    Program::new(insns).map_err(|source| FilterError::Program {
        expr: expr.into(),
        linktype,
        source,
    })
}

/// The DLT_ value libpcap's compiler knows a LINKTYPE_ value by (what
/// libpcap's `linktype_to_dlt` does when it reads a file): they differ only
/// for a few old types, of which live capture meets raw IP (tun devices).
fn dlt(linktype: u32) -> u32 {
    match linktype {
        // LINKTYPE_RAW: DLT_RAW, 12 everywhere but OpenBSD.
        101 => 12,
        other => other,
    }
}

/// The expression of a `--filter` or `filter =`: a blank one is no filter.
pub fn expression(expr: Option<&str>) -> Option<&str> {
    expr.map(str::trim).filter(|e| !e.is_empty())
}

/// One link type's program, or why there is none.
struct Slot {
    linktype: u32,
    program: Result<Program, FilterError>,
    /// A compile failure has been logged (followed sources log it once).
    reported: bool,
}

/// A filter for packets read from files: compiled again for every link
/// type it meets, and counting what it leaves out.
pub struct PacketFilter {
    expr: String,
    slots: Vec<Slot>,
    /// The slot the last packet used: files rarely change link type.
    last: usize,
    /// Packets left out so far.
    pub filtered: u64,
}

impl PacketFilter {
    /// Compiles `expr` for Ethernet at once, so a mistake in it is an error
    /// when the run starts; `None` for a blank expression.
    pub fn new(expr: Option<&str>) -> Result<Option<PacketFilter>, FilterError> {
        let Some(expr) = expression(expr) else {
            return Ok(None);
        };
        let program = compile_for_file(expr, LINKTYPE_ETHERNET)?;
        Ok(Some(PacketFilter {
            expr: expr.into(),
            slots: vec![Slot {
                linktype: LINKTYPE_ETHERNET,
                program: Ok(program),
                reported: false,
            }],
            last: 0,
            filtered: 0,
        }))
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The slot for `linktype`, compiled on first use.
    fn slot(&mut self, linktype: u32) -> &mut Slot {
        if self
            .slots
            .get(self.last)
            .is_none_or(|s| s.linktype != linktype)
        {
            self.last = match self.slots.iter().position(|s| s.linktype == linktype) {
                Some(i) => i,
                None => {
                    let program = compile_for_file(&self.expr, linktype);
                    self.slots.push(Slot {
                        linktype,
                        program,
                        reported: false,
                    });
                    self.slots.len() - 1
                }
            };
        }
        &mut self.slots[self.last]
    }

    /// Compiles for `linktype` now (a file's first packet tells it), so that
    /// an expression the file's link type has no meaning for is an error
    /// before the run rather than in the middle.
    pub fn prepare(&mut self, linktype: u32) -> Result<(), FilterError> {
        self.slot(linktype)
            .program
            .as_ref()
            .map(|_| ())
            .map_err(Clone::clone)
    }

    /// Whether `p` passes; an error if the expression cannot be compiled for
    /// its link type (tcpdump refuses such a file too).
    #[inline]
    pub fn accepts(&mut self, p: &RawPacket<'_>) -> Result<bool, FilterError> {
        let pass = match &self.slot(p.linktype).program {
            Ok(prog) => prog.accepts(p.data, p.orig_len),
            Err(e) => return Err(e.clone()),
        };
        self.filtered += u64::from(!pass);
        Ok(pass)
    }

    /// [`Self::accepts`] for a source that must go on (a followed folder or
    /// container): packets of a link type the expression cannot be compiled
    /// for are left out, and why is logged once.
    #[inline]
    pub fn accepts_or_leave_out(&mut self, p: &RawPacket<'_>) -> bool {
        match self.accepts(p) {
            Ok(pass) => pass,
            Err(e) => {
                self.filtered += 1;
                let slot = self.slot(p.linktype);
                if !slot.reported {
                    slot.reported = true;
                    tracing::error!("{e}; packets of link type {} are left out", p.linktype);
                }
                false
            }
        }
    }
}

/// A [`Feed`] that hands on only the packets `filter` passes (ticks and
/// gaps always): a followed source reads, checks overlap and coverage on
/// every packet, and filters just before the engine, so a sparse filter
/// does not turn into coverage gaps.
pub struct FilteredFeed<'a> {
    pub feed: &'a mut dyn Feed,
    pub filter: Option<&'a mut PacketFilter>,
}

impl Feed for FilteredFeed<'_> {
    #[inline]
    fn packet(&mut self, p: RawPacket<'_>) {
        if self
            .filter
            .as_deref_mut()
            .is_none_or(|f| f.accepts_or_leave_out(&p))
        {
            self.feed.packet(p);
        }
    }

    fn tick(&mut self, now_ns: u64) {
        self.feed.tick(now_ns);
    }

    fn gap(&mut self, start_ns: u64, end_ns: u64) {
        self.feed.gap(start_ns, end_ns);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn packet(data: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts_ns: 0,
            linktype: LINKTYPE_ETHERNET,
            orig_len: data.len() as u32,
            data,
        }
    }

    /// A UDP frame from 10.0.0.1:1234 to 10.0.0.2:`dport`.
    fn udp(dport: u16) -> Vec<u8> {
        crate::testkit::udp_frame(1234, dport)
    }

    #[test]
    fn libpcap_compiles_and_the_program_filters() {
        let mut f = PacketFilter::new(Some("udp port 53")).unwrap().unwrap();
        assert!(f.accepts(&packet(&udp(53))).unwrap());
        assert!(!f.accepts(&packet(&udp(54))).unwrap());
        // Cut before the ports: a load beyond the data rejects.
        assert!(!f.accepts(&packet(&udp(53)[..36])).unwrap());
        assert_eq!(f.filtered, 2);
        // The live program returns the snap length, which truncates.
        let live = compile("udp", LINKTYPE_ETHERNET, 128).unwrap();
        assert_eq!(live.run(&udp(53), 42), 128);
    }

    #[test]
    fn a_blank_expression_is_no_filter() {
        assert!(PacketFilter::new(Some("  ")).unwrap().is_none());
        assert!(PacketFilter::new(None).unwrap().is_none());
    }

    #[test]
    fn a_bad_expression_names_itself_and_libpcaps_reason() {
        let e = PacketFilter::new(Some("tcp port"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("filter \"tcp port\""), "{e}");
        assert!(e.contains("syntax error"), "{e}");
    }

    #[test]
    fn each_link_type_gets_its_own_program() {
        let mut f = PacketFilter::new(Some("udp port 53")).unwrap().unwrap();
        // The same datagram as raw IP (LINKTYPE_RAW, 101): no Ethernet header.
        let frame = udp(53);
        let raw = RawPacket {
            linktype: 101,
            ..packet(&frame[14..])
        };
        assert!(f.accepts(&raw).unwrap());
        assert!(f.accepts(&packet(&frame)).unwrap());
        // `vlan` means nothing on raw IP: an error naming the link type.
        let mut v = PacketFilter::new(Some("vlan")).unwrap().unwrap();
        let e = v.accepts(&raw).unwrap_err().to_string();
        assert!(e.contains("link type 101"), "{e}");
        assert!(!v.accepts_or_leave_out(&raw));
    }
}

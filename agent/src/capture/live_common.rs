//! What live capture's callers see on every platform: its options, its
//! counters and its errors. The ring itself is `live` (Linux) or its
//! stand-in (`live_unsupported`).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("capturing on {iface} needs CAP_NET_RAW{}", if *.promiscuous { " and CAP_NET_ADMIN (promiscuous mode)" } else { "" })]
    Permission { iface: String, promiscuous: bool },
    #[error("no interface named {0:?}")]
    NoInterface(String),
    #[error("{iface}: {what}: {source}")]
    Io {
        iface: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("no interface to capture on (none is up, has an address and is not loopback)")]
    NothingToCapture,
    /// The capture filter cannot be compiled for this interface's link type.
    #[error("{iface}: {source}")]
    Filter {
        iface: String,
        #[source]
        source: super::filter::FilterError,
    },
    /// Not Linux: see `platform::LIVE_CAPTURE_UNSUPPORTED`.
    #[error("{}", crate::platform::LIVE_CAPTURE_UNSUPPORTED)]
    Unsupported,
}

#[derive(Clone, Debug)]
pub struct RingOptions {
    pub snaplen: u32,
    pub promiscuous: bool,
    pub block_size: usize,
    pub blocks: usize,
    /// A block is handed over after this long even if not full.
    pub block_timeout_ms: u32,
    /// A capture filter (tcpdump's language), compiled for each interface's
    /// link type and run by the kernel on the socket.
    pub filter: Option<String>,
}

/// 32 MiB per interface in 4 blocks of 8 MiB, handed over when full or after
/// 200 ms. Few, large blocks mean few wake-ups: on a VM the flow table's
/// cache lines are largely gone after every idle stretch (the host runs
/// other work on the core), so each wake-up starts with a cold table; at
/// 400 kpps 8 MiB blocks wake the agent every ~100 ms instead of every
/// ~12 ms with 1 MiB blocks, and CPU per packet fell ~20 % (BENCHMARKS.md).
/// Records wait at most 200 ms longer, which no flow timeout notices.
impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            snaplen: 128,
            promiscuous: false,
            block_size: DEFAULT_BLOCK_KIB << 10,
            blocks: DEFAULT_BLOCKS,
            block_timeout_ms: 200,
            filter: None,
        }
    }
}

pub use crate::config::{
    DEFAULT_RING_BLOCKS as DEFAULT_BLOCKS, DEFAULT_RING_BLOCK_KIB as DEFAULT_BLOCK_KIB,
};

/// Per-interface counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IfaceStats {
    pub iface: String,
    /// Packets the ring delivered to us.
    pub packets: u64,
    /// Packets the kernel dropped because the ring was full.
    pub kernel_drops: u64,
}

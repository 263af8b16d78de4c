//! The protocol crate's error type.

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    Oversized { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("malformed record block: {0}")]
    BadBlock(String),
    #[error("unsupported protocol version {got} (this side speaks {supported})")]
    UnsupportedVersion { got: u16, supported: u16 },
}

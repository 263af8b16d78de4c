//! What is wrong with a flow-log block, record or tuple; each error names
//! the blob and the block it was found in.

/// What is wrong with one tuple string (the blob is named by
/// [`FlowlogError::Tuple`], which carries this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    #[error("{found} fields; the {schema} schema has {expected}")]
    FieldCount {
        schema: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("field {index} ({name}): {value:?} is not {what}")]
    Field {
        index: usize,
        name: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("source and destination are of different address families")]
    MixedFamilies,
}

/// A block, record or tuple of a flow-log blob that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowlogError {
    /// The block is not (part of) a `{"records":[…]}` document.
    #[error("{blob}: block {block}: {what}")]
    Block {
        blob: String,
        block: u32,
        what: String,
    },
    /// A record without the fields its category needs.
    #[error("{blob}: block {block}: record {record}: {what}")]
    Record {
        blob: String,
        block: u32,
        record: usize,
        what: String,
    },
    #[error("{blob}: block {block}: tuple {tuple:?}: {source}")]
    Tuple {
        blob: String,
        block: u32,
        /// The tuple as logged, cut to 200 bytes.
        tuple: String,
        #[source]
        source: TupleError,
    },
}

/// At most `max` bytes of `s`, cut at a character boundary: errors quote
/// what they refuse without carrying a whole hostile input along.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

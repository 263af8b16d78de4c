//! Reading IPFIX messages, written from RFC 7011 alone (not from the
//! encoder's field list): templates are learnt from the messages, data
//! records decoded by them. Any bytes give messages or a clear error, never
//! a panic. The tests and the fuzz target check the encoder with it.

use std::collections::HashMap;

use super::{IPFIX_VERSION, TEMPLATE_SET};
use crate::error::ProtoError;

const OPTIONS_TEMPLATE_SET: u16 = 3;
const VARIABLE: u16 = 65_535;

/// A field specifier of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FieldSpec {
    /// The information element, without the enterprise bit.
    pub id: u16,
    /// The enterprise number, when the enterprise bit is set.
    pub enterprise: Option<u32>,
    /// The length, or 65535 for variable-length.
    pub len: u16,
}

/// One data record: its template and each field's value bytes in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataRecord {
    pub template: u16,
    pub fields: Vec<(FieldSpec, Vec<u8>)>,
}

impl DataRecord {
    /// An unsigned field's value (at most 8 bytes), by element and
    /// enterprise number.
    pub fn uint(&self, id: u16, enterprise: Option<u32>) -> Option<u64> {
        self.fields
            .iter()
            .find(|(f, _)| f.id == id && f.enterprise == enterprise)
            .filter(|(_, v)| v.len() <= 8)
            .map(|(_, v)| v.iter().fold(0, |a, &b| a << 8 | u64::from(b)))
    }

    /// A field's value bytes.
    pub fn bytes(&self, id: u16, enterprise: Option<u32>) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(f, _)| f.id == id && f.enterprise == enterprise)
            .map(|(_, v)| v.as_slice())
    }
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpfixMessage {
    pub export_time: u32,
    pub sequence: u32,
    pub domain: u32,
    /// Templates the message defined, by ID.
    pub templates: Vec<u16>,
    pub records: Vec<DataRecord>,
    /// Data sets whose template was never seen (RFC 7011 §8: kept aside or
    /// dropped by a collector; counted here).
    pub unknown_sets: usize,
}

/// Splits an IPFIX file (messages back to back, RFC 5655) into messages.
pub fn messages(file: &[u8]) -> Result<Vec<&[u8]>, ProtoError> {
    let mut out = Vec::new();
    let mut rest = file;
    while !rest.is_empty() {
        let len = rest
            .get(2..4)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .ok_or_else(|| bad("a message header cut short"))?;
        if len < 16 || len > rest.len() {
            return Err(bad(&format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        let (m, r) = rest.split_at(len);
        out.push(m);
        rest = r;
    }
    Ok(out)
}

/// Remembers templates per observation domain across messages.
#[derive(Default)]
pub struct IpfixDecoder {
    templates: HashMap<(u32, u16), Vec<FieldSpec>>,
}

fn bad(what: &str) -> ProtoError {
    ProtoError::Malformed(format!("ipfix: {what}"))
}

/// A cursor that checks each read.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if n > self.0.len() {
            return Err(bad("a set or record cut short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProtoError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl IpfixDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn message(&mut self, bytes: &[u8]) -> Result<IpfixMessage, ProtoError> {
        let mut r = Reader(bytes);
        let version = r.u16()?;
        if version != IPFIX_VERSION {
            return Err(bad(&format!("version {version}, not 10")));
        }
        let len = usize::from(r.u16()?);
        if len != bytes.len() {
            return Err(bad(&format!(
                "length field {len}, message of {} bytes",
                bytes.len()
            )));
        }
        let mut m = IpfixMessage {
            export_time: r.u32()?,
            sequence: r.u32()?,
            domain: r.u32()?,
            templates: Vec::new(),
            records: Vec::new(),
            unknown_sets: 0,
        };
        while !r.0.is_empty() {
            let id = r.u16()?;
            let set_len = usize::from(r.u16()?);
            if set_len < 4 {
                return Err(bad(&format!("set length {set_len}")));
            }
            let mut body = Reader(r.take(set_len - 4)?);
            match id {
                TEMPLATE_SET | OPTIONS_TEMPLATE_SET => {
                    // Anything shorter than a template header is padding.
                    while body.0.len() >= 4 {
                        let tid = body.u16()?;
                        let count = body.u16()?;
                        if id == OPTIONS_TEMPLATE_SET {
                            body.u16()?; // scope field count
                        }
                        let mut fields = Vec::with_capacity(usize::from(count).min(256));
                        for _ in 0..count {
                            let raw = body.u16()?;
                            let len = body.u16()?;
                            let enterprise = if raw & 0x8000 != 0 {
                                Some(body.u32()?)
                            } else {
                                None
                            };
                            fields.push(FieldSpec {
                                id: raw & 0x7fff,
                                enterprise,
                                len,
                            });
                        }
                        if tid < 256 {
                            return Err(bad(&format!("template ID {tid}")));
                        }
                        m.templates.push(tid);
                        self.templates.insert((m.domain, tid), fields);
                    }
                }
                0..=255 => return Err(bad(&format!("set ID {id}"))),
                _ => {
                    let Some(fields) = self.templates.get(&(m.domain, id)) else {
                        m.unknown_sets += 1;
                        continue;
                    };
                    // A record needs at least one byte, else the set would
                    // never end; the rest is padding once too short.
                    let min: usize = fields
                        .iter()
                        .map(|f| {
                            if f.len == VARIABLE {
                                1
                            } else {
                                usize::from(f.len)
                            }
                        })
                        .sum();
                    if min == 0 {
                        return Err(bad(&format!("template {id} has no bytes")));
                    }
                    while body.0.len() >= min {
                        let mut values = Vec::with_capacity(fields.len());
                        for f in fields {
                            let n = if f.len == VARIABLE {
                                match body.u8()? {
                                    255 => usize::from(body.u16()?),
                                    n => usize::from(n),
                                }
                            } else {
                                usize::from(f.len)
                            };
                            values.push((*f, body.take(n)?.to_vec()));
                        }
                        m.records.push(DataRecord {
                            template: id,
                            fields: values,
                        });
                    }
                }
            }
        }
        Ok(m)
    }
}

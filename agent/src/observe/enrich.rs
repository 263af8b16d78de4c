//! Where a remote address is: country and autonomous system from
//! MaxMind-format databases (GeoIP2/GeoLite2, or the free ip-location-db
//! ones), read whole into memory at start. Several databases can be given;
//! each field comes from the first that knows it (a country database and an
//! ASN database side by side).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("enrich.mmdb {}: {source}", path.display())]
pub struct EnrichError {
    path: PathBuf,
    #[source]
    source: maxminddb::MaxMindDbError,
}

/// What the databases know of one address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
}

/// The fields read, in both layouts: GeoIP2 (`country.iso_code`) and the
/// flat ip-location-db / GeoLite2-ASN one. Each field is read on its own:
/// one of an unexpected type (free databases differ) is unknown, not the
/// whole entry.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    country: Option<Lenient<Country<'a>>>,
    #[serde(borrow, default)]
    country_code: Option<Lenient<&'a str>>,
    #[serde(default)]
    autonomous_system_number: Option<Lenient<u32>>,
    #[serde(borrow, default)]
    autonomous_system_organization: Option<Lenient<&'a str>>,
}

/// A field as expected, or of another type.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Known(T),
    Odd(serde::de::IgnoredAny),
}

/// GeoIP2's `{"iso_code": …}`, or the code itself as some databases have it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Country<'a> {
    Map {
        #[serde(borrow)]
        iso_code: Option<&'a str>,
    },
    Code(&'a str),
}

impl<T> Lenient<T> {
    /// The value; a field of another type is counted in `odd`.
    fn take(field: Option<Self>, odd: &mut bool) -> Option<T> {
        match field? {
            Lenient::Known(v) => Some(v),
            Lenient::Odd(_) => {
                *odd = true;
                None
            }
        }
    }
}

struct Db {
    reader: maxminddb::Reader<Vec<u8>>,
    path: PathBuf,
    /// Entries read with a field of an unexpected type.
    odd: AtomicU64,
}

pub struct Enricher {
    dbs: Vec<Db>,
}

impl Enricher {
    /// Every database opened and its metadata checked: a missing or corrupt
    /// file is an error at start naming it.
    pub fn open(paths: &[PathBuf]) -> Result<Enricher, EnrichError> {
        let dbs = paths
            .iter()
            .map(|p| {
                Ok(Db {
                    reader: open_one(p)?,
                    path: p.clone(),
                    odd: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Enricher { dbs })
    }

    pub fn lookup(&self, ip: IpAddr) -> Place {
        // An IPv4 address seen as IPv6 (`::ffff:a.b.c.d`) is where the
        // databases keep it as IPv4, as the watchlists already take it.
        let ip = ip.to_canonical();
        let mut place = Place::default();
        for db in &self.dbs {
            // A damaged record in one database leaves its fields unknown.
            let Ok(Some(e)) = db.reader.lookup(ip).and_then(|r| r.decode::<Entry<'_>>()) else {
                continue;
            };
            let mut odd = false;
            let country = match Lenient::take(e.country, &mut odd) {
                Some(Country::Map { iso_code }) => iso_code,
                Some(Country::Code(c)) => Some(c),
                None => None,
            };
            let country = country.or(Lenient::take(e.country_code, &mut odd));
            let asn = Lenient::take(e.autonomous_system_number, &mut odd);
            let as_org = Lenient::take(e.autonomous_system_organization, &mut odd);
            if odd && db.odd.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "enrich.mmdb {}: an entry has a country or AS field of an unexpected type; \
                     such fields are taken as unknown, the others kept (said once per database)",
                    db.path.display()
                );
            }
            if place.country.is_none() {
                place.country = country.map(str::to_string);
            }
            // Number and organisation from the same database: one AS's
            // number beside another's name would be worse than either alone.
            if place.asn.is_none() && place.as_org.is_none() {
                place.asn = asn;
                place.as_org = as_org.map(str::to_string);
            }
        }
        place
    }

    /// Entries read so far with a field of an unexpected type, all databases.
    pub fn odd_entries(&self) -> u64 {
        self.dbs.iter().map(|d| d.odd.load(Ordering::Relaxed)).sum()
    }
}

fn open_one(path: &Path) -> Result<maxminddb::Reader<Vec<u8>>, EnrichError> {
    maxminddb::Reader::open_readfile(path).map_err(|source| EnrichError {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_corrupt_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.mmdb");
        let e = Enricher::open(std::slice::from_ref(&missing))
            .err()
            .unwrap();
        assert!(e.to_string().contains("none.mmdb"), "{e}");
        let junk = dir.path().join("junk.mmdb");
        std::fs::write(&junk, b"not a database at all").unwrap();
        let e = Enricher::open(&[junk]).err().unwrap();
        assert!(e.to_string().contains("junk.mmdb"), "{e}");
    }
}

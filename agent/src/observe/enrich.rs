//! Where a remote address is: country and autonomous system from
//! MaxMind-format databases (GeoIP2/GeoLite2, or the free ip-location-db
//! ones), read whole into memory at start. Several databases can be given;
//! each field comes from the first that knows it (a country database and an
//! ASN database side by side).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

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
/// flat ip-location-db / GeoLite2-ASN one.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    country_code: Option<&'a str>,
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

pub struct Enricher {
    dbs: Vec<maxminddb::Reader<Vec<u8>>>,
}

impl Enricher {
    /// Every database opened and its metadata checked: a missing or corrupt
    /// file is an error at start naming it.
    pub fn open(paths: &[PathBuf]) -> Result<Enricher, EnrichError> {
        let dbs = paths
            .iter()
            .map(|p| open_one(p))
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
            let Ok(Some(e)) = db.lookup(ip).and_then(|r| r.decode::<Entry<'_>>()) else {
                continue;
            };
            let country = e.country.and_then(|c| c.iso_code).or(e.country_code);
            if place.country.is_none() {
                place.country = country.map(str::to_string);
            }
            // Number and organisation from the same database: one AS's
            // number beside another's name would be worse than either alone.
            if place.asn.is_none() && place.as_org.is_none() {
                place.asn = e.autonomous_system_number;
                place.as_org = e.autonomous_system_organization.map(str::to_string);
            }
        }
        place
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

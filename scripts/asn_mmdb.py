#!/usr/bin/env python3
"""Builds a MaxMind-format ASN database from ip-location-db's ASN CSV.

Usage: asn_mmdb.py OUT.mmdb asn-ipv4.csv asn-ipv6.csv

npm carries that data only as CSV (`@ip-location-db/asn`); the tests want
it in the format `[enrich] mmdb` reads, with the flat GeoLite2-ASN fields
(`autonomous_system_number`, `autonomous_system_organization`). Written
with mmdb-writer (MIT), whose output the agent reads with the maxminddb
crate: the test then checks lookups against the CSV itself.
"""
import csv
import sys

from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPRange, IPSet


def main():
    out, *files = sys.argv[1:]
    w = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="vmflow-test-ASN",
        languages=["en"],
        description={"en": "ip-location-db asn (RouteViews, DB-IP, NRO; CC BY 4.0)"},
    )
    rows = 0
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            for start, end, asn, org in csv.reader(f):
                w.insert_network(
                    IPSet(IPRange(start, end)),
                    {
                        "autonomous_system_number": MmdbU32(int(asn)),
                        "autonomous_system_organization": org,
                    },
                )
                rows += 1
    w.to_db_file(out)
    print(f"{out}: {rows} ranges", file=sys.stderr)


if __name__ == "__main__":
    main()

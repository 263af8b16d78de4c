//! Which blobs are flow logs: their names end in
//! `y=YYYY/m=MM/d=DD/h=HH/m=00/macAddress=MAC/PT1H.json`. What comes before
//! differs between NSG and VNet logs and between documents, so only the end
//! is read (never built).

use crate::flowlog::parse::normalize_mac;

/// What a flow-log blob's name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hourly {
    /// The hour it holds, as Unix seconds of its start.
    pub hour: i64,
    /// Upper-case hex, no separators.
    pub mac: String,
}

/// The hour and NIC of a flow-log blob; `None` for any other name.
pub fn hourly(name: &str) -> Option<Hourly> {
    let parts: Vec<&str> = name.rsplitn(8, '/').collect();
    // Reversed: file, macAddress, m=00, h, d, m, y.
    if parts.len() < 7 || !parts[0].eq_ignore_ascii_case("PT1H.json") {
        return None;
    }
    let value = |part: &str, key: &str| -> Option<String> {
        let (k, v) = part.split_once('=')?;
        k.eq_ignore_ascii_case(key).then(|| v.to_string())
    };
    let num = |part: &str, key: &str, digits: usize| -> Option<i64> {
        let v = value(part, key)?;
        (v.len() == digits && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse().ok())
            .flatten()
    };
    let mac = normalize_mac(&value(parts[1], "macAddress")?);
    if mac.len() != 12 || num(parts[2], "m", 2)? != 0 {
        return None;
    }
    let (h, d, m, y) = (
        num(parts[3], "h", 2)?,
        num(parts[4], "d", 2)?,
        num(parts[5], "m", 2)?,
        num(parts[6], "y", 4)?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 {
        return None;
    }
    let day = crate::calendar::days_from_civil(y, m, d);
    Some(Hourly {
        hour: day * 86_400 + h * 3_600,
        mac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_and_every_prefix_form() {
        let nsg = "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG/y=2025/m=01/d=31/h=16/m=00/macAddress=000D3AF87856/PT1H.json";
        let h = hourly(nsg).unwrap();
        assert_eq!(h.mac, "000D3AF87856");
        assert_eq!(h.hour, 1_738_339_200);
        for vnet in [
            "flowLogResourceID=/SUBSCRIPTIONS/S/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_EASTUS/FLOWLOGS/FL/y=2025/m=01/d=31/h=16/m=00/macAddress=00-0D-3A-F8-78-56/PT1H.json",
            "flowLogResourceID=/S_NETWORKWATCHERRG/NETWORKWATCHER_EASTUS_FL/y=2025/m=01/d=31/h=16/m=00/macAddress=000d3af87856/PT1H.json",
            "y=2025/m=01/d=31/h=16/m=00/macAddress=000D3AF87856/pt1h.json",
        ] {
            assert_eq!(hourly(vnet), Some(h.clone()), "{vnet}");
        }
        for not in [
            "",
            "PT1H.json",
            "a/y=2025/m=01/d=31/h=16/m=00/macAddress=000D3AF87856/PT1H.json.tmp",
            "a/y=2025/m=01/d=31/h=16/m=30/macAddress=000D3AF87856/PT1H.json",
            "a/y=2025/m=13/d=31/h=16/m=00/macAddress=000D3AF87856/PT1H.json",
            "a/y=2025/m=01/d=31/h=24/m=00/macAddress=000D3AF87856/PT1H.json",
            "a/y=25/m=01/d=31/h=16/m=00/macAddress=000D3AF87856/PT1H.json",
            "a/y=2025/m=01/d=31/h=16/m=00/macAddress=0D3A/PT1H.json",
            "a/x=2025/m=01/d=31/h=16/m=00/macAddress=000D3AF87856/PT1H.json",
            "subscriptions/x/2025/01/31/packetcapture_16_39_41_077.cap",
        ] {
            assert_eq!(hourly(not), None, "{not}");
        }
    }
}

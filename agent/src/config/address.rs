//! `host:port` addresses, checked when the file is read: an address that
//! can never connect (no port, port 0, a bare IPv6 address) is a mistake to
//! name now, not a connection to retry forever.

use super::ConfigError;

/// `value` is `host:port`: a name, an IPv4 address or a bracketed IPv6
/// address, and a port in 1..=65535.
pub fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        Err(ConfigError::Invalid(format!(
            "{key} = {value:?}: {why} (host:port, e.g. collector.example:4739 or [2001:db8::1]:4739)"
        )))
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(0) => return bad("port 0"),
        Ok(_) => {}
        Err(_) => return bad("the port is not a number in 1..=65535"),
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if bracketed {
        if host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_err()
        {
            return bad("not an IPv6 address in the brackets");
        }
    } else if host.is_empty() {
        return bad("no host");
    } else if host.contains(':') {
        return bad("an IPv6 address needs brackets");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_that_can_connect_pass_and_the_rest_say_why() {
        for ok in [
            "collector.example:4739",
            "10.0.0.5:1",
            "[::1]:4739",
            "localhost:65535",
        ] {
            host_port("k", ok).unwrap();
        }
        for (bad, why) in [
            ("collector.example", "no port"),
            ("collector.example:0", "port 0"),
            ("collector.example:http", "not a number"),
            ("collector.example:70000", "not a number"),
            (":4739", "no host"),
            ("::1:4739", "brackets"),
            ("[zz]:4739", "IPv6"),
        ] {
            let e = host_port("export.collector", bad).unwrap_err().to_string();
            assert!(
                e.contains("export.collector") && e.contains(why),
                "{bad}: {e}"
            );
        }
    }
}

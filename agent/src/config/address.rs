//! `host:port` addresses, checked when the file is read: an address that
//! can never connect (no port, port 0, a bare IPv6 address) is a mistake to
//! name now, not a connection to retry forever.

use super::ConfigError;

/// `value` is `host:port`: a name, an IPv4 address or a bracketed IPv6
/// address, and a port in 1..=65535.
pub fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    check(key, value, false)
}

/// An address to listen on: `host:port` by the same rules, but port 0 (any
/// free port) is allowed; a name is resolved and its first address taken.
pub fn listen_addr(key: &str, value: &str) -> Result<std::net::SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    check(key, value, true)?;
    let mut found = value.to_socket_addrs().map_err(|e| {
        ConfigError::Invalid(format!("{key} = {value:?}: cannot resolve the host: {e}"))
    })?;
    found
        .next()
        .ok_or_else(|| ConfigError::Invalid(format!("{key} = {value:?}: the host has no address")))
}

fn check(key: &str, value: &str, port_zero: bool) -> Result<(), ConfigError> {
    let bad = |why: &str| {
        Err(ConfigError::Invalid(format!(
            "{key} = {value:?}: {why} (host:port, e.g. collector.example:4739 or [2001:db8::1]:4739)"
        )))
    };
    let Some((host, port)) = value.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(0) if !port_zero => return bad("port 0"),
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
    fn listen_addresses_resolve_names_and_allow_port_0() {
        let a = listen_addr("--listen", "localhost:7000").unwrap();
        assert!(a.ip().is_loopback() && a.port() == 7000, "{a}");
        assert_eq!(
            listen_addr("--listen", "127.0.0.1:0").unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            listen_addr("--listen", "[::1]:9").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        for (bad, why) in [
            ("localhost", "no port"),
            ("::1:4739", "brackets"),
            ("no-such-host.invalid:7000", "cannot resolve"),
        ] {
            let e = listen_addr("--listen", bad).unwrap_err().to_string();
            assert!(e.contains("--listen") && e.contains(why), "{bad}: {e}");
        }
    }

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

//! What the machine must grant live capture.

/// CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode) in this process's
/// effective set, from `/proc/self/status` (Linux: live capture is
/// Linux-only).
pub fn capabilities(promiscuous: bool) -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("/proc/self/status: no CapEff line")?;
    const NET_ADMIN: u64 = 1 << 12;
    const NET_RAW: u64 = 1 << 13;
    let mut missing = Vec::new();
    if eff & NET_RAW == 0 {
        missing.push("CAP_NET_RAW");
    }
    if promiscuous && eff & NET_ADMIN == 0 {
        missing.push("CAP_NET_ADMIN (promiscuous = true)");
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "capture.live: this process lacks {}: run as root or grant it (the package's unit has CAP_NET_RAW)",
            missing.join(" and ")
        )),
    }
}

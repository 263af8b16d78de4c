//! The files the guest agent reads back: `<statusFolder>/<N>.status` and the
//! heartbeat file, in the shapes WALinuxAgent parses (`parse_ext_status`,
//! `collect_heartbeat`; azure-reference.md §6.6, §6.7). Both are replaced
//! atomically, so a reader (or a power cut) sees the old or the new file.

use serde_json::json;

use super::{environment::Handler, ExtensionError};
use crate::disk::{self, Fs};

/// `status.status` of a status file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Transitioning,
    Success,
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Transitioning => "transitioning",
            State::Success => "success",
            State::Error => "error",
        }
    }
}

/// The guest agent truncates longer messages (to 1 KiB); keep ours whole.
const MAX_MESSAGE: usize = 1000;

#[derive(Clone, Debug)]
pub struct Status {
    /// `Enable`, `Disable`, …
    pub operation: &'static str,
    pub state: State,
    pub message: String,
}

impl Status {
    pub fn new(operation: &'static str, state: State, message: &str) -> Status {
        let mut m = message.to_string();
        if m.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE - 3;
            while !m.is_char_boundary(cut) {
                cut -= 1;
            }
            m.truncate(cut);
            m.push_str("...");
        }
        Status {
            operation,
            state,
            message: m,
        }
    }

    /// The status file's bytes: a one-element JSON array.
    pub fn to_json(&self, name: &str, now: u64) -> Vec<u8> {
        let t = utc(now);
        let code = if self.state == State::Error { 1 } else { 0 };
        let mut v = json!([{
            "version": 1.0,
            "timestampUTC": t,
            "status": {
                "name": name,
                "operation": self.operation,
                "status": self.state.as_str(),
                "code": code,
                "formattedMessage": { "lang": "en-US", "message": self.message },
            }
        }]);
        if self.state == State::Success {
            v[0]["status"]["configurationAppliedTime"] = json!(t);
        }
        v.to_string().into_bytes()
    }
}

/// The heartbeat file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub ready: bool,
    pub message: String,
}

impl Heartbeat {
    pub fn ready(message: &str) -> Heartbeat {
        Heartbeat {
            ready: true,
            message: message.into(),
        }
    }
    pub fn not_ready(message: &str) -> Heartbeat {
        Heartbeat {
            ready: false,
            message: Status::new("", State::Error, message).message,
        }
    }
    pub fn to_json(&self) -> Vec<u8> {
        let v = json!([{
            "version": 1.0,
            "heartbeat": {
                "status": if self.ready { "ready" } else { "notready" },
                "code": if self.ready { 0 } else { 1 },
                "Message": self.message,
            }
        }]);
        v.to_string().into_bytes()
    }
}

pub fn write_status(
    fs: &dyn Fs,
    h: &Handler,
    seq: u64,
    st: &Status,
    now: u64,
) -> Result<(), ExtensionError> {
    let path = h.status_file(seq);
    fs.create_dir_all(&h.status_folder)
        .map_err(ExtensionError::io(&h.status_folder))?;
    disk::replace(fs, &path, &st.to_json(&h.name, now)).map_err(ExtensionError::io(&path))
}

/// Writes the heartbeat file when the manifest asks for heartbeats.
pub fn write_heartbeat(fs: &dyn Fs, h: &Handler, hb: &Heartbeat) -> Result<(), ExtensionError> {
    if !h.report_heartbeat {
        return Ok(());
    }
    let path = &h.heartbeat_file;
    // The timer's command and enable may write it at the same moment.
    let mut tmp = disk::tmp_path(path).into_os_string();
    tmp.push(format!(".{}", std::process::id()));
    super::write_atomic_via(fs, path, std::path::Path::new(&tmp), &hb.to_json(), None)
        .map_err(ExtensionError::io(path))
}

/// `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = crate::calendar::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields WALinuxAgent validates: status one of the four values,
    /// formattedMessage with lang and message, element [0].
    #[test]
    fn status_has_the_shape_the_guest_agent_validates() {
        let s = Status::new("Enable", State::Error, "bad key flow.idle_timeot");
        let v: serde_json::Value =
            serde_json::from_slice(&s.to_json("Pub.Type", 86_400 * 365)).unwrap();
        let st = &v[0]["status"];
        assert_eq!(v[0]["version"], 1.0);
        assert_eq!(v[0]["timestampUTC"], "1971-01-01T00:00:00Z");
        assert_eq!(st["status"], "error");
        assert_eq!(st["operation"], "Enable");
        assert_eq!(st["name"], "Pub.Type");
        assert_eq!(st["formattedMessage"]["lang"], "en-US");
        assert_eq!(
            st["formattedMessage"]["message"],
            "bad key flow.idle_timeot"
        );
        let long = Status::new("Enable", State::Error, &"é".repeat(2000));
        assert!(long.message.len() <= MAX_MESSAGE);
        let hb: serde_json::Value =
            serde_json::from_slice(&Heartbeat::ready("ok").to_json()).unwrap();
        assert_eq!(hb[0]["heartbeat"]["status"], "ready");
        assert_eq!(hb[0]["heartbeat"]["Message"], "ok");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}

//! The Windows event log (Application log, source `vmflow`): where a
//! service's errors are looked for. The source is not registered with a
//! message file, so Event Viewer shows the text as the event's only
//! insertion string under "the description for Event ID 1 cannot be
//! found" — the text is all there is to read anyway.

use std::io;
use std::ptr::{null, null_mut};

use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, RegisterEventSourceW, ReportEventW, EVENTLOG_ERROR_TYPE,
};

/// The event id of every error vmflow reports.
const EVENT_ID: u32 = 1;

/// Writes `message` to the Application log as an error from `source`.
pub fn report_error(source: &str, message: &str) -> io::Result<()> {
    let src: Vec<u16> = source.encode_utf16().chain([0]).collect();
    // ReportEventW caps one string at 31,839 characters.
    let msg: Vec<u16> = message.encode_utf16().take(31_000).chain([0]).collect();
    // SAFETY: a null server name means this machine; src is a
    // NUL-terminated UTF-16 string alive for the call.
    let h = unsafe { RegisterEventSourceW(null(), src.as_ptr()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    let strings = [msg.as_ptr()];
    // SAFETY: h is the open event source from above; `strings` holds one
    // pointer to a NUL-terminated UTF-16 string, both alive for the call
    // (wnumstrings = 1); no user SID and no raw data (size 0, null).
    let ok = unsafe {
        ReportEventW(
            h,
            EVENTLOG_ERROR_TYPE,
            0,
            EVENT_ID,
            null_mut(),
            1,
            0,
            strings.as_ptr(),
            null(),
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: h is the handle RegisterEventSourceW returned, closed once.
    unsafe { DeregisterEventSource(h) };
    if ok == 0 {
        return Err(err);
    }
    Ok(())
}

//! The Windows service: installing it with the Service Control Manager,
//! starting and stopping it, and the entry point the SCM calls. The job
//! itself is the caller's (`vmflow run`); a Stop from the SCM is
//! [`super::request_stop`], the same path as Ctrl-C, so the service stops
//! as `run` stops on SIGTERM (flows ended or checkpointed, spool flushed).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The service's name (`sc query vmflow`).
pub const NAME: &str = "vmflow";
const TYPE: ServiceType = ServiceType::OWN_PROCESS;

fn err(e: windows_service::Error) -> io::Error {
    match e {
        windows_service::Error::Winapi(e) => e,
        e => io::Error::other(e.to_string()),
    }
}

fn manager(access: ServiceManagerAccess) -> io::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access).map_err(err)
}

/// `%ProgramData%\vmflow`: the configuration, the log and (by the default
/// configuration) the spool.
pub fn data_dir() -> PathBuf {
    std::env::var_os("ProgramData")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join("vmflow")
}

/// Where the installed exe lives: `%ProgramFiles%\vmflow` (the .msi's
/// folder; the VM extension copies its exe there too).
pub fn program_dir() -> PathBuf {
    std::env::var_os("ProgramFiles")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\Program Files"))
        .join("vmflow")
}

fn info(exe: &Path, args: Vec<OsString>, start_type: ServiceStartType) -> ServiceInfo {
    ServiceInfo {
        name: NAME.into(),
        display_name: "vmflow flow agent".into(),
        service_type: TYPE,
        start_type,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_path_buf(),
        launch_arguments: args,
        dependencies: Vec::new(),
        account_name: None, // LocalSystem
        account_password: None,
    }
}

/// Whether the service is registered.
pub fn is_installed() -> io::Result<bool> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    match m.open_service(NAME, ServiceAccess::QUERY_STATUS) {
        Ok(_) => Ok(true),
        Err(windows_service::Error::Winapi(e))
            if e.raw_os_error() == Some(ERROR_SERVICE_DOES_NOT_EXIST) =>
        {
            Ok(false)
        }
        Err(e) => Err(err(e)),
    }
}

/// Whether the service is registered and running.
pub fn is_running() -> bool {
    manager(ServiceManagerAccess::CONNECT)
        .and_then(|m| {
            m.open_service(NAME, ServiceAccess::QUERY_STATUS)
                .map_err(err)
        })
        .and_then(|s| s.query_status().map_err(err))
        .is_ok_and(|st| st.current_state == ServiceState::Running)
}

/// Registers the service as [`install`] does, or, when it is registered
/// already, sets its command line and start type (`auto`: at boot;
/// otherwise on demand only).
pub fn register(exe: &Path, args: Vec<OsString>, auto: bool) -> io::Result<()> {
    let start = if auto {
        ServiceStartType::AutoStart
    } else {
        ServiceStartType::OnDemand
    };
    if !is_installed()? {
        return create(info(exe, args, start));
    }
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m
        .open_service(NAME, ServiceAccess::CHANGE_CONFIG)
        .map_err(err)?;
    s.change_config(&info(exe, args, start)).map_err(err)
}

/// Stops the service if it is registered and not stopped, waiting up to
/// `limit`; `false` when it is not registered.
pub fn stop_if_running(limit: Duration) -> io::Result<bool> {
    if !is_installed()? {
        return Ok(false);
    }
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m
        .open_service(NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)
        .map_err(err)?;
    if s.query_status().map_err(err)?.current_state != ServiceState::Stopped {
        let _ = s.stop();
        wait_for(ServiceState::Stopped, limit)?;
    }
    Ok(true)
}

/// Registers the service: `exe` with `args`, started at boot, restarted
/// 10 s after a failure (three times a day). Failure actions the SCM does
/// not take are a warning, not a failed install.
pub fn install(exe: &Path, args: Vec<OsString>) -> io::Result<()> {
    create(info(exe, args, ServiceStartType::AutoStart))
}

fn create(info: ServiceInfo) -> io::Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let s = m
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .map_err(err)?;
    let _ = s.set_description(
        "Turns Network Watcher packet captures into flow records and ships them to a collector",
    );
    if let Err(e) = set_recovery(&s) {
        tracing::warn!("service installed, but restart-on-failure not set: {e}");
    }
    Ok(())
}

/// Restart 10 s after a failure, three times a day.
fn set_recovery(s: &windows_service::service::Service) -> windows_service::Result<()> {
    let restart = ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(10),
    };
    s.update_failure_actions(ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(86_400)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart.clone(), restart.clone(), restart]),
    })?;
    s.set_failure_actions_on_non_crash_failures(true)
}

/// The .msi registers the service without recovery actions (wixl cannot
/// write them): the running service adds its own once, unless someone has
/// chosen others. A refusal (Wine's SCM) is a warning.
fn ensure_recovery() {
    let opened = manager(ServiceManagerAccess::CONNECT).and_then(|m| {
        m.open_service(
            NAME,
            ServiceAccess::QUERY_CONFIG | ServiceAccess::CHANGE_CONFIG,
        )
        .map_err(err)
    });
    let s = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("service: cannot check its restart-on-failure setting: {e}");
            return;
        }
    };
    let chosen = s
        .get_failure_actions()
        .is_ok_and(|a| a.actions.is_some_and(|v| !v.is_empty()));
    if chosen {
        return;
    }
    match set_recovery(&s) {
        Ok(()) => tracing::info!("service: restart on failure set (after 10 s, three times a day)"),
        Err(e) => tracing::warn!("service: restart-on-failure not set: {e}"),
    }
}

/// Stops the service if it runs (waiting up to `limit`), deletes it, and
/// waits up to 10 s until the SCM has let it go (it is deleted once the last
/// handle to it is closed); `false` if it is still marked for deletion.
pub fn uninstall(limit: Duration) -> io::Result<bool> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m
        .open_service(
            NAME,
            ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
        )
        .map_err(err)?;
    if s.query_status().map_err(err)?.current_state != ServiceState::Stopped {
        let _ = s.stop();
        wait_for(ServiceState::Stopped, limit)?;
    }
    s.delete().map_err(err)?;
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match m.open_service(NAME, ServiceAccess::QUERY_STATUS) {
            Err(windows_service::Error::Winapi(e))
                if e.raw_os_error() == Some(ERROR_SERVICE_DOES_NOT_EXIST) =>
            {
                return Ok(true);
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(false)
}

/// winerror.h
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;

/// Waits up to `limit` for the service to reach `want`.
fn wait_for(want: ServiceState, limit: Duration) -> io::Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m
        .open_service(NAME, ServiceAccess::QUERY_STATUS)
        .map_err(err)?;
    let deadline = Instant::now() + limit;
    loop {
        let now = s.query_status().map_err(err)?.current_state;
        if now == want {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("service {NAME} is {now:?} after {limit:?}, not {want:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the service (unless it runs already) and waits (up to `limit`)
/// until it runs.
pub fn start(limit: Duration) -> io::Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m
        .open_service(NAME, ServiceAccess::START | ServiceAccess::QUERY_STATUS)
        .map_err(err)?;
    if s.query_status().map_err(err)?.current_state == ServiceState::Running {
        return Ok(());
    }
    s.start::<OsString>(&[]).map_err(err)?;
    wait_for(ServiceState::Running, limit)
}

/// Asks the service to stop and waits (up to `limit`) until it has.
pub fn stop(limit: Duration) -> io::Result<()> {
    let m = manager(ServiceManagerAccess::CONNECT)?;
    let s = m.open_service(NAME, ServiceAccess::STOP).map_err(err)?;
    s.stop().map_err(err)?;
    wait_for(ServiceState::Stopped, limit)
}

/// The job the service runs; its return value is the service's exit code.
static JOB: OnceLock<fn() -> u32> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

fn service_main(_args: Vec<OsString>) {
    if let Err(e) = serve() {
        tracing::error!("service: {e}");
    }
}

fn status(state: ServiceState, accept: ServiceControlAccept, code: u32) -> ServiceStatus {
    ServiceStatus {
        service_type: TYPE,
        current_state: state,
        controls_accepted: accept,
        exit_code: ServiceExitCode::Win32(code),
        checkpoint: 0,
        wait_hint: if state == ServiceState::StopPending {
            // The stop waits for the collector up to shutdown_grace.
            Duration::from_secs(120)
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

fn serve() -> io::Result<()> {
    let job = *JOB
        .get()
        .ok_or_else(|| io::Error::other("no job registered"))?;
    let stopping: std::sync::Arc<OnceLock<ServiceStatusSetter>> = Default::default();
    let setter = stopping.clone();
    let handle = service_control_handler::register(NAME, move |c| match c {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            tracing::info!("service: {c:?} requested; stopping as on SIGTERM");
            if let Some(s) = setter.get() {
                s.0.set_service_status(status(
                    ServiceState::StopPending,
                    ServiceControlAccept::empty(),
                    0,
                ))
                .ok();
            }
            super::request_stop();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })
    .map_err(err)?;
    let _ = stopping.set(ServiceStatusSetter(handle));
    ensure_recovery();
    handle
        .set_service_status(status(
            ServiceState::Running,
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            0,
        ))
        .map_err(err)?;
    let code = job();
    tracing::info!("service: stopped (exit code {code})");
    handle
        .set_service_status(status(
            ServiceState::Stopped,
            ServiceControlAccept::empty(),
            code,
        ))
        .map_err(err)
}

struct ServiceStatusSetter(service_control_handler::ServiceStatusHandle);

/// Runs as the service the SCM started: connects to the SCM, reports
/// Running, runs `job` until it returns (a Stop ends it through
/// [`super::request_stop`]), reports Stopped with its code. Fails at once
/// when the process was not started by the SCM.
pub fn dispatch(job: fn() -> u32) -> io::Result<()> {
    let _ = JOB.set(job);
    service_dispatcher::start(NAME, ffi_service_main).map_err(err)
}

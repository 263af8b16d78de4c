//! `vmflow completions` and `vmflow man`: shell completions and manual
//! pages generated from the command-line definition itself, so they cannot
//! drift from what the binary accepts. The packages install both.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::error::Error;

#[derive(Args)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, powershell or elvish.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args)]
pub(super) struct ManArgs {
    /// Directory to write the pages to (created if missing): vmflow.1 and
    /// one vmflow-<command>.1 per subcommand.
    dir: PathBuf,
}

pub(super) fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<ExitCode, Error> {
    use std::io::Write;
    // Generated into memory first: clap_complete panics on a write error
    // (`vmflow completions bash | head`), a closed pipe is not a crash.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "vmflow", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Error::io("standard output", e)),
    }
}

pub(super) fn man(a: ManArgs, cmd: clap::Command) -> Result<ExitCode, Error> {
    write_pages(&a.dir, cmd).map_err(|e| Error::io(&a.dir, e))?;
    eprintln!("man: wrote the manual pages to {}", a.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// One page for the command and one for every subcommand, nested ones
/// included (`vmflow-azure-captures-list.1`).
fn write_pages(dir: &Path, cmd: clap::Command) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
}

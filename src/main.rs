//! The `apura` binary: parse the command line, start tracing, run one component.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use apura::{demo, gateway, ingest, run, simulate};

/// Time given to tasks to finish after SIGINT or SIGTERM, beyond a gateway's `--drain`.
const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// apura: real-time election results gateway.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `apura=debug`.
    #[arg(long, env = "APURA_LOG", default_value = "info", global = true, value_parser = log_filter)]
    log: tracing_subscriber::EnvFilter,
    /// Log lines as `text` (colours on a terminal only) or `json`, one object per line for log
    /// shippers.
    #[arg(long, env = "APURA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A log filter, refused with the reason when tracing cannot read it (a typo in a level or a
/// directive would otherwise silently log at another level).
fn log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|e| format!("{e} (e.g. `info`, `warn`, `apura=debug,info`)"))
}

#[derive(Subcommand)]
enum Command {
    /// Simulator, ingest and gateway in one process: open http://127.0.0.1:8080/.
    Demo(demo::DemoArgs),
    /// Ingest and gateway in one process on the embedded bus, for a real or recorded feed.
    Run(run::RunArgs),
    /// Poll the feed and publish to Redis as leader or standby (`--once --print` to try a feed).
    Ingest(ingest::command::IngestArgs),
    /// A count-night simulator serving the government feed over HTTP.
    Simulate(simulate::SimulateArgs),
    /// Serve clients from the documents published on Redis.
    Gateway(gateway::command::GatewayCommandArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    usage_errors(&cli.command);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        gateway::admission::set_release_memory(release_memory);
        if matches!(cli.command, Command::Demo(_) | Command::Run(_)) {
            few_arenas();
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(cli.log)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Options that clap cannot check alone (which ones a `--source` needs, values out of range)
/// are a usage error, as a missing argument is: the message, the usage line, exit code 2.
fn usage_errors(command: &Command) {
    let (name, problems) = match command {
        Command::Run(args) => {
            let mut problems = args.feed.validate();
            problems.extend(args.gateway.validate());
            ("run", problems)
        }
        Command::Demo(args) => ("demo", args.gateway.validate()),
        _ => return,
    };
    if problems.is_empty() {
        return;
    }
    let mut cli = Cli::command();
    cli.build();
    let sub = cli
        .find_subcommand_mut(name)
        .expect("a subcommand of the CLI");
    sub.error(clap::error::ErrorKind::ValueValidation, problems.join("; "))
        .exit();
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    // A gateway drains its streams over `--drain` before it stops.
    let drain = match &command {
        Command::Demo(args) => args.gateway.drain,
        Command::Run(args) => args.gateway.drain,
        Command::Gateway(args) => args.gateway.drain,
        Command::Simulate(_) | Command::Ingest(_) => Duration::ZERO,
    };
    let grace = drain + GRACE_PERIOD;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let work = async {
        match command {
            Command::Demo(args) => demo::run(args, shutdown.clone()).await,
            Command::Run(args) => run::run(args, shutdown.clone()).await,
            Command::Simulate(args) => simulate::serve(&args, shutdown.clone()).await,
            Command::Ingest(args) => ingest::command::run(args, shutdown.clone()).await,
            Command::Gateway(args) => gateway::command::run(args, shutdown.clone()).await,
        }
    };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        _ = shutdown.cancelled() => {
            match tokio::time::timeout(grace, work).await {
                Ok(r) => r,
                Err(_) => anyhow::bail!("did not stop within {grace:?}; exiting"),
            }
        }
    }
}

/// glibc keeps the heap freed when a crowd of connections leaves in its arenas (~30 KiB per
/// connection gone); `malloc_trim` gives the free pages back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_memory() {
    // SAFETY: malloc_trim takes no pointer; it walks the allocator's own free lists under the
    // allocator's locks, as any malloc call does.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `apura demo` and `apura run` parse and render the national files on whichever runtime or
/// blocking thread runs then, and glibc gives each such thread an arena of its own (up to eight
/// per core), where what it freed stays: two arenas keep the heap close to what is in use.
/// Called before the runtime starts its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn few_arenas() {
    // SAFETY: mallopt takes two integers and changes the allocator's settings under its lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

//! `apura-load`: the native load generator of apura (issue 6).
//!
//! `run` opens SSE and WebSocket subscribers (and optional GET pollers) from several loopback
//! source addresses in several worker processes, measures every delivery's latency from the
//! document's `published_at` to its receipt, and writes a JSON report and an SVG plot.
//! `publish` drives an nginx + nchan baseline with the same documents, so the same `run`
//! measures both servers.

mod args;
mod delivery;
mod freshness;
mod get;
mod http;
mod inflate;
mod net;
mod plot;
mod proc;
mod publish;
mod report;
mod run;
mod scrape;
mod shared;
mod sse;
mod stats;
mod topics;
mod worker;
mod ws;
mod wsz;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// apura-load: SSE / WebSocket / GET load generator with fan-out latency.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open subscribers (and GET pollers), hold them, report latency, errors and memory.
    Run(Box<args::RunArgs>),
    /// Publish every topic's document to an nchan publisher location every interval.
    Publish(publish::PublishArgs),
    /// Redraw the SVG plot from a JSON report written by `run`.
    Plot(plot::PlotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Publish(args) => publish::main(args),
        Command::Plot(args) => plot::main(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apura-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

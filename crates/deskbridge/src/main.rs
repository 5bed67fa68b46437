//! `deskbridge`: one binary, one subcommand per job. Wiring only; the work
//! lives in the library crates.

mod backend_cmd;
mod check_cmd;
mod demo_cmd;
mod gateway_cmd;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: on the gateway's action path
/// malloc was about a tenth of the CPU (bench/README.md), and mimalloc's
/// per-thread free lists suit its many small, short-lived buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "deskbridge",
    version,
    about = "Connects an agent desk to a company's backend APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine: backend and gateway with demo data.
    Demo(demo_cmd::DemoArgs),
    /// The reference company backend: customer login, OAuth 2.0 client
    /// credentials, and the profile API.
    Backend(backend_cmd::BackendArgs),
    /// The gateway: channel intake, agent API, calls to company backends.
    Serve(gateway_cmd::ServeArgs),
    /// Gateway configuration tools.
    #[command(subcommand)]
    Config(gateway_cmd::ConfigCommand),
    /// Agents of the gateway.
    #[command(subcommand)]
    Agent(gateway_cmd::AgentCommand),
    /// The gateway's store: migrate it, or copy it to another.
    #[command(subcommand)]
    Store(gateway_cmd::StoreCommand),
    /// Check a company backend against the contract: pass, warn or fail per
    /// rule (exit 0 all pass, 1 a rule failed, 2 the check could not run).
    Check(check_cmd::CheckArgs),
}

/// Colour for a terminal, unless `NO_COLOR` is set (no-color.org); never
/// for a file or a pipe, where escape codes are noise.
fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn main() -> std::process::ExitCode {
    // Logs go to stderr, so stdout carries only what a command prints for
    // people and scripts (addresses, JSON).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("DESKBRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let command = match cli.command {
        Command::Check(args) => return runtime.block_on(check_cmd::run(args)),
        command => command,
    };
    let result = runtime.block_on(async {
        match command {
            Command::Demo(args) => demo_cmd::run(args).await,
            Command::Backend(args) => backend_cmd::run(args).await,
            Command::Serve(args) => gateway_cmd::serve(args).await,
            Command::Config(command) => gateway_cmd::config(command).await,
            Command::Store(command) => gateway_cmd::store(command).await,
            Command::Agent(command) => gateway_cmd::agent(command).await,
            // Has its own exit statuses; run above.
            Command::Check(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// A password from stdin (first line), so it never shows in `ps` or shell history.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        anyhow::bail!("give the password on standard input, e.g. `echo \"$PASSWORD\" | deskbridge …`");
    }
    Ok(password)
}

//! `deskbridge check`: the contract's rules against a live company backend.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use check::{ActionInput, ActionOptions, Checker, Group, TestUser, report};
use clap::{Args, ValueEnum};
use gateway::GatewayConfig;

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The gateway's TOML configuration (see docs/configuration.md).
    #[arg(long, env = "DESKBRIDGE_CONFIG")]
    config: PathBuf,
    /// The connection to check; may be left out when there is only one.
    #[arg(long)]
    connection: Option<String>,
    /// A test account, NAME:PASSWORD (repeatable).
    #[arg(long = "test-user", value_name = "NAME:PASSWORD")]
    test_users: Vec<String>,
    /// A file with one NAME:PASSWORD per line (blank lines and # comments skipped).
    #[arg(long, value_name = "FILE")]
    test_users_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Run only these rule groups (comma-separated). With only `system`
    /// and/or `transport`, no test users or customer_login_url are needed.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "GROUP[,GROUP]")]
    only: Vec<Only>,
    /// The input of an action with inputs: NAME={"field": value, …}
    /// (repeatable, one per action), checked against its input schema.
    #[arg(long = "action-input", value_name = "NAME=JSON")]
    action_inputs: Vec<String>,
    /// Also call the write actions (kind = "write"), each call with a fresh
    /// Idempotency-Key: they change data at the company.
    #[arg(long)]
    allow_writes: bool,
    /// When the company answers no 429 by itself, make one with failed
    /// logins of a made-up user (at most 8), to judge its Retry-After. A
    /// throttle per address may then hold this machine back for a while.
    #[arg(long)]
    provoke_limits: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Only {
    Login,
    Identifier,
    System,
    Action,
    Transport,
}

impl From<Only> for Group {
    fn from(only: Only) -> Self {
        match only {
            Only::Login => Group::Login,
            Only::Identifier => Group::Identifier,
            Only::System => Group::System,
            Only::Action => Group::Action,
            Only::Transport => Group::Transport,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Junit,
}

/// 0: every rule passed (warnings allowed); 1: a rule failed; 2: the check
/// could not run.
pub(crate) async fn run(args: CheckArgs) -> ExitCode {
    match check(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Test users from the flags and the file; `DESKBRIDGE_TEST_USERS`
/// (comma-separated) only when neither is given.
fn test_users(args: &CheckArgs) -> Result<Vec<TestUser>, String> {
    let mut users = Vec::new();
    for text in &args.test_users {
        users.push(TestUser::parse(text).map_err(|e| format!("--test-user: {e}"))?);
    }
    if let Some(file) = &args.test_users_file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            users.push(TestUser::parse(line).map_err(|e| format!("{} line {}: {e}", file.display(), n + 1))?);
        }
    }
    if args.test_users.is_empty()
        && args.test_users_file.is_none()
        && let Ok(list) = std::env::var("DESKBRIDGE_TEST_USERS")
    {
        for entry in list.split(',').filter(|e| !e.trim().is_empty()) {
            users.push(TestUser::parse(entry.trim()).map_err(|e| format!("DESKBRIDGE_TEST_USERS: {e}"))?);
        }
    }
    Ok(users)
}

async fn check(args: CheckArgs) -> Result<u8, String> {
    let config = GatewayConfig::load(&args.config).map_err(|problems| {
        format!(
            "{}: {}",
            args.config.display(),
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })?;
    let groups: Vec<Group> = if args.only.is_empty() {
        Group::ALL.to_vec()
    } else {
        args.only.iter().map(|o| Group::from(*o)).collect()
    };
    // Test users matter only to the groups that log in.
    let users = if groups.iter().any(|g| g.needs_logins()) {
        test_users(&args)?
    } else {
        Vec::new()
    };
    let inputs = args
        .action_inputs
        .iter()
        .map(|text| ActionInput::parse(text))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let actions = ActionOptions {
        inputs,
        allow_writes: args.allow_writes,
        provoke_limits: args.provoke_limits,
    };
    let checker = Checker::with_options(&config.connections, args.connection.as_deref(), users, &groups, actions)
        .map_err(|e| e.to_string())?;
    let suite = format!(
        "deskbridge check: {}",
        args.connection
            .as_deref()
            .unwrap_or_else(|| config.connections.first().map_or("", |c| c.name.as_str()))
    );

    let live = std::io::stderr().is_terminal();
    let mut progress = |n: usize, total: usize, id: &str| {
        let mut err = std::io::stderr().lock();
        if live {
            let _ = write!(err, "\r\x1b[2Kchecking {n}/{total}: {id}");
        } else {
            let _ = writeln!(err, "checking {n}/{total}: {id}");
        }
        let _ = err.flush();
    };
    let outcomes = checker.run(&mut progress).await;
    if live {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }

    let stdout = std::io::stdout();
    let text = match args.format {
        Format::Table => {
            let colour = crate::colour(&stdout);
            report::table(&outcomes, colour)
        }
        Format::Json => report::json(&outcomes),
        Format::Junit => report::junit(&outcomes, &suite),
    };
    let mut out = stdout.lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report: {e}"))?;
    if !matches!(args.format, Format::Table) {
        eprintln!("{}", report::summary(&outcomes));
    }
    Ok(check::exit_status(&outcomes))
}

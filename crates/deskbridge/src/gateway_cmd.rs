//! `deskbridge serve`, `deskbridge config check`, `deskbridge agent add`
//! and `deskbridge store …`: the platform side.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use gateway::store::{Store, StoreOptions, redacted_url};
use gateway::{Gateway, GatewayConfig};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The gateway's TOML configuration (see docs/configuration.md).
    #[arg(long, env = "DESKBRIDGE_CONFIG")]
    config: PathBuf,
    /// Overrides `server.listen`; port 0 picks a free one, printed at start.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
    /// Report every problem in a gateway configuration, with its key path.
    Check {
        file: PathBuf,
        /// Also connect to the store and say whether that worked, and if
        /// not, why (never printing its password).
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum StoreCommand {
    /// Bring the store's schema up to date and exit (`serve` does this at
    /// start too, under a database lock).
    Migrate {
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Copy everything a store holds (conversations, sessions, sealed
    /// customer tokens, events, agents, console sign-ins, audit) into a new,
    /// empty one: e.g. an embedded SQLite install to Postgres.
    Copy {
        /// The store to read, e.g. sqlite://deskbridge-data/gateway.db
        #[arg(long)]
        from: String,
        /// The store to fill (migrated first; must be empty), e.g. postgres://deskbridge@db/deskbridge
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum AgentCommand {
    /// Create an agent (or replace its token); the token is printed once.
    /// Its console password is kept unless `--password` sets a new one.
    Add {
        name: String,
        /// A role of the configuration's `[agents] roles` (default: agent,
        /// supervisor, admin), or `admin`, or `bot` (an API principal that
        /// may not sign in to the console).
        #[arg(long, default_value = "agent")]
        role: String,
        /// Also set the agent's console password, read from stdin (at least 12 characters).
        #[arg(long)]
        password: bool,
        /// How long the token lives: 90d, 12h, 45m, 30s.
        #[arg(long, default_value = "90d", value_parser = gateway::agents::parse_lifetime)]
        ttl: Duration,
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Remove an agent: its token and console sessions stop working. For an
    /// agent of the identity provider ([console.oidc]), ends its console
    /// sessions.
    Remove {
        name: String,
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Agents' API tokens: rotate one, list them with their expiry.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Give an agent a new token, printed once. The old one keeps working
    /// for the overlap (never past its own expiry), then is refused.
    Rotate {
        name: String,
        /// How long the old token stays valid: 1h, 7d, or 0 to end it now.
        #[arg(long, value_parser = gateway::agents::parse_lifetime)]
        overlap: Duration,
        /// How long the new token lives.
        #[arg(long, default_value = "90d", value_parser = gateway::agents::parse_lifetime)]
        ttl: Duration,
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Every agent's tokens with their expiry, as JSON lines (never a token's value).
    List {
        #[arg(long, env = "DESKBRIDGE_CONFIG")]
        config: PathBuf,
    },
}

fn load(path: &Path) -> anyhow::Result<GatewayConfig> {
    GatewayConfig::load(path).map_err(|problems| {
        anyhow::anyhow!(
            "{}: {}",
            path.display(),
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )
    })
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = load(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    for warning in config.check().iter().filter(|p| !p.fatal) {
        tracing::warn!("{warning}");
    }
    let listener =
        serving::bind(config.server.listen).with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let address = listener.local_addr()?;
    // Every expiry decision of the gateway reads this clock.
    let scheme = if config.server.tls.is_some() { "https" } else { "http" };
    let gateway = Gateway::open_with_clock(config, std::sync::Arc::new(clock::SystemClock)).await?;
    gateway.claim_instance().await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "deskbridge gateway listening on {scheme}://{address}")?;
    // In the log, not on stdout: the first stdout line is the address alone.
    tracing::info!(
        path = gateway::SDK_PATH,
        integrity = gateway::sdk_integrity(),
        "web SDK, for <script integrity>"
    );
    tracing::info!(
        path = gateway::CARD_ELEMENT_PATH,
        integrity = gateway::card_element_integrity(),
        "the <deskbridge-card> element, for <script integrity>"
    );
    out.flush()?;
    drop(out);
    gateway.serve(listener, crate::shutdown_signal()).await?;
    Ok(())
}

pub(crate) async fn config(command: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Check { file, connect } = command;
    let config = load(&file)?;
    let problems = config.check();
    let mut out = std::io::stdout().lock();
    for p in &problems {
        writeln!(out, "{p}")?;
    }
    let fatal = problems.iter().filter(|p| p.fatal).count();
    if fatal > 0 {
        bail!("{fatal} problem(s) in {}", file.display());
    }
    drop(out);
    if connect {
        check_store(&config.store_options()).await?;
        if let Some(cluster) = &config.cluster {
            check_cluster(cluster).await?;
        }
        for connection in &config.connections {
            check_discovery(connection).await?;
        }
    }
    writeln!(std::io::stdout().lock(), "{}: ok", file.display())?;
    Ok(())
}

/// Connects to the store (without migrating it) and asks it a question.
async fn check_store(options: &StoreOptions) -> anyhow::Result<()> {
    let shown = redacted_url(&options.url);
    let reached = async {
        let store = Store::connect_unmigrated(options).await?;
        let answered = store.ping().await;
        store.close().await;
        Ok::<_, gateway::GatewayError>(answered)
    }
    .await;
    match reached {
        Ok(true) => {
            writeln!(std::io::stdout().lock(), "store: reached {shown}")?;
            Ok(())
        }
        Ok(false) => bail!("store: {shown} accepted a connection but did not answer"),
        Err(e) => bail!(
            "store: cannot connect to {shown}: {}",
            gateway::store::engine::redact(&e.to_string(), &options.url)
        ),
    }
}

/// For a connection that names its `issuer`: its metadata, and whether
/// the server lists the configured client authentication method.
async fn check_discovery(connection: &gateway::config::ConnectionConfig) -> anyhow::Result<()> {
    let Some(gateway::config::OauthClient {
        issuer: Some(issuer),
        auth_method,
        token_url,
        ..
    }) = connection.system_auth.oauth()
    else {
        return Ok(());
    };
    let name = &connection.name;
    let metadata = gateway::discover_issuer(connection, issuer)
        .await
        .map_err(|e| anyhow::anyhow!("connection {name}: {e}"))?;
    let method = auth_method.as_str();
    if !metadata
        .token_endpoint_auth_methods_supported
        .iter()
        .any(|m| m == method)
    {
        bail!(
            "connection {name}: the issuer lists {:?} as its client authentication methods, not the configured {method:?}",
            metadata.token_endpoint_auth_methods_supported
        );
    }
    if matches!(
        connection.system_auth,
        gateway::config::SystemAuthConfig::TokenExchange(_)
    ) && !metadata
        .grant_types_supported
        .iter()
        .any(|g| g == contract::token_exchange::GRANT_TYPE)
    {
        // RFC 8414 §2: an absent list means the server did not say, which
        // is no refusal; a list without the grant is.
        if !metadata.grant_types_supported.is_empty() {
            bail!(
                "connection {name}: the issuer does not list the token exchange grant among {:?}",
                metadata.grant_types_supported
            );
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "connection {name}: token endpoint {} (from {issuer}); takes {method}",
        metadata.token_endpoint
    )?;
    if token_url.as_ref().is_some_and(|u| *u != metadata.token_endpoint) {
        writeln!(
            out,
            "warning: connection {name}: token_url differs from the issuer's token_endpoint; token_url is used"
        )?;
    }
    Ok(())
}

/// Reaches the cluster's Redis, or says why not (never with its password).
async fn check_cluster(config: &gateway::config::ClusterConfig) -> anyhow::Result<()> {
    match gateway::reach_cluster(config).await {
        Ok(shown) => writeln!(std::io::stdout().lock(), "cluster: reached Redis at {shown}")?,
        Err(why) => bail!("cluster: {why}"),
    }
    Ok(())
}

pub(crate) async fn store(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate { config } => {
            let options = load(&config)?.store_options();
            let store = Store::connect(&options).await?;
            store.close().await;
            writeln!(
                std::io::stdout().lock(),
                "store: {} is up to date",
                redacted_url(&options.url)
            )?;
        }
        StoreCommand::Copy { from, to } => {
            for url in [&from, &to] {
                StoreOptions::new(url.as_str())
                    .validate()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", redacted_url(url)))?;
            }
            // SQLite would create a missing file and copy nothing from it.
            if let Some(path) = from.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p))
                && !Path::new(path).exists()
            {
                bail!("{from}: no such database file");
            }
            let source = Store::open(&from).await?;
            let target = Store::open(&to).await?;
            let copied = source.copy_into(&target).await;
            source.close().await;
            target.close().await;
            let report = copied?;
            writeln!(std::io::stdout().lock(), "{}", serde_json::to_string(&report)?)?;
        }
    }
    Ok(())
}

pub(crate) async fn agent(command: AgentCommand) -> anyhow::Result<()> {
    let (name, role, password, ttl, config) = match command {
        AgentCommand::Add {
            name,
            role,
            password,
            ttl,
            config,
        } => (name, role, password, ttl, config),
        AgentCommand::Token(TokenCommand::Rotate {
            name,
            overlap,
            ttl,
            config,
        }) => {
            let gateway = Gateway::open(load(&config)?).await?;
            let token = gateway.rotate_agent_token(&name, ttl, overlap).await?;
            writeln!(std::io::stdout().lock(), "{token}")?;
            return Ok(());
        }
        AgentCommand::Token(TokenCommand::List { config }) => {
            let gateway = Gateway::open(load(&config)?).await?;
            let mut out = std::io::stdout().lock();
            for token in gateway.agent_tokens().await? {
                writeln!(out, "{}", serde_json::to_string(&token)?)?;
            }
            return Ok(());
        }
        AgentCommand::Remove { name, config } => {
            let gateway = Gateway::open(load(&config)?).await?;
            let removed = gateway.remove_agent(&name).await?;
            let mut out = std::io::stdout().lock();
            match removed {
                gateway::agents::Removed { agent: true, .. } => writeln!(out, "removed {name}")?,
                // An agent of the identity provider: it has no token here,
                // and signs in again only if the provider still says so.
                gateway::agents::Removed {
                    agent: false,
                    sessions: 1..,
                } => writeln!(
                    out,
                    "signed {name} out of the console ({} session(s) of the identity provider);                      take the agent out of the provider's mapped groups to keep it out",
                    removed.sessions
                )?,
                _ => bail!("no agent named {name:?}, and no console session of that name"),
            }
            return Ok(());
        }
    };
    if password && role == gateway::agents::BOT_ROLE {
        bail!("a bot uses its API token and may not sign in to the console: leave out --password");
    }
    let password = if password { Some(crate::read_password()?) } else { None };
    if let Some(problem) = password.as_deref().and_then(gateway::console::password_problem) {
        bail!("{problem}");
    }
    let gateway = Gateway::open(load(&config)?).await?;
    let token = gateway.add_agent_for(&name, &role, ttl).await?;
    if let Some(password) = password {
        gateway.set_agent_password(&name, &password).await?;
    }
    gateway.flush_audit().await;
    writeln!(std::io::stdout().lock(), "{token}")?;
    Ok(())
}

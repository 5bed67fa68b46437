//! `deskbridge backend`: serve the reference backend, or administer it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use backend::admin::DemoSeed;
use backend::{Backend, BackendConfig, NewProfile, SystemClock};
use clap::{Args, Subcommand};
use contract::{Account, Money};

#[derive(Args)]
pub(crate) struct BackendArgs {
    /// TOML configuration file (every key optional; see docs/backend.md).
    #[arg(long, global = true, env = "DESKBRIDGE_BACKEND_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (database, server secret, signing keys).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free one, printed at start.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Seed demo customers, a client and an API key, and print their credentials.
    #[arg(long)]
    demo: bool,
    #[command(subcommand)]
    command: Option<BackendCommand>,
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Customers who log in at /customer_authenticate.
    #[command(subcommand)]
    User(UserCommand),
    /// OAuth clients of /access_token (platforms calling the APIs).
    #[command(subcommand)]
    Client(ClientCommand),
    /// API keys, each granting specific APIs.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Customer JWT signing keys.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Create or refresh demo customers, a client and an API key; print them.
    SeedDemo {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Map a customer identifier (a JWT's `sub`) back to its username.
    Trace { customer_id: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a customer with a profile; the password is read from stdin.
    Add {
        username: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        email: String,
        #[arg(long, default_value = "")]
        phone: String,
        #[arg(long, default_value = "standard")]
        tier: String,
        /// ISO date; defaults to today.
        #[arg(long)]
        member_since: Option<String>,
        /// An account as ID:TYPE:AMOUNT:CURRENCY, e.g. acc-1:checking:120.50:USD (repeatable).
        #[arg(long = "account")]
        accounts: Vec<String>,
    },
    /// Set (reset) a customer's password, read from stdin; ends the
    /// customer's sessions.
    SetPassword { username: String },
    /// Remove a customer with the profile and every session.
    Remove { username: String },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Add a client (or replace its secret); the secret is printed once.
    /// With `--public-key`, the client authenticates with assertions
    /// signed by its private key (private_key_jwt) and has no secret.
    Add {
        client_id: String,
        /// Space- or comma-separated scopes the client may request.
        #[arg(long, default_value = backend::admin::DEFAULT_SCOPES)]
        scope: String,
        /// A PEM public key (EC P-256 or RSA) the client's assertions are verified with.
        #[arg(long)]
        public_key: Option<std::path::PathBuf>,
    },
    /// Revoke every access token the client holds now (e.g. after a leak).
    RevokeTokens { client_id: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Add an API key granting the named APIs; the key is printed once.
    Add {
        #[arg(long = "api", required = true)]
        apis: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Generate a new signing key; older keys stay published for verification.
    Rotate,
}

fn load_config(args: &BackendArgs) -> anyhow::Result<BackendConfig> {
    let mut config = match &args.config {
        Some(path) => BackendConfig::from_file(path)?,
        None => BackendConfig::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    Ok(config)
}

pub(crate) async fn run(args: BackendArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args)?;
    let Some(command) = args.command else {
        let listener = serving::bind(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
        config.listen = listener.local_addr()?;
        let backend = Backend::open(config.clone(), Arc::new(SystemClock)).await?;
        let mut out = std::io::stdout().lock();
        if args.demo {
            let seed = backend.admin().seed_demo().await?;
            print_seed(&mut out, &seed)?;
        }
        // The socket's own address (port 0 resolved), whatever public_url says.
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        writeln!(out, "deskbridge backend listening on {scheme}://{}", config.listen)?;
        if config.public_url.is_some() {
            writeln!(out, "public URL: {}", config.public_url())?;
        }
        out.flush()?;
        drop(out);
        backend.serve(listener, crate::shutdown_signal()).await?;
        return Ok(());
    };
    let backend = Backend::open(config, Arc::new(SystemClock)).await?;
    let admin = backend.admin();
    let mut out = std::io::stdout().lock();
    match command {
        BackendCommand::User(UserCommand::Add {
            username,
            name,
            email,
            phone,
            tier,
            member_since,
            accounts,
        }) => {
            let password = crate::read_password()?;
            let profile = NewProfile {
                name,
                email,
                phone,
                tier,
                member_since: member_since.unwrap_or_else(today),
                accounts: accounts
                    .iter()
                    .map(|a| parse_account(a))
                    .collect::<anyhow::Result<_>>()?,
            };
            let customer_id = admin.add_user(&username, &password, &profile).await?;
            writeln!(out, "{customer_id}")?;
        }
        BackendCommand::User(UserCommand::SetPassword { username }) => {
            admin.set_password(&username, &crate::read_password()?).await?;
            writeln!(out, "new password set for {username}; the user's sessions are ended")?;
        }
        BackendCommand::User(UserCommand::Remove { username }) => {
            admin.remove_user(&username).await?;
            writeln!(out, "removed {username} and the user's sessions")?;
        }
        BackendCommand::Client(ClientCommand::Add {
            client_id,
            scope,
            public_key: Some(file),
        }) => {
            let pem = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let scopes = admin.add_key_client(&client_id, &scope, &pem).await?;
            writeln!(out, "client_id:     {client_id}")?;
            writeln!(
                out,
                "auth_method:   private_key_jwt (assertions signed by the key of {})",
                file.display()
            )?;
            writeln!(out, "scopes:        {scopes}")?;
        }
        BackendCommand::Client(ClientCommand::Add { client_id, scope, .. }) => {
            let client = admin.add_client(&client_id, &scope).await?;
            writeln!(out, "client_id:     {}", client.client_id)?;
            writeln!(out, "client_secret: {}", client.client_secret)?;
            writeln!(out, "scopes:        {}", client.scopes)?;
            writeln!(
                out,
                "The secret is shown only now; store it in the platform's secret store."
            )?;
        }
        BackendCommand::Client(ClientCommand::RevokeTokens { client_id }) => {
            admin.revoke_client_tokens(&client_id).await?;
            writeln!(
                out,
                "revoked the current tokens of {client_id}; a running backend applies it within 30 s"
            )?;
        }
        BackendCommand::Key(KeyCommand::Add { apis }) => {
            // A key for an API nobody serves is a typo, not a grant.
            if let Some(unknown) = apis.iter().find(|a| !backend::APIS.contains(&a.as_str())) {
                bail!(
                    "--api {unknown:?}: this backend serves no such API (it serves {})",
                    backend::APIS.join(", ")
                );
            }
            let key = admin.add_api_key(&apis).await?;
            writeln!(out, "{}", key.key)?;
        }
        BackendCommand::SigningKey(SigningKeyCommand::Rotate) => {
            let kid = admin.rotate_signing_key().await?;
            writeln!(
                out,
                "new signing key {kid}; a running backend signs with it within 30 s"
            )?;
        }
        BackendCommand::SeedDemo { json } => {
            let seed = admin.seed_demo().await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&seed)?)?;
            } else {
                print_seed(&mut out, &seed)?;
            }
        }
        BackendCommand::Trace { customer_id } => match admin.trace(&customer_id).await? {
            Some(username) => writeln!(out, "{username}")?,
            None => bail!("no user has the customer identifier {customer_id}"),
        },
    }
    Ok(())
}

fn parse_account(spec: &str) -> anyhow::Result<Account> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [id, kind, amount, currency] = parts.as_slice() else {
        bail!("--account {spec:?}: expected ID:TYPE:AMOUNT:CURRENCY");
    };
    Ok(Account {
        id: (*id).into(),
        kind: (*kind).into(),
        status: "active".into(),
        balance: Money {
            amount: (*amount).into(),
            currency: currency.to_uppercase(),
        },
    })
}

fn today() -> String {
    let days = (backend::Clock::unix_secs(&SystemClock) / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date crate for one line.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn print_seed(out: &mut impl Write, seed: &DemoSeed) -> std::io::Result<()> {
    writeln!(out, "Demo customers (log in at POST /customer_authenticate):")?;
    for u in &seed.users {
        writeln!(
            out,
            "  {:<8} password {:<18} customer_id {}",
            u.username, u.password, u.customer_id
        )?;
    }
    for c in &seed.clients {
        writeln!(
            out,
            "OAuth client:  {}  secret {}  scopes {}",
            c.client_id, c.client_secret, c.scopes
        )?;
    }
    for k in &seed.api_keys {
        writeln!(out, "API key:       {}  apis {}", k.key, k.apis.join(","))?;
    }
    Ok(())
}

//! `deskbridge demo`: the reference backend and the gateway in one process,
//! with demo customers, a client, an API key, a web channel and an agent,
//! and a printed walk through the whole flow.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use backend::admin::DemoSeed;
use backend::config::DemoSiteConfig;
use backend::{Backend, BackendConfig, SystemClock};
use clap::Args;
use gateway::{Gateway, GatewayConfig};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where the demo keeps its data; a second start reuses it.
    #[arg(long, default_value = "./deskbridge-demo")]
    data_dir: PathBuf,
    /// The reference backend's address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    backend_listen: SocketAddr,
    /// The gateway's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    gateway_listen: SocketAddr,
    /// Lifetime of the customers' JWTs, in seconds: short, so the demo site
    /// shows the chat refreshing the customer's login.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=86_400))]
    customer_token_ttl: u64,
    /// Another web origin that may use the demo's web channel, e.g. your own
    /// page at http://localhost:5173 (repeatable). Origins match exactly:
    /// http://localhost:5173 is not http://127.0.0.1:5173.
    #[arg(long = "allow-origin", value_name = "URL", value_parser = web_origin)]
    allow_origins: Vec<String>,
    /// The origin (`scheme://host[:port]`) of a desk page that may frame
    /// the customer card at /card; repeat for more.
    #[arg(long = "card-origin", value_name = "ORIGIN", value_parser = web_origin)]
    card_origins: Vec<String>,
}

/// An origin as the browser sends it; a single trailing `/` is forgiven,
/// anything else (a path, a query) is refused with the fix.
fn web_origin(text: &str) -> Result<String, String> {
    let origin = text.strip_suffix('/').unwrap_or(text);
    if gateway::config::is_origin(origin) {
        Ok(origin.to_string())
    } else {
        Err(format!(
            "{text:?} is not an origin: give scheme://host[:port] exactly as the browser shows it, with no path \
             (e.g. http://localhost:5173)"
        ))
    }
}

/// A file readable by its owner only, written once.
fn private_file(path: &Path, contents: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing);
    }
    let text = contents()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(text)
}

/// Whether the kept demo client and API key reach every API the backend serves.
fn grants_every_api(seed: &DemoSeed) -> bool {
    let scopes_ok = seed.clients.first().is_some_and(|c| {
        backend::SCOPES
            .iter()
            .all(|s| c.scopes.split(' ').any(|have| have == *s))
    });
    let apis_ok = seed
        .api_keys
        .first()
        .is_some_and(|k| backend::APIS.iter().all(|a| k.apis.iter().any(|have| have == a)));
    scopes_ok && apis_ok
}

fn gateway_toml(
    dir: &Path,
    backend_url: &str,
    extra_origins: &[String],
    seed: &DemoSeed,
    secrets: &Path,
    card_origins: &[String],
) -> String {
    let file = |name: &str| secrets.join(name).display().to_string();
    // The demo site first, then the pages given with --allow-origin.
    let origins = std::iter::once(backend_url)
        .chain(extra_origins.iter().map(String::as_str))
        .map(|o| format!("{o:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"# Written by `deskbridge demo`; copy it as a starting point.
[server]
data_dir = "{data}"

[[connections]]
name = "acme"
base_url = "{backend_url}"
timeout_ms = 2000
customer_login_url = "{backend_url}/customer_authenticate"

[connections.system_auth]
kind = "oauth2_client_credentials"
token_url = "{backend_url}/access_token"
client_id = "{client_id}"
client_secret = {{ file = "{client_secret}" }}
auth_method = "client_secret_basic"
scope = "{scope}"

[connections.api_key]
header = "api-key"
value = {{ file = "{api_key}" }}

[connections.customer_auth]
in = "header"
name = "customer-auth"
format = "JWT {{token}}"

[connections.identity]
mode = "jwt"
jwks_url = "{backend_url}/.well-known/jwks.json"
issuer = "{backend_url}"
audience = "deskbridge"

[[connections.actions]]
name = "getprofile"
method = "POST"
path = "/getprofile"
description = "The customer's profile: name, tier, accounts and cards."

[[connections.actions]]
name = "gettransactions"
method = "POST"
path = "/accounts/{{account_id}}/transactions"
description = "Recent transactions of one of the customer's accounts, newest first."
callers = ["agent", "customer"]
input.account_id = {{ type = "string", required = true, pattern = "^acc-[0-9]{{4}}$", description = "One of the customer's accounts, e.g. acc-1001." }}
input.limit = {{ type = "integer", minimum = 1, maximum = 100, default = 20, description = "Transactions per page." }}
input.cursor = {{ type = "string", max_length = 200, description = "next_cursor of the previous page." }}
query = {{ limit = "limit", cursor = "cursor" }}
redact = {{ "/transactions/*/counterparty_iban" = "last4" }}

[[connections.actions]]
name = "blockcard"
method = "POST"
kind = "write"
path = "/cards/{{card_id}}/block"
description = "Blocks one of the customer's cards at once; it cannot be used again."
callers = ["agent"]
input.card_id = {{ type = "string", required = true, pattern = "^card-[0-9]{{4}}$", description = "One of the customer's cards, e.g. card-1101." }}
input.reason = {{ type = "string", required = true, enum = ["lost", "stolen", "damaged"] }}
body = {{ "/reason" = "reason" }}

[connections.console]
profile_action = "getprofile"

[console]
# The demo is plain HTTP on loopback; keep this true behind TLS.
secure_cookies = false
# Desk pages that may frame the customer card (`deskbridge demo --card-origin`).
card_origins = [{card_origins}]

[[channels]]
name = "web"
app_key = {{ file = "{app_key}" }}
allowed_origins = [{origins}]

[[channels]]
name = "ios"
app_key = {{ file = "{app_key}" }}

[[channels]]
name = "android"
app_key = {{ file = "{app_key}" }}
"#,
        data = dir.join("gateway").display(),
        client_id = seed.clients[0].client_id,
        scope = backend::SCOPES.join(" "),
        client_secret = file("client_secret"),
        api_key = file("api_key"),
        app_key = file("web_app_key"),
        card_origins = card_origins
            .iter()
            .map(|o| format!("{o:?}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    let secrets = dir.join("secrets");
    for d in [dir.clone(), secrets.clone()] {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    let backend_listener =
        serving::bind(args.backend_listen).with_context(|| format!("cannot listen on {}", args.backend_listen))?;
    let gateway_listener =
        serving::bind(args.gateway_listen).with_context(|| format!("cannot listen on {}", args.gateway_listen))?;
    let backend_addr = backend_listener.local_addr()?;
    let gateway_url = format!("http://{}", gateway_listener.local_addr()?);

    let app_key = private_file(&secrets.join("web_app_key"), || {
        Ok(format!("dbw_{}", backend::admin::random_secret()?))
    })?;
    let backend_config = BackendConfig {
        listen: backend_addr,
        data_dir: dir.join("backend"),
        // The demo is plain HTTP on loopback.
        insecure_cookies: true,
        customer_token_ttl_secs: args.customer_token_ttl,
        demo_site: Some(DemoSiteConfig {
            gateway_url: gateway_url.clone(),
            app_key: app_key.clone(),
            channel: "web".into(),
            connection: "acme".into(),
        }),
        ..BackendConfig::default()
    };
    let backend_url = backend_config.public_url();
    let backend = Backend::open(backend_config, Arc::new(SystemClock)).await?;

    // First start: seed, and keep the credentials so a restart shows them again.
    let credentials = dir.join("demo-credentials.json");
    let kept: Option<DemoSeed> = match std::fs::read_to_string(&credentials) {
        Ok(text) => Some(serde_json::from_str(&text).context("demo-credentials.json is damaged; delete the demo dir")?),
        Err(_) => None,
    };
    let seed = match kept {
        Some(seed) if grants_every_api(&seed) => seed,
        outdated => {
            // A demo dir from before an API was added: seeded again, so its
            // client and key grant every API (new passwords and secrets).
            if outdated.is_some() {
                for stale in [
                    credentials.clone(),
                    secrets.join("client_secret"),
                    secrets.join("api_key"),
                ] {
                    match std::fs::remove_file(&stale) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(e).with_context(|| format!("cannot replace {}", stale.display()));
                        }
                        _ => {}
                    }
                }
            }
            let seed = backend.admin().seed_demo().await?;
            private_file(&credentials, || Ok(serde_json::to_string_pretty(&seed)?))?;
            seed
        }
    };
    private_file(&secrets.join("client_secret"), || {
        Ok(seed.clients[0].client_secret.clone())
    })?;
    private_file(&secrets.join("api_key"), || Ok(seed.api_keys[0].key.clone()))?;

    let toml = gateway_toml(
        dir,
        &backend_url,
        &args.allow_origins,
        &seed,
        &secrets,
        &args.card_origins,
    );
    std::fs::write(dir.join("gateway.toml"), &toml).context("cannot write gateway.toml")?;
    let config = GatewayConfig::parse(&toml)
        .map_err(|p| anyhow::anyhow!(p.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))?;
    let gateway = Gateway::open(config).await?;
    let agent_token = gateway.add_agent("demo-agent", "admin").await?;
    let console_password = private_file(&secrets.join("console_password"), || {
        Ok(backend::admin::random_secret()?.chars().take(20).collect())
    })?;
    gateway.set_agent_password("demo-agent", &console_password).await?;

    let welcome = Welcome {
        gateway: &gateway_url,
        backend: &backend_url,
        agent_token: &agent_token,
        console_password: &console_password,
        app_key: &app_key,
        origins: &args.allow_origins,
        seed: &seed,
        dir,
    };
    welcome.print()?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        crate::shutdown_signal().await;
        let _ = stop.send(true);
    };
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (_, served_backend, served_gateway) = tokio::join!(
        signal,
        backend.serve(backend_listener, until_stopped(stopped.clone())),
        gateway.serve(gateway_listener, until_stopped(stopped)),
    );
    served_backend?;
    served_gateway?;
    eprintln!("deskbridge demo stopped; data kept in {}", dir.display());
    Ok(())
}

/// What the demo prints at start: the console first, then the rest.
struct Welcome<'a> {
    gateway: &'a str,
    backend: &'a str,
    agent_token: &'a str,
    console_password: &'a str,
    app_key: &'a str,
    origins: &'a [String],
    seed: &'a DemoSeed,
    dir: &'a Path,
}

impl Welcome<'_> {
    fn print(&self) -> anyhow::Result<()> {
        let Self {
            gateway,
            backend,
            agent_token,
            console_password,
            app_key,
            origins,
            seed,
            dir,
        } = self;
        let mut out = std::io::stdout().lock();
        let alice = &seed.users[0];
        writeln!(out, "deskbridge demo is running\n")?;
        writeln!(
            out,
            "  agent console  {gateway}/console   (sign in as demo-agent, password {console_password})"
        )?;
        writeln!(
            out,
            "  company site   {backend}/   (a customer signs in here and the chat connects)"
        )?;
        writeln!(out, "  agent API      {gateway}/v1/conversations")?;
        writeln!(
            out,
            "  gateway        {gateway}   (API description: {gateway}/openapi.json)"
        )?;
        writeln!(out, "  backend        {backend}   (the company's APIs)")?;
        writeln!(out, "  metrics        {gateway}/metrics   {backend}/metrics")?;
        writeln!(out, "  agent token    {agent_token}")?;
        writeln!(out, "  web app key    {app_key}")?;
        for origin in *origins {
            writeln!(
                out,
                "  your page      {origin}   (may use channel web, connection acme)"
            )?;
        }
        writeln!(
            out,
            "  web SDK        {gateway}{}   integrity {}",
            gateway::SDK_PATH,
            gateway::sdk_integrity()
        )?;
        writeln!(
            out,
            "  card element   {gateway}{}   integrity {}",
            gateway::CARD_ELEMENT_PATH,
            gateway::card_element_integrity()
        )?;
        for u in &seed.users {
            writeln!(out, "  customer       {:<8} password {}", u.username, u.password)?;
        }
        writeln!(out, "  gateway config {}", dir.join("gateway.toml").display())?;
        writeln!(out, "\nWalk the flow (copy and paste, in order):\n")?;
        writeln!(out, "  # 1. a customer logs in at the company and gets a JWT")?;
        writeln!(
            out,
            "  JWT=$(curl -s -d username={} -d password={} {backend}/customer_authenticate | sed -E 's/.*\"JWT\":\"([^\"]+)\".*/\\1/')",
            alice.username, alice.password
        )?;
        writeln!(out, "  # 2. the web chat opens a session with that login")?;
        writeln!(
            out,
            "  CONV=$(curl -s -H 'x-deskbridge-app-key: {app_key}' -H 'content-type: application/json' -d \"{{\\\"channel\\\":\\\"web\\\",\\\"connection\\\":\\\"acme\\\",\\\"auth\\\":{{\\\"token\\\":\\\"$JWT\\\"}}}}\" {gateway}/v1/sessions | sed -E 's/.*\"conversation_id\":\"([^\"]+)\".*/\\1/')"
        )?;
        writeln!(
            out,
            "  # 3. an agent fetches the customer's profile through the gateway"
        )?;
        writeln!(
            out,
            "  curl -s -X POST -H 'authorization: Bearer {agent_token}' {gateway}/v1/conversations/$CONV/actions/getprofile"
        )?;
        writeln!(
            out,
            "  # 4. and the transactions of one of the customer's accounts (an action with inputs)"
        )?;
        writeln!(
            out,
            "  curl -s -X POST -H 'authorization: Bearer {agent_token}' -H 'content-type: application/json' -d '{{\"input\":{{\"account_id\":\"acc-1001\",\"limit\":5}}}}' {gateway}/v1/conversations/$CONV/actions/gettransactions"
        )?;
        writeln!(
            out,
            "\nCtrl-C stops both servers; a second start reuses {}.",
            dir.display()
        )?;
        out.flush()?;
        Ok(())
    }
}

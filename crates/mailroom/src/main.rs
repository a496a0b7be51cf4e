//! `mailroom`: the command line.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use mailroom::config::{Config, DataArgs, ServeArgs};
use mailroom_core::Tier;
use mailroom_store::Store;

/// Mailroom: email for AI agents, self-hosted.
///
/// One binary serves the HTTP API (accounts, inboxes, keys) and, over the same store, the
/// mail protocols. Start it with `mailroom serve --dev` on a laptop; every setting is a
/// flag, a MAILROOM_* environment variable, or a key in the TOML file given with --config
/// (docs/configuration.md).
#[derive(Debug, Parser)]
#[command(name = "mailroom", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    ///
    /// The first start creates the data directory with the SQLite database, the master
    /// secret (master.key, mode 0600: back it up with the database) and a self-signed TLS
    /// certificate. SIGTERM or Ctrl-C stops it gracefully.
    ///
    /// Example: mailroom serve --dev
    Serve(Box<ServeArgs>),
    /// Operator tasks on the data of a server (running or not).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Look at and act on the outbound queue (mail waiting for other servers).
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Print the DNS records to publish for the mail domain: MX, SPF, DKIM, DMARC.
    ///
    /// Uses the same settings as `serve` (host name, default domain, data directory); the
    /// DKIM key exists once the server has started once.
    ///
    /// Example: mailroom dns-records --hostname mail.example.com --default-domain example.com
    DnsRecords(Box<ServeArgs>),
    /// Serve Mailroom's MCP tools to an agent host, over standard input and output.
    ///
    /// For hosts that start MCP servers as processes (Claude Desktop, Cursor, Codex, …).
    /// It keeps no data: each tool call is a request to the running server at
    /// MAILROOM_API_URL, made with MAILROOM_API_KEY (an account key, an inbox key or a
    /// scoped API key; the tools reach what that key reaches). Hosts that speak Streamable
    /// HTTP can use the server's /mcp endpoint instead, with the key in Authorization.
    ///
    /// Example host configuration:
    ///   {"mcpServers": {"mailroom": {"command": "mailroom", "args": ["mcp", "--stdio"],
    ///     "env": {"MAILROOM_API_URL": "https://mail.example.com",
    ///             "MAILROOM_API_KEY": "mr_inb_…"}}}}
    Mcp(McpArgs),
}

#[derive(Debug, clap::Args)]
struct McpArgs {
    /// Speak MCP over standard input and output (the only transport of this command; the
    /// server itself serves Streamable HTTP at /mcp).
    #[arg(long)]
    stdio: bool,
    /// The Mailroom server, as agents reach its HTTP API.
    #[arg(long, env = "MAILROOM_API_URL", value_name = "URL")]
    api_url: String,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Set an account's tier (free, developer, growth, enterprise).
    ///
    /// Takes effect at once, also while the server runs, and records an
    /// `account.upgraded` (or `account.downgraded`) event.
    ///
    /// Example: mailroom admin set-tier acc_0123456789abcdefghij developer
    SetTier {
        /// The account id (acc_…).
        account_id: String,
        /// The new tier.
        tier: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Operator users who log in with a password (seed 004).
    #[command(subcommand)]
    User(UserCommand),
    /// An account's own secrets: rotate the account key or the SMTP password.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Grant the upgrade an upgrade link asks for. Each link works once.
    ///
    /// Agents get links from POST /v1/upgrade-link or in `upgrade_context`; opening one
    /// shows this command with the link's token filled in.
    ///
    /// Example: mailroom admin redeem-upgrade 'eyJhIjoi…'
    RedeemUpgrade {
        /// The token: the `token=` part of the link, or the whole link.
        token: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the notices agents left for their operators (POST /v1/notify-operator), newest
    /// first: open ones, or all with --all. Resolve one with
    /// POST /v1/account/notices/{id}/resolve.
    ///
    /// Example: mailroom admin notices --account acc_0123456789abcdefghij
    Notices {
        /// Only this account: its id (acc_…), one of its inbox addresses, or a user's email.
        #[arg(long)]
        account: Option<String>,
        /// Include resolved notices.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user in an account. The password is read from MAILROOM_USER_PASSWORD or,
    /// when that is not set, from the first line of standard input (never from a flag,
    /// which other users of the machine could see).
    ///
    /// Example: echo 'a long passphrase' | mailroom admin user create acc_… jane@example.com --owner
    Create {
        /// The account id (acc_…).
        account_id: String,
        /// The email the user logs in with.
        email: String,
        /// Owners may do what the account key does.
        #[arg(long)]
        owner: bool,
        #[arg(long, default_value = "")]
        first_name: String,
        #[arg(long, default_value = "")]
        surname: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Issue a new account key and print it (once). The old key stops working at once,
    /// also in a running server; inbox keys and scoped API keys are untouched.
    ///
    /// Example: mailroom admin account rotate-key acc_0123456789abcdefghij
    RotateKey {
        /// The account: its id (acc_…), one of its inbox addresses, or a user's email.
        account: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Issue a new account SMTP password and print it with the SMTP settings. The old one
    /// stops working at once, also in open submission sessions. Needs the server's master
    /// secret (the data directory's master.key, or MAILROOM_MASTER_SECRET).
    ///
    /// Example: mailroom admin account rotate-smtp agent@example.com
    RotateSmtp {
        /// The account: its id (acc_…), one of its inbox addresses, or a user's email.
        account: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// List queued messages and where each recipient stands.
    ///
    /// Statuses: queued (not tried yet), deferred (a temporary failure; retried at the
    /// time shown), delivered, bounced (a DSN went to the sender), removed.
    ///
    /// Example: mailroom queue list --status deferred
    List {
        /// Only entries with a recipient in this status (repeatable). Default: queued and
        /// deferred.
        #[arg(long, value_name = "STATUS")]
        status: Vec<String>,
        /// Show every entry, finished ones included.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Make waiting recipients due now (one entry, or all with --all). A running server
    /// tries them within a second.
    ///
    /// Example: mailroom queue retry q_0123456789abcdefghij
    Retry {
        /// The queue id (q_…), as `queue list` shows it.
        #[arg(required_unless_present = "all")]
        id: Option<String>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Take an entry's waiting recipients out of the queue, without a bounce.
    ///
    /// Example: mailroom queue remove q_0123456789abcdefghij
    Remove {
        /// The queue id (q_…).
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// jemalloc: the API's request path allocates a little per request on every core, which
/// glibc's allocator serves with more locking (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::resolve(&args)?;
            mailroom::telemetry::init_logging(config.log_format);
            let server = mailroom::start(config).await?;
            server.run_until_signal().await
        }
        Command::Admin(cmd) => admin(cmd).await,
        Command::Mcp(args) => mcp(args).await,
        Command::Queue(cmd) => queue(cmd).await,
        Command::DnsRecords(args) => {
            let (_, store) = open_existing(&args.data).await?;
            let config = Config::resolve(&args)?;
            let services = mailroom::services(
                store.clone(),
                &config,
                mailroom_core::secret::MasterSecret::generate(),
                String::new(),
                false,
            );
            let records = services.dns_records(&config.default_domain).await?;
            store.close().await;
            println!(
                "; DNS records for {} (zone-file syntax)",
                config.default_domain
            );
            for (name, kind, value) in records {
                println!("{name}\t3600\tIN\t{kind}\t{value}");
            }
            Ok(())
        }
    }
}

/// `mailroom mcp --stdio`. Nothing is written to standard output but the protocol, so
/// errors go to standard error. The key is read from the environment only: a flag would
/// show it to every user of the machine.
async fn mcp(args: McpArgs) -> anyhow::Result<()> {
    if !args.stdio {
        bail!("say --stdio: this command speaks MCP over standard input and output");
    }
    let key = std::env::var("MAILROOM_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .context(
            "set MAILROOM_API_KEY to the key the tools should use (mr_acc_…, mr_inb_… or mr_key_…)",
        )?;
    mailroom_mcp::serve_stdio(&args.api_url, key.trim().to_owned()).await?;
    Ok(())
}

/// Opens an existing server's data; never creates a database or a master secret.
async fn open_existing(data: &DataArgs) -> anyhow::Result<(Config, Store)> {
    let config = Config::resolve_data(data)?;
    if config.database_url.is_none() {
        let db = config.data_dir.join("mailroom.db");
        if !db.exists() {
            bail!(
                "no database at {}; start the server once (mailroom serve) or point --data-dir / \
                 MAILROOM_DATABASE_URL at the server's data",
                db.display()
            );
        }
    }
    let url = config.effective_database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open the database ({})", mailroom::redact_url(&url)))?;
    Ok((config, store))
}

async fn admin(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::SetTier {
            account_id,
            tier,
            data,
        } => {
            let tier = Tier::parse(&tier.to_ascii_lowercase()).with_context(|| {
                format!("unknown tier {tier:?}; use free, developer, growth or enterprise")
            })?;
            let (config, store) = open_existing(&data).await?;
            // Setting a tier needs no secrets; a throwaway master secret keeps this command
            // from requiring (or creating) master.key.
            let services = mailroom::services(
                store.clone(),
                &config,
                mailroom_core::secret::MasterSecret::generate(),
                String::new(),
                false,
            );
            let change = services
                .set_tier(&account_id, tier)
                .await
                .map_err(|e| match e {
                    mailroom_services::ServiceError::NotFound { .. } => {
                        anyhow::anyhow!("no account {account_id:?} in this database")
                    }
                    other => other.into(),
                })?;
            store.close().await;
            if change.previous == change.tier {
                println!("{account_id} is already on the {} tier", change.tier);
            } else {
                println!("{account_id}: {} -> {}", change.previous, change.tier);
            }
            Ok(())
        }
        AdminCommand::User(UserCommand::Create {
            account_id,
            email,
            owner,
            first_name,
            surname,
            data,
        }) => {
            let password = match std::env::var("MAILROOM_USER_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let (config, store) = open_existing(&data).await?;
            if store.get_account(&account_id).await?.is_none() {
                bail!("no account {account_id:?} in this database");
            }
            let services = mailroom::services(
                store.clone(),
                &config,
                mailroom_core::secret::MasterSecret::generate(),
                String::new(),
                false,
            );
            let user = services
                .create_user_in(
                    &account_id,
                    &mailroom_services::users::CreateUser {
                        email,
                        password,
                        first_name,
                        surname,
                        is_owner: owner,
                    },
                )
                .await?;
            store.close().await;
            println!(
                "created {} ({}{}) in {account_id}; log in with POST /v1/auth/token",
                user.id,
                user.email,
                if user.is_owner { ", owner" } else { "" }
            );
            Ok(())
        }
        AdminCommand::Account(cmd) => account(cmd).await,
        AdminCommand::Notices { account, all, data } => notices(account, all, &data).await,
        AdminCommand::RedeemUpgrade { token, data } => {
            let token = token
                .split_once("token=")
                .map(|(_, t)| t.split('&').next().unwrap_or(t))
                .unwrap_or(&token)
                .trim()
                .to_owned();
            let (config, store) = open_existing(&data).await?;
            if config.master_secret.is_none() && !config.data_dir.join("master.key").exists() {
                bail!(
                    "no master secret in {}; upgrade links can only be checked with the secret of \
                     the server that issued them",
                    config.data_dir.display()
                );
            }
            let master = mailroom::datadir::master_secret(
                &config.data_dir,
                config.master_secret.as_deref(),
            )?;
            let services = mailroom::services(store.clone(), &config, master, String::new(), false);
            let change = services.redeem_upgrade_token(&token).await?;
            store.close().await;
            println!("upgrade granted: {} -> {}", change.previous, change.tier);
            Ok(())
        }
    }
}

/// `mailroom admin notices`: one line per notice, its context on the next when it has one.
async fn notices(account: Option<String>, all: bool, data: &DataArgs) -> anyhow::Result<()> {
    let (config, store) = open_existing(data).await?;
    // Listing needs no secrets.
    let master = mailroom_core::secret::MasterSecret::generate();
    let services = mailroom::services(store.clone(), &config, master, String::new(), false);
    let account_id = match &account {
        None => None,
        Some(who) => Some(services.account_named(who).await.map_err(|e| match e {
            mailroom_services::ServiceError::NotFound { .. } => {
                anyhow::anyhow!("no account {who:?} in this database (give an acc_… id, an inbox address or a user's email)")
            }
            other => other.into(),
        })?),
    };
    let rows = store.list_notices(account_id.as_deref(), all, 1000).await?;
    store.close().await;
    if rows.is_empty() {
        println!("no {}notices", if all { "" } else { "open " });
    }
    for n in rows {
        let state = match n.resolved_at {
            Some(t) => format!("resolved {}", mailroom_core::time::rfc3339(t)),
            None => "open".to_owned(),
        };
        println!(
            "{}  {}  {}  {}  {}",
            n.id,
            n.account_id,
            mailroom_core::time::rfc3339(n.created_at),
            state,
            n.issue.replace('\n', " ")
        );
        if let Some(c) = n.context {
            println!("    context: {c}");
        }
    }
    Ok(())
}

/// The server's real master secret, for commands that derive or check what it signs.
fn existing_master(
    config: &Config,
    what: &str,
) -> anyhow::Result<mailroom_core::secret::MasterSecret> {
    if config.master_secret.is_none() && !config.data_dir.join("master.key").exists() {
        bail!(
            "no master secret in {}; {what} needs the secret of the server (its data directory, or MAILROOM_MASTER_SECRET)",
            config.data_dir.display()
        );
    }
    mailroom::datadir::master_secret(&config.data_dir, config.master_secret.as_deref())
}

async fn account(cmd: AccountCommand) -> anyhow::Result<()> {
    let (data, smtp) = match &cmd {
        AccountCommand::RotateKey { data, .. } => (data, false),
        AccountCommand::RotateSmtp { data, .. } => (data, true),
    };
    let (config, store) = open_existing(data).await?;
    // A key is stored as its hash and needs no secret; the SMTP password is derived from
    // the master secret, so it must be the server's.
    let master = if smtp {
        existing_master(&config, "the SMTP password")?
    } else {
        mailroom_core::secret::MasterSecret::generate()
    };
    let services = mailroom::services(store.clone(), &config, master, String::new(), false);
    let who = match &cmd {
        AccountCommand::RotateKey { account, .. } | AccountCommand::RotateSmtp { account, .. } => {
            account
        }
    };
    let account_id = services.account_named(who).await.map_err(|e| match e {
        mailroom_services::ServiceError::NotFound { .. } => {
            anyhow::anyhow!("no account {who:?} in this database (give an acc_… id, an inbox address or a user's email)")
        }
        other => other.into(),
    })?;
    let result = if smtp {
        services.rotate_smtp_password_of(&account_id).await.map(|r| {
            let c = r.credentials;
            let mut out = format!(
                "new SMTP password for {account_id} (shown once here; GET /v1/account/smtp shows it to the account)\nhost: {}\nport: {}\nusername: {}\npassword: {}",
                c.host, c.port, c.username, c.password
            );
            if !r.smtp_enabled {
                out.push_str("\n(the account's tier has no SMTP access; the password works once it has)");
            }
            out
        })
    } else {
        services.rotate_account_key_of(&account_id).await.map(|r| {
            format!(
                "new account key for {account_id} (shown once; the old key no longer works)\naccount_api_key: {}",
                r.account_api_key
            )
        })
    };
    store.close().await;
    println!("{}", result?);
    Ok(())
}

async fn queue(cmd: QueueCommand) -> anyhow::Result<()> {
    let now = mailroom_core::time::now_ms();
    match cmd {
        QueueCommand::List {
            status,
            all,
            limit,
            data,
        } => {
            let (_, store) = open_existing(&data).await?;
            let statuses: Vec<&str> = if all {
                Vec::new()
            } else if status.is_empty() {
                vec!["queued", "deferred"]
            } else {
                status.iter().map(String::as_str).collect()
            };
            let entries = store.list_queue(&statuses, limit).await?;
            store.close().await;
            if entries.is_empty() {
                println!("the queue is empty");
                return Ok(());
            }
            for e in entries {
                println!(
                    "{}  {}  from <{}>  {} bytes  expires {}",
                    e.outbound_id,
                    mailroom_core::time::rfc3339(e.created_at),
                    e.mail_from,
                    e.size,
                    mailroom_core::time::rfc3339(e.expires_at),
                );
                for r in e.recipients {
                    let next = r
                        .next_attempt_at
                        .map(|t| format!("  next {}", mailroom_core::time::rfc3339(t)))
                        .unwrap_or_default();
                    println!(
                        "    {:<40} {:<9} attempts {}{next}  {}",
                        r.recipient,
                        r.status,
                        r.attempts,
                        r.last_response.unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        QueueCommand::Retry { id, all, data } => {
            let (_, store) = open_existing(&data).await?;
            let id = if all { None } else { id };
            let n = store.retry_queue(id.as_deref(), now).await?;
            store.close().await;
            println!("{n} recipient(s) due now");
            Ok(())
        }
        QueueCommand::Remove { id, data } => {
            let (_, store) = open_existing(&data).await?;
            let n = store.remove_from_queue(&id, now).await?;
            store.close().await;
            if n == 0 {
                bail!("no waiting recipients in {id:?}; `mailroom queue list` shows the queue");
            }
            println!("removed {n} recipient(s) from {id}");
            Ok(())
        }
    }
}

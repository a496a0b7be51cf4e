//! Configuration: defaults, then the TOML file, then `MAILROOM_*` environment variables,
//! then command-line flags (each later source wins). Clap reads the environment and flags
//! together (every flag names its variable in `--help`); this module merges the result over
//! the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use mailroom_core::Tiers;
use mailroom_services::dmarc::DmarcEnforcement;
use serde::Deserialize;

mod delivery;
mod events;
mod imap;
mod login;
mod storage;
mod tenancy;

pub use events::WebhookBudgets;

/// Whether the HTTP API is served over TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HttpTls {
    /// TLS unless the listener is bound to a loopback address.
    Auto,
    /// Always TLS.
    On,
    /// Never TLS: only for loopback or behind a trusted proxy that terminates TLS.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Options shared by every command that opens the data: where it lives.
#[derive(Debug, Clone, Default, Args)]
pub struct DataArgs {
    /// TOML configuration file. Every key is optional; see docs/configuration.md.
    #[arg(long, short = 'c', env = "MAILROOM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the database, master secret and TLS certificate; created on first
    /// start. [default: ./data]
    #[arg(long, env = "MAILROOM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Database URL. Default: SQLite in the data directory. For PostgreSQL:
    /// postgres://USER@HOST/DB
    #[arg(
        long,
        env = "MAILROOM_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// `mailroom serve` options.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,

    /// Development mode: high ports (HTTP 8080, SMTP 2525, submission 2587/2465, IMAP
    /// 2143/2993, POP3 2110/2995), all bound to 127.0.0.1, plain HTTP on loopback.
    #[arg(long, env = "MAILROOM_DEV")]
    pub dev: bool,

    /// This server's host name: the name in its TLS certificate and the SMTP host given to
    /// clients. [default: localhost]
    #[arg(long, env = "MAILROOM_HOSTNAME", value_name = "NAME")]
    pub hostname: Option<String>,

    /// The mail domain new inboxes get (name@DOMAIN). [default: the host name]
    #[arg(long, env = "MAILROOM_DEFAULT_DOMAIN", value_name = "DOMAIN")]
    pub default_domain: Option<String>,

    /// The URL people use to reach the HTTP API; links in answers start with it.
    /// [default: derived from the host name and HTTP listener]
    #[arg(long, env = "MAILROOM_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// The operator's upgrade (billing) page that upgrade links point to.
    /// [default: this server's /upgrade page]
    #[arg(long, env = "MAILROOM_UPGRADE_URL", value_name = "URL")]
    pub upgrade_url: Option<String>,

    /// HTTP API listener. [default: 0.0.0.0:8080; --dev: 127.0.0.1:8080]
    #[arg(long, env = "MAILROOM_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// SMTP (MX) listener. [default: 0.0.0.0:25; --dev: 127.0.0.1:2525]
    #[arg(long, env = "MAILROOM_SMTP_LISTEN", value_name = "ADDR")]
    pub smtp_listen: Option<SocketAddr>,
    /// SMTP submission (STARTTLS) listener. [default: 0.0.0.0:587; --dev: 127.0.0.1:2587]
    #[arg(long, env = "MAILROOM_SUBMISSION_LISTEN", value_name = "ADDR")]
    pub submission_listen: Option<SocketAddr>,
    /// SMTP submission (implicit TLS) listener. [default: 0.0.0.0:465; --dev: 127.0.0.1:2465]
    #[arg(long, env = "MAILROOM_SUBMISSIONS_LISTEN", value_name = "ADDR")]
    pub submissions_listen: Option<SocketAddr>,
    /// IMAP (STARTTLS) listener. [default: 0.0.0.0:143; --dev: 127.0.0.1:2143]
    #[arg(long, env = "MAILROOM_IMAP_LISTEN", value_name = "ADDR")]
    pub imap_listen: Option<SocketAddr>,
    /// IMAP (implicit TLS) listener. [default: 0.0.0.0:993; --dev: 127.0.0.1:2993]
    #[arg(long, env = "MAILROOM_IMAPS_LISTEN", value_name = "ADDR")]
    pub imaps_listen: Option<SocketAddr>,
    /// POP3 (STLS) listener. [default: 0.0.0.0:110; --dev: 127.0.0.1:2110]
    #[arg(long, env = "MAILROOM_POP3_LISTEN", value_name = "ADDR")]
    pub pop3_listen: Option<SocketAddr>,
    /// POP3 (implicit TLS) listener. [default: 0.0.0.0:995; --dev: 127.0.0.1:2995]
    #[arg(long, env = "MAILROOM_POP3S_LISTEN", value_name = "ADDR")]
    pub pop3s_listen: Option<SocketAddr>,

    /// TLS certificate chain (PEM). Without it, a self-signed certificate for the host name
    /// is created in the data directory on first start.
    #[arg(
        long,
        env = "MAILROOM_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for --tls-cert.
    #[arg(
        long,
        env = "MAILROOM_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Serve the HTTP API over TLS: auto = unless bound to loopback. [default: auto]
    #[arg(long, env = "MAILROOM_HTTP_TLS", value_name = "MODE")]
    pub http_tls: Option<HttpTls>,
    /// Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted (comma-separated IPs).
    #[arg(
        long,
        env = "MAILROOM_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Lets other hosts read /metrics with `Authorization: Bearer <TOKEN>`. Without it,
    /// only this host (loopback) may scrape.
    #[arg(
        long,
        env = "MAILROOM_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// Account creations (POST /v1/inboxes without a key) allowed per client IP per hour.
    /// [default: 10]
    #[arg(long, env = "MAILROOM_INBOX_CREATE_PER_HOUR", value_name = "N")]
    pub inbox_create_per_hour: Option<u32>,

    /// API requests per minute for each key or token (and each client IP without one);
    /// 0 = unlimited. [default: 6000]
    #[arg(long, env = "MAILROOM_REQUESTS_PER_MINUTE", value_name = "N")]
    pub requests_per_minute: Option<u32>,

    /// DNS server (IP:PORT) for SPF/DKIM/DMARC checks of inbound mail.
    /// [default: the system's resolvers]
    #[arg(long, env = "MAILROOM_DNS_RESOLVER", value_name = "ADDR")]
    pub dns_resolver: Option<SocketAddr>,

    /// Let webhooks reach private, link-local and loopback addresses (off by default: a
    /// webhook must not become a way into the operator's network). --dev allows loopback.
    #[arg(long, env = "MAILROOM_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,

    /// Send all outbound mail through this smarthost (HOST:PORT) instead of each domain's
    /// MX. Port 465 means TLS from the first byte; otherwise STARTTLS when offered.
    #[arg(long, env = "MAILROOM_RELAY", value_name = "HOST:PORT")]
    pub relay: Option<String>,
    /// User name for AUTH PLAIN at the relay (sent only over TLS, or to a loopback relay).
    #[arg(
        long,
        env = "MAILROOM_RELAY_USERNAME",
        value_name = "NAME",
        requires = "relay"
    )]
    pub relay_username: Option<String>,
    /// Password for the relay. Prefer the environment variable to the flag, which other
    /// users of the machine can see in the process list.
    #[arg(
        long,
        env = "MAILROOM_RELAY_PASSWORD",
        value_name = "SECRET",
        requires = "relay_username",
        hide_env_values = true
    )]
    pub relay_password: Option<String>,

    /// Outbound delivery: special addresses, the relay's certificate.
    #[command(flatten)]
    pub delivery: delivery::DeliveryArgs,

    /// What DMARC policies do to inbound mail that fails them: enforce (p=reject refused
    /// with 550 5.7.1, p=quarantine filed in Junk), quarantine-only (both filed in Junk),
    /// monitor (recorded only). [default: enforce]
    #[arg(long, env = "MAILROOM_SMTP_DMARC_ENFORCEMENT", value_name = "MODE")]
    pub smtp_dmarc_enforcement: Option<DmarcEnforcement>,

    /// Days a deleted inbox's address stays reserved for the account that had it; 0 frees
    /// it at once. [default: 30]
    #[arg(
        long,
        env = "MAILROOM_TENANCY_DELETED_ADDRESS_HOLD_DAYS",
        value_name = "DAYS"
    )]
    pub deleted_address_hold_days: Option<u64>,

    /// Log format. [default: text]
    #[arg(long, env = "MAILROOM_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The file's shape (docs/configuration.md). Unknown keys are errors, so a typo is caught at
/// start instead of silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    dev: Option<bool>,
    hostname: Option<String>,
    default_domain: Option<String>,
    public_url: Option<String>,
    upgrade_url: Option<String>,
    dns_resolver: Option<SocketAddr>,
    webhook_allow_private: Option<bool>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    listen: FileListen,
    #[serde(default)]
    tls: FileTls,
    #[serde(default)]
    http: FileHttp,
    #[serde(default)]
    smtp: FileSmtp,
    #[serde(default)]
    pop3: FilePop3,
    #[serde(default)]
    imap: imap::FileImap,
    #[serde(default)]
    delivery: delivery::FileDelivery,
    #[serde(default)]
    webhooks: events::FileWebhooks,
    #[serde(default)]
    streams: events::FileStreams,
    #[serde(default)]
    storage: storage::FileStorage,
    #[serde(default)]
    login: login::FileLogin,
    #[serde(default)]
    tenancy: tenancy::FileTenancy,
    tiers: Option<Tiers>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSmtp {
    max_message_size: Option<usize>,
    max_recipients: Option<usize>,
    command_timeout_secs: Option<u64>,
    data_timeout_secs: Option<u64>,
    message_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    per_ip_wait_ms: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    auth_time_budget_ms: Option<u64>,
    max_dkim_signatures: Option<usize>,
    dmarc_enforcement: Option<DmarcEnforcement>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePop3 {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    per_ip_wait_ms: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    login_timeout_secs: Option<u64>,
    max_messages: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListen {
    http: Option<SocketAddr>,
    smtp: Option<SocketAddr>,
    submission: Option<SocketAddr>,
    submissions: Option<SocketAddr>,
    imap: Option<SocketAddr>,
    imaps: Option<SocketAddr>,
    pop3: Option<SocketAddr>,
    pop3s: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    http: Option<HttpTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttp {
    trusted_proxies: Option<Vec<IpAddr>>,
    metrics_token: Option<String>,
    inbox_create_per_hour: Option<u32>,
    max_body_bytes: Option<usize>,
    access_token_ttl_secs: Option<u64>,
    requests_per_minute: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    tls_handshake_timeout_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
}

/// Listener addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listeners {
    pub http: SocketAddr,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub pop3: SocketAddr,
    pub pop3s: SocketAddr,
}

impl Listeners {
    fn defaults(dev: bool) -> Listeners {
        let (ip, ports): (IpAddr, [u16; 8]) = if dev {
            (
                IpAddr::from([127, 0, 0, 1]),
                [8080, 2525, 2587, 2465, 2143, 2993, 2110, 2995],
            )
        } else {
            (
                IpAddr::from([0, 0, 0, 0]),
                [8080, 25, 587, 465, 143, 993, 110, 995],
            )
        };
        let a = |p: u16| SocketAddr::new(ip, p);
        Listeners {
            http: a(ports[0]),
            smtp: a(ports[1]),
            submission: a(ports[2]),
            submissions: a(ports[3]),
            imap: a(ports[4]),
            imaps: a(ports[5]),
            pop3: a(ports[6]),
            pop3s: a(ports[7]),
        }
    }
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub dev: bool,
    pub data_dir: PathBuf,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    pub hostname: String,
    pub default_domain: String,
    /// `None`: derived from the HTTP listener once it is bound.
    pub public_url: Option<String>,
    pub upgrade_url: Option<String>,
    /// DNS server for SPF/DKIM/DMARC; `None`: the system's.
    pub dns_resolver: Option<SocketAddr>,
    /// Webhooks may reach private addresses.
    pub webhook_allow_private: bool,
    /// Delays between webhook attempts (the first attempt is immediate).
    pub webhook_retry_schedule: Vec<std::time::Duration>,
    /// Time allowed for one webhook delivery (`[webhooks] timeout_secs`).
    pub webhook_timeout: std::time::Duration,
    /// The webhook worker's slots and fan-out batches (`[webhooks]`).
    pub webhook_budgets: WebhookBudgets,
    /// Budgets of event streams, long polls and IMAP IDLE (`[streams]`).
    pub streams: mailroom_services::StreamLimits,
    /// Wrong passwords allowed at every door (`[login]`).
    pub login_throttle: mailroom_services::LoginThrottlePolicy,
    /// The blob collector (`[storage]`).
    pub collector: mailroom_services::CollectorConfig,
    pub listen: Listeners,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_tls: HttpTls,
    pub trusted_proxies: Vec<IpAddr>,
    /// `/metrics` from other hosts than this one needs `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    pub inbox_create_per_hour: u32,
    /// API requests per minute per key, token or client IP; 0 = unlimited.
    pub requests_per_minute: u32,
    pub max_body_bytes: usize,
    /// Connections and header deadline of the HTTP listener (`[http]`).
    pub http_limits: mailroom_api::server::HttpLimits,
    pub tiers: Tiers,
    /// SMTP limits (`[smtp]` in the file); the host name is filled in from `hostname`.
    pub smtp: mailroom_smtp::SmtpConfig,
    /// What the SPF/DKIM/DMARC checks of one inbound message may cost (`[smtp]`).
    pub auth_budget: mailroom_services::mailauth::AuthBudget,
    /// What failing DMARC does to inbound mail (`smtp.dmarc_enforcement`).
    pub dmarc_enforcement: DmarcEnforcement,
    /// POP3 limits (`[pop3]`).
    pub pop3: mailroom_pop3::Pop3Config,
    /// IMAP sessions at once and per-command budgets (`[imap]`).
    pub imap: mailroom_imap::ImapLimits,
    /// Outbound delivery (`[delivery]` in the file); at start its host name and resolver
    /// are set from `hostname` and `dns_resolver`.
    pub delivery: mailroom_delivery::DeliveryConfig,
    /// How long a message may wait in the outbound queue before it bounces (5 days).
    pub queue_lifetime: std::time::Duration,
    /// How long a user's JWT access token works (15 minutes).
    pub access_token_ttl: std::time::Duration,
    /// How long a deleted inbox's address is held for its account (`[tenancy]`, 30 days).
    pub deleted_address_hold: std::time::Duration,
    pub log_format: LogFormat,
    /// From `MAILROOM_MASTER_SECRET` (64 hex characters); `None`: the data directory's
    /// `master.key`, created on first start.
    pub master_secret: Option<String>,
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "the config file {} is not valid (see docs/configuration.md)",
            path.display()
        )
    })
}

impl Config {
    /// Resolves the configuration of `serve`.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<Config> {
        let file = match &args.data.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let dev = args.dev || file.dev.unwrap_or(false);
        let d = Listeners::defaults(dev);
        let pick = |flag: Option<SocketAddr>, file: Option<SocketAddr>, default: SocketAddr| {
            flag.or(file).unwrap_or(default)
        };
        let listen = Listeners {
            http: pick(args.http_listen, file.listen.http, d.http),
            smtp: pick(args.smtp_listen, file.listen.smtp, d.smtp),
            submission: pick(args.submission_listen, file.listen.submission, d.submission),
            submissions: pick(
                args.submissions_listen,
                file.listen.submissions,
                d.submissions,
            ),
            imap: pick(args.imap_listen, file.listen.imap, d.imap),
            imaps: pick(args.imaps_listen, file.listen.imaps, d.imaps),
            pop3: pick(args.pop3_listen, file.listen.pop3, d.pop3),
            pop3s: pick(args.pop3s_listen, file.listen.pop3s, d.pop3s),
        };
        let hostname = args
            .hostname
            .clone()
            .or(file.hostname)
            .unwrap_or_else(|| "localhost".to_owned())
            .to_ascii_lowercase();
        validate_domain("hostname", &hostname)?;
        let default_domain = args
            .default_domain
            .clone()
            .or(file.default_domain)
            .unwrap_or_else(|| hostname.clone())
            .to_ascii_lowercase();
        validate_domain("default_domain", &default_domain)?;
        let http_tls = args.http_tls.or(file.tls.http).unwrap_or(HttpTls::Auto);
        let trusted_proxies = if args.trusted_proxies.is_empty() {
            file.http.trusted_proxies.clone().unwrap_or_default()
        } else {
            args.trusted_proxies.clone()
        };
        let tls_cert = args.tls_cert.clone().or(file.tls.cert);
        let tls_key = args.tls_key.clone().or(file.tls.key);
        if tls_cert.is_some() != tls_key.is_some() {
            bail!("tls.cert and tls.key must be given together");
        }
        let smtp = resolve_smtp(&file.smtp, &hostname);
        let http_limits = resolve_http_limits(&file.http, &trusted_proxies);
        let delivery = delivery::resolve_delivery(args, &file.delivery, &hostname, dev)?;
        let queue_lifetime = std::time::Duration::from_secs(
            3600 * file.delivery.queue_lifetime_hours.unwrap_or(5 * 24),
        );
        if queue_lifetime.is_zero() {
            bail!("delivery.queue_lifetime_hours must be at least 1");
        }
        let webhook_budgets = events::resolve_webhooks(&file.webhooks)?;
        let streams = events::resolve_streams(&file.streams)?;
        let login_throttle = login::resolve(&file.login)?;
        let collector = storage::resolve_storage(&file.storage)?;
        let max_body_bytes = file.http.max_body_bytes.unwrap_or(64 * 1024);
        if max_body_bytes < 1024 {
            bail!("http.max_body_bytes must be at least 1024");
        }
        Ok(Config {
            dev,
            data_dir: args
                .data
                .data_dir
                .clone()
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            database_url: args.data.database_url.clone().or(file.database_url),
            hostname,
            default_domain,
            public_url: args.public_url.clone().or(file.public_url),
            upgrade_url: args.upgrade_url.clone().or(file.upgrade_url),
            dns_resolver: args.dns_resolver.or(file.dns_resolver),
            webhook_allow_private: args.webhook_allow_private
                || file.webhook_allow_private.unwrap_or(false),
            webhook_retry_schedule: default_retry_schedule(),
            webhook_timeout: events::webhook_timeout(&file.webhooks)?,
            webhook_budgets,
            streams,
            login_throttle,
            collector,
            listen,
            tls_cert,
            tls_key,
            http_tls,
            trusted_proxies,
            metrics_token: args
                .metrics_token
                .clone()
                .or_else(|| file.http.metrics_token.clone())
                .filter(|t| !t.is_empty()),
            inbox_create_per_hour: args
                .inbox_create_per_hour
                .or(file.http.inbox_create_per_hour)
                .unwrap_or(10),
            max_body_bytes,
            http_limits,
            requests_per_minute: args
                .requests_per_minute
                .or(file.http.requests_per_minute)
                .unwrap_or(6000),
            tiers: file.tiers.unwrap_or_default(),
            smtp,
            auth_budget: resolve_auth_budget(&file.smtp),
            dmarc_enforcement: args
                .smtp_dmarc_enforcement
                .or(file.smtp.dmarc_enforcement)
                .unwrap_or_default(),
            pop3: resolve_pop3(&file.pop3),
            imap: imap::resolve(&file.imap),
            delivery,
            queue_lifetime,
            access_token_ttl: std::time::Duration::from_secs(
                file.http
                    .access_token_ttl_secs
                    .unwrap_or(900)
                    .clamp(1, 86_400),
            ),
            deleted_address_hold: tenancy::deleted_address_hold(
                args.deleted_address_hold_days,
                &file.tenancy,
            )?,
            log_format: args
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            master_secret: std::env::var("MAILROOM_MASTER_SECRET").ok(),
        })
    }

    /// Resolves just the data location, for the admin commands.
    pub fn resolve_data(args: &DataArgs) -> anyhow::Result<Config> {
        Config::resolve(&ServeArgs {
            data: args.clone(),
            ..ServeArgs::default()
        })
    }

    /// The database URL to open: the configured one, or SQLite in the data directory.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("mailroom.db").display()),
        }
    }

    /// Whether the HTTP listener serves TLS.
    pub fn http_uses_tls(&self) -> bool {
        match self.http_tls {
            HttpTls::On => true,
            HttpTls::Off => false,
            HttpTls::Auto => !self.listen.http.ip().is_loopback(),
        }
    }
}

/// The `[smtp]` settings over the defaults.
fn resolve_smtp(file: &FileSmtp, hostname: &str) -> mailroom_smtp::SmtpConfig {
    let d = mailroom_smtp::SmtpConfig::default();
    let connections = conn_limits(
        &d.connections,
        file.max_connections,
        file.max_connections_per_ip,
        file.per_ip_wait_ms,
        file.tls_handshake_timeout_secs,
    );
    mailroom_smtp::SmtpConfig {
        hostname: hostname.to_owned(),
        max_message_size: file.max_message_size.unwrap_or(d.max_message_size),
        max_recipients: file.max_recipients.unwrap_or(d.max_recipients),
        command_timeout: secs(file.command_timeout_secs, d.command_timeout),
        data_timeout: secs(file.data_timeout_secs, d.data_timeout),
        message_timeout: secs(file.message_timeout_secs, d.message_timeout),
        connections,
        max_errors: d.max_errors,
    }
}

/// The `[http]` connection settings over the defaults. Trusted proxies bring many clients
/// over each connection, so they are not limited per address.
fn resolve_http_limits(
    file: &FileHttp,
    trusted_proxies: &[IpAddr],
) -> mailroom_api::server::HttpLimits {
    let d = mailroom_api::server::HttpLimits::default();
    let mut connections = conn_limits(
        &d.connections,
        file.max_connections,
        file.max_connections_per_ip,
        None,
        file.tls_handshake_timeout_secs,
    );
    connections.exempt = trusted_proxies.to_vec();
    mailroom_api::server::HttpLimits {
        connections,
        header_read_timeout: secs(file.header_read_timeout_secs, d.header_read_timeout),
        shutdown_grace: d.shutdown_grace,
    }
}

fn resolve_auth_budget(file: &FileSmtp) -> mailroom_services::mailauth::AuthBudget {
    let d = mailroom_services::mailauth::AuthBudget::default();
    mailroom_services::mailauth::AuthBudget {
        time: file
            .auth_time_budget_ms
            .map(Duration::from_millis)
            .unwrap_or(d.time),
        max_dkim_signatures: file.max_dkim_signatures.unwrap_or(d.max_dkim_signatures),
    }
}

/// The `[pop3]` settings over the defaults.
fn resolve_pop3(file: &FilePop3) -> mailroom_pop3::Pop3Config {
    let d = mailroom_pop3::Pop3Config::default();
    mailroom_pop3::Pop3Config {
        connections: conn_limits(
            &d.connections,
            file.max_connections,
            file.max_connections_per_ip,
            file.per_ip_wait_ms,
            file.tls_handshake_timeout_secs,
        ),
        idle_timeout: secs(file.idle_timeout_secs, d.idle_timeout),
        login_timeout: secs(file.login_timeout_secs, d.login_timeout),
        max_messages: file.max_messages.unwrap_or(d.max_messages),
    }
}

fn secs(value: Option<u64>, default: Duration) -> Duration {
    value.map(Duration::from_secs).unwrap_or(default)
}

/// A door's connection budget: the keys every mail table shares over its defaults.
fn conn_limits(
    d: &mailroom_net::ConnLimits,
    max_connections: Option<usize>,
    max_per_ip: Option<usize>,
    per_ip_wait_ms: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
) -> mailroom_net::ConnLimits {
    mailroom_net::ConnLimits {
        max_connections: max_connections.unwrap_or(d.max_connections),
        max_per_ip: max_per_ip.unwrap_or(d.max_per_ip),
        per_ip_wait: per_ip_wait_ms
            .map(Duration::from_millis)
            .unwrap_or(d.per_ip_wait),
        exempt_loopback: d.exempt_loopback,
        exempt: d.exempt.clone(),
        tls_handshake_timeout: secs(tls_handshake_timeout_secs, d.tls_handshake_timeout),
    }
}

/// Standard Webhooks' schedule after the immediate first attempt: 5 s, 5 min, 30 min, 2 h,
/// 5 h, 10 h, 14 h, 20 h, 24 h (about a day and a half in all).
pub fn default_retry_schedule() -> Vec<std::time::Duration> {
    [5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400]
        .into_iter()
        .map(std::time::Duration::from_secs)
        .collect()
}

fn validate_domain(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        bail!("{what} {name:?} is not a valid domain name (letters, digits, '-', dot-separated)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_defaults_are_loopback_high_ports() {
        let c = Config::resolve(&ServeArgs {
            dev: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.listen.smtp.port(), 2525);
        assert_eq!(c.listen.pop3s.port(), 2995);
        assert!(!c.http_uses_tls());
        assert_eq!(c.default_domain, "localhost");
    }

    #[test]
    fn production_defaults_are_standard_ports_with_tls() {
        let c = Config::resolve(&ServeArgs::default()).unwrap();
        assert_eq!(c.listen.smtp.port(), 25);
        assert_eq!(c.listen.submission.port(), 587);
        assert_eq!(c.listen.imaps.port(), 993);
        assert!(c.http_uses_tls());
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(
            &path,
            "hostname = \"mx.example.org\"\n[listen]\nsmtp = \"127.0.0.1:3525\"\n\
             [tiers.free]\nmax_inboxes = 2\n",
        )
        .unwrap();
        let mut args = ServeArgs::default();
        args.data.config = Some(path);
        args.default_domain = Some("Agents.Example.org".into());
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.hostname, "mx.example.org");
        assert_eq!(c.default_domain, "agents.example.org");
        assert_eq!(c.listen.smtp, "127.0.0.1:3525".parse().unwrap());
        assert_eq!(c.tiers.free.max_inboxes, Some(2));
        assert_eq!(c.tiers.developer.max_sends_per_day, Some(1000));
    }

    #[test]
    fn bad_files_and_names_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, "hostnam = \"x\"\n").unwrap();
        let mut args = ServeArgs::default();
        args.data.config = Some(path);
        let err = format!("{:#}", Config::resolve(&args).unwrap_err());
        assert!(err.contains("hostnam"), "{err}");
        let args = ServeArgs {
            hostname: Some("bad host".into()),
            ..Default::default()
        };
        assert!(Config::resolve(&args).is_err());
    }
}

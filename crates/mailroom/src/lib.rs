//! The `mailroom` server: configuration, the data directory, and the wiring that starts
//! every listener over one store and one set of services.
//!
//! The binary (`main.rs`) parses the command line and calls [`start`]; the test kit calls
//! [`start`] too, so tests run exactly the server that ships.

pub mod config;
pub mod datadir;
pub mod telemetry;

use std::net::SocketAddr;

use anyhow::Context;
use mailroom_api::{ApiConfig, AppState};
use mailroom_services::{RateRule, ServiceConfig, Services};
use mailroom_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// Where the HTTP API listens (with the real port when 0 was asked for).
    pub http_addr: SocketAddr,
    /// Where the SMTP (MX) server listens.
    pub smtp_addr: SocketAddr,
    /// Submission with STARTTLS (587), and with implicit TLS (465).
    pub submission_addr: SocketAddr,
    pub submissions_addr: SocketAddr,
    /// POP3 with STLS (110), and with implicit TLS (995).
    pub pop3_addr: SocketAddr,
    pub pop3s_addr: SocketAddr,
    /// IMAP with STARTTLS (143), and with implicit TLS (993).
    pub imap_addr: SocketAddr,
    pub imaps_addr: SocketAddr,
    /// The base URL links in answers start with.
    pub public_url: String,
    /// Whether the HTTP API is served over TLS.
    pub http_tls: bool,
    /// PEM certificate the server presents (for clients that must trust it).
    pub tls_cert_path: std::path::PathBuf,
    pub services: Services,
    shutdown: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    smtp: JoinHandle<()>,
    key_uses: JoinHandle<()>,
    collector: JoinHandle<()>,
    submission: Vec<JoinHandle<()>>,
    pop3: Vec<JoinHandle<()>>,
    imap: Vec<JoinHandle<()>>,
    webhooks: JoinHandle<()>,
    delivery: JoinHandle<()>,
    follower: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting connections, lets requests in flight finish, closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.services.begin_shutdown();
        self.follower.abort();
        let served = self.http.await.context("the HTTP server task failed")?;
        self.smtp.await.context("the SMTP server task failed")?;
        for task in self
            .submission
            .into_iter()
            .chain(self.pop3)
            .chain(self.imap)
        {
            task.await.context("a mail server task failed")?;
        }
        self.webhooks.await.context("the webhook worker failed")?;
        self.delivery.await.context("the delivery worker failed")?;
        self.key_uses.await.context("the key-use recorder failed")?;
        self.collector.await.context("the blob collector failed")?;
        self.services.store().close().await;
        served.context("the HTTP server stopped with an error")?;
        tracing::info!("stopped");
        Ok(())
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await?;
        tracing::info!("shutting down: finishing requests in flight");
        self.shutdown().await
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// The services over an opened store, as the server and the admin commands use them.
pub fn services(
    store: Store,
    config: &Config,
    master: mailroom_core::secret::MasterSecret,
    public_url: String,
    check_mail_auth: bool,
) -> Services {
    Services::new(
        store,
        ServiceConfig {
            hostname: config.hostname.clone(),
            default_domain: config.default_domain.clone(),
            public_url,
            upgrade_url: config.upgrade_url.clone(),
            submission_port: config.listen.submission.port(),
            tiers: config.tiers.clone(),
            check_mail_auth,
            dns_resolver: config.dns_resolver,
            auth_budget: config.auth_budget,
            dmarc_enforcement: config.dmarc_enforcement,
            queue_lifetime: config.queue_lifetime,
            access_token_ttl: config.access_token_ttl,
            streams: config.streams,
            login_throttle: config.login_throttle,
            deleted_address_hold: config.deleted_address_hold,
            webhooks: mailroom_services::webhooks::WebhookPolicy {
                allow_http: config.dev,
                allow_loopback: config.dev || config.webhook_allow_private,
                allow_private: config.webhook_allow_private,
            },
        },
        master,
    )
}

/// Creates what a first start needs, opens the store, binds the listeners and starts
/// serving. Returns once every listener is bound, so callers may connect at once.
pub async fn start(mut config: Config) -> anyhow::Result<RunningServer> {
    datadir::ensure_dir(&config.data_dir)?;
    let master = datadir::master_secret(&config.data_dir, config.master_secret.as_deref())?;
    let (cert, key) = datadir::tls_files(
        &config.data_dir,
        &config.hostname,
        config.tls_cert.as_deref().zip(config.tls_key.as_deref()),
    )?;
    let http_tls = config.http_uses_tls();
    let tls = if http_tls {
        Some(datadir::tls_config(&cert, &key, &[b"h2", b"http/1.1"])?)
    } else {
        None
    };
    let mail_tls = datadir::tls_config(&cert, &key, &[])?;

    let url = config.effective_database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact_url(&url)))?;
    tracing::info!(backend = store.backend().name(), "database ready");

    let http = TcpListener::bind(config.listen.http)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.listen.http))?;
    let http_addr = http.local_addr()?;
    let smtp_listener = TcpListener::bind(config.listen.smtp)
        .await
        .with_context(|| format!("cannot listen for SMTP on {}", config.listen.smtp))?;
    let smtp_addr = smtp_listener.local_addr()?;
    let submission_listener = TcpListener::bind(config.listen.submission)
        .await
        .with_context(|| {
            format!(
                "cannot listen for submission on {}",
                config.listen.submission
            )
        })?;
    let submission_addr = submission_listener.local_addr()?;
    let submissions_listener = TcpListener::bind(config.listen.submissions)
        .await
        .with_context(|| {
            format!(
                "cannot listen for submissions on {}",
                config.listen.submissions
            )
        })?;
    let submissions_addr = submissions_listener.local_addr()?;
    let pop3_listener = TcpListener::bind(config.listen.pop3)
        .await
        .with_context(|| format!("cannot listen for POP3 on {}", config.listen.pop3))?;
    let pop3_addr = pop3_listener.local_addr()?;
    let pop3s_listener = TcpListener::bind(config.listen.pop3s)
        .await
        .with_context(|| format!("cannot listen for POP3S on {}", config.listen.pop3s))?;
    let pop3s_addr = pop3s_listener.local_addr()?;
    let imap_listener = TcpListener::bind(config.listen.imap)
        .await
        .with_context(|| format!("cannot listen for IMAP on {}", config.listen.imap))?;
    let imap_addr = imap_listener.local_addr()?;
    let imaps_listener = TcpListener::bind(config.listen.imaps)
        .await
        .with_context(|| format!("cannot listen for IMAPS on {}", config.listen.imaps))?;
    let imaps_addr = imaps_listener.local_addr()?;
    // Answers (GET /v1/account/smtp) give the ports actually bound, also when 0 was asked.
    config.listen.http = http_addr;
    config.listen.smtp = smtp_addr;
    config.listen.submission = submission_addr;
    config.listen.submissions = submissions_addr;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| derive_public_url(&config, http_addr, http_tls));

    let services = services(store, &config, master, public_url.clone(), true);
    services
        .ensure_dkim_key(&config.default_domain)
        .await
        .context("cannot create the DKIM key of the default domain")?;
    let api = ApiConfig {
        inbox_create_rule: RateRule::per_hour(config.inbox_create_per_hour),
        request_rule: (config.requests_per_minute > 0)
            .then(|| RateRule::per_minute(config.requests_per_minute)),
        trusted_proxies: config.trusted_proxies.clone(),
        metrics_token: config.metrics_token.clone(),
        max_body_bytes: config.max_body_bytes,
        mail_ports: mailroom_api::MailPorts {
            submission: submission_addr.port(),
            submissions: submissions_addr.port(),
            pop3: pop3_addr.port(),
            pop3s: pop3s_addr.port(),
            imap: imap_addr.port(),
            imaps: imaps_addr.port(),
        },
    };
    let shutdown = CancellationToken::new();
    let key_uses = {
        let services = services.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                    _ = stop.cancelled() => {
                        let _ = services.flush_key_uses().await;
                        return;
                    }
                }
                if let Err(e) = services.flush_key_uses().await {
                    tracing::warn!(error = %e, "could not record API key uses");
                }
            }
        })
    };
    let follower = {
        let services = services.clone();
        tokio::spawn(async move {
            if let Err(e) = services.follow_changes().await {
                tracing::error!(error = %e, "cannot follow changes made by other processes");
            }
        })
    };
    let state = AppState::new(services.clone(), api, Some(telemetry::metrics_handle()));
    // `/mcp` dispatches its tool calls to an API router of its own, built like the served one.
    let mcp = mailroom_mcp::routes(
        &state,
        mailroom_api::router(state.clone()),
        shutdown.clone(),
    )
    .context("cannot build the MCP tools")?;
    let router = mailroom_api::router_with(state, mcp);
    let stop = shutdown.clone().cancelled_owned();
    let smtp_server = std::sync::Arc::new(mailroom_smtp::SmtpServer::new(
        services.clone(),
        config.smtp.clone(),
        mail_tls.clone(),
        mailroom_smtp::Kind::Mx,
    ));
    let submission_server = std::sync::Arc::new(mailroom_smtp::SmtpServer::new(
        services.clone(),
        config.smtp.clone(),
        mail_tls.clone(),
        mailroom_smtp::Kind::Submission,
    ));
    let mut submission = Vec::new();
    for (listener, implicit_tls) in [(submission_listener, false), (submissions_listener, true)] {
        submission.push(tokio::spawn(mailroom_smtp::serve(
            listener,
            submission_server.clone(),
            implicit_tls,
            shutdown.clone(),
        )));
    }
    tracing::info!(starttls = %submission_addr, implicit_tls = %submissions_addr, "SMTP submission listening");
    let pop3_server = std::sync::Arc::new(mailroom_pop3::Pop3Server::new(
        services.clone(),
        mail_tls.clone(),
        config.pop3.clone(),
        config.dev,
        config.hostname.clone(),
    ));
    let mut pop3 = Vec::new();
    for (listener, implicit_tls) in [(pop3_listener, false), (pop3s_listener, true)] {
        pop3.push(tokio::spawn(mailroom_pop3::serve(
            listener,
            pop3_server.clone(),
            implicit_tls,
            shutdown.clone(),
        )));
    }
    tracing::info!(stls = %pop3_addr, implicit_tls = %pop3s_addr, "POP3 listening");
    // One IMAP server for both listeners, so IDLE sessions hear of changes made on either.
    let imap_server = std::sync::Arc::new(mailroom_imap::ImapServer::new(
        services.clone(),
        mail_tls.clone(),
        config.dev,
        config.hostname.clone(),
        config.smtp.max_message_size as u64,
        config.imap.clone(),
    ));
    let mut imap = Vec::new();
    for (listener, implicit_tls) in [(imap_listener, false), (imaps_listener, true)] {
        imap.push(tokio::spawn(mailroom_imap::serve(
            listener,
            imap_server.clone(),
            implicit_tls,
            shutdown.clone(),
        )));
    }
    tracing::info!(starttls = %imap_addr, implicit_tls = %imaps_addr, "IMAP listening");
    let smtp_task = tokio::spawn(mailroom_smtp::serve(
        smtp_listener,
        smtp_server,
        false,
        shutdown.clone(),
    ));
    tracing::info!(addr = %smtp_addr, "SMTP (MX) listening");
    let worker = mailroom_events::WebhookWorker::new(
        services.clone(),
        mailroom_events::WorkerConfig {
            retry_schedule: config.webhook_retry_schedule.clone(),
            timeout: config.webhook_timeout,
            budgets: config.webhook_budgets,
            public_url: public_url.clone(),
        },
    )
    .context("cannot build the webhook HTTP client")?;
    let webhooks_task = tokio::spawn(std::sync::Arc::new(worker).run(shutdown.clone()));
    let delivery = std::sync::Arc::new(
        mailroom_delivery::DeliveryWorker::new(
            services.clone(),
            // The host name and resolver are the server's own, whatever the file said.
            mailroom_delivery::DeliveryConfig {
                hostname: config.hostname.clone(),
                dns_resolver: config.dns_resolver,
                ..config.delivery.clone()
            },
        )
        .context("cannot start outbound delivery")?,
    );
    let delivery_task = tokio::spawn(delivery.run(shutdown.clone()));
    let collector = tokio::spawn(
        services
            .clone()
            .run_collector(config.collector, shutdown.clone()),
    );
    let http_task = tokio::spawn(mailroom_api::server::serve(
        http,
        tls,
        router,
        config.http_limits.clone(),
        stop,
    ));
    tracing::info!(
        addr = %http_addr,
        tls = http_tls,
        url = %public_url,
        domain = %config.default_domain,
        "HTTP API listening"
    );
    Ok(RunningServer {
        http_addr,
        smtp_addr,
        submission_addr,
        submissions_addr,
        pop3_addr,
        pop3s_addr,
        imap_addr,
        imaps_addr,
        public_url,
        http_tls,
        tls_cert_path: cert,
        services,
        shutdown,
        http: http_task,
        smtp: smtp_task,
        key_uses,
        collector,
        submission,
        pop3,
        imap,
        webhooks: webhooks_task,
        delivery: delivery_task,
        follower,
    })
}

/// `https://host` (or with the port when it is not 443), or on loopback the address itself
/// so that links work on a developer's machine.
fn derive_public_url(config: &Config, addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_loopback() || config.hostname == "localhost" {
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        return format!("{scheme}://{host}:{}", addr.port());
    }
    let default_port = if tls { 443 } else { 80 };
    if addr.port() == default_port {
        format!("{scheme}://{}", config.hostname)
    } else {
        format!("{scheme}://{}:{}", config.hostname, addr.port())
    }
}

/// A database URL without its password, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            super::redact_url("sqlite://./data/x.db"),
            "sqlite://./data/x.db"
        );
    }
}

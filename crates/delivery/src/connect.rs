//! Opening a connection ready for transactions: the route (MX hosts or the relay), the
//! addresses that may be reached, EHLO, TLS under the right policy, and the relay's login.

use std::net::{IpAddr, SocketAddr};

use mailroom_core::netaddr::special_purpose;

use crate::client::{ClientError, Connection};
use crate::route::{self, RouteError};
use crate::{DeliveryWorker, MAX_ADDRESSES, MAX_HOSTS, Relay, tls};

impl DeliveryWorker {
    /// A connection ready for transactions (EHLO done, TLS if offered, AUTH for a relay),
    /// with the name of the host it reached.
    pub(crate) async fn open(&self, domain: &str) -> Result<(Connection, String), RouteError> {
        let Some(resolver) = &self.resolver else {
            return Err(RouteError::Temporary(
                "4.4.3 no DNS resolver is available".into(),
            ));
        };
        let (hosts, port) = match &self.config.relay {
            Some(r) => (vec![r.host.clone()], r.port),
            None => (route::mx_hosts(resolver, domain).await?, self.config.port),
        };
        // The relay is the operator's choice; a domain's MX is whoever controls its DNS.
        let only_public = self.config.relay.is_none() && !self.config.allow_private_destinations;
        let mut refused: Vec<String> = Vec::new();
        let mut tried = false;
        let mut dns_failed = false;
        let mut last = RouteError::Temporary(format!("4.4.1 no mail server of {domain} answered"));
        for host in hosts.iter().take(MAX_HOSTS) {
            let ips = match route::addresses(resolver, host, MAX_ADDRESSES).await {
                Ok(ips) => ips,
                Err(e) => {
                    dns_failed = true;
                    last = e;
                    continue;
                }
            };
            for ip in ips {
                if only_public && let Some(block) = special_purpose(ip) {
                    metrics::counter!("mailroom_refusals_total", "door" => "delivery", "reason" => "special_address").increment(1);
                    tracing::info!(host = %host, %ip, block = block.name(), "not connecting to a non-public address");
                    refused.push(format!("{host} [{ip}] is {block}"));
                    continue;
                }
                tried = true;
                match self.session(host, SocketAddr::new(ip, port)).await {
                    Ok(conn) => return Ok((conn, host.clone())),
                    Err(e) => {
                        tracing::info!(host = %host, %ip, error = e.text(), "mail server not usable");
                        last = e;
                    }
                }
            }
        }
        if !tried && !refused.is_empty() {
            // DNS names only addresses this server will not connect to: like an unroutable
            // destination, a bounce now (5.4.4) rather than days of retries; unless some
            // host could not be looked up, which may yet give a usable address.
            let text = format!(
                "no usable address for the mail servers of {domain}: {}; delivery to \
                 non-public addresses is off (delivery.allow_private_destinations)",
                refused.join(", ")
            );
            return Err(if dns_failed {
                RouteError::Temporary(format!("4.4.4 {text}"))
            } else {
                RouteError::Permanent(format!("5.4.4 {text}"))
            });
        }
        // A refusal by one server is not the last word while others may answer; when none
        // did, the recipient is retried later.
        Err(match last {
            RouteError::Permanent(t) if t.starts_with("5.1.") => RouteError::Permanent(t),
            other => RouteError::Temporary(other.text().to_owned()),
        })
    }

    async fn session(&self, host: &str, addr: SocketAddr) -> Result<Connection, RouteError> {
        let c = &self.config;
        let temp =
            |e: ClientError| RouteError::Temporary(format!("4.4.1 {host} [{}]: {e}", addr.ip()));
        let relay_tls = match (&c.relay, &self.relay_tls) {
            (Some(_), Some(config)) => Some(config.clone()),
            _ => None,
        };
        let connected = match &relay_tls {
            Some(config) if addr.port() == 465 => {
                Connection::connect_tls(addr, host, config.clone(), c.connect_timeout, c.timeout)
                    .await
                    .map_err(|e| relay_tls_error(host, addr.ip(), e))?
            }
            _ => Connection::connect(addr, c.connect_timeout, c.timeout)
                .await
                .map_err(temp)?,
        };
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(greeting) => {
                return Err(RouteError::Temporary(format!(
                    "4.4.1 {host} refused the connection: {}",
                    greeting.line()
                )));
            }
        };
        let ehlo = conn.ehlo(&c.hostname).await.map_err(temp)?;
        if !ehlo.is_positive() {
            return Err(RouteError::Temporary(format!(
                "4.4.1 {host} refused EHLO: {}",
                ehlo.line()
            )));
        }
        if !conn.tls && conn.has_extension("STARTTLS") {
            conn = match relay_tls {
                Some(config) => self.relay_starttls(conn, host, addr, config).await?,
                None => self.opportunistic_starttls(conn, host, addr).await?,
            };
        }
        metrics::counter!("mailroom_delivery_connections_total", "tls" => if conn.tls { "yes" } else { "no" })
            .increment(1);
        if let Some(relay) = &c.relay {
            relay_login(&mut conn, relay, host, addr).await?;
        }
        Ok(conn)
    }

    /// STARTTLS to a relay: its certificate is verified, and a failure ends the attempt
    /// (no plaintext fallback, so the password is never sent to whoever answered).
    async fn relay_starttls(
        &self,
        conn: Connection,
        host: &str,
        addr: SocketAddr,
        config: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Connection, RouteError> {
        match conn.starttls(host, config, &self.config.hostname).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err((plain, reply))) => {
                tracing::info!(host, reply = %reply.line(), "the relay refused STARTTLS");
                Ok(plain)
            }
            Err(e) => Err(relay_tls_error(host, addr.ip(), e)),
        }
    }

    /// Opportunistic TLS to an MX host: a failed handshake falls back to plaintext.
    async fn opportunistic_starttls(
        &self,
        conn: Connection,
        host: &str,
        addr: SocketAddr,
    ) -> Result<Connection, RouteError> {
        let c = &self.config;
        let temp =
            |e: ClientError| RouteError::Temporary(format!("4.4.1 {host} [{}]: {e}", addr.ip()));
        match conn.starttls(host, tls::opportunistic(), &c.hostname).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err((plain, reply))) => {
                tracing::info!(host, reply = %reply.line(), "STARTTLS refused; delivering without TLS");
                Ok(plain)
            }
            Err(e) => {
                tracing::info!(host, error = %e, "TLS handshake failed; delivering without TLS");
                let mut plain = match Connection::connect(addr, c.connect_timeout, c.timeout)
                    .await
                    .map_err(temp)?
                {
                    Ok(p) => p,
                    Err(g) => {
                        return Err(RouteError::Temporary(format!(
                            "4.4.1 {host} refused the connection: {}",
                            g.line()
                        )));
                    }
                };
                plain.ehlo(&c.hostname).await.map_err(temp)?;
                Ok(plain)
            }
        }
    }
}

/// AUTH PLAIN at the relay when it has credentials: only over TLS (verified by then), or
/// in clear to a relay on this host.
async fn relay_login(
    conn: &mut Connection,
    relay: &Relay,
    host: &str,
    addr: SocketAddr,
) -> Result<(), RouteError> {
    let (Some(user), Some(password)) = (&relay.username, &relay.password) else {
        return Ok(());
    };
    if !conn.tls && !addr.ip().is_loopback() {
        return Err(RouteError::Temporary(format!(
            "4.7.0 the relay {host} offers no TLS; the relay password is not sent in clear"
        )));
    }
    let auth = conn
        .auth_plain(user, password)
        .await
        .map_err(|e| RouteError::Temporary(format!("4.4.1 {host} [{}]: {e}", addr.ip())))?;
    if !auth.is_positive() {
        return Err(RouteError::Temporary(format!(
            "4.7.0 the relay {host} refused the login: {}",
            auth.line()
        )));
    }
    Ok(())
}

/// A failed TLS handshake with the relay: almost always its certificate (unknown issuer,
/// wrong name, expired), which the text names.
fn relay_tls_error(host: &str, ip: IpAddr, e: ClientError) -> RouteError {
    match e {
        ClientError::Tls(e) => {
            metrics::counter!("mailroom_refusals_total", "door" => "delivery", "reason" => "relay_certificate").increment(1);
            RouteError::Temporary(format!(
                "4.7.5 the TLS certificate of the relay {host} [{ip}] was not accepted ({e}); \
                 nothing was sent to it, the relay password included"
            ))
        }
        other => RouteError::Temporary(format!("4.4.1 {host} [{ip}]: {other}")),
    }
}

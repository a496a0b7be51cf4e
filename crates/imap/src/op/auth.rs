//! Logging in: STARTTLS, LOGIN and AUTHENTICATE PLAIN (RFC 9051 §6.2), and the check
//! before every command that the key logged in with still holds.

use std::borrow::Cow;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::AString;
use imap_codec::imap_types::secret::Secret;
use mailroom_net::sasl::{self, SaslError};
use mailroom_services::submission::LoginRefused;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::conn;
use crate::session::{Done, Next, Out, Session, User};

impl Session {
    pub(crate) fn starttls_cmd(&mut self, tag: &str, out: &mut Out) -> Done {
        if self.tls {
            out.line(&format!("{tag} BAD TLS is already active"));
            return Ok(Next::Continue);
        }
        out.line(&format!("{tag} OK Begin TLS negotiation now"));
        Ok(Next::StartTls)
    }

    /// LOGIN: only over TLS (or from loopback with `--dev`), since the password is sent
    /// in the clear.
    pub(crate) async fn login_cmd(
        &mut self,
        tag: &str,
        username: &AString<'_>,
        password: &Secret<AString<'_>>,
        out: &mut Out,
    ) -> Done {
        if !self.plaintext_allowed() {
            out.line(&format!(
                "{tag} NO [PRIVACYREQUIRED] use STARTTLS (or port 993) first: plain-text logins are not accepted without TLS"
            ));
        } else {
            let user = String::from_utf8_lossy(username.as_ref()).into_owned();
            let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
            self.login(tag, &user, &pass, out).await;
        }
        Ok(Next::Continue)
    }

    /// AUTHENTICATE PLAIN, with the initial response (SASL-IR) or after a `+`
    /// continuation; the same rule as LOGIN about TLS.
    pub(crate) async fn authenticate_cmd<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        mechanism: &AuthMechanism<'_>,
        initial_response: Option<Secret<Cow<'_, [u8]>>>,
        conn: &mut BufReader<S>,
        out: &mut Out,
    ) -> Done {
        if !self.plaintext_allowed() {
            out.line(&format!(
                "{tag} NO [PRIVACYREQUIRED] use STARTTLS (or port 993) first"
            ));
            return Ok(Next::Continue);
        }
        if !matches!(mechanism, AuthMechanism::Plain) {
            out.line(&format!(
                "{tag} NO [CANNOT] only AUTHENTICATE PLAIN is supported"
            ));
            return Ok(Next::Continue);
        }
        let plain = match initial_response {
            Some(r) => sasl::parse_plain(r.declassify()),
            None => {
                out.line("+ ");
                out.flush(conn.get_mut()).await?;
                let mut line = Vec::new();
                match tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    conn::read_line(conn, &mut line),
                )
                .await
                {
                    Ok(Ok(true)) => {}
                    _ => return Ok(Next::Logout),
                }
                sasl::decode_plain(&String::from_utf8_lossy(&line))
            }
        };
        match plain {
            Ok(p) => self.login(tag, &p.authcid, &p.password, out).await,
            Err(SaslError::Cancelled) => out.line(&format!("{tag} BAD authentication cancelled")),
            Err(e) => out.line(&format!("{tag} BAD {e}")),
        }
        Ok(Next::Continue)
    }

    /// Whether the key this session logged in with still opens IMAP for its inbox (true
    /// before login). A cache hit while the key lives; a revoked or rotated key, or a
    /// deleted inbox, is gone from the cache at once.
    pub(crate) async fn still_authorized(&self) -> bool {
        match &self.user {
            Some(u) => {
                self.server
                    .services
                    .mail_key_still_valid("imap", &u.secret, &u.inbox_id)
                    .await
            }
            None => true,
        }
    }

    /// Logs in with an inbox address and its key (or an API key with the `imap` scope),
    /// through the rule POP3 and submission use.
    async fn login(&mut self, tag: &str, user: &str, pass: &str, out: &mut Out) {
        let services = &self.server.services;
        match services.imap_login(user, pass, self.peer.ip()).await {
            Ok(Ok(sender)) => {
                let Some((inbox_id, _)) = sender.inbox else {
                    out.line(&format!(
                        "{tag} NO [AUTHENTICATIONFAILED] log in with an inbox address and its key"
                    ));
                    return;
                };
                self.signal = Some(services.inbox_signal(&inbox_id));
                self.user = Some(User {
                    account_id: sender.account_id,
                    inbox_id,
                    secret: pass.to_owned(),
                });
                metrics::counter!("mailroom_imap_logins_total").increment(1);
                out.line(&format!(
                    "{tag} OK [CAPABILITY {}] logged in",
                    self.capabilities()
                ));
            }
            Ok(Err(LoginRefused::MissingScope(scope))) => out.line(&format!(
                "{tag} NO [AUTHORIZATIONFAILED] this key lacks the {scope} scope"
            )),
            Ok(Err(LoginRefused::Throttled)) => out.line(&format!(
                "{tag} NO [UNAVAILABLE] too many failed logins; try again later"
            )),
            Ok(Err(_)) => out.line(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] invalid user name or password"
            )),
            Err(e) => {
                tracing::error!(error = %e, "IMAP login check failed");
                out.line(&format!("{tag} NO [UNAVAILABLE] temporary failure"));
            }
        }
    }
}

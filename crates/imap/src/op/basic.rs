//! The commands that touch no mailbox: CAPABILITY, NOOP and CHECK, LOGOUT, ID, ENABLE and
//! NAMESPACE (RFC 9051 §6.1, §6.3.1, §6.3.10; RFC 2971 ID).

use imap_codec::imap_types::extensions::enable::CapabilityEnable;

use crate::session::{Done, Next, Out, Session};

impl Session {
    pub(crate) fn capability_cmd(&mut self, tag: &str, out: &mut Out) -> Done {
        out.line(&format!("* CAPABILITY {}", self.capabilities()));
        out.line(&format!("{tag} OK CAPABILITY completed"));
        Ok(Next::Continue)
    }

    /// NOOP, and CHECK (`name`), which has nothing to flush here: both only report what
    /// others changed.
    pub(crate) async fn noop_cmd(&mut self, tag: &str, name: &str, out: &mut Out) -> Done {
        self.sync(out, true).await?;
        out.line(&format!("{tag} OK {name} completed"));
        Ok(Next::Continue)
    }

    pub(crate) fn logout_cmd(&mut self, tag: &str, out: &mut Out) -> Done {
        out.line("* BYE Mailroom IMAP logging out");
        out.line(&format!("{tag} OK LOGOUT completed"));
        Ok(Next::Logout)
    }

    /// ID: the client's parameters are not kept; the server names itself.
    pub(crate) fn id_cmd(&mut self, tag: &str, out: &mut Out) -> Done {
        out.line(&format!(
            "* ID (\"name\" \"Mailroom\" \"version\" \"{}\")",
            env!("CARGO_PKG_VERSION")
        ));
        out.line(&format!("{tag} OK ID completed"));
        Ok(Next::Continue)
    }

    /// ENABLE: CONDSTORE and IMAP4rev2 are what can be enabled; the rest is ignored (RFC
    /// 5161 §3.1: only what was enabled is listed).
    pub(crate) fn enable_cmd(
        &mut self,
        tag: &str,
        capabilities: &[CapabilityEnable<'_>],
        out: &mut Out,
    ) -> Done {
        let mut enabled = Vec::new();
        for c in capabilities {
            let c = c.to_string().to_ascii_uppercase();
            if c == "CONDSTORE" {
                self.condstore = true;
                enabled.push(c);
            } else if c == "IMAP4REV2" {
                self.rev2 = true;
                enabled.push("IMAP4rev2".to_owned());
            }
        }
        out.line(format!("* ENABLED {}", enabled.join(" ")).trim_end());
        out.line(&format!("{tag} OK ENABLE completed"));
        Ok(Next::Continue)
    }

    /// NAMESPACE: one personal namespace, `/` as the delimiter, nothing shared.
    pub(crate) fn namespace_cmd(&mut self, tag: &str, out: &mut Out) -> Done {
        out.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
        out.line(&format!("{tag} OK NAMESPACE completed"));
        Ok(Next::Continue)
    }
}

//! The flags by which the command-line tools reach a guarded server: the bearer token, given
//! or read from a file, and the CAs to trust for `https://`. Declared once, flattened into each
//! tool's arguments.

use std::path::PathBuf;

use crate::{Client, TokenSource};

/// `--token`, `--token-file`, `--ca-cert`.
#[derive(Clone, Default, clap::Args)]
pub struct Access {
    /// Bearer token for a server started with --token or --tokens-file.
    #[arg(long, env = "MEMQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Read the bearer token from FILE (trimmed; e.g. the `token` key of a mounted Secret),
    /// checked for a change at most once a second and at once after a 401, so a rotated token
    /// is used without a restart. Not with --token.
    #[arg(
        long,
        env = "MEMQ_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// PEM file of CA certificates to trust for an https:// server (e.g. the ca.crt of its
    /// certificate's Secret), beside the public roots.
    #[arg(long, env = "MEMQ_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl Access {
    /// A client of `server` built on `http` (the tool's own timeouts), trusting `--ca-cert` and
    /// sending the token; the error is a usage error's text (a CA or token file that cannot be
    /// used).
    pub fn client(&self, http: reqwest::ClientBuilder, server: String) -> Result<Client, String> {
        let http = match &self.ca_cert {
            Some(path) => crate::trust_ca_file(http, path).map_err(|e| e.to_string())?,
            None => http,
        };
        let http = http.build().map_err(|e| e.to_string())?;
        let token = TokenSource::from_flags(self.token.clone(), self.token_file.as_deref())
            .map_err(|e| e.to_string())?;
        Ok(Client::with_http(http, server).with_token_source(token))
    }
}

/// Never shows the token.
impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Tool {
        #[command(flatten)]
        access: Access,
    }

    #[test]
    fn token_file_is_a_path_not_with_token_and_the_token_never_shows() {
        let t = Tool::try_parse_from(["t", "--token-file", "/var/run/memq/token/token"]).unwrap();
        assert_eq!(
            t.access.token_file.as_deref(),
            Some(std::path::Path::new("/var/run/memq/token/token"))
        );
        let err =
            Tool::try_parse_from(["t", "--token", "s3cret", "--token-file", "f"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let t = Tool::try_parse_from(["t", "--token", "s3cret"]).unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}

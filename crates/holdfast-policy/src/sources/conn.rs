//! Connection settings for a database client (PostgreSQL's environment variables, MariaDB's
//! options).

use std::process::Command;

/// Connection settings for a database client.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    /// Host or socket directory.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
}

impl Conn {
    pub(crate) fn pg(&self, c: &mut Command) {
        if let Some(h) = &self.host {
            c.env("PGHOST", h);
        }
        if let Some(p) = self.port {
            c.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.user {
            c.env("PGUSER", u);
        }
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        c.env("PGCONNECT_TIMEOUT", "10");
    }

    pub(crate) fn my(&self, c: &mut Command) {
        if let Some(h) = &self.host {
            if h.starts_with('/') {
                c.arg(format!("--socket={h}"));
            } else {
                c.arg(format!("--host={h}"));
            }
        }
        if let Some(p) = self.port {
            c.arg(format!("--port={p}"));
        }
        if let Some(u) = &self.user {
            c.arg(format!("--user={u}"));
        }
        if let Some(p) = &self.password {
            c.env("MYSQL_PWD", p);
        }
    }
}

/// A database source's server settings as written in the workload file.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Host or socket directory.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
}

/// The password's environment variable is not set.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} (password-env) is not set")]
pub struct PasswordEnvUnset(pub String);

impl ServerSettings {
    /// From a `[[source]]` table.
    pub fn of(r: &super::RawSource) -> Self {
        ServerSettings {
            host: r.host.clone(),
            port: r.port,
            user: r.user.clone(),
            password_env: r.password_env.clone(),
        }
    }

    /// The connection, with the password read from its environment variable.
    pub fn conn(&self) -> Result<Conn, PasswordEnvUnset> {
        let password = match &self.password_env {
            Some(v) => Some(std::env::var(v).map_err(|_| PasswordEnvUnset(v.clone()))?),
            None => None,
        };
        Ok(Conn {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password,
        })
    }
}

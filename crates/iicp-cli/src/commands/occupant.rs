//! What is listening on a local port: nothing, an IICP component (and which), or some other
//! program. Used by `iicp up` to explain a busy port and by `iicp doctor` to check ports.

use serde_json::Value;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The IICP roles that answer `GET /iicp/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Directory,
    Node,
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Directory => "directory",
            Role::Node => "node",
            Role::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupant {
    /// Nothing accepts connections there.
    Free,
    /// An IICP component, from its `/iicp/health` answer.
    Iicp { role: Role, version: Option<String> },
    /// Something else; the text says how it answered.
    Other(String),
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Occupant::Free => f.write_str("nothing"),
            Occupant::Iicp {
                role,
                version: Some(v),
            } => write!(f, "an IICP {role} (version {v})"),
            Occupant::Iicp {
                role,
                version: None,
            } => write!(f, "an IICP {role}"),
            Occupant::Other(how) => write!(f, "another program ({how})"),
        }
    }
}

/// Which IICP role a `/iicp/health` body belongs to, if any. Directories and gateways name
/// themselves; a node is known by the fields the spec requires of it (NODE-HEALTH-01/02).
pub fn role_of(health: &Value) -> Option<Role> {
    match health.get("role").and_then(Value::as_str) {
        Some("directory") => return Some(Role::Directory),
        Some("gateway") => return Some(Role::Gateway),
        Some("node") => return Some(Role::Node),
        _ => {}
    }
    let status_ok = matches!(
        health.get("status").and_then(Value::as_str),
        Some("ok" | "degraded")
    );
    (status_ok && health.get("load").is_some() && health.get("active_jobs").is_some())
        .then_some(Role::Node)
}

/// Connects to `addr`, then asks `GET /iicp/health`.
pub async fn identify(http: &reqwest::Client, addr: SocketAddr) -> Occupant {
    let connect = tokio::time::timeout(
        Duration::from_millis(800),
        tokio::net::TcpStream::connect(addr),
    )
    .await;
    match connect {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Occupant::Free,
        Err(_) => return Occupant::Other("accepts no connection in time".into()),
    }
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let resp = http
        .get(format!("http://{host}/iicp/health"))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(_) => return Occupant::Other("does not answer HTTP".into()),
    };
    let status = resp.status().as_u16();
    let body: Option<Value> = resp.json().await.ok();
    match body.as_ref().and_then(role_of) {
        Some(role) if status == 200 => Occupant::Iicp {
            role,
            version: body
                .as_ref()
                .and_then(|b| b.get("version"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        _ => Occupant::Other(format!("answers HTTP {status} at /iicp/health")),
    }
}

/// The fix-it line for a port that `role` cannot use, with the `iicp up` flag that moves it.
pub fn busy_port_fix(role: Role, port: u16, occupant: &Occupant) -> String {
    let flag = format!("--{role}-port");
    let other = port.saturating_add(10);
    match occupant {
        Occupant::Iicp { .. } => format!(
            "stop the other iicp process (another `iicp up` or `iicp {role}`?), or use another \
             port: iicp up {flag} {other} ({flag} 0 picks a free one)"
        ),
        _ => format!(
            "find the program with `ss -ltnp 'sport = :{port}'` (or `lsof -i :{port}`) and stop \
             it, or use another port: iicp up {flag} {other} ({flag} 0 picks a free one)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_are_recognised_from_health_bodies() {
        assert_eq!(
            role_of(&json!({"status":"ok","role":"directory"})),
            Some(Role::Directory)
        );
        assert_eq!(
            role_of(&json!({"status":"ok","role":"gateway"})),
            Some(Role::Gateway)
        );
        assert_eq!(
            role_of(&json!({"status":"degraded","load":0.0,"active_jobs":0,"node_id":null})),
            Some(Role::Node)
        );
        assert_eq!(role_of(&json!({"status":"ok"})), None);
        assert_eq!(role_of(&json!([1, 2])), None);
    }
}

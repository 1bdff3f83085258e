//! HTTP basic authentication for `serve` against the web configuration's bcrypt hashes.
//! bcrypt is slow on purpose (tens of ms at cost 10): verified credentials are remembered, as
//! exporter-toolkit does, so a scrape every few seconds costs one hash per process lifetime.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;
use hashbrown::HashMap;

/// Remembered (user, password) verdicts before the memory is cleared.
const MAX_REMEMBERED: usize = 1024;

#[derive(Clone)]
pub struct Auth {
    users: Arc<BTreeMap<String, String>>,
    /// (user, password) -> whether it matched.
    verdicts: Arc<Mutex<HashMap<(String, String), bool>>>,
}

/// `Authorization: Basic base64(user:password)` -> (user, password).
pub fn credentials(header_value: &str) -> Option<(String, String)> {
    let (scheme, rest) = header_value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Auth {
    pub fn new(users: Arc<BTreeMap<String, String>>) -> Auth {
        Auth {
            users,
            verdicts: Arc::default(),
        }
    }

    /// Whether `user` with `password` may in; runs bcrypt at most once per pair.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            // Unknown users cost a hash too, so timing does not tell which users exist.
            let _ = bcrypt::verify(
                password,
                "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi",
            );
            return false;
        };
        let key = (user.to_string(), password.to_string());
        if let Some(v) = self.verdicts.lock().ok().and_then(|m| m.get(&key).copied()) {
            return v;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if let Ok(mut m) = self.verdicts.lock() {
            if m.len() >= MAX_REMEMBERED {
                m.clear();
            }
            m.insert(key, ok);
        }
        ok
    }
}

/// The middleware: 401 with a challenge unless the credentials match.
pub async fn require(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    let creds = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(credentials);
    let ok = match creds {
        Some((u, p)) => {
            let a = auth.clone();
            tokio::task::spawn_blocking(move || a.check(&u, &p))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if ok {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"sockleak\"")],
            "Unauthorized\n",
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing() {
        assert_eq!(
            credentials("Basic YWxpY2U6czNjcjN0OnRvbw=="),
            Some(("alice".into(), "s3cr3t:too".into()))
        );
        assert_eq!(credentials("Bearer abc"), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Basic bm9jb2xvbg=="), None, "no colon");
    }

    #[test]
    fn bcrypt_checked_and_remembered() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), hash);
        let a = Auth::new(Arc::new(users));
        assert!(a.check("alice", "right"));
        assert!(!a.check("alice", "wrong"));
        assert!(!a.check("mallory", "right"));
        assert_eq!(a.verdicts.lock().unwrap().len(), 2);
        assert!(a.check("alice", "right"), "remembered");
    }
}

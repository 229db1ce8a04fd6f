//! What the client remembers about authorizing requests: per registry host the scheme
//! it answered a 401 with (basic or bearer), per (host, scopes) the bearer tokens until
//! shortly before they expire, and one lock per (host, scopes) so that concurrent
//! requests fetch one token, not one each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tokens are dropped this long before they expire, so requests in flight stay valid.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct HostAuth {
    scheme: Scheme,
    tokens: HashMap<String, CachedToken>,
}

struct CachedToken {
    token: String,
    expires_at: Instant,
}

/// What is known about authorizing a request before sending it.
pub(crate) enum Known {
    Nothing,
    Basic,
    Token(String),
    NeedToken {
        realm: String,
        service: Option<String>,
    },
}

/// Schemes by registry API host, tokens by (host, scopes).
#[derive(Default)]
pub(crate) struct AuthCache {
    hosts: Mutex<HashMap<String, HostAuth>>,
    /// One lock per (host, scopes) serializing token fetches.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AuthCache {
    pub(crate) fn forget_all(&self) {
        if let Ok(mut hosts) = self.hosts.lock() {
            hosts.clear();
        }
    }

    pub(crate) fn fetch_lock(&self, host: &str, scope_key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let key = format!("{host} {scope_key}");
        match self.fetching.lock() {
            Ok(mut locks) => locks.entry(key).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    pub(crate) fn lookup(&self, host: &str, scope_key: &str) -> Known {
        let Ok(hosts) = self.hosts.lock() else {
            return Known::Nothing;
        };
        let Some(entry) = hosts.get(host) else {
            return Known::Nothing;
        };
        match &entry.scheme {
            Scheme::Basic => Known::Basic,
            Scheme::Bearer { realm, service } => match entry.tokens.get(scope_key) {
                Some(cached) if cached.expires_at > Instant::now() => {
                    Known::Token(cached.token.clone())
                }
                _ => Known::NeedToken {
                    realm: realm.clone(),
                    service: service.clone(),
                },
            },
        }
    }

    pub(crate) fn remember_scheme(&self, host: &str, scheme: Scheme) {
        if let Ok(mut hosts) = self.hosts.lock() {
            let entry = hosts.entry(host.to_owned()).or_insert_with(|| HostAuth {
                scheme: scheme.clone(),
                tokens: HashMap::new(),
            });
            if entry.scheme != scheme {
                entry.scheme = scheme;
                entry.tokens.clear();
            }
        }
    }

    pub(crate) fn store_token(&self, host: &str, scope_key: &str, token: &str, ttl: Duration) {
        let lifetime = ttl.saturating_sub(EXPIRY_MARGIN);
        if lifetime.is_zero() {
            return;
        }
        if let Ok(mut hosts) = self.hosts.lock() {
            if let Some(entry) = hosts.get_mut(host) {
                let now = Instant::now();
                entry.tokens.retain(|_, cached| cached.expires_at > now);
                entry.tokens.insert(
                    scope_key.to_owned(),
                    CachedToken {
                        token: token.to_owned(),
                        expires_at: now + lifetime,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_returns_tokens_until_expiry() {
        let cache = AuthCache::default();
        assert!(matches!(cache.lookup("r.io", "s"), Known::Nothing));
        let bearer = Scheme::Bearer {
            realm: "https://t".into(),
            service: None,
        };
        cache.remember_scheme("r.io", bearer.clone());
        assert!(matches!(cache.lookup("r.io", "s"), Known::NeedToken { .. }));
        cache.store_token("r.io", "s", "tok", Duration::from_secs(60));
        assert!(matches!(cache.lookup("r.io", "s"), Known::Token(t) if t == "tok"));
        assert!(matches!(
            cache.lookup("r.io", "other"),
            Known::NeedToken { .. }
        ));
        cache.store_token("r.io", "short", "tok2", Duration::from_secs(3));
        assert!(
            matches!(cache.lookup("r.io", "short"), Known::NeedToken { .. }),
            "too short to cache"
        );
        cache.remember_scheme("r.io", Scheme::Basic);
        assert!(
            matches!(cache.lookup("r.io", "s"), Known::Basic),
            "scheme change drops tokens"
        );
        cache.forget_all();
        assert!(matches!(cache.lookup("r.io", "s"), Known::Nothing));
    }
}

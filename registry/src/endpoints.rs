//! A client's view of registry endpoints: each registry's resolved endpoints (`hosts.rs`),
//! re-read from the hosts directories at most every [`RESOLVE_TTL`], and one http client
//! per distinct TLS setting (`tls.rs`).
//!
//! Requests name their endpoint by `host[:port]` (a mirror's reference carries the mirror
//! host as its registry), so settings are also kept by endpoint host; a host listed for
//! two registries with different settings gets those of the registry resolved last.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ClientConfig;
use crate::error::Error;
use crate::hosts::{self, Endpoint, TlsSettings};

/// How long a registry's resolved endpoints are used before the directories are read again.
const RESOLVE_TTL: Duration = Duration::from_secs(10);

type Endpoints = Arc<[Arc<Endpoint>]>;

#[derive(Default)]
pub(crate) struct EndpointCache {
    by_registry: Mutex<HashMap<String, (Instant, Endpoints)>>,
    by_host: Mutex<HashMap<String, Arc<Endpoint>>>,
    clients: Mutex<HashMap<TlsSettings, reqwest::Client>>,
}

impl EndpointCache {
    /// The endpoints of `registry` in the order they are tried; the last is its server.
    pub(crate) fn resolve(
        &self,
        config: &ClientConfig,
        registry: &str,
    ) -> Result<Endpoints, Error> {
        if let Ok(cache) = self.by_registry.lock() {
            if let Some((at, endpoints)) = cache.get(registry) {
                if at.elapsed() < RESOLVE_TTL {
                    return Ok(endpoints.clone());
                }
            }
        }
        let endpoints: Endpoints = hosts::resolve(config, registry)?
            .into_iter()
            .map(Arc::new)
            .collect();
        if let Ok(mut by_host) = self.by_host.lock() {
            for endpoint in endpoints.iter() {
                by_host.insert(endpoint.host.clone(), endpoint.clone());
            }
        }
        if let Ok(mut cache) = self.by_registry.lock() {
            cache.insert(registry.to_owned(), (Instant::now(), endpoints.clone()));
        }
        Ok(endpoints)
    }

    /// The endpoint settings known for `host`, if it was resolved as an endpoint.
    pub(crate) fn by_host(&self, host: &str) -> Option<Arc<Endpoint>> {
        self.by_host.lock().ok()?.get(host).cloned()
    }

    /// The http client for `tls` (built on first use), `host` naming it in errors.
    pub(crate) fn client(
        &self,
        config: &ClientConfig,
        host: &str,
        tls: &TlsSettings,
    ) -> Result<reqwest::Client, Error> {
        if let Some(client) = self.clients.lock().ok().and_then(|c| c.get(tls).cloned()) {
            return Ok(client);
        }
        let client = crate::tls::build_client(config, host, tls)?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(tls.clone(), client.clone());
        }
        Ok(client)
    }
}

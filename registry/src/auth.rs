//! Authorization: answers 401 challenges with basic credentials or bearer tokens, and
//! remembers per host which scheme it uses and per (host, scope) the tokens until expiry.
//!
//! Bearer tokens come from `GET realm?service=..&scope=..` (anonymously, or with basic
//! credentials), or, for a docker `identitytoken`, from the OAuth2 refresh-token grant
//! `POST realm` (form: grant_type=refresh_token, refresh_token, service, scope, client_id).

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

use crate::auth_cache::{Known, Scheme};
use crate::challenge::Challenge;
use crate::client::Client;
use crate::credentials::Credential;
use crate::error::Error;
use crate::reference::Reference;
use crate::retry::{parse_retry_after, with_retries};
use crate::transport::{display_url, transport_error, unauthorized, Call};

/// Token lifetime when the token endpoint does not say.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(60);
const CLIENT_ID: &str = "estargz-snapshotter";

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    expires_in: Option<u64>,
}

/// One token to obtain.
struct TokenWanted<'a> {
    target: &'a Reference,
    realm: &'a str,
    service: Option<&'a str>,
    /// Scopes asked of the token server.
    scopes: Vec<String>,
    /// Cache key: the scopes our requests ask for (the registry may suggest more).
    cache_key: String,
    /// A token the registry just refused: never handed out again.
    refused: Option<String>,
}

impl Client {
    /// The Authorization header to send up front, from what earlier challenges taught us.
    pub(crate) async fn cached_authorization(
        &self,
        target: &Reference,
        scopes: &[String],
    ) -> Result<Option<HeaderValue>, Error> {
        let host = target.api_host();
        let cache_key = scopes.join(" ");
        match self.inner.auth.lookup(host, &cache_key) {
            Known::Nothing => Ok(None),
            Known::Basic => Ok(self.basic_header(target)),
            Known::Token(token) => Ok(bearer_header(&token)),
            Known::NeedToken { realm, service } => {
                let wanted = TokenWanted {
                    target,
                    realm: &realm,
                    service: service.as_deref(),
                    scopes: scopes.to_vec(),
                    cache_key,
                    refused: None,
                };
                Ok(bearer_header(&self.obtain_token(&wanted).await?))
            }
        }
    }

    /// The Authorization header answering a 401's challenges (Bearer preferred); `sent` is
    /// the header the refused request carried.
    pub(crate) async fn answer_challenge(
        &self,
        call: &Call<'_>,
        challenges: Vec<Challenge>,
        sent: Option<&HeaderValue>,
    ) -> Result<HeaderValue, Error> {
        let host = call.target.api_host();
        let bearer = challenges
            .iter()
            .find(|c| matches!(c, Challenge::Bearer { .. }));
        match bearer.or(challenges.first()) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scheme = Scheme::Bearer {
                    realm: realm.clone(),
                    service: service.clone(),
                };
                self.inner.auth.remember_scheme(host, scheme);
                let mut scopes = call.scopes.clone();
                if let Some(suggested) = scope {
                    if !scopes.contains(suggested) {
                        scopes.push(suggested.clone());
                    }
                }
                let refused = sent
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                let wanted = TokenWanted {
                    target: call.target,
                    realm,
                    service: service.as_deref(),
                    scopes,
                    cache_key: call.scopes.join(" "),
                    refused,
                };
                let token = self.obtain_token(&wanted).await?;
                bearer_header(&token).ok_or_else(|| unauthorized(call))
            }
            Some(Challenge::Basic) => {
                self.inner.auth.remember_scheme(host, Scheme::Basic);
                self.basic_header(call.target)
                    .ok_or_else(|| unauthorized(call))
            }
            None => Err(unauthorized(call)),
        }
    }

    fn basic_header(&self, target: &Reference) -> Option<HeaderValue> {
        match self.credential_for(&target.registry)? {
            Credential::Basic { username, password } => {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                sensitive_header(&format!("Basic {encoded}"))
            }
            Credential::IdentityToken(_) | Credential::RegistryToken(_) => None,
        }
    }

    /// A token for `wanted`: one fetch at a time per (host, scopes), so concurrent
    /// requests on a cold client share the first fetch's token.
    async fn obtain_token(&self, wanted: &TokenWanted<'_>) -> Result<String, Error> {
        // docker's `registrytoken`: the registry's own bearer token, no token server.
        if let Some(Credential::RegistryToken(token)) = self.credential_for(&wanted.target.registry)
        {
            return Ok(token);
        }
        let host = wanted.target.api_host();
        let lock = self.inner.auth.fetch_lock(host, &wanted.cache_key);
        let _one_fetch = lock.lock().await;
        if let Known::Token(token) = self.inner.auth.lookup(host, &wanted.cache_key) {
            if wanted.refused.as_ref() != Some(&token) {
                return Ok(token);
            }
        }
        let token = self.fetch_token(wanted).await?;
        self.inner
            .auth
            .store_token(host, &wanted.cache_key, &token.0, token.1);
        Ok(token.0)
    }

    /// Asks the token server; returns the token and its lifetime.
    async fn fetch_token(&self, wanted: &TokenWanted<'_>) -> Result<(String, Duration), Error> {
        let realm_url = Url::parse(wanted.realm).map_err(|source| Error::InvalidUrl {
            url: wanted.realm.chars().take(200).collect(),
            source,
        })?;
        let credential = self.credential_for(&wanted.target.registry);
        let policy = self.inner.config.retry_policy();
        let shown = display_url(&realm_url);
        let response = with_retries(policy, &shown, || {
            self.request_token(wanted, &realm_url, credential.as_ref())
        })
        .await?;
        let token = if response.token.is_empty() {
            response.access_token
        } else {
            response.token
        };
        if token.is_empty() {
            return Err(Error::Protocol {
                method: "GET".to_owned(),
                url: shown,
                problem: "token response has neither token nor access_token".to_owned(),
            });
        }
        let ttl = response
            .expires_in
            .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
        Ok((token, ttl))
    }

    async fn request_token(
        &self,
        wanted: &TokenWanted<'_>,
        realm: &Url,
        credential: Option<&Credential>,
    ) -> Result<TokenResponse, Error> {
        let (service, scopes) = (wanted.service, &wanted.scopes);
        let http = self.http_for(realm)?;
        let request = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh.clone()),
                    ("client_id", CLIENT_ID.to_owned()),
                    ("scope", scopes.join(" ")),
                ];
                if let Some(service) = service {
                    form.push(("service", service.to_owned()));
                }
                http.post(realm.clone()).form(&form)
            }
            _ => {
                let mut url = realm.clone();
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let mut request = http.get(url);
                if let Some(Credential::Basic { username, password }) = credential {
                    request = request.basic_auth(username, Some(password));
                }
                request
            }
        };
        let request = request
            .header(ACCEPT, "application/json")
            .timeout(self.inner.config.timeout)
            .build()
            .map_err(|e| transport_error(&Method::GET, &display_url(realm), e))?;
        let (method, shown) = (request.method().clone(), display_url(request.url()));
        let response = http
            .execute(request)
            .await
            .map_err(|e| transport_error(&method, &shown, e))?;
        let status = response.status();
        tracing::debug!(%method, url = %shown, status = status.as_u16(), "token request");
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(Error::Unauthorized {
                    method: method.to_string(),
                    url: shown,
                    host: wanted.target.registry.clone(),
                })
            }
            other => {
                return Err(Error::BadResponse {
                    method: method.to_string(),
                    url: shown,
                    status: other.as_u16(),
                    message: String::new(),
                    retry_after: parse_retry_after(response.headers()),
                })
            }
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(&method, &shown, e))?;
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            method: method.to_string(),
            url: shown,
            problem: format!("token response is not json: {e}"),
        })
    }
}

fn bearer_header(token: &str) -> Option<HeaderValue> {
    sensitive_header(&format!("Bearer {token}"))
}

/// A header value marked sensitive so that http libraries never print it.
fn sensitive_header(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

//! The few CRI messages the proxy reads, as prost types: from `PullImageRequest` only the
//! image and its `AuthConfig`. Field numbers and names are those of the upstream
//! Kubernetes CRI API (`k8s.io/cri-api`, package `runtime.v1`, identical in `v1alpha2`);
//! every other field is unknown here, skipped when decoding, and still reaches containerd
//! because the proxy forwards the request bytes, not this decoded copy.

/// `runtime.v1.ImageSpec` (field 1 only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `runtime.v1.AuthConfig`: what kubelet resolved from the pod's image pull secrets (or
/// its credential providers) for this image.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthConfig {
    #[prost(string, tag = "1")]
    pub username: String,
    #[prost(string, tag = "2")]
    pub password: String,
    /// base64 of `username:password`.
    #[prost(string, tag = "3")]
    pub auth: String,
    /// The registry these credentials are for, when kubelet says (`host`, or a URL).
    #[prost(string, tag = "4")]
    pub server_address: String,
    /// An OAuth2 refresh token for the registry's token service.
    #[prost(string, tag = "5")]
    pub identity_token: String,
    /// A bearer token to send to the registry as is.
    #[prost(string, tag = "6")]
    pub registry_token: String,
}

/// `runtime.v1.PullImageRequest` (fields 1 and 2; 3, the sandbox config, is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    #[prost(message, optional, tag = "2")]
    pub auth: Option<AuthConfig>,
}

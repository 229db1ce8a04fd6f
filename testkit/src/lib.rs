//! Test harness shared by the integration tests: real docker-registry, containerd, images.

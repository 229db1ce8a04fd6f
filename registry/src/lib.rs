//! OCI distribution client shared by the converter and the daemon.

//! The control socket: requests the CLI sends to a running daemon.

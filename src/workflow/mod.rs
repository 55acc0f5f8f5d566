//! The zero-UI workflow (SPEC §5): agents work tickets by mail. This module
//! holds what decides whether a mail may act on a ticket — signed action
//! addresses (`links`) and whether a mail really comes from the staff member
//! it names (`auth`) — the command grammar (`command`) and the ticket state
//! machine (`ops`), which mail, action links, the CLI and the scheduler share.

pub mod auth;
pub mod close;
pub mod command;
pub mod links;
pub mod merge;
pub mod ops;

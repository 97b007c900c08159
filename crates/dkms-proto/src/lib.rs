//! Wire types shared by every dkms component: the REST bodies of the public API, the
//! messages on the node link, the stable error codes and the validated newtypes that
//! requests are parsed into at the edge. Nothing here does I/O.

pub mod api;
pub mod domain;
pub mod error;
pub mod node;

pub use domain::{Digest32, KeyId, KeyType, NodeTag, ParseError, TaskStatus};
pub use domain::{GroupName, Region};
pub use error::ErrorCode;

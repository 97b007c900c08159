//! Fixtures shared by the contract test files.

#![allow(dead_code)]

use dkms_store::{KeyRow, TaskStatus};

/// A 2-of-3 key row in INIT, the base that tests adjust with struct update syntax.
pub fn key(id: &str) -> KeyRow {
    KeyRow {
        key_id: id.into(),
        key_type: "ECDSA_K1".into(),
        scheme: "DKLS23_SECP256K1".into(),
        threshold: 2,
        total_shares: 3,
        participants: vec!["a".into(), "b".into(), "c".into()],
        status: TaskStatus::Init,
        public_key: None,
        address: None,
        error_code: None,
        error_message: None,
        origin: dkms_store::ORIGIN_GENERATED.into(),
        state: dkms_store::STATE_ENABLED.into(),
        description: String::new(),
        deletion_at: None,
        generation: 0,
        node_group: None,
        created_by: String::new(),
        exportable: false,
        created_at: 1,
    }
}

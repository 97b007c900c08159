use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::{
    BuiltinRole, LimitScope, Obligation, PrincipalKind, SignDetails, TxDetails, Window,
    obligation::PolicyObligation,
};

/// Thursday 2024-03-14 15:09:26 UTC.
const NOW: i64 = 1_710_428_966;
const ONE_ETH: u128 = 1_000_000_000_000_000_000;
const ALICE_ADDR: [u8; 20] = [0x11; 20];
const BOB_ADDR: [u8; 20] = [0x22; 20];
const MALLORY_ADDR: [u8; 20] = [0xee; 20];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn key_with(labels: &[(&str, &str)], group: &str, exportable: bool) -> KeyAttrs {
    KeyAttrs {
        id: "0b9c3a52-7d8e-4c41-9b7e-3f1f6f1f0a01".into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        group: group.into(),
        key_type: "ECDSA_K1".into(),
        exportable,
        creator: "alice".into(),
    }
}

fn key() -> KeyAttrs {
    key_with(&[("env", "prod")], "", true)
}

fn tx(to: Option<[u8; 20]>, value_wei: u128) -> TxDetails {
    TxDetails {
        chain_id: 1,
        to,
        value_wei,
        selector: None,
        gas_limit: 21_000,
    }
}

/// A well-formed request: a key when the action takes one, signing details for sign and
/// signTx, a 0.5 ETH transfer to ALICE_ADDR for signTx.
fn request(principal: Principal, action: Action) -> Request {
    let resource = (action.resource_kind() == ResourceKind::Key).then(key);
    let mut context = RequestContext::new(NOW, ip("192.0.2.10"));
    if matches!(action, Action::Sign | Action::SignTx) {
        context.sign = Some(SignDetails {
            digest: vec![0xab; 32],
            derivation_path: String::new(),
        });
    }
    if action == Action::SignTx {
        context.tx = Some(tx(Some(ALICE_ADDR), ONE_ETH / 2));
    }
    Request {
        principal,
        action,
        resource,
        context,
    }
}

fn sign_tx(principal: Principal, tx_details: TxDetails) -> Request {
    let mut r = request(principal, Action::SignTx);
    r.context.tx = Some(tx_details);
    r
}

fn store(custom: &str) -> PolicyStore {
    match PolicyStore::new(custom) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

const Y: bool = true;
const N: bool = false;

/// The documented grants of the built-in roles (crate docs, "Built-in roles").
/// Columns: admin, operator, signer, approver, auditor.
const MATRIX: [(Action, [bool; 5]); 18] = [
    (Action::Generate, [Y, Y, N, N, N]),
    (Action::Import, [Y, Y, N, N, N]),
    (Action::Get, [Y, Y, Y, Y, Y]),
    (Action::List, [Y, Y, Y, Y, Y]),
    (Action::Update, [Y, Y, N, N, N]),
    (Action::Sign, [Y, N, Y, N, N]),
    (Action::SignTx, [Y, N, Y, N, N]),
    (Action::Refresh, [Y, Y, N, N, N]),
    (Action::Recover, [Y, Y, N, N, N]),
    (Action::Backup, [Y, Y, N, N, N]),
    (Action::Export, [Y, N, N, N, N]),
    (Action::Delete, [Y, Y, N, N, N]),
    (Action::ManagePolicies, [Y, N, N, N, N]),
    (Action::ManageNodes, [Y, Y, N, N, N]),
    (Action::ManageGroups, [Y, Y, N, N, N]),
    (Action::ManageUsers, [Y, N, N, N, N]),
    (Action::Approve, [Y, N, N, Y, N]),
    (Action::ReadAudit, [Y, N, N, N, Y]),
];

#[test]
fn builtin_role_matrix() {
    let store = store("");
    // Every action appears exactly once, in the order of Action::ALL.
    assert_eq!(MATRIX.map(|(a, _)| a), Action::ALL);
    for (action, row) in MATRIX {
        for (role, expected) in BuiltinRole::ALL.into_iter().zip(row) {
            for kind in [PrincipalKind::User, PrincipalKind::ApiKey] {
                let principal = Principal {
                    kind,
                    id: format!("{role}-1"),
                    roles: vec![role.as_str().to_owned()],
                    groups: vec![],
                };
                let d = store.evaluate(&request(principal, action));
                assert_eq!(d.allowed, expected, "{role} {kind:?} {action}: {d:?}");
                assert!(d.errors.is_empty(), "{role} {action}: {:?}", d.errors);
                let want: Vec<String> = if expected {
                    vec![format!("role-{role}")]
                } else {
                    vec![]
                };
                assert_eq!(d.determining_policies, want, "{role} {action}");
                assert!(d.obligations.is_empty());
            }
        }
    }
}

#[test]
fn no_role_or_unknown_role_gets_nothing() {
    let store = store("");
    for action in Action::ALL {
        for p in [
            Principal::user("nobody", &[]),
            Principal::api_key("bot", &["superuser"]).in_groups(&["admin"]),
        ] {
            let d = store.evaluate(&request(p, action));
            assert!(!d.allowed, "{action}");
            assert!(d.determining_policies.is_empty());
        }
    }
}

#[test]
fn roles_accumulate() {
    let store = store("");
    let p = Principal::user("carol", &["signer", "auditor"]);
    assert!(store.evaluate(&request(p.clone(), Action::Sign)).allowed);
    assert!(
        store
            .evaluate(&request(p.clone(), Action::ReadAudit))
            .allowed
    );
    assert!(!store.evaluate(&request(p.clone(), Action::Approve)).allowed);
    let d = store.evaluate(&request(p, Action::Get));
    assert_eq!(d.determining_policies, ["role-signer", "role-auditor"]);
}

#[test]
fn default_forbid_beats_admin_permit_for_non_exportable_keys() {
    let store = store("");
    let admin = Principal::user("root", &["admin"]);
    let mut r = request(admin, Action::Export);
    assert!(store.evaluate(&r).allowed);
    r.resource = Some(key_with(&[], "", false));
    let d = store.evaluate(&r);
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["key-not-exportable"]);
}

#[test]
fn custom_forbid_overrides_permit() {
    let store = store(
        r#"
        @id("office-network-only")
        forbid (principal, action in [Dkms::Action::"sign", Dkms::Action::"signTx"], resource)
        unless { context.clientIp.isInRange(ip("192.0.2.0/24")) };
        "#,
    );
    let admin = Principal::user("root", &["admin"]);
    let mut r = request(admin, Action::Sign);
    r.context.client_ip = ip("192.0.2.99");
    assert!(store.evaluate(&r).allowed);
    // A dual-stack listener reports IPv4 clients as mapped IPv6; the range still applies.
    r.context.client_ip = ip("::ffff:192.0.2.99");
    assert!(store.evaluate(&r).allowed);
    r.context.client_ip = ip("203.0.113.5");
    let d = store.evaluate(&r);
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["office-network-only"]);
    r.context.client_ip = ip("2001:db8::1");
    assert!(!store.evaluate(&r).allowed);
    // Other actions are untouched.
    let mut r = request(Principal::user("root", &["admin"]), Action::Get);
    r.context.client_ip = ip("203.0.113.5");
    assert!(store.evaluate(&r).allowed);
}

#[test]
fn recipient_allowlist_chain_and_selector() {
    let custom = format!(
        r#"
        @id("payments-bot")
        permit (principal in Dkms::Role::"payments", action == Dkms::Action::"signTx", resource)
        when {{
            context.chainId == 1 &&
            ["0x{alice}", "0x{bob}"].contains(context.to) &&
            (context.selector == "" || context.selector == "0xa9059cbb")
        }};
        "#,
        alice = hex::encode(ALICE_ADDR),
        bob = hex::encode(BOB_ADDR),
    );
    let store = store(&custom);
    let bot = Principal::api_key("payments-1", &["payments"]);
    for (to, ok) in [
        (Some(ALICE_ADDR), true),
        (Some(BOB_ADDR), true),
        (Some(MALLORY_ADDR), false),
        (None, false),
    ] {
        let d = store.evaluate(&sign_tx(bot.clone(), tx(to, 1)));
        assert_eq!(d.allowed, ok, "{to:?}");
        if ok {
            assert_eq!(d.determining_policies, ["payments-bot"]);
        }
    }
    let mut t = tx(Some(ALICE_ADDR), 1);
    t.chain_id = 5;
    assert!(!store.evaluate(&sign_tx(bot.clone(), t.clone())).allowed);
    t.chain_id = 1;
    t.selector = Some([0xa9, 0x05, 0x9c, 0xbb]);
    assert!(store.evaluate(&sign_tx(bot.clone(), t.clone())).allowed);
    t.selector = Some([0x09, 0x5e, 0xa7, 0xb3]); // approve(address,uint256)
    assert!(!store.evaluate(&sign_tx(bot.clone(), t)).allowed);
    // The allowlist grants signTx only, not raw digests.
    assert!(!store.evaluate(&request(bot, Action::Sign)).allowed);
}

#[test]
fn value_limit_in_gwei_is_exact_at_the_bound() {
    let store = store(
        r#"
        @id("small-payments")
        permit (principal in Dkms::Role::"payments", action == Dkms::Action::"signTx", resource)
        when { context.valueGwei <= 1000000000 };
        @id("exact-wei")
        permit (principal in Dkms::Role::"exact", action == Dkms::Action::"signTx", resource)
        when { context.valueWei == "1000000000000000000" };
        "#,
    );
    let bot = Principal::api_key("payments-1", &["payments"]);
    for (value, ok) in [
        (0, true),
        (1, true),
        (ONE_ETH, true),
        (ONE_ETH + 1, false), // 1 wei over: 1_000_000_001 gwei after rounding up
        (ONE_ETH * 1_000_000, false),
        (u128::MAX, false),
    ] {
        let d = store.evaluate(&sign_tx(bot.clone(), tx(Some(ALICE_ADDR), value)));
        assert_eq!(d.allowed, ok, "{value} wei");
    }
    let exact = Principal::api_key("e", &["exact"]);
    assert!(
        store
            .evaluate(&sign_tx(exact.clone(), tx(Some(ALICE_ADDR), ONE_ETH)))
            .allowed
    );
    assert!(
        !store
            .evaluate(&sign_tx(exact, tx(Some(ALICE_ADDR), ONE_ETH - 1)))
            .allowed
    );
}

#[test]
fn office_hours_window() {
    let store = store(
        r#"
        @id("office-hours")
        permit (principal in Dkms::Role::"day-signer", action == Dkms::Action::"sign", resource)
        when { context.hourOfDay >= 9 && context.hourOfDay < 17 && context.dayOfWeek <= 4 };
        "#,
    );
    let p = Principal::user("dana", &["day-signer"]);
    let midnight = NOW - NOW.rem_euclid(86_400); // Thursday 00:00 UTC
    for (now, ok) in [
        (NOW, true),                      // Thu 15:09
        (midnight + 9 * 3600, true),      // Thu 09:00:00
        (midnight + 9 * 3600 - 1, false), // Thu 08:59:59
        (midnight + 17 * 3600 - 1, true), // Thu 16:59:59
        (midnight + 17 * 3600, false),    // Thu 17:00:00
        (NOW + 2 * 86_400, false),        // Sat 15:09
        (NOW + 4 * 86_400, true),         // Mon 15:09
    ] {
        let mut r = request(p.clone(), Action::Sign);
        r.context.now = now;
        assert_eq!(store.evaluate(&r).allowed, ok, "at {now}");
    }
}

/// The defaults with role-signer redefined so signers may sign only keys labelled
/// env=dev, using the `labels` set; and a second role using tags.
fn dev_only_store() -> PolicyStore {
    let defaults = DEFAULT_POLICIES.replace(
        r#"@id("role-signer")"#,
        r#"@id("role-signer-unrestricted")"#,
    );
    // Drop the unrestricted grant: keep every policy but that one.
    let kept: Vec<&str> = defaults
        .split("\n\n")
        .filter(|p| !p.contains("role-signer-unrestricted"))
        .collect();
    let text = format!(
        r#"{}

        @id("role-signer")
        permit (
            principal in Dkms::Role::"signer",
            action in [Dkms::Action::"get", Dkms::Action::"list"],
            resource
        );

        @id("signer-dev-keys")
        permit (
            principal in Dkms::Role::"signer",
            action in [Dkms::Action::"sign", Dkms::Action::"signTx"],
            resource
        )
        when {{ resource.labels.contains("env=dev") }};

        @id("tester-staging-keys")
        permit (principal in Dkms::Role::"tester", action == Dkms::Action::"sign", resource)
        when {{ resource.hasTag("env") && resource.getTag("env") like "staging*" }};
        "#,
        kept.join("\n\n")
    );
    match PolicyStore::custom_only(&text) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn label_restricted_signing() {
    let store = dev_only_store();
    assert!(
        !store
            .policy_ids()
            .iter()
            .any(|id| id == "role-signer-unrestricted")
    );
    let signer = Principal::user("sam", &["signer"]);
    for (labels, ok) in [
        (vec![("env", "dev")], true),
        (vec![("env", "dev"), ("team", "payments")], true),
        (vec![("env", "prod")], false),
        (vec![("env", "development")], false),
        (vec![("environment", "dev")], false),
        (vec![], false),
    ] {
        for action in [Action::Sign, Action::SignTx] {
            let mut r = request(signer.clone(), action);
            r.resource = Some(key_with(&labels, "", false));
            let d = store.evaluate(&r);
            assert_eq!(d.allowed, ok, "{labels:?} {action}");
            if ok {
                assert_eq!(d.determining_policies, ["signer-dev-keys"]);
            }
        }
    }
    // Reading is unrestricted; admin is unchanged.
    assert!(store.evaluate(&request(signer, Action::Get)).allowed);
    assert!(
        store
            .evaluate(&request(Principal::user("root", &["admin"]), Action::Sign))
            .allowed
    );

    let tester = Principal::user("tess", &["tester"]);
    for (labels, ok) in [
        (vec![("env", "staging")], true),
        (vec![("env", "staging-eu")], true),
        (vec![("env", "prod")], false),
        (vec![], false),
    ] {
        let mut r = request(tester.clone(), Action::Sign);
        r.resource = Some(key_with(&labels, "", false));
        let d = store.evaluate(&r);
        assert_eq!(d.allowed, ok, "{labels:?}");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
    }
}

#[test]
fn group_scoped_access() {
    let store = store(
        r#"
        @id("treasury-keys")
        permit (principal in Dkms::Group::"treasury", action == Dkms::Action::"sign", resource in Dkms::Group::"treasury");
        @id("own-keys")
        permit (principal, action == Dkms::Action::"delete", resource)
        when { principal.roles.contains("self-service") && resource.creator == "alice" };
        "#,
    );
    let member = Principal::user("tom", &[]).in_groups(&["treasury"]);
    let outsider = Principal::user("olga", &[]).in_groups(&["ops"]);
    let mut r = request(member.clone(), Action::Sign);
    r.resource = Some(key_with(&[], "treasury", false));
    assert!(store.evaluate(&r).allowed);
    r.principal = outsider;
    assert!(!store.evaluate(&r).allowed);
    r.principal = member;
    r.resource = Some(key_with(&[], "ops", false));
    assert!(!store.evaluate(&r).allowed);

    let alice = Principal::api_key("alice", &["self-service"]);
    assert!(store.evaluate(&request(alice, Action::Delete)).allowed);
    let bob = Principal::api_key("bob", &["signer"]);
    assert!(!store.evaluate(&request(bob, Action::Delete)).allowed);
}

const TREASURY: &str = r#"
    @id("treasury-tx")
    @description("Treasury transfers: two treasury approvals, 10 an hour, 1 ETH a day.")
    @requires_approvals("2")
    @approver_group("treasury")
    @rate_limit("10/hour")
    @spend_limit_wei("1000000000000000000/day")
    permit (principal in Dkms::Group::"treasury", action == Dkms::Action::"signTx", resource);

    @id("bot-sign-rate")
    @rate_limit("600/1m")
    permit (principal in Dkms::Role::"bot", action == Dkms::Action::"sign", resource);
"#;

#[test]
fn obligations_come_from_determining_permits() {
    let store = store(TREASURY);
    assert_eq!(
        store.obligations_of("bot-sign-rate"),
        Some(
            &[Obligation::RateLimit {
                max: 600,
                window: Window::MINUTE,
                per: LimitScope::Key
            }][..]
        )
    );
    assert_eq!(store.obligations_of("role-admin"), Some(&[][..]));
    assert_eq!(store.obligations_of("nope"), None);

    let treasurer = Principal::user("tina", &[]).in_groups(&["treasury"]);
    let d = store.evaluate(&request(treasurer.clone(), Action::SignTx));
    assert!(d.allowed);
    assert_eq!(d.determining_policies, ["treasury-tx"]);
    let p = |o| PolicyObligation {
        policy: "treasury-tx".into(),
        obligation: o,
    };
    assert_eq!(
        d.obligations,
        vec![
            p(Obligation::RequireApprovals {
                count: 2,
                group: Some("treasury".into())
            }),
            p(Obligation::RateLimit {
                max: 10,
                window: Window::HOUR,
                per: LimitScope::Key
            }),
            p(Obligation::SpendLimit {
                max_wei: ONE_ETH,
                window: Window::DAY,
                per: LimitScope::Key
            }),
        ]
    );

    // A treasurer who is also a signer is allowed by both; the obligations still apply.
    let both = Principal::user("tina", &["signer"]).in_groups(&["treasury"]);
    let d = store.evaluate(&request(both, Action::SignTx));
    assert_eq!(d.determining_policies, ["role-signer", "treasury-tx"]);
    assert_eq!(d.obligations.len(), 3);

    // A plain signer is allowed by role-signer alone: no obligations.
    let d = store.evaluate(&request(
        Principal::user("sam", &["signer"]),
        Action::SignTx,
    ));
    assert!(d.allowed);
    assert!(d.obligations.is_empty());

    // Denied: nothing to enforce.
    let d = store.evaluate(&request(treasurer, Action::Sign));
    assert!(!d.allowed);
    assert!(d.obligations.is_empty());

    let d = store.evaluate(&request(Principal::api_key("b", &["bot"]), Action::Sign));
    assert_eq!(
        d.obligations,
        vec![PolicyObligation {
            policy: "bot-sign-rate".into(),
            obligation: Obligation::RateLimit {
                max: 600,
                window: Window::MINUTE,
                per: LimitScope::Key
            }
        }]
    );
}

#[test]
fn a_forbid_that_errors_denies() {
    // Overflows only for a saturated value; plain Cedar would then skip the forbid.
    let store = store(
        r#"
        @id("overflowing-forbid")
        forbid (principal, action == Dkms::Action::"signTx", resource)
        when { context.valueGwei * 2 < 0 };
        "#,
    );
    let signer = Principal::user("sam", &["signer"]);
    let d = store.evaluate(&sign_tx(signer.clone(), tx(Some(ALICE_ADDR), ONE_ETH)));
    assert!(d.allowed, "{d:?}");
    let d = store.evaluate(&sign_tx(signer, tx(Some(ALICE_ADDR), u128::MAX)));
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["overflowing-forbid"]);
    assert!(d.errors.iter().any(|e| e.contains("overflowing-forbid")));
    assert!(
        d.errors
            .iter()
            .any(|e| e.contains("fail") || e.contains("denied"))
    );
    assert!(d.obligations.is_empty());
}

#[test]
fn malformed_requests_are_denied_with_a_reason() {
    let store = store("");
    let admin = Principal::user("root", &["admin"]);

    let mut r = request(admin.clone(), Action::Sign);
    r.context.sign = None;
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::MissingSignDetails { action: "sign" })
    );
    let d = store.evaluate(&r);
    assert!(!d.allowed);
    assert!(
        d.errors[0].contains("needs signing details"),
        "{:?}",
        d.errors
    );

    let mut r = request(admin.clone(), Action::SignTx);
    r.context.tx = None;
    assert_eq!(store.try_evaluate(&r), Err(RequestError::MissingTxDetails));

    let mut r = request(admin.clone(), Action::Sign);
    r.context.tx = Some(tx(None, 0));
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::UnexpectedTxDetails { action: "sign" })
    );

    let mut r = request(admin.clone(), Action::Get);
    r.context.sign = Some(SignDetails {
        digest: vec![1],
        derivation_path: String::new(),
    });
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::UnexpectedSignDetails { action: "get" })
    );

    let mut r = request(admin.clone(), Action::Delete);
    r.resource = None;
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::MissingKey { action: "delete" })
    );

    let mut r = request(admin.clone(), Action::List);
    r.resource = Some(key());
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::UnexpectedKey { action: "list" })
    );

    let mut t = tx(Some(ALICE_ADDR), 1);
    t.chain_id = u64::MAX;
    let r = sign_tx(admin.clone(), t);
    assert_eq!(
        store.try_evaluate(&r),
        Err(RequestError::OutOfRange {
            field: "chainId",
            value: u64::MAX.to_string()
        })
    );
    assert!(!store.evaluate(&r).allowed);
}

#[test]
fn entities_and_contexts_conform_to_the_schema() {
    let store = store("");
    let schema = schema().unwrap();
    for action in Action::ALL {
        let mut r = request(
            Principal::api_key("k", &["admin", "x"]).in_groups(&["g"]),
            action,
        );
        if let Some(k) = &mut r.resource {
            k.group = "treasury".into();
        }
        let (_, entities) = store.to_cedar(&r).unwrap();
        // Re-check the entities against the schema, which evaluate skips for speed.
        let checked = Entities::from_entities(entities.iter().cloned(), Some(schema));
        assert!(checked.is_ok(), "{action}: {checked:?}");
    }
}

#[test]
fn derivation_path_digest_and_gas_reach_policies() {
    let store = store(
        r#"
        @id("hd-path")
        permit (principal in Dkms::Role::"hd", action == Dkms::Action::"sign", resource)
        when {
            context.derivationPath like "m/44'/60'/*" &&
            context.digest == "abababababababababababababababababababababababababababababababab" &&
            context.now > 1700000000
        };
        @id("gas-cap")
        forbid (principal, action == Dkms::Action::"signTx", resource)
        when { context.gasLimit > 1000000 };
        "#,
    );
    let p = Principal::api_key("hd-1", &["hd"]);
    let mut r = request(p, Action::Sign);
    assert!(!store.evaluate(&r).allowed, "empty path");
    if let Some(s) = &mut r.context.sign {
        s.derivation_path = "m/44'/60'/0'/0/7".into();
    }
    assert!(store.evaluate(&r).allowed);
    if let Some(s) = &mut r.context.sign {
        s.digest = vec![0xcd; 32];
    }
    assert!(!store.evaluate(&r).allowed);

    let admin = Principal::user("root", &["admin"]);
    let mut t = tx(Some(ALICE_ADDR), 1);
    assert!(store.evaluate(&sign_tx(admin.clone(), t.clone())).allowed);
    t.gas_limit = 2_000_000;
    let d = store.evaluate(&sign_tx(admin, t));
    assert!(!d.allowed);
    assert_eq!(d.determining_policies, ["gas-cap"]);
}

fn invalid(text: &str) -> PolicyError {
    match PolicyStore::validate(text) {
        Ok(ids) => panic!("accepted {ids:?}"),
        Err(e) => e,
    }
}

#[test]
fn validate_returns_ids_in_order() {
    let ids = PolicyStore::validate(TREASURY).unwrap();
    assert_eq!(
        ids.iter().map(PolicyId::as_str).collect::<Vec<_>>(),
        ["treasury-tx", "bot-sign-rate"]
    );
    assert_eq!(PolicyStore::validate("").unwrap(), vec![]);
    assert_eq!(
        PolicyStore::validate("// only a comment\n").unwrap(),
        vec![]
    );
}

#[test]
fn validation_reports_syntax_errors_with_position() {
    let e = invalid("@id(\"a\")\npermit (principal,\n    action resource);");
    assert_eq!(
        e,
        PolicyError::Syntax {
            line: 3,
            column: 12,
            message: "unexpected token `resource`".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "syntax error at line 3, column 12: unexpected token `resource`"
    );
    let e = invalid("@id(\"a\") permit (principal, action, resource) when { 1 + };");
    assert!(matches!(&e, PolicyError::Syntax { line: 1, .. }), "{e:?}");
}

#[test]
fn validation_reports_unknown_attributes() {
    let e = invalid(
        r#"@id("colourful")
        permit (principal, action == Dkms::Action::"sign", resource)
        when { resource.colour == "red" };"#,
    );
    let PolicyError::Invalid { issues } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].policy, "colourful");
    assert_eq!(
        issues[0].message,
        "attribute `colour` on entity type `Dkms::Key` not found (did you mean `group`?)"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with(
            "policy does not match the schema: policy \"colourful\": attribute `colour`"
        ),
        "{msg}"
    );

    // Context attributes exist only for the actions whose context has them.
    let e = invalid(
        r#"@id("gwei-everywhere")
        permit (principal, action, resource) when { context.valueGwei < 5 };"#,
    );
    let PolicyError::Invalid { issues } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(issues.len(), 17, "every action but signTx: {issues:?}");
    assert!(issues.iter().all(|i| {
        i.policy == "gwei-everywhere"
            && i.message
                .starts_with("attribute `valueGwei` in context for Dkms::Action::")
    }));
    assert!(e.to_string().ends_with("and 12 more"), "{e}");
}

#[test]
fn validation_reports_unknown_actions_and_types() {
    let e = invalid(
        r#"@id("frob")
        permit (principal, action == Dkms::Action::"frobnicate", resource);"#,
    );
    assert_eq!(
        e.to_string(),
        "policy does not match the schema: policy \"frob\": unrecognized action \
         `Dkms::Action::\"frobnicate\"` (did you mean `Dkms::Action::\"get\"`?)"
    );
    let e = invalid(
        r#"@id("who")
        permit (principal in Dkms::Team::"x", action, resource);"#,
    );
    assert!(
        e.to_string()
            .contains("unrecognized entity type `Dkms::Team`"),
        "{e}"
    );
    let e = invalid(
        r#"@id("typo")
        permit (principal, action == Dkms::Action::"signTx", resource)
        when { context.valueGwei < "5" };"#,
    );
    assert!(e.to_string().contains("policy \"typo\""), "{e}");
    assert!(e.to_string().contains("Long"), "{e}");
    let e = invalid(
        r#"@id("unguarded-tag")
        permit (principal, action == Dkms::Action::"sign", resource)
        when { resource.getTag("env") == "dev" };"#,
    );
    assert!(e.to_string().contains("hasTag"), "{e}");
}

#[test]
fn validation_reports_id_problems() {
    assert_eq!(
        invalid("permit (principal, action, resource);"),
        PolicyError::MissingId {
            index: 1,
            excerpt: "permit (principal, action, resource);".into()
        }
    );
    assert!(matches!(
        invalid(
            r#"@id("a") permit (principal, action, resource); forbid (principal, action, resource);"#
        ),
        PolicyError::MissingId { index: 2, .. }
    ));
    assert_eq!(
        invalid(r#"@id("has space") permit (principal, action, resource);"#),
        PolicyError::BadId {
            id: "has space".into()
        }
    );
    assert_eq!(
        invalid(r#"@id("") permit (principal, action, resource);"#),
        PolicyError::BadId { id: "".into() }
    );
    assert_eq!(
        invalid(r#"@id("role-admin") permit (principal, action, resource);"#),
        PolicyError::DuplicateId {
            id: "role-admin".into()
        }
    );
    assert_eq!(
        invalid(
            r#"@id("twice") permit (principal, action, resource);
               @id("twice") forbid (principal, action, resource);"#
        ),
        PolicyError::DuplicateId { id: "twice".into() }
    );
    assert_eq!(
        invalid(r#"@id("tmpl") permit (principal == ?principal, action, resource);"#),
        PolicyError::Template { id: "tmpl".into() }
    );
}

#[test]
fn validation_reports_bad_annotations() {
    let e = invalid(
        r#"@id("limits") @rate_limit("10/fortnight")
        permit (principal, action == Dkms::Action::"sign", resource);"#,
    );
    assert_eq!(
        e.to_string(),
        "policy \"limits\": bad @rate_limit(\"10/fortnight\"): unknown window unit \
         \"fortnight\"; expected s, m, h, d, w (or second, minute, hour, day, week)"
    );
    let e = invalid(
        r#"@id("approvals") @requires_approvals("two")
        permit (principal, action == Dkms::Action::"sign", resource);"#,
    );
    assert!(
        matches!(&e, PolicyError::Annotation { policy, annotation, value, .. }
            if policy == "approvals" && annotation == "requires_approvals" && value == "two"),
        "{e:?}"
    );
    let e = invalid(
        r#"@id("typo") @rate_limits("10/hour")
        permit (principal, action == Dkms::Action::"sign", resource);"#,
    );
    assert!(e.to_string().contains("unknown annotation"), "{e}");
    let e = invalid(
        r#"@id("f") @rate_limit("10/hour")
        forbid (principal, action == Dkms::Action::"sign", resource);"#,
    );
    assert!(e.to_string().contains("permit policies"), "{e}");
    let e = invalid(
        r#"@id("g") @approver_group("treasury")
        permit (principal, action == Dkms::Action::"sign", resource);"#,
    );
    assert!(e.to_string().contains("needs @requires_approvals"), "{e}");
    let e = invalid(
        r#"@id("s") @spend_limit_wei("1.5/day")
        permit (principal, action == Dkms::Action::"signTx", resource);"#,
    );
    assert!(e.to_string().contains("not a whole decimal number"), "{e}");
}

#[test]
fn approvals_and_limits_are_refused_outside_signing() {
    for scope in [
        "action",
        r#"action == Dkms::Action::"backup""#,
        r#"action in [Dkms::Action::"sign", Dkms::Action::"export"]"#,
    ] {
        let text =
            format!(r#"@id("wide") @rate_limit("10/hour") permit (principal, {scope}, resource);"#);
        let e = invalid(&text);
        assert!(
            matches!(&e, PolicyError::ObligationScope { policy } if policy == "wide"),
            "{scope}: {e:?}"
        );
        // Without the obligation the same scope is fine.
        let plain = format!(r#"@id("wide") permit (principal, {scope}, resource);"#);
        assert!(PolicyStore::validate(&plain).is_ok(), "{scope}");
    }
    for scope in [
        r#"action == Dkms::Action::"sign""#,
        r#"action == Dkms::Action::"signTx""#,
        r#"action in [Dkms::Action::"sign", Dkms::Action::"signTx"]"#,
    ] {
        let text = format!(
            r#"@id("narrow") @requires_approvals("2") @rate_limit("10/hour") permit (principal, {scope}, resource);"#
        );
        assert!(PolicyStore::validate(&text).is_ok(), "{scope}");
    }
}

#[test]
fn new_refuses_what_validate_refuses() {
    let bad = r#"@id("x") permit (principal, action, resource) when { resource.nope };"#;
    assert_eq!(
        PolicyStore::new(bad).unwrap_err(),
        PolicyStore::validate(bad).unwrap_err()
    );
    assert!(PolicyStore::custom_only("permit (principal, action, resource);").is_err());
}

#[test]
fn default_store_lists_builtin_policies() {
    let store = store("");
    assert_eq!(
        store.policy_ids(),
        [
            "role-admin",
            "role-operator",
            "role-signer",
            "role-approver",
            "role-auditor",
            "key-not-exportable"
        ]
    );
    let custom_only = PolicyStore::custom_only("").unwrap();
    assert!(custom_only.policy_ids().is_empty());
    // Deny by default: without policies even an admin gets nothing.
    assert!(
        !custom_only
            .evaluate(&request(Principal::user("root", &["admin"]), Action::Get))
            .allowed
    );
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyStore>();
}

#[test]
fn policies_are_partitioned_by_their_action_scope() {
    let store = store(TREASURY);
    let ids_for = |a: Action| -> Vec<String> {
        store.by_action[a.index()]
            .policies()
            .map(|p| p.id().to_string())
            .collect()
    };
    assert_eq!(
        ids_for(Action::Export),
        ["role-admin", "key-not-exportable"]
    );
    assert_eq!(
        ids_for(Action::SignTx),
        ["role-admin", "role-signer", "treasury-tx"]
    );
    assert_eq!(
        ids_for(Action::Sign),
        ["role-admin", "role-signer", "bot-sign-rate"]
    );
    assert_eq!(ids_for(Action::ReadAudit), ["role-admin", "role-auditor"]);
    // Every policy lands in at least one set.
    for id in store.policy_ids() {
        assert!(
            Action::ALL.iter().any(|a| ids_for(*a).contains(id)),
            "{id} is in no set"
        );
    }
}

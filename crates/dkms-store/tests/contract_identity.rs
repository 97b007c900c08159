//! The identity and policy part of the store contract (users, sessions, API keys, key
//! creators, versioned policies and migration 0007), run on every backend against the real
//! servers: SQLite, MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432). A server that
//! cannot be reached fails its test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use dkms_store::testdb::TestDb;
use dkms_store::{
    ApiKeyRow, Backend, KeyRow, SessionRow, Store, StoreError, TaskStatus, UserRow, UserUpdate,
};
use sqlx::Executor;

fn user(id: &str, name: &str) -> UserRow {
    UserRow {
        id: id.into(),
        username: name.into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec!["operator".into(), "auditor".into()],
        groups: vec!["treasury".into()],
        disabled: false,
        failed_logins: 0,
        locked_until: None,
        created_at: 10,
        updated_at: 10,
    }
}

fn session(token_hash: &str, user_id: &str, expires_at: i64) -> SessionRow {
    SessionRow {
        token_hash: token_hash.into(),
        user_id: user_id.into(),
        created_at: 10,
        expires_at,
    }
}

fn api_key(id: &str, roles: &[&str]) -> ApiKeyRow {
    ApiKeyRow {
        id: id.into(),
        name: format!("{id} key"),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        groups: vec!["treasury".into(), "ops".into()],
        owner: None,
        created_at: 100,
        expires_at: None,
        last_used_at: None,
        revoked: false,
    }
}

async fn users(s: &Store) {
    assert_eq!(s.count_users().await.unwrap(), 0);
    let alice = user("u-alice", "alice");
    s.insert_user(&alice).await.unwrap();
    assert!(matches!(
        s.insert_user(&user("u-other", "alice")).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.insert_user(&user("u-alice", "alice2")).await,
        Err(StoreError::Conflict)
    ));
    // Names are exact: a different case is a different user.
    s.insert_user(&user("u-alice-upper", "Alice"))
        .await
        .unwrap();
    s.insert_user(&user("u-bob", "bob")).await.unwrap();
    assert_eq!(s.count_users().await.unwrap(), 3);
    assert_eq!(s.get_user("u-alice").await.unwrap().unwrap(), alice);
    assert_eq!(s.get_user_by_name("alice").await.unwrap().unwrap(), alice);
    assert!(s.get_user("nope").await.unwrap().is_none());
    assert!(s.get_user_by_name("carol").await.unwrap().is_none());
    let names: Vec<String> = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 3);
    assert!(
        !format!("{alice:?}").contains("argon2id"),
        "Debug leaves out the password hash"
    );

    // Roles and groups change without ending sessions.
    s.insert_session(&session("sa1", "u-alice", 1000))
        .await
        .unwrap();
    let change = UserUpdate {
        roles: Some(vec!["admin".into()]),
        groups: Some(vec![]),
        ..UserUpdate::default()
    };
    assert!(s.update_user("u-alice", &change, 20).await.unwrap());
    let got = s.get_user("u-alice").await.unwrap().unwrap();
    assert_eq!(
        (got.roles.as_slice(), got.groups.len(), got.updated_at),
        (&["admin".to_string()][..], 0, 20)
    );
    assert_eq!(got.password_hash, alice.password_hash);
    assert!(s.find_session("sa1", 50).await.unwrap().is_some());
    assert!(!s.update_user("nope", &change, 20).await.unwrap());

    // A new password ends the sessions.
    let new_password = UserUpdate {
        password_hash: Some("$argon2id$new".into()),
        ..UserUpdate::default()
    };
    assert!(s.update_user("u-alice", &new_password, 21).await.unwrap());
    assert_eq!(
        s.get_user("u-alice").await.unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert!(s.find_session("sa1", 50).await.unwrap().is_none());

    // Disabling ends them too; enabling again does not need to.
    s.insert_session(&session("sa2", "u-alice", 1000))
        .await
        .unwrap();
    s.insert_session(&session("sb1", "u-bob", 1000))
        .await
        .unwrap();
    let disable = UserUpdate {
        disabled: Some(true),
        ..UserUpdate::default()
    };
    assert!(s.update_user("u-alice", &disable, 22).await.unwrap());
    assert!(s.get_user("u-alice").await.unwrap().unwrap().disabled);
    assert!(s.find_session("sa2", 50).await.unwrap().is_none());
    assert!(
        s.find_session("sb1", 50).await.unwrap().is_some(),
        "other users keep theirs"
    );
    let enable = UserUpdate {
        disabled: Some(false),
        ..UserUpdate::default()
    };
    s.insert_session(&session("sa3", "u-alice", 1000))
        .await
        .unwrap();
    assert!(s.update_user("u-alice", &enable, 23).await.unwrap());
    assert!(!s.get_user("u-alice").await.unwrap().unwrap().disabled);
    assert!(s.find_session("sa3", 50).await.unwrap().is_some());

    // Deleting a user deletes its sessions and revokes (keeps) its API keys.
    let mut owned = api_key("k-bob", &["operator"]);
    owned.owner = Some("u-bob".into());
    s.insert_api_key(&owned, "h-bob").await.unwrap();
    let mut already = api_key("k-bob-old", &["operator"]);
    already.owner = Some("u-bob".into());
    s.insert_api_key(&already, "h-bob-old").await.unwrap();
    assert!(s.revoke_api_key("k-bob-old", 30).await.unwrap());
    s.insert_api_key(&api_key("k-unowned", &["operator"]), "h-unowned")
        .await
        .unwrap();
    assert!(s.delete_user("u-bob", 40).await.unwrap());
    assert!(s.get_user("u-bob").await.unwrap().is_none());
    assert!(s.find_session("sb1", 50).await.unwrap().is_none());
    let k = s.get_api_key("k-bob").await.unwrap().unwrap();
    assert!(k.revoked);
    assert_eq!(
        k.owner.as_deref(),
        Some("u-bob"),
        "the owner stays on record"
    );
    assert!(!s.get_api_key("k-unowned").await.unwrap().unwrap().revoked);
    assert!(!s.delete_user("u-bob", 41).await.unwrap());
    assert_eq!(s.count_users().await.unwrap(), 2);
    // The name is free again.
    s.insert_user(&user("u-bob2", "bob")).await.unwrap();
    // A session needs an existing user.
    assert!(
        s.insert_session(&session("s-ghost", "u-bob", 1000))
            .await
            .is_err()
    );
}

async fn login_throttling(s: &Store) {
    s.insert_user(&user("u-t", "throttled")).await.unwrap();
    for i in 1..=2 {
        assert_eq!(
            s.login_failed("u-t", 100, 3, 5000).await.unwrap(),
            None,
            "failure {i}"
        );
    }
    assert_eq!(s.get_user("u-t").await.unwrap().unwrap().failed_logins, 2);
    // A success starts the count again.
    s.login_succeeded("u-t").await.unwrap();
    assert_eq!(s.get_user("u-t").await.unwrap().unwrap().failed_logins, 0);
    assert_eq!(s.login_failed("u-t", 100, 3, 5000).await.unwrap(), None);
    assert_eq!(s.login_failed("u-t", 101, 3, 5000).await.unwrap(), None);
    assert_eq!(
        s.login_failed("u-t", 102, 3, 5000).await.unwrap(),
        Some(5102),
        "the third failure locks"
    );
    let u = s.get_user("u-t").await.unwrap().unwrap();
    assert_eq!((u.failed_logins, u.locked_until), (0, Some(5102)));
    // After the lock the count starts from zero; the lock stays until a success.
    assert_eq!(s.login_failed("u-t", 6000, 3, 5000).await.unwrap(), None);
    assert_eq!(
        s.get_user("u-t").await.unwrap().unwrap().locked_until,
        Some(5102)
    );
    s.login_succeeded("u-t").await.unwrap();
    let u = s.get_user("u-t").await.unwrap().unwrap();
    assert_eq!((u.failed_logins, u.locked_until), (0, None));
    assert_eq!(s.login_failed("nobody", 1, 3, 5000).await.unwrap(), None);

    // Concurrent failures all count: 22 failures with a limit of 5 are exactly 4 locks and
    // a remainder of 2. A lost increment would leave fewer locks or another remainder, and
    // a lock reported twice (or by a failure that did not cause it) more locks.
    s.insert_user(&user("u-c", "concurrent")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..22 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.login_failed("u-c", 1000 + i, 5, 60_000).await
        }));
    }
    let mut locks = Vec::new();
    for t in tasks {
        if let Some(until) = t.await.unwrap().unwrap() {
            locks.push(until);
        }
    }
    assert_eq!(locks.len(), 4, "{locks:?}");
    assert!(locks.iter().all(|l| (61_000..61_022).contains(l)));
    let u = s.get_user("u-c").await.unwrap().unwrap();
    assert_eq!(u.failed_logins, 2);
    assert!(locks.contains(&u.locked_until.unwrap()));
}

async fn sessions(s: &Store) {
    s.insert_user(&user("u-s", "sessions")).await.unwrap();
    s.insert_session(&session("t1", "u-s", 100)).await.unwrap();
    s.insert_session(&session("t2", "u-s", 200)).await.unwrap();
    s.insert_session(&session("t3", "u-s", 300)).await.unwrap();
    assert!(matches!(
        s.insert_session(&session("t1", "u-s", 999)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.find_session("t1", 99).await.unwrap(),
        Some(session("t1", "u-s", 100))
    );
    assert!(
        s.find_session("t1", 100).await.unwrap().is_none(),
        "expired at expires_at"
    );
    assert!(s.find_session("nope", 0).await.unwrap().is_none());
    assert_eq!(s.purge_expired_sessions(200).await.unwrap(), 2);
    assert_eq!(s.purge_expired_sessions(200).await.unwrap(), 0);
    assert!(s.find_session("t3", 250).await.unwrap().is_some());
    assert!(s.delete_session("t3").await.unwrap());
    assert!(!s.delete_session("t3").await.unwrap());
    s.insert_session(&session("t4", "u-s", 500)).await.unwrap();
    s.insert_session(&session("t5", "u-s", 500)).await.unwrap();
    assert_eq!(s.delete_user_sessions("u-s").await.unwrap(), 2);
    assert_eq!(s.delete_user_sessions("u-s").await.unwrap(), 0);
}

async fn api_keys_with_roles(s: &Store) {
    let mut k = api_key("ak1", &["operator", "auditor"]);
    k.owner = Some("u-alice".into());
    k.expires_at = Some(10_000);
    s.insert_api_key(&k, "ah1").await.unwrap();
    assert_eq!(s.find_api_key("ah1").await.unwrap().unwrap(), k);
    assert_eq!(s.get_api_key("ak1").await.unwrap().unwrap(), k);
    assert!(s.get_api_key("nope").await.unwrap().is_none());
    assert!(matches!(
        s.insert_api_key(&api_key("ak1", &["x"]), "ah-other").await,
        Err(StoreError::Conflict)
    ));
    let mut newer = api_key("ak2", &[]);
    newer.created_at = 200;
    s.insert_api_key(&newer, "ah2").await.unwrap();
    assert!(
        s.get_api_key("ak2")
            .await
            .unwrap()
            .unwrap()
            .roles
            .is_empty(),
        "no roles is allowed"
    );
    let listed: Vec<String> = s
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    let ours: Vec<&String> = listed.iter().filter(|i| i.starts_with("ak")).collect();
    assert_eq!(ours, ["ak2", "ak1"], "newest first");

    // Expired keys are still found: the caller tells expired from unknown.
    let found = s.find_api_key("ah1").await.unwrap().unwrap();
    assert_eq!(found.expires_at, Some(10_000));

    // Touching writes at most once a minute.
    assert!(s.touch_api_key("ak1", 1_000).await.unwrap());
    assert!(!s.touch_api_key("ak1", 1_500).await.unwrap());
    assert!(!s.touch_api_key("ak1", 61_000).await.unwrap());
    assert_eq!(
        s.get_api_key("ak1").await.unwrap().unwrap().last_used_at,
        Some(1_000)
    );
    assert!(s.touch_api_key("ak1", 61_001).await.unwrap());
    assert_eq!(
        s.get_api_key("ak1").await.unwrap().unwrap().last_used_at,
        Some(61_001)
    );
    assert!(!s.touch_api_key("nope", 1).await.unwrap());

    // Revocation happens once; revoked keys are still found.
    assert!(s.revoke_api_key("ak1", 70_000).await.unwrap());
    assert!(!s.revoke_api_key("ak1", 70_001).await.unwrap());
    assert!(!s.revoke_api_key("nope", 70_001).await.unwrap());
    assert!(s.find_api_key("ah1").await.unwrap().unwrap().revoked);
}

async fn key_creators(s: &Store) {
    s.insert_key(&key("ck1", "user:u-alice")).await.unwrap();
    s.insert_key(&key("ck2", "")).await.unwrap();
    assert_eq!(
        s.get_key("ck1").await.unwrap().unwrap().created_by,
        "user:u-alice"
    );
    assert_eq!(s.get_key("ck2").await.unwrap().unwrap().created_by, "");
}

const CEDAR: &str = "permit(principal in Role::\"operator\", action, resource);";

async fn policies(s: &Store) {
    let e0 = s.policy_epoch().await.unwrap();
    assert!(s.current_policies().await.unwrap().is_empty());
    assert!(s.get_policy("p", None).await.unwrap().is_none());

    // Create, then update only from the latest version.
    let v1 = s
        .put_policy(
            "p",
            None,
            CEDAR,
            "first",
            "alice",
            s.policy_epoch().await.unwrap(),
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        (v1.version, v1.deleted, v1.text.as_str()),
        (1, false, CEDAR)
    );
    let e1 = s.policy_epoch().await.unwrap();
    assert_ne!(e1, e0);
    assert!(matches!(
        s.put_policy(
            "p",
            None,
            CEDAR,
            "again",
            "bob",
            s.policy_epoch().await.unwrap(),
            11
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.put_policy(
            "p",
            Some(2),
            CEDAR,
            "future",
            "bob",
            s.policy_epoch().await.unwrap(),
            11
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.put_policy(
            "q",
            Some(1),
            CEDAR,
            "absent",
            "bob",
            s.policy_epoch().await.unwrap(),
            11
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.policy_epoch().await.unwrap(),
        e1,
        "refused writes change nothing"
    );
    // Large texts fit (well past MySQL's 64 KiB TEXT).
    let big = format!("// {}\n{CEDAR}", "x".repeat(100_000));
    let v2 = s
        .put_policy(
            "p",
            Some(1),
            &big,
            "second",
            "bob",
            s.policy_epoch().await.unwrap(),
            12,
        )
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let e2 = s.policy_epoch().await.unwrap();
    assert_ne!(e2, e1);
    assert!(matches!(
        s.put_policy(
            "p",
            Some(1),
            CEDAR,
            "stale",
            "carol",
            s.policy_epoch().await.unwrap(),
            13
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.get_policy("p", None).await.unwrap().unwrap(), v2);
    assert_eq!(s.get_policy("p", Some(1)).await.unwrap().unwrap(), v1);
    assert!(s.get_policy("p", Some(9)).await.unwrap().is_none());
    s.put_policy(
        "a-first",
        None,
        CEDAR,
        "",
        "alice",
        s.policy_epoch().await.unwrap(),
        14,
    )
    .await
    .unwrap();
    let current: Vec<(String, i64)> = s
        .current_policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(current, [("a-first".to_string(), 1), ("p".to_string(), 2)]);

    // Delete: a tombstone version; the expectation is checked.
    assert!(matches!(
        s.delete_policy("p", Some(1), "carol", 15).await,
        Err(StoreError::Conflict)
    ));
    let e3 = s.policy_epoch().await.unwrap();
    assert!(s.delete_policy("p", Some(2), "carol", 16).await.unwrap());
    assert_ne!(s.policy_epoch().await.unwrap(), e3);
    assert!(!s.delete_policy("p", None, "carol", 17).await.unwrap());
    assert!(!s.delete_policy("never", None, "carol", 17).await.unwrap());
    assert!(s.get_policy("p", None).await.unwrap().is_none());
    let tomb = s.get_policy("p", Some(3)).await.unwrap().unwrap();
    assert!(tomb.deleted);
    assert_eq!(tomb.created_by, "carol");
    assert!(matches!(
        s.put_policy(
            "p",
            Some(2),
            CEDAR,
            "resurrect",
            "bob",
            s.policy_epoch().await.unwrap(),
            18
        )
        .await,
        Err(StoreError::Conflict)
    ));
    let names: Vec<String> = s
        .current_policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a-first"]);

    // Re-create after the tombstone: the versions go on.
    let v4 = s
        .put_policy(
            "p",
            None,
            CEDAR,
            "again",
            "dave",
            s.policy_epoch().await.unwrap(),
            19,
        )
        .await
        .unwrap();
    assert_eq!(v4.version, 4);
    assert!(s.delete_policy("a-first", None, "dave", 20).await.unwrap());
    let history: Vec<(i64, bool, String)> = s
        .policy_history("p")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.version, p.deleted, p.description))
        .collect();
    assert_eq!(
        history,
        [
            (1, false, "first".to_string()),
            (2, false, "second".to_string()),
            (3, true, String::new()),
            (4, false, "again".to_string()),
        ]
    );
    assert_eq!(
        s.policy_history("p").await.unwrap()[1].text,
        big,
        "texts come back whole"
    );
    assert!(s.policy_history("never").await.unwrap().is_empty());
    let current: Vec<(String, i64)> = s
        .current_policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(current, [("p".to_string(), 4)]);
}

/// Writers of different documents that all validated against the same stored set: one
/// is stored, the others must validate again (they could conflict with the winner).
async fn writers_validated_against_one_set_store_one(s: &Store) {
    let seen = s.policy_epoch().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put_policy(&format!("set-{w}"), None, CEDAR, "", "w", seen, 5)
                .await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => stored += 1,
            Err(StoreError::PoliciesChanged) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(s.policy_epoch().await.unwrap(), seen + 1);
    let names: Vec<String> = s
        .current_policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .filter(|n| n.starts_with("set-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // With a fresh look at the set, the next writer gets through.
    let fresh = s.policy_epoch().await.unwrap();
    assert!(
        s.put_policy("set-late", None, CEDAR, "", "w", fresh, 6)
            .await
            .is_ok()
    );
    assert!(matches!(
        s.put_policy("set-stale", None, CEDAR, "", "w", seen, 7)
            .await,
        Err(StoreError::PoliciesChanged)
    ));
}

/// Writers racing with the same expectation: exactly one wins, the others get Conflict.
async fn concurrent_policy_writers(s: &Store) {
    for round in 0..4 {
        let name = format!("race{round}");
        // Round 0 races creations; the others race updates of version 1.
        let expected = if round == 0 {
            None
        } else {
            s.put_policy(
                &name,
                None,
                CEDAR,
                "base",
                "setup",
                s.policy_epoch().await.unwrap(),
                1,
            )
            .await
            .unwrap();
            Some(1)
        };
        let before = s.policy_epoch().await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..8 {
            let s = s.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                s.put_policy(
                    &name,
                    expected,
                    CEDAR,
                    &format!("writer {w}"),
                    "w",
                    s.policy_epoch().await.unwrap(),
                    2,
                )
                .await
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(row) => won.push(row),
                Err(StoreError::Conflict | StoreError::PoliciesChanged) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        let latest = s.get_policy(&name, None).await.unwrap().unwrap();
        assert_eq!(latest, won[0]);
        assert_eq!(latest.version, expected.unwrap_or(0) + 1);
        assert_eq!(
            s.policy_history(&name).await.unwrap().len() as i64,
            latest.version
        );
        assert_eq!(s.policy_epoch().await.unwrap(), before + 1);
    }
    // Concurrent deletions without an expectation: one tombstone, the others see none.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.delete_policy("race1", None, "w", 3).await
        }));
    }
    let mut deleted = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            deleted += 1;
        }
    }
    assert_eq!(deleted, 1);
    assert_eq!(s.policy_history("race1").await.unwrap().len(), 3);
}

async fn contract(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend, dir.path()).await.unwrap();
    let s = Store::connect(&db.url).await.unwrap();
    users(&s).await;
    login_throttling(&s).await;
    sessions(&s).await;
    api_keys_with_roles(&s).await;
    key_creators(&s).await;
    policies(&s).await;
    concurrent_policy_writers(&s).await;
    writers_validated_against_one_set_store_one(&s).await;
    drop(s);
    db.drop_database().await;
}

/// A database written by the previous release (migrations up to 0006) with an API key in
/// the old shape: migration 0007 turns its role into a role list and keeps it usable.
async fn old_api_keys_migrate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend, dir.path()).await.unwrap();
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::MySql => "mysql",
        Backend::Postgres => "postgres",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(folder);
    sqlx::any::install_default_drivers();
    let url = if backend == Backend::Sqlite {
        format!("{}?mode=rwc", db.url)
    } else {
        db.url.clone()
    };
    {
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let old = sqlx::migrate::Migrator::new(path.as_path()).await.unwrap();
        old.run_to(6, &pool).await.unwrap();
        pool.execute(
            "INSERT INTO api_keys (id, token_hash, role, name, created_at, last_used_at, revoked) \
             VALUES ('old-admin', 'old-hash', 'admin', 'bootstrap admin', 5, 7, 0), \
                    ('old-viewer', 'old-hash2', 'viewer', 'revoked viewer', 6, NULL, 1)",
        )
        .await
        .unwrap();
        pool.execute(
            "INSERT INTO mpc_keys (key_id, key_type, scheme, threshold, total_shares, participants, \
             status, created_at, updated_at) \
             VALUES ('old-key', 'ECDSA_K1', 'DKLS23_SECP256K1', 2, 3, '[\"a\",\"b\",\"c\"]', 'FINISHED', 1, 1)",
        )
        .await
        .unwrap();
        pool.close().await;
    }
    let s = Store::connect(&db.url).await.unwrap();
    assert_eq!(
        s.find_api_key("old-hash").await.unwrap().unwrap(),
        ApiKeyRow {
            id: "old-admin".into(),
            name: "bootstrap admin".into(),
            roles: vec!["admin".into()],
            groups: vec![],
            owner: None,
            created_at: 5,
            expires_at: None,
            last_used_at: Some(7),
            revoked: false,
        }
    );
    let viewer = s.get_api_key("old-viewer").await.unwrap().unwrap();
    assert_eq!(
        (viewer.roles, viewer.revoked),
        (vec!["viewer".to_string()], true)
    );
    assert_eq!(s.count_api_keys().await.unwrap(), 2);
    let k = s.get_key("old-key").await.unwrap().unwrap();
    assert_eq!(
        (k.created_by.as_str(), k.status),
        ("", TaskStatus::Finished)
    );
    assert_eq!(s.policy_epoch().await.unwrap(), 0);
    drop(s);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_identity_contract() {
    contract(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_identity_contract() {
    contract(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_identity_contract() {
    contract(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_old_api_keys_migrate() {
    old_api_keys_migrate(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_old_api_keys_migrate() {
    old_api_keys_migrate(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_old_api_keys_migrate() {
    old_api_keys_migrate(Backend::Postgres).await;
}

fn key(id: &str, created_by: &str) -> KeyRow {
    KeyRow {
        created_by: created_by.into(),
        ..common::key(id)
    }
}

//! The store contract, written once and run on every backend against the real servers:
//! SQLite, MariaDB (127.0.0.1:3306) and PostgreSQL (127.0.0.1:5432). A server that cannot
//! be reached fails its test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::key;
use dkms_store::testdb::TestDb;
use dkms_store::{
    Backend, KeyRow, KeyTaskRow, NODE_ACTIVE, NodeGroupRow, Reservation, SignRow, Store,
    StoreError, TaskStatus,
};

fn sign(id: &str, key_id: &str) -> SignRow {
    SignRow {
        instance_id: id.into(),
        key_id: key_id.into(),
        digest: "00".repeat(32),
        status: TaskStatus::Init,
        signature: None,
        signers: vec![],
        error_code: None,
        error_message: None,
        derivation_path: Some("m/44/60/0/0/7".into()),
        created_at: 5,
    }
}

async fn nodes_join_once(s: &Store) {
    s.insert_node("n1", "h", 1).await.unwrap();
    assert!(matches!(
        s.insert_node("n1", "h", 1).await,
        Err(StoreError::Conflict)
    ));
    assert!(!s.activate_node("n1", "wrong", "sk", "ek", 2).await.unwrap());
    assert!(s.set_join_token("n1", "h2", 2).await.unwrap());
    assert!(!s.activate_node("n1", "h", "sk", "ek", 2).await.unwrap());
    assert!(s.activate_node("n1", "h2", "sk", "ek", 3).await.unwrap());
    assert!(!s.activate_node("n1", "h2", "sk2", "ek2", 4).await.unwrap());
    assert!(
        !s.set_join_token("n1", "h3", 5).await.unwrap(),
        "joined nodes get no new token"
    );
    let n = s.get_node("n1").await.unwrap().unwrap();
    assert_eq!(n.status, NODE_ACTIVE);
    assert_eq!(n.signing_key.as_deref(), Some("sk"));
    assert_eq!(n.encryption_key.as_deref(), Some("ek"));
    assert_eq!(n.join_token_hash, None);
    s.insert_node("n0", "h", 0).await.unwrap();
    let all: Vec<String> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.tag)
        .collect();
    assert_eq!(all, vec!["n0", "n1"]);
    assert!(s.get_node("nope").await.unwrap().is_none());
}

async fn terminal_states_stick(s: &Store) {
    s.insert_key(&key("k1")).await.unwrap();
    assert!(matches!(
        s.insert_key(&key("k1")).await,
        Err(StoreError::Conflict)
    ));
    assert!(s.start_key("k1", 2).await.unwrap());
    assert!(!s.start_key("k1", 2).await.unwrap());
    assert!(
        s.finish_key("k1", "02ab", Some("0xabc"), Some(&"cc".repeat(32)), 3)
            .await
            .unwrap()
    );
    assert!(!s.fail_key("k1", "X", "late failure", 4).await.unwrap());
    let k = s.get_key("k1").await.unwrap().unwrap();
    assert_eq!(k.status, TaskStatus::Finished);
    assert_eq!(k.participants, vec!["a", "b", "c"]);
    assert_eq!((k.threshold, k.total_shares), (2, 3));
    assert_eq!(k.public_key.as_deref(), Some("02ab"));
    assert_eq!(k.address.as_deref(), Some("0xabc"));
    assert_eq!(k.origin, dkms_store::ORIGIN_GENERATED);
    assert_eq!(s.get_chain_code("k1").await.unwrap(), Some("cc".repeat(32)));
    assert_eq!(s.get_chain_code("nope").await.unwrap(), None);
    let mut imported = key("k-imported");
    imported.origin = dkms_store::ORIGIN_IMPORTED.into();
    s.insert_key(&imported).await.unwrap();
    assert!(
        s.finish_key("k-imported", "03ab", None, None, 2)
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_key("k-imported").await.unwrap().unwrap().origin,
        dkms_store::ORIGIN_IMPORTED
    );

    s.insert_sign(&sign("s1", "k1")).await.unwrap();
    assert!(
        s.start_sign("s1", &["a".into(), "b".into()], 6)
            .await
            .unwrap()
    );
    assert!(
        s.fail_sign("s1", "NODE_UNAVAILABLE", "gone", 7)
            .await
            .unwrap()
    );
    assert!(!s.finish_sign("s1", "ff", 8).await.unwrap());
    let got = s.get_sign("s1").await.unwrap().unwrap();
    assert_eq!(got.status, TaskStatus::Failed);
    assert_eq!(got.signers, vec!["a", "b"]);
    assert_eq!(got.error_code.as_deref(), Some("NODE_UNAVAILABLE"));
    assert_eq!(got.derivation_path.as_deref(), Some("m/44/60/0/0/7"));
    assert!(s.get_sign("nope").await.unwrap().is_none());
    // A signing task must name an existing key.
    assert!(s.insert_sign(&sign("s2", "no-such-key")).await.is_err());
}

async fn concurrent_ends_have_one_winner(s: &Store) {
    for i in 0..5 {
        let id = format!("race{i}");
        s.insert_key(&key(&id)).await.unwrap();
        let (a, b) = tokio::join!(
            s.finish_key(&id, "02", None, None, 10),
            s.fail_key(&id, "TIMEOUT", "late", 10)
        );
        assert!(a.unwrap() ^ b.unwrap(), "exactly one end wins");
    }
}

/// Two gateways on one database: the tasks of the one whose heartbeat lapsed are ended
/// once, by whichever survivor sweeps first; running tasks of live gateways, finished
/// tasks and signings waiting for approvers are left alone; a refresh's hold on its key
/// is released with it, so the key can be refreshed again and the dead task cannot commit.
async fn tasks_of_a_stopped_gateway_end_once(dead: &Store, live: &Store, third: &Store) {
    dead.heartbeat(100).await.unwrap();
    live.heartbeat(100).await.unwrap();
    third.heartbeat(100).await.unwrap();
    assert_eq!(dead.live_gateways(100).await.unwrap().len(), 3);

    dead.insert_key(&key("orphan")).await.unwrap();
    assert!(dead.start_key("orphan", 101).await.unwrap());
    dead.insert_key(&key("orphan-init")).await.unwrap();
    dead.insert_key(&key("done")).await.unwrap();
    dead.finish_key("done", "02", None, None, 102)
        .await
        .unwrap();
    live.insert_key(&key("alive")).await.unwrap();
    dead.insert_sign(&sign("s-dead", "done")).await.unwrap();
    live.insert_sign(&sign("s-live", "done")).await.unwrap();
    // A task waiting for approvers waits for people, not for a process.
    let mut waiting = sign("s-waiting", "done");
    waiting.status = TaskStatus::PendingApproval;
    dead.insert_sign(&waiting).await.unwrap();
    let refresh = KeyTaskRow {
        instance_id: "t-dead".into(),
        key_id: "done".into(),
        kind: "REFRESH".into(),
        status: TaskStatus::Init,
        error_code: None,
        error_message: None,
        created_at: 103,
    };
    assert!(dead.begin_refresh(&refresh, 103).await.unwrap());

    // Nothing is orphaned while every heartbeat is within the lease.
    let none = live.fail_orphaned(90, "GATEWAY_LOST", |_| "x".into(), 104);
    assert!(none.await.unwrap().is_empty());

    live.heartbeat(200).await.unwrap();
    third.heartbeat(200).await.unwrap();
    let msg = |g: Option<&str>| format!("gone: {}", g.unwrap_or("?"));
    let (a, b) = tokio::join!(
        live.fail_orphaned(150, "GATEWAY_LOST", msg, 201),
        third.fail_orphaned(150, "GATEWAY_LOST", msg, 201)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids = |v: &[(String, Option<String>)], w: &[(String, Option<String>)]| {
        let mut all: Vec<String> = v.iter().chain(w).map(|(id, _)| id.clone()).collect();
        all.sort();
        all
    };
    assert_eq!(
        ids(&a.keys, &b.keys),
        ["orphan", "orphan-init"],
        "each ended once"
    );
    assert_eq!(ids(&a.signs, &b.signs), ["s-dead"]);
    assert_eq!(ids(&a.tasks, &b.tasks), ["t-dead"]);
    assert!(
        a.keys
            .iter()
            .chain(&b.keys)
            .all(|(_, g)| g.as_deref() == Some(dead.gateway_id())),
        "each names the gateway that ran it"
    );
    let k = live.get_key("orphan").await.unwrap().unwrap();
    assert_eq!(k.status, TaskStatus::Failed);
    assert_eq!(k.error_code.as_deref(), Some("GATEWAY_LOST"));
    assert_eq!(
        k.error_message.unwrap(),
        format!("gone: {}", dead.gateway_id())
    );
    assert_eq!(
        live.get_key("alive").await.unwrap().unwrap().status,
        TaskStatus::Init
    );
    assert_eq!(
        live.get_key("done").await.unwrap().unwrap().status,
        TaskStatus::Finished
    );
    assert_eq!(
        live.get_sign("s-live").await.unwrap().unwrap().status,
        TaskStatus::Init
    );
    assert_eq!(live.get_sign("s-waiting").await.unwrap().unwrap(), waiting);
    assert_eq!(
        live.get_key_task("t-dead").await.unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert!(
        !dead
            .commit_generation("done", "t-dead", 0, None, 202)
            .await
            .unwrap(),
        "a task ended for its gateway's silence cannot commit"
    );
    let again = KeyTaskRow {
        instance_id: "t-again".into(),
        ..refresh
    };
    assert!(
        live.begin_refresh(&again, 203).await.unwrap(),
        "the key is free again"
    );
    assert_eq!(
        live.release_stale_refresh_holds().await.unwrap(),
        0,
        "a running refresh keeps its key"
    );

    // The stopped gateway is forgotten once no running task names it; live ones stay.
    assert_eq!(live.forget_gateways(150).await.unwrap(), 1);
    let left: Vec<String> = live
        .live_gateways(0)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert!(left.contains(&live.gateway_id().to_owned()));
    assert!(!left.contains(&dead.gateway_id().to_owned()));
    // A gateway that was presumed dead and comes back registers again.
    dead.heartbeat(300).await.unwrap();
    assert_eq!(live.live_gateways(300).await.unwrap().len(), 1);
}

async fn api_keys(s: &Store) {
    assert_eq!(s.count_api_keys().await.unwrap(), 0);
    let admin = |id: &str| dkms_store::ApiKeyRow {
        id: id.into(),
        name: "bootstrap".into(),
        roles: vec!["admin".into()],
        groups: vec![],
        owner: None,
        created_at: 1,
        expires_at: None,
        last_used_at: None,
        revoked: false,
    };
    s.insert_api_key(&admin("id1"), "hash1").await.unwrap();
    assert!(matches!(
        s.insert_api_key(&admin("id2"), "hash1").await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.count_api_keys().await.unwrap(), 1);
    let k = s.find_api_key("hash1").await.unwrap().unwrap();
    assert_eq!(
        (k.id.as_str(), k.roles.as_slice(), k.revoked),
        ("id1", &["admin".to_string()][..], false)
    );
    assert!(s.find_api_key("other").await.unwrap().is_none());
}

async fn idempotency(s: &Store) {
    let r = s
        .reserve_idempotent("p", "k", "sign", "h", 10, 0)
        .await
        .unwrap();
    assert_eq!(r, Reservation::Reserved);
    match s
        .reserve_idempotent("p", "k", "sign", "h", 11, 0)
        .await
        .unwrap()
    {
        Reservation::Existing(e) => assert_eq!(e.status_code, 0),
        other => panic!("{other:?}"),
    }
    s.complete_idempotent("p", "k", 200, "{}").await.unwrap();
    match s
        .reserve_idempotent("p", "k", "sign", "h2", 12, 0)
        .await
        .unwrap()
    {
        Reservation::Existing(e) => {
            assert_eq!(
                (e.status_code, e.request_hash.as_str(), e.response.as_str()),
                (200, "h", "{}")
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.reserve_idempotent("q", "k", "sign", "h", 12, 0)
            .await
            .unwrap(),
        Reservation::Reserved,
        "another principal has its own key space"
    );
    assert_eq!(
        s.reserve_idempotent("p", "k", "sign", "h", 30, 20)
            .await
            .unwrap(),
        Reservation::Reserved,
        "an expired record is replaced"
    );
    s.release_idempotent("p", "k").await.unwrap();
    assert_eq!(
        s.reserve_idempotent("p", "k", "sign", "h", 31, 20)
            .await
            .unwrap(),
        Reservation::Reserved
    );
}

async fn concurrent_reservations_have_one_winner(s: &Store) {
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.reserve_idempotent("p", "same", "gen", "h", 100, 0).await
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(Reservation::Reserved) => reserved += 1,
            Ok(Reservation::Existing(_)) => {}
            // SQLite may report a busy writer under contention; that is a refusal, not a second winner.
            Err(StoreError::Db(_)) if s.backend() == Backend::Sqlite => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(reserved, 1);
}

async fn key_lifecycle_and_listing(s: &Store) {
    use dkms_store::{
        KeyFilter, STATE_DELETED, STATE_DISABLED, STATE_ENABLED, STATE_PENDING_DELETION,
    };
    use std::collections::BTreeMap;
    for i in 0..7 {
        let mut k = key(&format!("list{i}"));
        k.created_at = 1000 + i64::from(i / 2); // pairs share a timestamp: the cursor must break ties
        s.insert_key(&k).await.unwrap();
    }
    s.finish_key("list6", "02", None, None, 2000).await.unwrap();
    // Pages of 3, newest first, nothing repeated or skipped.
    let filter = KeyFilter {
        state: Some(STATE_ENABLED.into()),
        ..KeyFilter::default()
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_keys(&filter, after.clone(), 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|k| (k.created_at, k.key_id.clone()));
        seen.extend(page.into_iter().map(|k| k.key_id));
    }
    let list: Vec<&String> = seen.iter().filter(|k| k.starts_with("list")).collect();
    assert_eq!(list.len(), 7, "{seen:?}");
    assert_eq!(list[0], "list6");
    let finished = KeyFilter {
        status: Some(TaskStatus::Finished),
        ..KeyFilter::default()
    };
    let f: Vec<String> = s
        .list_keys(&finished, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert!(f.contains(&"list6".to_string()) && !f.contains(&"list5".to_string()));

    // Labels and description.
    let labels: BTreeMap<String, String> = [
        ("env".to_string(), "prod".to_string()),
        ("team".to_string(), "pay".to_string()),
    ]
    .into();
    assert!(
        s.update_key_metadata("list3", Some(&labels), Some("hot wallet"), 5)
            .await
            .unwrap()
    );
    assert!(
        !s.update_key_metadata("nope", Some(&labels), None, 5)
            .await
            .unwrap()
    );
    assert_eq!(s.get_labels("list3").await.unwrap(), labels);
    assert_eq!(
        s.get_key("list3").await.unwrap().unwrap().description,
        "hot wallet"
    );
    let by_label = KeyFilter {
        label: Some(("env".into(), "prod".into())),
        ..KeyFilter::default()
    };
    let l: Vec<String> = s
        .list_keys(&by_label, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(l, vec!["list3"]);
    let fewer: BTreeMap<String, String> = [("env".to_string(), "dev".to_string())].into();
    s.update_key_metadata("list3", Some(&fewer), None, 6)
        .await
        .unwrap();
    assert_eq!(s.get_labels("list3").await.unwrap(), fewer);

    // States move only along allowed edges.
    assert!(
        s.set_key_state("list2", &[STATE_ENABLED], STATE_DISABLED, None, 7)
            .await
            .unwrap()
    );
    assert!(
        !s.set_key_state("list2", &[STATE_ENABLED], STATE_DISABLED, None, 7)
            .await
            .unwrap()
    );
    assert!(
        s.set_key_state(
            "list2",
            &[STATE_ENABLED, STATE_DISABLED],
            STATE_PENDING_DELETION,
            Some(100),
            8
        )
        .await
        .unwrap()
    );
    assert!(
        s.set_key_state(
            "list1",
            &[STATE_ENABLED, STATE_DISABLED],
            STATE_PENDING_DELETION,
            Some(50),
            8
        )
        .await
        .unwrap()
    );
    let due: Vec<String> = s
        .due_deletions(99)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(due, vec!["list1"]);
    assert!(
        s.set_key_state("list1", &[STATE_PENDING_DELETION], STATE_DISABLED, None, 9)
            .await
            .unwrap()
    );
    assert!(
        s.due_deletions(1000)
            .await
            .unwrap()
            .iter()
            .all(|k| k.key_id != "list1")
    );
    assert!(
        s.set_key_state(
            "list2",
            &[STATE_PENDING_DELETION],
            STATE_DELETED,
            Some(100),
            10
        )
        .await
        .unwrap()
    );
    let k2 = s.get_key("list2").await.unwrap().unwrap();
    assert_eq!(
        (k2.state.as_str(), k2.deletion_at),
        (STATE_DELETED, Some(100))
    );
    assert!(
        !s.update_key_metadata("list2", None, Some("x"), 11)
            .await
            .unwrap(),
        "deleted keys are final"
    );
}

async fn maintenance_tasks_and_generations(s: &Store) {
    let mut k = key("gen1");
    k.status = TaskStatus::Finished;
    s.insert_key(&k).await.unwrap();
    let task = |id: &str, kind: &str| KeyTaskRow {
        instance_id: id.into(),
        key_id: "gen1".into(),
        kind: kind.into(),
        status: TaskStatus::Init,
        error_code: None,
        error_message: None,
        created_at: 3,
    };
    assert!(s.begin_refresh(&task("r1", "REFRESH"), 3).await.unwrap());
    assert!(
        !s.begin_refresh(&task("r2", "RECOVER"), 3).await.unwrap(),
        "one maintenance task per key at a time"
    );
    assert!(s.get_key_task("r2").await.unwrap().is_none());
    assert!(s.start_key_task("r1", 4).await.unwrap());
    assert!(
        !s.commit_generation("gen1", "r2", 0, None, 5).await.unwrap(),
        "only the refresh that holds the key commits"
    );
    assert!(s.commit_generation("gen1", "r1", 0, None, 5).await.unwrap());
    assert!(
        !s.commit_generation("gen1", "r1", 0, None, 5).await.unwrap(),
        "a generation commits once"
    );
    s.end_key_task("r1", None, 6).await.unwrap();
    assert_eq!(
        s.get_key_task("r1").await.unwrap().unwrap().status,
        TaskStatus::Finished
    );
    let got = s.get_key("gen1").await.unwrap().unwrap();
    assert_eq!(got.generation, 1);
    assert_eq!(got.participants, ["a", "b", "c"]);

    // A recovery commits a new member list with the next generation.
    assert!(s.begin_refresh(&task("r3", "RECOVER"), 7).await.unwrap());
    let members = vec!["a".to_owned(), "d".to_owned(), "c".to_owned()];
    assert!(
        s.commit_generation("gen1", "r3", 1, Some(&members), 8)
            .await
            .unwrap()
    );
    s.end_key_task("r3", Some(("NODE_UNAVAILABLE", "x")), 9)
        .await
        .unwrap();
    let got = s.get_key("gen1").await.unwrap().unwrap();
    assert_eq!((got.generation, got.participants), (2, members));
    let t = s.get_key_task("r3").await.unwrap().unwrap();
    assert_eq!(
        (t.status, t.kind.as_str(), t.error_code.as_deref()),
        (TaskStatus::Failed, "RECOVER", Some("NODE_UNAVAILABLE"))
    );
    assert!(s.begin_refresh(&task("r4", "REFRESH"), 10).await.unwrap());
}

async fn nodes_can_be_reset(s: &Store) {
    s.insert_node("reset-me", "h1", 1).await.unwrap();
    assert!(
        !s.reset_node("reset-me", "h2", 2).await.unwrap(),
        "a node that never joined has nothing to reset"
    );
    assert!(
        s.activate_node("reset-me", "h1", "sk", "ek", 3)
            .await
            .unwrap()
    );
    assert!(s.reset_node("reset-me", "h2", 4).await.unwrap());
    let n = s.get_node("reset-me").await.unwrap().unwrap();
    assert_ne!(n.status, NODE_ACTIVE);
    assert_eq!((n.signing_key, n.encryption_key), (None, None));
    assert!(
        !s.activate_node("reset-me", "h1", "sk2", "ek2", 5)
            .await
            .unwrap(),
        "the old token is dead"
    );
    assert!(
        s.activate_node("reset-me", "h2", "sk2", "ek2", 5)
            .await
            .unwrap()
    );
    let n = s.get_node("reset-me").await.unwrap().unwrap();
    assert_eq!(n.signing_key.as_deref(), Some("sk2"));
    assert!(!s.reset_node("nobody", "h3", 6).await.unwrap());
}

fn group(name: &str, members: &[&str], threshold: u8, min_regions: u8) -> NodeGroupRow {
    NodeGroupRow {
        name: name.into(),
        threshold,
        total_shares: members.len() as u8,
        min_regions,
        description: format!("{name} group"),
        members: members.iter().map(|m| m.to_string()).collect(),
        created_at: 10,
        updated_at: 10,
    }
}

fn group_key(id: &str, group: &str) -> KeyRow {
    KeyRow {
        node_group: Some(group.into()),
        participants: vec!["g1".into(), "g2".into(), "g3".into()],
        ..key(id)
    }
}

async fn key_ids(s: &Store, filter: &dkms_store::KeyFilter) -> Vec<String> {
    s.list_keys(filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect()
}

async fn node_groups_and_regions(s: &Store) {
    use dkms_store::{KeyFilter, STATE_DELETED, STATE_ENABLED, STATE_PENDING_DELETION};
    for t in ["g1", "g2", "g3"] {
        s.insert_node(t, "h", 1).await.unwrap();
    }
    // Regions: empty until set, settable back to empty, unknown nodes refused.
    assert_eq!(s.get_node("g1").await.unwrap().unwrap().region, "");
    assert!(s.set_node_region("g1", "eu-west", 2).await.unwrap());
    assert!(s.set_node_region("g2", "us-east", 2).await.unwrap());
    assert!(s.set_node_region("g3", "eu-west", 2).await.unwrap());
    assert!(
        s.set_node_region("g3", "eu-west", 2).await.unwrap(),
        "same value again"
    );
    assert!(!s.set_node_region("nobody", "eu", 2).await.unwrap());
    let regions: Vec<(String, String)> = s
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.tag.starts_with('g'))
        .map(|n| (n.tag, n.region))
        .collect();
    assert_eq!(
        regions,
        [("g1", "eu-west"), ("g2", "us-east"), ("g3", "eu-west")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // Create: members keep their order; names are unique; all or nothing.
    let treasury = group("treasury", &["g3", "g1", "g2"], 2, 2);
    s.insert_node_group(&treasury).await.unwrap();
    assert_eq!(
        s.get_node_group("treasury").await.unwrap().as_ref(),
        Some(&treasury)
    );
    assert!(matches!(
        s.insert_node_group(&group("treasury", &["g1", "g2"], 2, 0))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.get_node_group("treasury").await.unwrap().unwrap(),
        treasury
    );
    match s
        .insert_node_group(&group("broken", &["g1", "ghost"], 2, 0))
        .await
    {
        Err(StoreError::UnknownNode(t)) => assert_eq!(t, "ghost"),
        other => panic!("{other:?}"),
    }
    assert!(
        s.get_node_group("broken").await.unwrap().is_none(),
        "a failed create leaves nothing behind"
    );
    let ops = group("ops", &["g1", "g2"], 2, 0);
    s.insert_node_group(&ops).await.unwrap();
    let names: Vec<String> = s
        .list_node_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["ops", "treasury"]);
    assert!(s.get_node_group("nope").await.unwrap().is_none());

    // Update replaces everything but created_at, atomically.
    let mut changed = group("ops", &["g2", "g3", "g1"], 3, 2);
    changed.description = "changed".into();
    changed.updated_at = 20;
    assert!(s.update_node_group(&changed).await.unwrap());
    let got = s.get_node_group("ops").await.unwrap().unwrap();
    assert_eq!(
        got,
        NodeGroupRow {
            created_at: 10,
            ..changed.clone()
        }
    );
    assert!(
        !s.update_node_group(&group("nope", &["g1", "g2"], 2, 0))
            .await
            .unwrap()
    );
    let mut bad = group("ops", &["g1", "ghost"], 2, 0);
    bad.updated_at = 30;
    assert!(matches!(
        s.update_node_group(&bad).await,
        Err(StoreError::UnknownNode(_))
    ));
    assert_eq!(
        s.get_node_group("ops").await.unwrap().unwrap(),
        got,
        "a failed update changes nothing"
    );

    // Keys remember their group; a key cannot name a missing group.
    s.insert_key(&group_key("gk1", "treasury")).await.unwrap();
    s.insert_key(&group_key("gk2", "ops")).await.unwrap();
    assert_eq!(
        s.get_key("gk1")
            .await
            .unwrap()
            .unwrap()
            .node_group
            .as_deref(),
        Some("treasury")
    );
    assert_eq!(s.get_key("k1").await.unwrap().unwrap().node_group, None);
    match s.insert_key(&group_key("gk-orphan", "nope")).await {
        Err(StoreError::GroupNotFound(g)) => assert_eq!(g, "nope"),
        other => panic!("{other:?}"),
    }
    assert!(
        s.get_key("gk-orphan").await.unwrap().is_none(),
        "rolled back"
    );

    // The group filter, alone and with the others.
    let by_group = |g: &str| KeyFilter {
        node_group: Some(g.into()),
        ..KeyFilter::default()
    };
    assert_eq!(key_ids(s, &by_group("treasury")).await, ["gk1"]);
    assert_eq!(key_ids(s, &by_group("ops")).await, ["gk2"]);
    assert!(key_ids(s, &by_group("nope")).await.is_empty());
    s.finish_key("gk1", "02", None, None, 5).await.unwrap();
    let finished_in_treasury = KeyFilter {
        status: Some(TaskStatus::Finished),
        ..by_group("treasury")
    };
    assert_eq!(key_ids(s, &finished_in_treasury).await, ["gk1"]);
    let finished_in_ops = KeyFilter {
        status: Some(TaskStatus::Finished),
        ..by_group("ops")
    };
    assert!(key_ids(s, &finished_in_ops).await.is_empty());

    // Delete is refused while a key uses the group, and then changes nothing.
    match s.delete_node_group("treasury", 40).await {
        Err(StoreError::GroupInUse {
            group,
            count,
            examples,
        }) => {
            assert_eq!((group.as_str(), count), ("treasury", 1));
            assert_eq!(examples, ["gk1"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.get_node_group("treasury").await.unwrap().unwrap(),
        treasury
    );
    // A key pending deletion still holds shares; a deleted one does not.
    assert!(
        s.set_key_state(
            "gk1",
            &[STATE_ENABLED],
            STATE_PENDING_DELETION,
            Some(50),
            41
        )
        .await
        .unwrap()
    );
    assert!(matches!(
        s.delete_node_group("treasury", 42).await,
        Err(StoreError::GroupInUse { .. })
    ));
    assert!(
        s.set_key_state(
            "gk1",
            &[STATE_PENDING_DELETION],
            STATE_DELETED,
            Some(50),
            43
        )
        .await
        .unwrap()
    );
    assert!(s.delete_node_group("treasury", 44).await.unwrap());
    assert!(s.get_node_group("treasury").await.unwrap().is_none());
    assert!(!s.delete_node_group("treasury", 45).await.unwrap());
    assert_eq!(
        s.get_key("gk1")
            .await
            .unwrap()
            .unwrap()
            .node_group
            .as_deref(),
        Some("treasury"),
        "a deleted key keeps the name"
    );
    // A generation that failed left no shares and does not hold the group.
    s.fail_key("gk2", "TIMEOUT", "gone", 46).await.unwrap();
    assert!(s.delete_node_group("ops", 47).await.unwrap());
    // The name is free again.
    s.insert_node_group(&treasury).await.unwrap();

    // A deletion racing a key generation: exactly one of them wins, never both.
    for i in 0..5 {
        let name = format!("race{i}");
        s.insert_node_group(&group(&name, &["g1", "g2"], 2, 0))
            .await
            .unwrap();
        let id = format!("race-key{i}");
        let k = group_key(&id, &name);
        let (del, ins) = tokio::join!(s.delete_node_group(&name, 50), s.insert_key(&k));
        match (del, ins) {
            (Ok(true), Err(StoreError::GroupNotFound(_))) => {
                assert!(s.get_key(&id).await.unwrap().is_none())
            }
            (Err(StoreError::GroupInUse { .. }), Ok(())) => {
                assert!(s.get_node_group(&name).await.unwrap().is_some())
            }
            // SQLite may report a busy writer under contention: a refusal, not a second winner.
            (Err(StoreError::Db(_)), _) | (_, Err(StoreError::Db(_)))
                if s.backend() == Backend::Sqlite => {}
            other => panic!("{other:?}"),
        }
    }
}

async fn exportable_keys_backups_and_task_results(s: &Store) {
    use dkms_store::{BackupGroupRow, KeyBackupRow};
    let mut k = key("exp1");
    k.exportable = true;
    k.status = TaskStatus::Finished;
    s.insert_key(&k).await.unwrap();
    s.insert_key(&key("exp2")).await.unwrap();
    assert!(s.get_key("exp1").await.unwrap().unwrap().exportable);
    assert!(!s.get_key("exp2").await.unwrap().unwrap().exportable);

    // A task's public result, absent until set.
    let task = KeyTaskRow {
        instance_id: "x1".into(),
        key_id: "exp1".into(),
        kind: "EXPORT".into(),
        status: TaskStatus::Init,
        error_code: None,
        error_message: None,
        created_at: 3,
    };
    assert!(s.begin_refresh(&task, 3).await.unwrap());
    assert_eq!(s.get_key_task_result("x1").await.unwrap(), None);
    let big = format!("{{\"shares\":\"{}\"}}", "ab".repeat(100_000));
    s.set_key_task_result("x1", &big).await.unwrap();
    s.end_key_task("x1", None, 4).await.unwrap();
    assert_eq!(s.get_key_task_result("x1").await.unwrap(), Some(big));
    assert_eq!(s.get_key_task_result("nope").await.unwrap(), None);

    // Backup groups: unique names, listed by name, not deletable while a backup uses them.
    let group = |name: &str| BackupGroupRow {
        name: name.into(),
        custodians: "[]".into(),
        created_at: 5,
    };
    s.insert_backup_group(&group("vault-b")).await.unwrap();
    s.insert_backup_group(&group("vault-a")).await.unwrap();
    assert!(matches!(
        s.insert_backup_group(&group("vault-a")).await,
        Err(StoreError::Conflict)
    ));
    let names: Vec<String> = s
        .list_backup_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["vault-a", "vault-b"]);
    let backup = |generation: u32| KeyBackupRow {
        key_id: "exp1".into(),
        backup_group: "vault-a".into(),
        generation,
        shares: format!("[{generation}]"),
        created_at: 6,
    };
    assert_eq!(s.get_key_backup("exp1", "vault-a").await.unwrap(), None);
    s.put_key_backup(&backup(0)).await.unwrap();
    s.put_key_backup(&backup(3)).await.unwrap();
    assert_eq!(
        s.get_key_backup("exp1", "vault-a").await.unwrap(),
        Some(backup(3)),
        "a new backup replaces the old one"
    );
    assert!(matches!(
        s.delete_backup_group("vault-a").await,
        Err(StoreError::Conflict)
    ));
    assert!(s.delete_backup_group("vault-b").await.unwrap());
    assert!(!s.delete_backup_group("vault-b").await.unwrap());
    assert!(s.get_backup_group("vault-b").await.unwrap().is_none());
    assert!(s.get_backup_group("vault-a").await.unwrap().is_some());
}

async fn contract(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create(backend, dir.path()).await.unwrap();
    let s = Store::connect(&db.url).await.unwrap();
    assert_eq!(s.backend(), backend);
    // Migrations are applied once; connecting again is a no-op.
    let again = Store::connect(&db.url).await.unwrap();
    drop(again);
    nodes_join_once(&s).await;
    terminal_states_stick(&s).await;
    concurrent_ends_have_one_winner(&s).await;
    let (dead, third) = (
        Store::connect(&db.url).await.unwrap(),
        Store::connect(&db.url).await.unwrap(),
    );
    tasks_of_a_stopped_gateway_end_once(&dead, &s, &third).await;
    // A gateway that died between ending a refresh task and releasing its key left the
    // hold behind; the hourly sweep releases it.
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE key_tasks SET status = 'FAILED' WHERE instance_id = 't-again'")
        .execute(&raw)
        .await
        .unwrap();
    raw.close().await;
    assert_eq!(s.release_stale_refresh_holds().await.unwrap(), 1);
    let next = KeyTaskRow {
        instance_id: "t-next".into(),
        key_id: "done".into(),
        kind: "REFRESH".into(),
        status: TaskStatus::Init,
        error_code: None,
        error_message: None,
        created_at: 206,
    };
    assert!(
        s.begin_refresh(&next, 206).await.unwrap(),
        "the key is free"
    );
    api_keys(&s).await;
    idempotency(&s).await;
    concurrent_reservations_have_one_winner(&s).await;
    key_lifecycle_and_listing(&s).await;
    maintenance_tasks_and_generations(&s).await;
    nodes_can_be_reset(&s).await;
    node_groups_and_regions(&s).await;
    exportable_keys_backups_and_task_results(&s).await;
    drop(s);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_contract() {
    contract(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_store_contract() {
    contract(Backend::MySql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_contract() {
    contract(Backend::Postgres).await;
}

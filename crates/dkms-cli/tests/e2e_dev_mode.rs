//! `dkms dev`, the all-in-one mode: one command runs the gateway and three node
//! processes, writes the admin token, starts a further node on createPod, and keeps every
//! key usable across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use dkms_testkit::dkms_client::Client;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dev {
    child: Child,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev(dir: &std::path::Path, port: u16) -> Dev {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("dev.log"))
        .unwrap();
    let child = Command::new(BIN)
        .arg("dev")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Dev { child }
}

/// Stops `dkms dev` the way Ctrl-C would, and waits for it to exit.
fn stop_dev(mut dev: Dev) {
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(dev.child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = dev.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("dkms dev did not stop on SIGINT");
}

async fn wait_nodes(c: &Client, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(h) = c.health().await
            && h.connected_nodes.len() >= n
        {
            return;
        }
        assert!(Instant::now() < deadline, "nodes did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn client_for(dir: &std::path::Path, port: u16) -> Client {
    let token_file = dir.join("data").join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !token_file.exists() {
        assert!(Instant::now() < deadline, "admin.token was not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token must be private");
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    Client::new(&format!("http://127.0.0.1:{port}"), token.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_runs_everything_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dev = start_dev(dir.path(), port);
    let c = client_for(dir.path(), port).await;
    wait_nodes(&c, 3).await;
    let log = std::fs::read_to_string(dir.path().join("dev.log")).unwrap();
    assert!(
        log.contains("admin.token"),
        "the log says where the token is"
    );
    let pods = c.list_pods().await.unwrap();
    assert_eq!(
        pods.iter().map(|p| p.node_tag.as_str()).collect::<Vec<_>>(),
        vec!["node1", "node2", "node3"]
    );

    let key_id = c
        .generate_key(&keygen_request(&["node1", "node2", "node3"], 2))
        .await
        .unwrap();
    let key = c.wait_key(&key_id, WAIT).await.unwrap();
    assert_eq!(key.status, "FINISHED", "{key:?}");
    let d = digest("dev 1");
    verify_independently(
        &key,
        &d,
        &c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap(),
    );

    // createPod starts a further local node.
    assert_eq!(c.create_pod("node4").await.unwrap(), "node4");
    wait_nodes(&c, 4).await;

    stop_dev(dev);
    assert!(c.health().await.is_err(), "the gateway is down");

    let _dev = start_dev(dir.path(), port);
    let c = client_for(dir.path(), port).await;
    wait_nodes(&c, 4).await;
    let again = c.get_key(&key_id).await.unwrap();
    assert_eq!(again.public_key, key.public_key);
    let d = digest("dev 2");
    verify_independently(
        &key,
        &d,
        &c.sign(&key_id, &hex::encode(d), WAIT).await.unwrap(),
    );
    // The new node takes part in keys after the restart too.
    let k2 = c
        .generate_key(&keygen_request(&["node4", "node1"], 2))
        .await
        .unwrap();
    let k2 = c.wait_key(&k2, WAIT).await.unwrap();
    assert_eq!(k2.status, "FINISHED");
}

//! The dkms gateway: the public REST API, bearer-token authentication, durable tasks,
//! and the relay that carries sealed protocol messages between nodes. It holds no key
//! material: only public keys, task records and hashes of tokens.

pub mod api;
pub mod auth;
pub mod authz;
pub mod error;
pub mod extract;
pub mod limits;
pub mod orchestrator;
pub mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Gateway settings (the CLI fills them from its config file and `DKMS_*` variables).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Address of the REST API and the node link.
    pub listen: SocketAddr,
    /// sqlx URL of the metadata store, e.g. `sqlite:///var/lib/dkms/gateway.db`.
    pub database_url: String,
    /// Where the bootstrap admin token is written when the store has no API key yet.
    pub admin_token_file: PathBuf,
    /// Deadline of one key-generation session.
    pub keygen_timeout: Duration,
    /// Deadline of one signing session.
    pub sign_timeout: Duration,
    /// Protocol sessions run at once; more wait their turn.
    pub max_running_sessions: usize,
    /// Tasks accepted but not finished; past this the API answers 503.
    pub max_open_tasks: usize,
    /// Length of a "day" of the scheduled-deletion waiting period. 24 h; only tests
    /// shorten it.
    pub deletion_day: Duration,
    /// How often due deletions and expired approvals are looked for.
    pub reaper_interval: Duration,
    /// How long a login session token lives.
    pub session_ttl: Duration,
    /// Failed logins in a row that lock an account, and for how long.
    pub max_failed_logins: u32,
    pub login_lockout: Duration,
    /// How long a request that needs approvals waits for them before it is REJECTED.
    pub approval_ttl: Duration,
    /// A gateway that has not renewed its heartbeat for this long is presumed dead, and
    /// the tasks it was running are ended FAILED by the gateways that remain.
    pub lease: Duration,
}

impl GatewayConfig {
    pub fn with_defaults(
        listen: SocketAddr,
        database_url: String,
        admin_token_file: PathBuf,
    ) -> Self {
        GatewayConfig {
            listen,
            database_url,
            admin_token_file,
            keygen_timeout: Duration::from_secs(180),
            sign_timeout: Duration::from_secs(30),
            max_running_sessions: 64,
            max_open_tasks: 4096,
            deletion_day: Duration::from_secs(24 * 3600),
            reaper_interval: Duration::from_secs(10),
            session_ttl: Duration::from_secs(8 * 3600),
            max_failed_logins: 5,
            login_lockout: Duration::from_secs(15 * 60),
            approval_ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(15),
        }
    }
}

/// Injected wall clock, so expiry logic is testable.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Starts a node process for a newly created pod (all-in-one mode only).
pub trait PodLauncher: Send + Sync {
    fn launch(&self, tag: &str, join_token: &str) -> Result<(), String>;
}

/// Long-poll waiters of task ids, woken when a task changes state.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    pub fn get(&self, id: &str) -> Arc<Notify> {
        match self.map.lock() {
            Ok(mut m) => m.entry(id.to_owned()).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    pub fn wake(&self, id: &str) {
        let n = match self.map.lock() {
            Ok(mut m) => m.remove(id),
            Err(_) => None,
        };
        if let Some(n) = n {
            n.notify_waiters();
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: dkms_store::Store,
    pub hub: Arc<relay::Hub>,
    pub config: Arc<GatewayConfig>,
    pub clock: Arc<dyn Clock>,
    pub waiters: Arc<Waiters>,
    pub launcher: Option<Arc<dyn PodLauncher>>,
    /// Admission: one permit per open task.
    pub open_tasks: Arc<Semaphore>,
    /// Concurrency of running protocol sessions.
    pub sessions: Arc<Semaphore>,
    /// The compiled policy set.
    pub policies: Arc<authz::Policies>,
    /// Whether other live gateways share the database (set by the heartbeat): only then
    /// can a task end without waking this process's long polls.
    pub other_gateways: Arc<std::sync::atomic::AtomicBool>,
}

/// A gateway bound to its listener, ready to serve.
pub struct Gateway {
    pub state: AppState,
    listener: tokio::net::TcpListener,
}

impl Gateway {
    /// Opens the store, ends tasks left unfinished by a previous process, creates the
    /// bootstrap admin token if needed, and binds the listener.
    pub async fn bind(
        config: GatewayConfig,
        launcher: Option<Arc<dyn PodLauncher>>,
    ) -> Result<Gateway, StartError> {
        let store = dkms_store::Store::connect(&config.database_url)
            .await
            .map_err(|e| StartError(format!("opening the store: {e}")))?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // Registered before serving, so that no task of this process is ever taken for an
        // orphan. Tasks of an earlier process are ended by the lease sweep once its
        // heartbeat is older than the lease.
        store
            .heartbeat(clock.now_ms())
            .await
            .map_err(|e| StartError(format!("registering this gateway: {e}")))?;
        tracing::info!(gateway_id = store.gateway_id(), "gateway registered");
        if auth::bootstrap_admin(&store, &config.admin_token_file, clock.now_ms())
            .await
            .map_err(|e| StartError(format!("bootstrap admin key: {}", e.message)))?
        {
            tracing::info!(
                path = %config.admin_token_file.display(),
                "created the bootstrap admin API key; its token is in this file (mode 0600)"
            );
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError(format!("binding {}: {e}", config.listen)))?;
        let state = AppState {
            store,
            hub: Arc::new(relay::Hub::default()),
            open_tasks: Arc::new(Semaphore::new(config.max_open_tasks)),
            sessions: Arc::new(Semaphore::new(config.max_running_sessions)),
            config: Arc::new(config),
            clock,
            waiters: Arc::new(Waiters::default()),
            launcher,
            policies: Arc::new(authz::Policies::default()),
            other_gateways: Arc::default(),
        };
        Ok(Gateway { state, listener })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        orchestrator::spawn_reaper(self.state.clone());
        orchestrator::spawn_heartbeat(self.state.clone());
        let app = api::router(self.state);
        // Protocol rounds are many small frames: Nagle's algorithm would add tens of ms.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

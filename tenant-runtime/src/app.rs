//! Wiring: settings → database (migrated) → router + outbox sender + housekeeping → serving.
//!
//! [`Application::build`] binds the listener (port 0 works, for tests) and returns before
//! serving, so callers can read [`Application::local_addr`] first.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::channels::outbox::Sender;
use crate::config::Settings;
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::storage::{self, ConnectOptions, Store, now_ms};

/// Errors while starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened or migrated.
    #[error("failed to prepare the database")]
    Storage(#[from] storage::Error),
    /// The listen address could not be bound, or serving failed.
    #[error("failed to serve HTTP on {addr}")]
    Serve {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The outbox sender (its Conversation API client) could not be built.
    #[error(transparent)]
    Outbox(#[from] crate::channels::outbox::Error),
}

/// A runtime ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    state: AppState,
    sender: Sender,
}

impl Application {
    /// Connects and migrates the database and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, Error> {
        let store = Store::connect(
            &settings.database_url,
            &ConnectOptions {
                max_connections: settings.database_max_connections,
                sqlite_fsync_each_commit: settings.sqlite_fsync_each_commit,
                ..ConnectOptions::default()
            },
        )
        .await?;
        store.migrate().await?;
        Self::with_store(settings, store).await
    }

    /// Like [`Application::build`] with an already migrated store.
    pub(crate) async fn with_store(settings: Settings, store: Store) -> Result<Self, Error> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| Error::Serve {
                addr: settings.listen,
                source,
            })?;
        Self::assemble(settings, store, listener).await
    }

    /// Like [`Application::build`] on a listener bound by the caller (tests bind port 0 first
    /// so that no other process can take the port in between; `settings.listen` is ignored).
    pub async fn build_on(
        settings: Settings,
        listener: std::net::TcpListener,
    ) -> Result<Self, Error> {
        let addr = listener.local_addr().unwrap_or(settings.listen);
        let listener = listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(|source| Error::Serve { addr, source })?;
        let store = Store::connect(
            &settings.database_url,
            &ConnectOptions {
                max_connections: settings.database_max_connections,
                sqlite_fsync_each_commit: settings.sqlite_fsync_each_commit,
                ..ConnectOptions::default()
            },
        )
        .await?;
        store.migrate().await?;
        Self::assemble(settings, store, listener).await
    }

    async fn assemble(
        settings: Settings,
        store: Store,
        listener: TcpListener,
    ) -> Result<Self, Error> {
        let apps: HashMap<_, _> = settings
            .channels
            .iter()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        let apps = Arc::new(apps);
        let metrics = Arc::new(Metrics::default());
        let wake = Arc::new(Notify::new());
        let sender = Sender::new(
            store.clone(),
            apps.clone(),
            settings.outbox.clone(),
            &settings.sinch.auth_url,
            wake.clone(),
            metrics.clone(),
        )?;
        crate::http::auth::bootstrap_admin(&store, &settings.auth).await?;
        let live = Arc::new(crate::live::LiveHub::default());
        let routing = Arc::new(crate::routing::RoutingService::new(
            store.clone(),
            settings.routing.clone(),
            live.clone(),
        ));
        let state = AppState {
            store,
            auth: Arc::new(crate::http::auth::AuthState::new(&settings.auth)),
            live,
            routing,
            settings: Arc::new(settings),
            apps,
            metrics,
            outbox_wake: wake,
        };
        Ok(Self {
            listener,
            state,
            sender,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.listen)
    }

    /// The routing service of this replica.
    pub fn routing(&self) -> Arc<crate::routing::RoutingService> {
        self.state.routing.clone()
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Serves until `shutdown` resolves, with the outbox sender and housekeeping running.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = self.local_addr();
        let sender = tokio::spawn(self.sender.clone().run());
        let housekeeping = tokio::spawn(housekeeping(self.state.store.clone()));
        let live = tokio::spawn(crate::live::tail(
            self.state.store.clone(),
            self.state.live.clone(),
        ));
        let routing = tokio::spawn(self.state.routing.clone().run());
        let retention = tokio::spawn(
            crate::privacy::retention::RetentionJob::new(
                self.state.store.clone(),
                Arc::new(crate::privacy::SystemClock),
                self.state.settings.retention.clone(),
            )
            .run_forever(),
        );
        let chainer = tokio::spawn(
            crate::privacy::chainer::AuditChainer::new(self.state.store.clone()).run_forever(),
        );
        let app = router(self.state.clone());
        tracing::info!(%addr, backend = ?self.state.store.dialect(), "serving");
        let hub = self.state.live.clone();
        let shutdown = async move {
            shutdown.await;
            hub.close();
        };
        // Connect info gives the login rate limiter the peer address.
        let served = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        live.abort();
        routing.abort();
        let _ = routing.await;
        self.state.routing.release().await;
        sender.abort();
        housekeeping.abort();
        retention.abort();
        chainer.abort();
        self.state.store.close().await;
        served.map_err(|source| Error::Serve { addr, source })
    }
}

/// Periodic clean-up: forget nonces that the timestamp check covers by now.
async fn housekeeping(store: Store) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match store.purge_nonces(now_ms()).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired webhook nonces removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "nonce purge failed"),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends).
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

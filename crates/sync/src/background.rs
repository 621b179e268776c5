//! Background sync: passes on a timer, on demand and when the network comes back, on the sync task's own connection to the
//! device store (SQLite WAL lets the dose session keep writing meanwhile), so recording a dose
//! never waits for the network.

use crate::{ConnectivityWatch, DeviceClient, RetryPolicy, SyncError, sync_pass};
use dosewitness_domain::{Clock, EvidencePolicy};
use dosewitness_store::{DeviceStore, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How often and how patiently the background task syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundSyncSettings {
    /// Time between passes when nothing asks for one sooner.
    pub interval: Duration,
    /// Per-request HTTP timeout.
    pub timeout: Duration,
    /// Retries within one pass.
    pub policy: RetryPolicy,
    /// Which doses' evidence frames are uploaded (the study's setting).
    pub evidence: EvidencePolicy,
    /// How often the network interfaces are checked for a change that should trigger a pass
    /// ([`crate::ConnectivityWatch`]); `None` leaves it to the timer and `sync_now`.
    pub connectivity_poll: Option<Duration>,
}

impl Default for BackgroundSyncSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15 * 60),
            timeout: Duration::from_secs(30),
            policy: RetryPolicy::default(),
            evidence: EvidencePolicy::default(),
            connectivity_poll: Some(Duration::from_secs(5)),
        }
    }
}

/// The running background sync; dropping it stops the task after the current pass.
#[derive(Debug)]
pub struct BackgroundSync {
    wake: Arc<Notify>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    passes: watch::Receiver<u64>,
    task: Option<JoinHandle<()>>,
    /// Stops with this value.
    _connectivity: Option<ConnectivityWatch>,
}

impl BackgroundSync {
    /// Starts syncing on the current tokio runtime. `open_store` opens the task's own
    /// connection to the device store (called again after a failure to open). The first pass
    /// runs at once. Each pass's outcome is recorded in the store
    /// ([`DeviceStore::sync_status`]), which is what the app shows.
    pub fn spawn(
        open_store: impl Fn() -> Result<DeviceStore, StoreError> + Send + 'static,
        settings: BackgroundSyncSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (passes_sender, passes) = watch::channel(0u64);
        let woken = wake.clone();
        let connectivity = settings
            .connectivity_poll
            .map(|period| ConnectivityWatch::spawn(wake.clone(), period));
        let task = tokio::spawn(async move {
            let mut store: Option<DeviceStore> = None;
            loop {
                if store.is_none() {
                    match open_store() {
                        Ok(opened) => store = Some(opened),
                        Err(error) => {
                            tracing::warn!(%error, "background sync cannot open the store")
                        }
                    }
                }
                if let Some(store) = store.as_mut()
                    && let Err(error) = pass(store, &settings, clock.as_ref()).await
                {
                    tracing::warn!(%error, "background sync pass failed");
                }
                passes_sender.send_modify(|count| *count += 1);
                tokio::select! {
                    () = tokio::time::sleep(settings.interval) => {}
                    () = woken.notified() => {}
                    _ = &mut stopped => break,
                }
            }
        });
        Self {
            wake,
            stop: Some(stop),
            passes,
            task: Some(task),
            _connectivity: connectivity,
        }
    }

    /// Asks for a pass now: the user pressed "sync", or the host saw the network come back.
    /// A request during a pass starts another one right after it.
    pub fn sync_now(&self) {
        self.wake.notify_one();
    }

    /// Passes finished so far (successful or not); the UI refreshes the status when it grows.
    pub fn passes(&self) -> watch::Receiver<u64> {
        self.passes.clone()
    }

    /// Stops after the current pass and waits for the task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackgroundSync {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn pass(
    store: &mut DeviceStore,
    settings: &BackgroundSyncSettings,
    clock: &dyn Clock,
) -> Result<(), SyncError> {
    let (server_url, token) = match store.server_credential() {
        Ok(credential) => credential,
        // Not enrolled yet: nothing to sync, not an error to show.
        Err(StoreError::NotEnrolled) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let device_id = store.identity()?.device_id;
    let client = DeviceClient::new(&server_url, Some(token), settings.timeout)?;
    sync_pass(
        store,
        &client,
        device_id,
        &settings.policy,
        settings.evidence,
        || clock.now(),
    )
    .await?;
    Ok(())
}

//! Connectivity changes: a sync pass as soon as the network comes back, instead of at the next
//! timer tick. The host's network is summarised as a [`NetworkFingerprint`] (its non-loopback
//! interface addresses); [`ConnectivityWatch`] polls it and wakes the background sync when it
//! changes to an online state — a new Wi-Fi, a cable plugged in, a VPN up. Polling the interface
//! list is cheap (one `getifaddrs`), portable, and needs no privileges; the app may also call
//! [`crate::BackgroundSync::sync_now`] from the platform's own "online" event.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The host's usable network at one moment: its non-loopback interface addresses, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkFingerprint(Vec<String>);

impl NetworkFingerprint {
    /// The fingerprint of these addresses (order does not matter).
    pub fn from_addresses(addresses: impl IntoIterator<Item = String>) -> Self {
        let mut addresses: Vec<String> = addresses.into_iter().collect();
        addresses.sort();
        addresses.dedup();
        Self(addresses)
    }

    /// The host's network now. An interface list that cannot be read counts as offline.
    pub fn current() -> Self {
        match if_addrs::get_if_addrs() {
            Ok(interfaces) => Self::from_addresses(
                interfaces
                    .into_iter()
                    .filter(|interface| !interface.is_loopback())
                    .map(|interface| format!("{}={}", interface.name, interface.ip())),
            ),
            Err(error) => {
                tracing::debug!(%error, "cannot list network interfaces");
                Self::default()
            }
        }
    }

    /// Whether any non-loopback address is up.
    pub fn is_online(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Whether going from `before` to `now` should trigger a sync pass: the network changed and is
/// online now (coming back, or moving to another network).
pub fn should_sync(before: &NetworkFingerprint, now: &NetworkFingerprint) -> bool {
    now.is_online() && before != now
}

/// A task that polls the network every `period` and wakes the background sync on a change; it
/// ends when dropped or stopped.
#[derive(Debug)]
pub struct ConnectivityWatch {
    task: JoinHandle<()>,
}

impl ConnectivityWatch {
    /// Watches the host's interfaces ([`NetworkFingerprint::current`]).
    pub fn spawn(wake: Arc<Notify>, period: Duration) -> Self {
        Self::spawn_with_probe(wake, period, NetworkFingerprint::current)
    }

    /// Watches what `probe` reports (tests give a scripted network).
    pub fn spawn_with_probe(
        wake: Arc<Notify>,
        period: Duration,
        mut probe: impl FnMut() -> NetworkFingerprint + Send + 'static,
    ) -> Self {
        let task = tokio::spawn(async move {
            let mut before = probe();
            loop {
                tokio::time::sleep(period).await;
                let now = probe();
                if should_sync(&before, &now) {
                    tracing::info!("network changed; syncing now");
                    wake.notify_one();
                }
                before = now;
            }
        });
        Self { task }
    }
}

impl Drop for ConnectivityWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(addresses: &[&str]) -> NetworkFingerprint {
        NetworkFingerprint::from_addresses(addresses.iter().map(|address| (*address).to_string()))
    }

    #[test]
    fn only_a_change_to_an_online_network_triggers() {
        let offline = network(&[]);
        let home = network(&["wlan0=192.168.1.20"]);
        let train = network(&["wwan0=10.64.3.7"]);
        assert!(should_sync(&offline, &home), "coming back online");
        assert!(should_sync(&home, &train), "moving to another network");
        assert!(!should_sync(&home, &offline), "going offline");
        assert!(!should_sync(&home, &home), "no change");
        assert_eq!(
            network(&["b=2", "a=1", "a=1"]),
            network(&["a=1", "b=2"]),
            "order and duplicates do not matter"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watch_wakes_the_sync_when_the_network_returns() {
        let wake = Arc::new(Notify::new());
        let script = std::sync::Mutex::new(vec![
            network(&[]),
            network(&[]),
            network(&["eth0=10.0.0.5"]),
        ]);
        let _watch =
            ConnectivityWatch::spawn_with_probe(wake.clone(), Duration::from_secs(5), move || {
                let mut script = script
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if script.len() > 1 {
                    script.remove(0)
                } else {
                    script[0].clone()
                }
            });
        let woken = tokio::time::timeout(Duration::from_secs(60), wake.notified()).await;
        assert!(woken.is_ok(), "no wake-up after the network came back");
        // Stable network afterwards: no further wake-ups.
        let again = tokio::time::timeout(Duration::from_secs(60), wake.notified()).await;
        assert!(again.is_err(), "woken again without a change");
    }
}

//! systemd readiness protocol (`sd_notify`, through the `sd-notify` crate):
//! READY=1 once the agent samples, RELOADING=1/READY=1 around a SIGHUP
//! reload, STOPPING=1 on shutdown, STATUS= lines, and WATCHDOG=1 at half of
//! `WATCHDOG_USEC` when the unit sets `WatchdogSec=`. Without
//! `NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    // `false`: never unset the environment (that would be unsound with threads).
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1: half the unit's `WatchdogSec=`, if set for
/// this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
    } else {
        None
    }
}

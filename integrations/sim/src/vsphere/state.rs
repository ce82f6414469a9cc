//! The simulated vCenter: its VMs, sessions, injected faults and a log of
//! the requests received, behind one lock that is never held across an
//! `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::inventory::{Inventory, Vm};

/// How many requests [`SimState::requests`] remembers.
const MAX_RECORDED_REQUESTS: usize = 10_000;
/// vCenter's default idle timeout for API sessions.
pub const DEFAULT_SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Faults the next requests will suffer, set with `POST /sim/faults`.
/// Posting replaces the whole set; `{}` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer this many requests with 429 and `Retry-After` (as vCenter's
    /// reverse proxy does when throttling).
    pub rate_limit_next: u32,
    /// The `Retry-After` seconds sent with 429 and 503.
    pub retry_after_s: u64,
    /// Answer this many requests with `fail_status`: 503 is
    /// `SERVICE_UNAVAILABLE` with `Retry-After`, other 5xx
    /// `INTERNAL_SERVER_ERROR`.
    pub fail_next_5xx: u32,
    /// 500..=599 (default 503).
    pub fail_status: u16,
    /// Answer this many VM operations (power, hardware changes) with
    /// `RESOURCE_BUSY` ("another task is in progress").
    pub busy_next: u32,
    /// Inject the 429s and 5xx only into requests whose path starts with
    /// this (absent: any).
    pub path_prefix: Option<String>,
    /// Delay responses by this many milliseconds, after the request was
    /// applied.
    pub delay_ms: u64,
    /// Delay only this many responses (absent: all of them).
    pub delay_next: Option<u32>,
    /// Hosts that are not responding: every per-VM call on their VMs
    /// answers `RESOURCE_INACCESSIBLE` (the list still shows them).
    pub failed_hosts: Vec<String>,
    /// VMs (by name or id) whose power-on fails with
    /// `UNABLE_TO_ALLOCATE_RESOURCE`, as when a cluster lacks capacity.
    pub fail_power_on: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_next: 0,
            retry_after_s: 1,
            fail_next_5xx: 0,
            fail_status: 503,
            busy_next: 0,
            path_prefix: None,
            delay_ms: 0,
            delay_next: None,
            failed_hosts: Vec::new(),
            fail_power_on: Vec::new(),
        }
    }
}

/// The fault chosen for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    RateLimited { retry_after_s: u64 },
    ServerError { status: u16, retry_after_s: u64 },
}

/// One request the simulator received on `/api/*`, for tests to inspect.
/// Neither the Authorization header nor the session id is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// Whether a `vmware-api-session-id` header was sent.
    pub has_session: bool,
    /// `Basic`, ... (the Authorization header's scheme).
    pub auth_scheme: Option<String>,
    /// The body parsed as JSON, exactly as sent.
    pub body: Option<serde_json::Value>,
    pub status: u16,
}

/// One API session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) user: String,
    pub(crate) created: SystemTime,
    pub(crate) last_used: Instant,
    pub(crate) last_used_wall: SystemTime,
}

/// The simulated vCenter. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

struct Inner {
    username: String,
    password: String,
    store: Mutex<Store>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("username", &self.inner.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub(crate) struct Store {
    pub(crate) vms: Vec<Vm>,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) idle_timeout: Duration,
    pub(crate) faults: Faults,
    requests: VecDeque<RecordedRequest>,
}

/// Compares all bytes, so timing does not reveal a matching prefix.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SimState {
    /// A vCenter with these VMs, accepting one user, sessions idling out
    /// after [`DEFAULT_SESSION_IDLE_TIMEOUT`]. VMs without an id get one.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        inventory: Inventory,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                username: username.into(),
                password: password.into(),
                store: Mutex::new(Store {
                    vms: inventory.with_ids().vms,
                    sessions: HashMap::new(),
                    idle_timeout: DEFAULT_SESSION_IDLE_TIMEOUT,
                    faults: Faults::default(),
                    requests: VecDeque::new(),
                }),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sessions unused for this long expire (the next call with one gets
    /// 401 `UNAUTHENTICATED`).
    pub fn set_session_idle_timeout(&self, idle: Duration) {
        self.lock().idle_timeout = idle;
    }

    pub(crate) fn authenticates(&self, username: &str, password: &str) -> bool {
        same_secret(username, &self.inner.username) & same_secret(password, &self.inner.password)
    }

    /// Opens a session for `user`; its id.
    pub(crate) fn create_session(&self, user: &str) -> String {
        let id = fincorp_api::signing::random_hex(16);
        let now = Instant::now();
        let mut store = self.lock();
        let idle = store.idle_timeout;
        store
            .sessions
            .retain(|_, s| now.duration_since(s.last_used) < idle);
        store.sessions.insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                created: SystemTime::now(),
                last_used: now,
                last_used_wall: SystemTime::now(),
            },
        );
        id
    }

    /// The session with this id if it has not idled out; marks it used.
    pub(crate) fn use_session(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut store = self.lock();
        let idle = store.idle_timeout;
        let alive = store
            .sessions
            .get(id)
            .is_some_and(|s| now.duration_since(s.last_used) < idle);
        if !alive {
            store.sessions.remove(id);
            return None;
        }
        let session = store.sessions.get_mut(id)?;
        session.last_used = now;
        session.last_used_wall = SystemTime::now();
        Some(session.clone())
    }

    pub(crate) fn delete_session(&self, id: &str) {
        self.lock().sessions.remove(id);
    }

    /// Ends every session now, as an idle timeout or a vCenter restart
    /// would.
    pub fn expire_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// How many sessions are open and not idled out.
    pub fn live_sessions(&self) -> usize {
        let now = Instant::now();
        let store = self.lock();
        store
            .sessions
            .values()
            .filter(|s| now.duration_since(s.last_used) < store.idle_timeout)
            .count()
    }

    /// A snapshot of the VMs, in inventory order.
    pub fn vms(&self) -> Vec<Vm> {
        self.lock().vms.clone()
    }

    /// The VM with this id.
    pub fn vm(&self, id: &str) -> Option<Vm> {
        self.lock().vms.iter().find(|v| v.vm == id).cloned()
    }

    /// The first VM with this name.
    pub fn vm_named(&self, name: &str) -> Option<Vm> {
        self.lock().vms.iter().find(|v| v.name == name).cloned()
    }

    /// The requests received on `/api/*`, oldest first (the last 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub(crate) fn take_injected(&self, path: &str) -> Option<Injected> {
        let mut store = self.lock();
        let faults = &mut store.faults;
        if faults
            .path_prefix
            .as_deref()
            .is_some_and(|prefix| !path.starts_with(prefix))
        {
            return None;
        }
        if faults.rate_limit_next > 0 {
            faults.rate_limit_next -= 1;
            return Some(Injected::RateLimited {
                retry_after_s: faults.retry_after_s,
            });
        }
        if faults.fail_next_5xx > 0 {
            faults.fail_next_5xx -= 1;
            return Some(Injected::ServerError {
                status: faults.fail_status,
                retry_after_s: faults.retry_after_s,
            });
        }
        None
    }

    pub(crate) fn take_busy(&self) -> bool {
        let mut store = self.lock();
        if store.faults.busy_next > 0 {
            store.faults.busy_next -= 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn take_delay(&self) -> Option<Duration> {
        let mut store = self.lock();
        let faults = &mut store.faults;
        if faults.delay_ms == 0 {
            return None;
        }
        match &mut faults.delay_next {
            None => {}
            Some(0) => return None,
            Some(n) => *n -= 1,
        }
        Some(Duration::from_millis(faults.delay_ms))
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut store = self.lock();
        if store.requests.len() >= MAX_RECORDED_REQUESTS {
            store.requests.pop_front();
        }
        store.requests.push_back(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_idle_out_and_use_keeps_them_alive() {
        let state = SimState::new("u", "p", Inventory::default());
        state.set_session_idle_timeout(Duration::from_millis(40));
        let id = state.create_session("u");
        assert_eq!(state.live_sessions(), 1);
        std::thread::sleep(Duration::from_millis(25));
        assert!(state.use_session(&id).is_some());
        std::thread::sleep(Duration::from_millis(25));
        assert!(state.use_session(&id).is_some(), "use kept it alive");
        std::thread::sleep(Duration::from_millis(60));
        assert!(state.use_session(&id).is_none(), "idled out");
        assert_eq!(state.live_sessions(), 0);
        let id = state.create_session("u");
        state.expire_sessions();
        assert!(state.use_session(&id).is_none());
        assert!(state.authenticates("u", "p"));
        assert!(!state.authenticates("u", "q"));
        assert!(!format!("{state:?}").contains("\"p\""));
    }

    #[test]
    fn faults_are_consumed_one_at_a_time_and_filtered_by_path() {
        let state = SimState::new("u", "p", Inventory::default());
        state.set_faults(Faults {
            rate_limit_next: 1,
            fail_next_5xx: 1,
            busy_next: 1,
            delay_ms: 3,
            delay_next: Some(1),
            path_prefix: Some("/api/vcenter".into()),
            ..Faults::default()
        });
        assert_eq!(state.take_injected("/api/session"), None);
        assert_eq!(
            state.take_injected("/api/vcenter/vm"),
            Some(Injected::RateLimited { retry_after_s: 1 })
        );
        assert_eq!(
            state.take_injected("/api/vcenter/vm"),
            Some(Injected::ServerError {
                status: 503,
                retry_after_s: 1
            })
        );
        assert_eq!(state.take_injected("/api/vcenter/vm"), None);
        assert!(state.take_busy());
        assert!(!state.take_busy());
        assert_eq!(state.take_delay(), Some(Duration::from_millis(3)));
        assert_eq!(state.take_delay(), None);
    }
}

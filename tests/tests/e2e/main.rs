//! End-to-end scenarios (SPEC §3) with the real binaries on 127.0.0.1, one
//! module per scenario, all in one test binary. Scenarios take
//! [`fincorp_tests::serial`] so they run one at a time.

mod alertmanager_interop;
mod audit_chain;
mod dashboard;
mod ingest_crash;
mod predict_ramp;
mod run_crash;
mod run_lock;
mod s1_chaos_spike;
mod s2_ticketing;
mod s3_failover;
mod s4_rolling_patch;
mod s5_agent_spool;
mod s6_guardrails;

//! The cron scheduler: a playbook with `trigger.schedule` gets one run per
//! slot (the slot is its idempotency scope, so a slot never runs twice).
//! Slots missed while the correlator was down are not caught up: a
//! maintenance job firing hours late is worse than one skipped and logged.

use std::sync::Arc;
use std::time::Duration;

use fincorp_api::now_ms;
use fincorp_playbooks::Trigger;

use super::{Automation, blocking};
use crate::store::runs;

/// How often the scheduler looks at the (reloadable) playbooks.
const TICK: Duration = Duration::from_secs(1);

pub(super) async fn run(a: Arc<Automation>) {
    // The last slot started per playbook, so a slot fires once.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let now = now_ms();
        for pb in a.engine.playbooks().iter() {
            let Trigger::Schedule { schedule, .. } = &pb.trigger else {
                continue;
            };
            // The latest slot at or before now, found as the next slot after
            // (now - TICK - 1 ms): at most one per tick.
            let Some(slot) = next_slot(schedule, now - TICK.as_millis() as i64 - 1) else {
                continue;
            };
            if slot > now || last.get(&pb.name) == Some(&slot) {
                continue;
            }
            last.insert(pb.name.clone(), slot);
            let scope = format!("sched:{}", fincorp_api::format_ms(slot));
            let (engine, name, dry_run) =
                (a.engine.clone(), pb.name.clone(), pb.guardrails.dry_run);
            let id = format!("run-{}", fincorp_api::signing::random_hex(6));
            let inserted = blocking(move || {
                engine.write(|tx| {
                    runs::insert(
                        tx,
                        &runs::NewRun {
                            id,
                            playbook: &name,
                            incident_id: None,
                            scope: scope.clone(),
                            trigger: format!("schedule:{scope}"),
                            alert: None,
                            target_host: None,
                            target_app: None,
                            dry_run,
                        },
                        now,
                    )
                })
            })
            .await;
            match inserted {
                Ok(Some(run_id)) => {
                    tracing::info!(playbook = %pb.name, run_id, "scheduled run");
                    a.start(run_id);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(playbook = %pb.name, error = %e, "recording a scheduled run failed")
                }
            }
        }
    }
}

/// The first slot of `schedule` strictly after `after_ms`, in UTC.
fn next_slot(schedule: &cron::Schedule, after_ms: i64) -> Option<i64> {
    let after = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(after_ms)?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn the_next_slot_is_strictly_after_and_in_utc() {
        // Every day at 02:00:00 UTC.
        let s = cron::Schedule::from_str("0 0 2 * * *").unwrap();
        let day = 86_400_000;
        let two = 2 * 3_600_000;
        assert_eq!(next_slot(&s, 0), Some(two));
        assert_eq!(next_slot(&s, two - 1), Some(two));
        assert_eq!(next_slot(&s, two), Some(day + two));
    }
}

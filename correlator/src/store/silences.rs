//! Silences in the store: validated from the API's request, saved, loaded
//! into the core at start, listed for the API.

use std::str::FromStr;

use fincorp_api::UnixMs;
use fincorp_api::config::Duration;
use fincorp_api::rest::{NewSilence, SilenceView};
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::core::{Matcher, Silence, SilenceWindow};

/// Longest a one-off silence may last.
const MAX_ONE_OFF_MS: i64 = 90 * 24 * 3_600_000;

fn time(field: &str, text: &str) -> Result<UnixMs, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{field}: not an RFC 3339 time ({e}): {text:?}"))
}

fn duration(text: &str) -> Result<i64, String> {
    let d: Duration = text.parse().map_err(|e| format!("duration: {e}"))?;
    match d.as_millis_i64() {
        0 => Err("duration must be above 0".into()),
        ms => Ok(ms),
    }
}

/// A silence as it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub matchers: Vec<String>,
    pub starts_at_ms: Option<UnixMs>,
    pub ends_at_ms: Option<UnixMs>,
    pub schedule: Option<String>,
    pub duration_ms: Option<i64>,
    pub until_ms: Option<UnixMs>,
    pub created_by: String,
    pub comment: String,
    pub created_at_ms: UnixMs,
    pub expired_at_ms: Option<UnixMs>,
}

impl Row {
    /// The core's form. Fails only on data that was valid when stored.
    pub fn to_silence(&self) -> Result<Silence, String> {
        let matchers = self
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<_, _>>()?;
        let window = match (&self.schedule, self.starts_at_ms, self.ends_at_ms) {
            (Some(schedule), _, _) => SilenceWindow::Recurring {
                schedule: Box::new(
                    cron::Schedule::from_str(schedule).map_err(|e| format!("schedule: {e}"))?,
                ),
                duration_ms: self.duration_ms.unwrap_or(0),
                until_ms: self.until_ms,
            },
            (None, Some(starts_at_ms), Some(ends_at_ms)) => SilenceWindow::Once {
                starts_at_ms,
                ends_at_ms,
            },
            _ => return Err("a silence needs a schedule or a start and an end".into()),
        };
        Ok(Silence {
            id: self.id.clone(),
            matchers,
            window,
            expired_at_ms: self.expired_at_ms,
        })
    }

    pub fn view(&self, now: UnixMs) -> SilenceView {
        SilenceView {
            id: self.id.clone(),
            matchers: self.matchers.clone(),
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            schedule: self.schedule.clone(),
            duration_ms: self.duration_ms,
            until_ms: self.until_ms,
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            created_at_ms: self.created_at_ms,
            expired_at_ms: self.expired_at_ms,
            active: self.to_silence().is_ok_and(|s| s.active_at(now)),
        }
    }
}

/// Validates a new silence from the API. Every problem is a 400 message.
pub fn build(
    new: &NewSilence,
    id: String,
    by: String,
    now: UnixMs,
) -> Result<(Row, Silence), String> {
    if new.matchers.is_empty() {
        return Err(
            "matchers: at least one matcher is required (a silence of everything is refused)"
                .into(),
        );
    }
    let matchers: Vec<Matcher> = new
        .matchers
        .iter()
        .map(|m| Matcher::parse(m))
        .collect::<Result<_, _>>()?;
    if new.comment.trim().is_empty() {
        return Err("comment: say why the silence exists".into());
    }
    let until_ms = new.until.as_deref().map(|u| time("until", u)).transpose()?;
    let mut row = Row {
        id,
        matchers: matchers.iter().map(Matcher::text).collect(),
        starts_at_ms: None,
        ends_at_ms: None,
        schedule: None,
        duration_ms: None,
        until_ms,
        created_by: by,
        comment: new.comment.clone(),
        created_at_ms: now,
        expired_at_ms: None,
    };
    match &new.schedule {
        Some(schedule) => {
            if new.starts_at.is_some() || new.ends_at.is_some() {
                return Err(
                    "a recurring silence takes schedule and duration, not starts_at/ends_at".into(),
                );
            }
            cron::Schedule::from_str(schedule).map_err(|e| {
                format!(
                    "schedule: {e} (six or seven fields, seconds first, e.g. \"0 0 2 * * Sun\")"
                )
            })?;
            let d = duration(
                new.duration
                    .as_deref()
                    .ok_or("a recurring silence needs a duration")?,
            )?;
            row.schedule = Some(schedule.clone());
            row.duration_ms = Some(d);
        }
        None => {
            let start = new
                .starts_at
                .as_deref()
                .map(|s| time("starts_at", s))
                .transpose()?
                .unwrap_or(now);
            let end = match (&new.ends_at, &new.duration) {
                (Some(e), None) => time("ends_at", e)?,
                (None, Some(d)) => start + duration(d)?,
                _ => return Err("give exactly one of ends_at or duration (or a schedule)".into()),
            };
            if end <= start {
                return Err("ends_at must be after starts_at".into());
            }
            if end - start > MAX_ONE_OFF_MS {
                return Err("a one-off silence may last at most 90 days".into());
            }
            row.starts_at_ms = Some(start);
            row.ends_at_ms = Some(end);
        }
    }
    let silence = row.to_silence()?;
    Ok((row, silence))
}

pub fn insert(conn: &Connection, r: &Row) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO silences(id, matchers, starts_at_ms, ends_at_ms, schedule, duration_ms, until_ms, created_by,
                              comment, created_at_ms, expired_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            r.id,
            serde_json::to_string(&r.matchers).expect("strings serialise"),
            r.starts_at_ms,
            r.ends_at_ms,
            r.schedule,
            r.duration_ms,
            r.until_ms,
            r.created_by,
            r.comment,
            r.created_at_ms,
            r.expired_at_ms
        ],
    )?;
    Ok(())
}

/// Marks a silence expired; false when unknown or already expired.
pub fn expire(conn: &Connection, id: &str, now: UnixMs) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "UPDATE silences SET expired_at_ms = ?2 WHERE id = ?1 AND expired_at_ms IS NULL",
        params![id, now],
    )? == 1)
}

fn rows(conn: &Connection, where_clause: &str, arg: Option<&str>) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT id, matchers, starts_at_ms, ends_at_ms, schedule, duration_ms, until_ms, created_by, comment,
                created_at_ms, expired_at_ms FROM silences {where_clause} ORDER BY created_at_ms DESC, id"
    ))?;
    let map = |r: &rusqlite::Row<'_>| {
        let matchers: String = r.get(1)?;
        Ok(Row {
            id: r.get(0)?,
            matchers: serde_json::from_str(&matchers).unwrap_or_default(),
            starts_at_ms: r.get(2)?,
            ends_at_ms: r.get(3)?,
            schedule: r.get(4)?,
            duration_ms: r.get(5)?,
            until_ms: r.get(6)?,
            created_by: r.get(7)?,
            comment: r.get(8)?,
            created_at_ms: r.get(9)?,
            expired_at_ms: r.get(10)?,
        })
    };
    let out = match arg {
        Some(a) => stmt.query_map([a], map)?.collect::<Result<_, _>>()?,
        None => stmt.query_map([], map)?.collect::<Result<_, _>>()?,
    };
    Ok(out)
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<Row>, StoreError> {
    Ok(rows(conn, "WHERE id = ?1", Some(id))?.into_iter().next())
}

/// Silences that may still be in force, for the core.
pub fn load_all(conn: &Connection) -> Result<Vec<Silence>, StoreError> {
    let mut out = Vec::new();
    for r in rows(conn, "WHERE expired_at_ms IS NULL", None)? {
        match r.to_silence() {
            Ok(s) => out.push(s),
            Err(e) => {
                tracing::error!(silence_id = %r.id, error = %e, "stored silence is unreadable; ignored")
            }
        }
    }
    Ok(out)
}

pub fn list(
    conn: &Connection,
    now: UnixMs,
) -> Result<Vec<fincorp_api::rest::SilenceView>, StoreError> {
    Ok(rows(conn, "", None)?.iter().map(|r| r.view(now)).collect())
}

/// Whether a silence id exists.
pub fn exists(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM silences WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(f: impl FnOnce(&mut NewSilence)) -> NewSilence {
        let mut n = NewSilence {
            matchers: vec!["host=web01".into()],
            comment: "patching".into(),
            ..Default::default()
        };
        f(&mut n);
        n
    }

    #[test]
    fn one_off_and_recurring_silences_validate() {
        let (row, s) = build(
            &new(|n| n.duration = Some("2h".into())),
            "s1".into(),
            "ops".into(),
            1_000,
        )
        .unwrap();
        assert_eq!(
            (row.starts_at_ms, row.ends_at_ms),
            (Some(1_000), Some(1_000 + 7_200_000))
        );
        assert!(s.active_at(1_000));
        let (row, _) = build(
            &new(|n| {
                n.schedule = Some("0 0 2 * * Sun".into());
                n.duration = Some("2h".into());
            }),
            "s2".into(),
            "ops".into(),
            0,
        )
        .unwrap();
        assert_eq!(row.duration_ms, Some(7_200_000));
    }

    #[test]
    fn bad_silences_say_why() {
        let err = |f: fn(&mut NewSilence)| build(&new(f), "x".into(), "ops".into(), 0).unwrap_err();
        assert!(err(|n| n.matchers.clear()).starts_with("matchers:"));
        assert!(err(|n| n.comment.clear()).starts_with("comment:"));
        assert!(err(|_| {}).starts_with("give exactly one of ends_at or duration"));
        assert!(err(|n| n.schedule = Some("every sunday".into())).starts_with("schedule:"));
        assert!(
            err(|n| {
                n.schedule = Some("0 0 2 * * Sun".into());
            })
            .contains("needs a duration")
        );
        assert!(err(|n| n.matchers = vec!["app=~(".into()]).contains("invalid regex"));
        assert!(err(|n| n.duration = Some("100d".into())).contains("at most 90 days"));
    }
}

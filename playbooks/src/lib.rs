//! FINCORP playbooks: the YAML format operators write, its validation, the
//! templates in `with`, trigger matching, and the built-in actions.
//!
//! Everything here is deterministic except [`actions::execute`], whose IO goes
//! through the [`actions::Env`] trait: the correlator supplies the agent
//! command channel and the ServiceNow client. Planning and validation never
//! touch the network.
#![forbid(unsafe_code)]

pub mod actions;
pub mod load;
pub mod model;
pub mod template;
pub mod trigger;

pub use load::{load_dir, load_file};
pub use model::{Playbook, Step, Trigger};

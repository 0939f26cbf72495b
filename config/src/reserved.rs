//! Sections of front-ends this version does not have yet: `[metrics]`.
//! A config that uses one is refused, pointing at the section, rather than
//! half-understood: a daemon that silently ignored a `[metrics]` would look
//! healthy while exporting nothing.

use crate::reader::{Result, Table};

/// Top-level keys refused here, and what they would be.
const NOT_YET: &[(&str, &str)] = &[];

/// Fails on the first section of `NOT_YET` that `t` uses.
pub(crate) fn refuse_unbuilt(t: &Table<'_>) -> Result<()> {
    for (key, what) in NOT_YET {
        if let Some(f) = t.get(key) {
            return Err(f.err(format!(
                "{what} ([{key}]) is not part of this version of tbbridge yet; remove the section"
            )));
        }
    }
    Ok(())
}

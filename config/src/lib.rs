//! tbbridge configuration.
//!
//! Today this crate only re-exports the device naming that flags use
//! ([`DeviceSpec`]: `/dev/tbstreamN` or `emu:NAME/a`). The config file
//! (`/etc/tbbridge/NAME.toml`) and the configfs stream setup land with the
//! `tbbridge up` issue; see README.md, "What does not work yet".

pub use tbbridge_transport::DeviceSpec;

//! Devices: the real `/dev/tbstreamX` and the emulated cable.
//!
//! * [`spec`] (always compiled, pure): naming a device, `/dev/tbstreamN` or
//!   `emu:NAME/a|b`.
//! * With the `io` feature: [`DeviceFd`] / [`AsyncDevice`] with the driver's
//!   semantics for both kinds (short writes, EOF on peer close, `ENXIO` while
//!   unplugged: see [`is_link_down`]), [`tbstream`] (the real device),
//!   [`emu`] (the emulated cable), and [`open`] for a [`DeviceSpec`].

pub mod spec;

#[cfg(feature = "io")]
pub mod emu;
#[cfg(feature = "io")]
mod fd;
#[cfg(feature = "io")]
pub mod tbstream;

#[cfg(feature = "io")]
pub use fd::{AsyncDevice, DeviceFd};

pub use spec::{CableEnd, DeviceSpec};

#[cfg(feature = "io")]
pub use io_edge::*;

#[cfg(feature = "io")]
mod io_edge {
    use std::io;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::emu::{self, DEFAULT_CABLE_ROOT};
    use super::{tbstream, AsyncDevice, DeviceSpec};

    /// How [`open`] opens a device.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct OpenOptions {
        /// Where cross-process emulated cables live (default
        /// [`DEFAULT_CABLE_ROOT`]); for tests.
        pub cable_root: Option<PathBuf>,
        /// Give up with `TimedOut` if the peer has not attached by then
        /// (default: wait forever, like a blocking open of the driver).
        pub timeout: Option<Duration>,
    }

    impl OpenOptions {
        /// The cable root in effect.
        pub fn cable_root(&self) -> PathBuf {
            self.cable_root
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CABLE_ROOT))
        }
    }

    /// Opens `spec` on the current tokio runtime, waiting (up to
    /// `opts.timeout`) until the peer is attached, as a blocking open of the
    /// driver does. Cancel-safe: dropping the future abandons the open.
    ///
    /// `emu:NAME/a|b` opens the cross-process cable served under
    /// `opts.cable_root` (default [`DEFAULT_CABLE_ROOT`]).
    pub async fn open(spec: &DeviceSpec, opts: &OpenOptions) -> io::Result<AsyncDevice> {
        match spec {
            DeviceSpec::TbStream(path) => tbstream::open_async(path, opts.timeout).await,
            DeviceSpec::Emu { cable, end } => {
                emu::open_end_async(&opts.cable_root(), cable, *end, opts.timeout).await
            }
        }
    }

    /// Whether `e` means the link is down (`ENXIO`: cable unplugged, or a
    /// write after the peer closed). The reaction is to close the device,
    /// open it again (which waits for the peer) and handshake anew.
    pub fn is_link_down(e: &io::Error) -> bool {
        e.raw_os_error() == Some(libc::ENXIO)
    }
}

//! Fault injection for tests, in debug builds only: `STRAIT_FAULT=STEP` in straitd's environment
//! makes the named step of every ADD fail, so that tests can show each step's undo leaves
//! nothing behind. Release builds compile it away and ignore the variable.

use crate::error::DataplaneError;

/// The steps of an ADD where a fault can be injected: writing the record (concurrent with the
/// kernel work), then the kernel work's steps in order.
pub const STEPS: [&str; 4] = ["persist", "after-veth", "after-pod-side", "after-host-side"];

/// Fails with [`DataplaneError::Injected`] when `STRAIT_FAULT` names `step` (debug builds).
pub fn inject(step: &'static str) -> Result<(), DataplaneError> {
    #[cfg(debug_assertions)]
    {
        static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let fault = FAULT.get_or_init(|| std::env::var("STRAIT_FAULT").ok());
        if fault.as_deref() == Some(step) {
            return Err(DataplaneError::Injected(step));
        }
    }
    let _ = step;
    Ok(())
}
